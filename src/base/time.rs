//! Time as camhub writes it: ISO 8601 / RFC 3339 with milliseconds on the wire, milliseconds since the epoch in the
//! database, whole seconds in tokens, and a file-name-safe stamp in recording and snapshot names.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-11-22T00:25:00.123Z`.
pub fn iso(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `2026-11-22T00-25-00.123Z`: RFC 3339 with `-` for `:`, so names are portable.
pub fn file_stamp(t: SystemTime) -> String {
    iso(t).replace(':', "-")
}

/// Reads a [`file_stamp`] back.
pub fn parse_file_stamp(stamp: &str) -> Option<SystemTime> {
    let (date, time) = stamp.split_once('T')?;
    humantime::parse_rfc3339(&format!("{date}T{}", time.replace('-', ":"))).ok()
}

/// Milliseconds since the epoch (0 before it).
pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The time `ms` milliseconds after the epoch (the epoch for negative values).
pub fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

pub fn now_ms() -> i64 {
    millis(SystemTime::now())
}

/// Seconds since the epoch, with a fraction.
pub fn unix_secs_f64(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Whole seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let t = from_millis(1_795_000_000_123);
        assert_eq!(iso(t), "2026-11-18T11:06:40.123Z");
        assert_eq!(file_stamp(t), "2026-11-18T11-06-40.123Z");
        assert_eq!(parse_file_stamp(&file_stamp(t)), Some(t));
        assert_eq!(millis(t), 1_795_000_000_123);
    }
}
