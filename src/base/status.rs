//! Small vocabularies every layer shares: who may do what (roles), what state a camera is in (the contract's
//! statuses), and why a source stopped delivering (the neutral failure kinds media reports and the camera
//! supervisor turns into a status).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Roles, ordered: each can do everything the ones below it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn permissions(self) -> &'static [&'static str] {
        match self {
            Role::Viewer => &["view"],
            Role::Operator => &["view", "control"],
            Role::Admin => &["view", "control", "admin"],
        }
    }
}

/// The camera states the contract names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CameraStatus {
    Connected,
    Disconnected,
    Error,
}

impl CameraStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CameraStatus::Connected => "CONNECTED",
            CameraStatus::Disconnected => "DISCONNECTED",
            CameraStatus::Error => "ERROR",
        }
    }
}

/// Why a source stopped, in terms its supervisor can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Lost, timed out, ended, unplugged: trying again soon may work.
    Retry,
    /// The source refused our credentials: retrying soon will not fix it.
    Refused,
    /// The source sends something camhub cannot ingest (codec, format, interface).
    Unsupported,
}

/// A source's failure: its kind and a reason safe to show (no credentials, no device paths).
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub reason: String,
}

impl Failure {
    pub fn retry(reason: impl Into<String>) -> Failure {
        Failure { kind: FailureKind::Retry, reason: reason.into() }
    }

    pub fn refused(reason: impl Into<String>) -> Failure {
        Failure { kind: FailureKind::Refused, reason: reason.into() }
    }

    pub fn unsupported(reason: impl Into<String>) -> Failure {
        Failure { kind: FailureKind::Unsupported, reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(Role::Admin.permissions(), ["view", "control", "admin"]);
    }
}
