//! The one place application errors become what a transport sends: JSON-RPC error objects (codes and `data` fields
//! per the contract) and, side by side, HTTP statuses for the plain HTTP endpoints (downloads, WHEP).

use axum::http::StatusCode;
use jsonrpsee::types::ErrorObjectOwned;
use serde::Serialize;

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

/// Whether an error code says the server failed (its span's status is ERROR), rather than that the request was
/// refused as asked (bad params, no access, not found, wrong state: the client's to fix).
pub fn is_server_fault(code: i32) -> bool {
    matches!(code, INTERNAL | DEPENDENCY_FAILED | INSUFFICIENT_STORAGE)
}

/// The `data` of each error object, as the spec's catalog (`components.errors`) describes it.
#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Param { param: &'a str, rule: &'a str, hint: String },
    Reason { reason: &'a str },
    Roles { required_role: &'static str, have_role: &'static str },
    NotFound { resource: &'static str, id: &'a str },
    State { state: &'static str, allowed_states: Vec<&'static str> },
    Feature { feature: &'a str },
    RetryAfter { retry_after_ms: u64 },
    Dependency { dependency: &'static str, detail: &'a str },
    Storage { available: u64, required: u64 },
    Capability { capability: &'a str },
    Hint { hint: &'a str },
}

impl From<Error> for ErrorObjectOwned {
    fn from(e: Error) -> Self {
        let (code, message, data) = match &e {
            Error::InvalidParams { param, rule } => (
                INVALID_PARAMS,
                "Invalid params",
                Data::Param { param, rule, hint: format!("check parameter {param}: {rule}") },
            ),
            Error::Unauthenticated(reason) => {
                (UNAUTHENTICATED, "Authentication failed or required", Data::Reason { reason })
            }
            Error::PermissionDenied { required, have } => (
                PERMISSION_DENIED,
                "Permission denied",
                Data::Roles { required_role: required.as_str(), have_role: have.as_str() },
            ),
            Error::NotFound { resource, id } => {
                (NOT_FOUND, "Not found", Data::NotFound { resource: resource.as_str(), id })
            }
            Error::InvalidState { state, allowed } => (
                INVALID_STATE,
                "Invalid state",
                Data::State { state: state.as_str(), allowed_states: allowed.iter().map(|s| s.as_str()).collect() },
            ),
            Error::Unsupported(feature) => (UNSUPPORTED, "Unsupported", Data::Feature { feature }),
            Error::RateLimited { retry_after_ms } => {
                (RATE_LIMITED, "Rate limited", Data::RetryAfter { retry_after_ms: *retry_after_ms })
            }
            Error::Dependency { dependency, detail } => {
                (DEPENDENCY_FAILED, "Dependency failed", Data::Dependency { dependency: dependency.as_str(), detail })
            }
            Error::InsufficientStorage { available, required } => (
                INSUFFICIENT_STORAGE,
                "Insufficient storage",
                Data::Storage { available: *available, required: *required },
            ),
            Error::CapabilityNotSupported(capability) => {
                (CAPABILITY_NOT_SUPPORTED, "Capability not supported", Data::Capability { capability })
            }
            Error::Internal(detail) => {
                // The detail may name internals; it is logged, the client gets a hint only.
                tracing::error!(detail, "internal error");
                (INTERNAL, "Internal error", Data::Hint { hint: "see the server log" })
            }
        };
        ErrorObjectOwned::owned(code, message, Some(data))
    }
}

/// The HTTP status of an error, for endpoints that answer in plain HTTP.
pub fn http_status(e: &Error) -> StatusCode {
    match e {
        Error::InvalidParams { .. } => StatusCode::BAD_REQUEST,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::PermissionDenied { .. } => StatusCode::FORBIDDEN,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        // A state that may change (a camera not delivering yet, a session cap): try again later.
        Error::InvalidState { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
        Error::CapabilityNotSupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::Dependency { .. } | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
    ErrorObjectOwned::owned(code, message, Some(Data::Hint { hint: &hint.into() }))
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
