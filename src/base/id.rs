//! A camera's public id: the one name clients, file names, URLs and logs use for a camera. Device paths and stream
//! URLs never serve as ids.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `[a-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct CameraId(String);

impl CameraId {
    pub const RULE: &'static str = "must match [a-z0-9_-]{1,64}";

    pub fn parse(s: &str) -> Result<CameraId, &'static str> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok { Ok(CameraId(s.to_owned())) } else { Err(Self::RULE) }
    }

    /// An id from a display name: lowercase, runs of other characters become `-`, at most 64 characters.
    pub fn from_name(name: &str) -> Option<CameraId> {
        let mut slug = String::with_capacity(name.len());
        for ch in name.trim().chars() {
            let c = ch.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                slug.push(c);
            } else if !slug.ends_with('-') {
                slug.push('-');
            }
        }
        let slug: String = slug.trim_matches('-').chars().take(64).collect();
        CameraId::parse(slug.trim_end_matches('-')).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_rule() {
        for good in ["front", "cam_0", "a-b", &"x".repeat(64)] {
            assert!(CameraId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Front", "a b", "../x", "a/b", &"x".repeat(65), "cam.0"] {
            assert!(CameraId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_become_ids() {
        assert_eq!(CameraId::from_name("Front Door").expect("valid").as_str(), "front-door");
        assert_eq!(CameraId::from_name("  lobby_2 ").expect("valid").as_str(), "lobby_2");
        assert!(CameraId::from_name("!!!").is_none());
        assert!(CameraId::from_name("").is_none());
    }
}
