//! The application's one error type: every failure a caller can see, by kind, with the states, resources and
//! dependencies it names as enums whose wire strings never change. Transport codes (JSON-RPC and HTTP) are assigned in
//! `rpc::errors` and nowhere else; this module knows nothing about transports.

use std::borrow::Cow;
use std::fmt;

use crate::base::Role;

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
    #[error("permission denied: requires {}, have {}", required.as_str(), have.as_str())]
    PermissionDenied { required: Role, have: Role },

    /// A camera, file or key that does not exist.
    #[error("{resource} not found: {id}")]
    NotFound { resource: Resource, id: String },

    /// The request does not fit the resource's current state.
    #[error("invalid state {state}, allowed: {}", allowed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))]
    InvalidState { state: State, allowed: &'static [State] },

    /// A feature camhub does not offer.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),

    /// The caller sent too many requests; it may retry after the given delay.
    #[error("rate limited, retry after {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },

    /// A media pipeline, device or other dependency failed; `detail` says how (no credentials, no paths of clients).
    #[error("{dependency} failed: {detail}")]
    Dependency { dependency: Dependency, detail: String },

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

/// Defines an enum of wire names: each variant and the string clients see for it, forever.
macro_rules! wire_names {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_names! {
    /// A state a request can find a camera, recording, stream or file in (-32020 `data.state`, `allowed_states`).
    State {
        Connected = "CONNECTED",
        Disconnected = "DISCONNECTED",
        Error = "ERROR",
        Recording = "RECORDING",
        NotRecording = "NOT_RECORDING",
        /// Published (RTSP and WebRTC), or withdrawn by `stop_streaming`.
        Started = "STARTED",
        Stopped = "STOPPED",
        /// No camera with that id or URL exists yet (what adding one needs).
        Absent = "ABSENT",
        CameraExists = "CAMERA_EXISTS",
        StreamExists = "STREAM_EXISTS",
        CameraLimit = "CAMERA_LIMIT",
        /// Declared in the config file, found on the machine, or added through the API.
        Configured = "CONFIGURED",
        Discovered = "DISCOVERED",
        AddedAtRunTime = "ADDED_AT_RUN_TIME",
        FileExists = "FILE_EXISTS",
        NewFileName = "NEW_FILE_NAME",
        SessionLimit = "SESSION_LIMIT",
        /// The camera has not delivered video since camhub started.
        NoVideoYet = "NO_VIDEO_YET",
    }
}

wire_names! {
    /// What failed (-32050 `data.dependency`).
    Dependency {
        Database = "database",
        Storage = "storage",
        Gstreamer = "gstreamer",
        MediaPipeline = "media pipeline",
        RecordingPipeline = "recording pipeline",
        SnapshotPipeline = "snapshot pipeline",
        Demuxer = "demuxer",
        Webrtc = "webrtc",
        RtspServer = "rtsp server",
        /// A listener taking pushed streams (RTMP, SRT).
        IngestServer = "ingest server",
        Camera = "camera",
        /// ONNX Runtime or a detection model.
        Inference = "inference",
        /// The config file, read again on reload.
        Config = "config",
    }
}

wire_names! {
    /// What was not found (-32010 `data.resource`).
    Resource {
        Camera = "camera",
        Recording = "recording",
        Snapshot = "snapshot",
        Stream = "stream",
        /// A detection event.
        Event = "event",
        StreamKey = "stream key",
    }
}

impl Error {
    pub fn invalid_param(param: impl Into<Cow<'static, str>>, rule: impl Into<Cow<'static, str>>) -> Self {
        Error::InvalidParams { param: param.into(), rule: rule.into() }
    }

    pub fn not_found(resource: Resource, id: impl Into<String>) -> Self {
        Error::NotFound { resource, id: id.into() }
    }

    pub fn camera_not_found(id: &str) -> Self {
        Error::not_found(Resource::Camera, id)
    }

    pub fn invalid_state(state: State, allowed: &'static [State]) -> Self {
        Error::InvalidState { state, allowed }
    }

    pub fn dependency(dependency: Dependency, detail: impl fmt::Display) -> Self {
        Error::Dependency { dependency, detail: detail.to_string() }
    }

    pub fn internal(e: impl fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::dependency(Dependency::Database, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_distinct() {
        for all in [
            State::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            Dependency::ALL.iter().map(|s| s.as_str()).collect(),
            Resource::ALL.iter().map(|s| s.as_str()).collect(),
        ] {
            let distinct: std::collections::BTreeSet<_> = all.iter().collect();
            assert_eq!(distinct.len(), all.len(), "{all:?}");
        }
    }
}
