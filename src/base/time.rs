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

/// What [`parse_iso`] accepts, as clients see it in -32602 errors and 400 answers.
pub const ISO_RULE: &str = "an ISO 8601 time: 2026-12-01T14:02:00Z, with a fraction or a +HH:MM offset if needed";

/// Reads an ISO 8601 / RFC 3339 time: `2026-12-01T14:02:00Z`, with a fraction of a second, `T` or a space, and `Z`, a
/// `+HH:MM`/`-HH:MM` offset, or no zone at all (UTC).
pub fn parse_iso(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    // An offset after the time part: the last '+' or '-' after the 'T' (the date's own '-' come before it).
    let time_at = text.find(['T', 't', ' '])?;
    let (local, offset_s) = match text[time_at..].rfind(['+', '-']) {
        Some(i) => {
            let (local, zone) = text.split_at(time_at + i);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':').unwrap_or((&zone[1..], "00"));
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            if h.to_string().len() > 2 || !(0..24).contains(&h) || !(0..60).contains(&m) {
                return None;
            }
            (local, sign * (h * 3600 + m * 60))
        }
        None => (text, 0),
    };
    let utc = humantime::parse_rfc3339_weak(local).ok()?;
    let shift = Duration::from_secs(offset_s.unsigned_abs());
    if offset_s >= 0 { utc.checked_sub(shift) } else { utc.checked_add(shift) }
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

    #[test]
    fn iso_times_with_zones_and_without() {
        let t = from_millis(1_795_000_000_123);
        for text in [
            "2026-11-18T11:06:40.123Z",
            "2026-11-18T11:06:40.123",
            "2026-11-18 11:06:40.123Z",
            "2026-11-18T13:06:40.123+02:00",
            "2026-11-18T08:36:40.123-02:30",
        ] {
            assert_eq!(parse_iso(text), Some(t), "{text}");
        }
        for bad in ["", "yesterday", "2026-11-18", "2026-13-18T00:00:00Z", "2026-11-18T11:06:40+25:00", "1e9"] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }
}
