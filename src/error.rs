//! The application's one error type: every failure a caller can see, by kind. Transport codes are assigned in
//! `rpc::errors` and nowhere else; this module knows nothing about JSON-RPC.

use std::borrow::Cow;

/// What went wrong, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter broke a rule: `param` names it, `rule` says what it must be.
    #[error("invalid parameter {param}: {rule}")]
    InvalidParams { param: Cow<'static, str>, rule: Cow<'static, str> },

    /// No credentials, or credentials that do not verify.
    #[error("authentication failed: {0}")]
    Unauthenticated(Cow<'static, str>),

    /// The caller is authenticated but its role is too low.
    #[error("permission denied: requires {required}, have {have}")]
    PermissionDenied { required: &'static str, have: &'static str },

    /// A camera, file or key that does not exist.
    #[error("{resource} not found: {id}")]
    NotFound { resource: &'static str, id: String },

    /// The request does not fit the resource's current state.
    #[error("invalid state {state}, allowed: {}", allowed.join(", "))]
    InvalidState { state: String, allowed: Vec<&'static str> },

    /// A feature camhub does not offer.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),

    /// The caller sent too many requests; it may retry after the given delay.
    #[error("rate limited, retry after {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },

    /// A media pipeline, device or other dependency failed.
    #[error("{dependency} failed: {detail}")]
    Dependency { dependency: &'static str, detail: String },

    /// The disk cannot hold what was asked.
    #[error("insufficient storage: {available} bytes available, {required} required")]
    InsufficientStorage { available: u64, required: u64 },

    /// The camera cannot do what was asked.
    #[error("capability not supported: {0}")]
    CapabilityNotSupported(String),

    /// A bug or an unexpected failure of our own; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid_param(param: impl Into<Cow<'static, str>>, rule: impl Into<Cow<'static, str>>) -> Self {
        Error::InvalidParams { param: param.into(), rule: rule.into() }
    }

    pub fn camera_not_found(id: &str) -> Self {
        Error::NotFound { resource: "camera", id: id.to_owned() }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Dependency { dependency: "database", detail: e.to_string() }
    }
}
