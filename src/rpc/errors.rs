//! The one place application errors become JSON-RPC error objects: codes and `data` fields per the contract.

use jsonrpsee::types::ErrorObjectOwned;
use serde_json::json;

use crate::error::Error;

pub const PARSE_ERROR: i32 = -32700;
pub const INVALID_REQUEST: i32 = -32600;
pub const METHOD_NOT_FOUND: i32 = -32601;
pub const INVALID_PARAMS: i32 = -32602;
pub const INTERNAL: i32 = -32603;
pub const UNAUTHENTICATED: i32 = -32001;
pub const PERMISSION_DENIED: i32 = -32002;
pub const INSUFFICIENT_STORAGE: i32 = -32007;
pub const CAPABILITY_NOT_SUPPORTED: i32 = -32008;
pub const NOT_FOUND: i32 = -32010;
pub const INVALID_STATE: i32 = -32020;
pub const UNSUPPORTED: i32 = -32030;
pub const RATE_LIMITED: i32 = -32040;
pub const DEPENDENCY_FAILED: i32 = -32050;

impl From<Error> for ErrorObjectOwned {
    fn from(e: Error) -> Self {
        let (code, message, data) = match &e {
            Error::InvalidParams { param, rule } => (
                INVALID_PARAMS,
                "Invalid params",
                json!({ "param": param, "rule": rule, "hint": format!("check parameter {param}: {rule}") }),
            ),
            Error::Unauthenticated(reason) => {
                (UNAUTHENTICATED, "Authentication failed or required", json!({ "reason": reason }))
            }
            Error::PermissionDenied { required, have } => {
                (PERMISSION_DENIED, "Permission denied", json!({ "required_role": required, "have_role": have }))
            }
            Error::NotFound { resource, id } => (NOT_FOUND, "Not found", json!({ "resource": resource, "id": id })),
            Error::InvalidState { state, allowed } => {
                (INVALID_STATE, "Invalid state", json!({ "state": state, "allowed_states": allowed }))
            }
            Error::Unsupported(feature) => (UNSUPPORTED, "Unsupported", json!({ "feature": feature })),
            Error::RateLimited { retry_after_ms } => {
                (RATE_LIMITED, "Rate limited", json!({ "retry_after_ms": retry_after_ms }))
            }
            Error::Dependency { dependency, detail } => {
                (DEPENDENCY_FAILED, "Dependency failed", json!({ "dependency": dependency, "detail": detail }))
            }
            Error::InsufficientStorage { available, required } => {
                (INSUFFICIENT_STORAGE, "Insufficient storage", json!({ "available": available, "required": required }))
            }
            Error::CapabilityNotSupported(capability) => {
                (CAPABILITY_NOT_SUPPORTED, "Capability not supported", json!({ "capability": capability }))
            }
            Error::Internal(detail) => {
                // The detail may name internals; it is logged, the client gets a hint only.
                tracing::error!(detail, "internal error");
                (INTERNAL, "Internal error", json!({ "hint": "see the server log" }))
            }
        };
        ErrorObjectOwned::owned(code, message, Some(data))
    }
}

/// A protocol-level error (not from a method): code, message and a hint.
pub fn protocol(code: i32, hint: impl Into<String>) -> ErrorObjectOwned {
    let message = match code {
        PARSE_ERROR => "Parse error",
        INVALID_REQUEST => "Invalid request",
        METHOD_NOT_FOUND => "Method not found",
        _ => "Error",
    };
    ErrorObjectOwned::owned(code, message, Some(json!({ "hint": hint.into() })))
}

/// Maps a serde failure on a method's params to -32602 naming the parameter and the rule it broke.
pub fn from_params_error(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let inner = e.inner().to_string();
    let path = e.path().to_string();
    // serde names missing and unknown fields only in its message.
    let named = |marker: &str| {
        inner.find(marker).and_then(|i| {
            let rest = &inner[i + marker.len()..];
            rest.find('`').map(|j| rest[..j].to_owned())
        })
    };
    // serde reports a missing field at its parent's path ("." at the top level), an unknown one at its own.
    let nested = |field: String| match path.as_str() {
        "." => field,
        p if p == field || p.ends_with(&format!(".{field}")) => p.to_owned(),
        p => format!("{p}.{field}"),
    };
    let (param, rule) = if let Some(field) = named("missing field `") {
        (nested(field), "is required".to_owned())
    } else if let Some(field) = named("unknown field `") {
        (nested(field), "is not a parameter of this method".to_owned())
    } else {
        let rule = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
        (if path == "." { "params".to_owned() } else { path }, rule)
    };
    Error::invalid_param(param, rule)
}
