//! Core types at the bottom of the crate: identifiers, roles, camera statuses, stream URLs (parsing, redaction,
//! credentials), codecs, time conversions, and the neutral reasons a source stops. Every layer may use them; they
//! import nothing of camhub's.

pub mod codec;
pub mod id;
pub mod status;
pub mod thread;
pub mod time;
pub mod url;

pub use codec::{AudioCodec, Codec};
pub use id::CameraId;
pub use status::{CameraStatus, Failure, FailureKind, Role};

/// The program's name, as servers and user agents announce it.
pub const NAME: &str = "camhub";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
