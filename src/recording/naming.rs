//! Recording file names: `CAMERA_START_SESSION_SEQ.EXT`, with START the session's first frame in UTC (a file-name-safe
//! RFC 3339 stamp) and SESSION the start of the session id. Recording writes them, recovery reads them back to find a
//! cut file's camera, session and place in it.

use std::time::SystemTime;

use crate::base::CameraId;
use crate::base::time::{file_stamp, parse_file_stamp};
use crate::config::RecordingFormat;

/// Characters of the session id in segment names: enough to tell apart sessions of one camera that start on the
/// same frame (a recording started within the pre-roll of the previous one reaches back to the same first frame).
const SESSION_TAG: usize = 8;

/// The file name of segment `seq` of a session.
pub fn segment_name(
    camera: &CameraId,
    started_at: SystemTime,
    session: &str,
    format: RecordingFormat,
    seq: u32,
) -> String {
    let tag: String = session.chars().take(SESSION_TAG).collect();
    format!("{camera}_{}_{tag}_{seq:04}.{}", file_stamp(started_at), format.extension())
}

/// What a segment name says: camera, session start, session tag, sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentName {
    pub camera: String,
    pub started_at: SystemTime,
    pub session_tag: String,
    pub seq: u32,
}

/// Reads a segment name back (the camera id may itself contain `_`, so fields are taken from the right).
pub fn parse_segment_name(name: &str) -> Option<SegmentName> {
    let stem = name.rsplit_once('.')?.0;
    let (rest, seq) = stem.rsplit_once('_')?;
    let (rest, session_tag) = rest.rsplit_once('_')?;
    let (camera, stamp) = rest.rsplit_once('_')?;
    Some(SegmentName {
        camera: camera.to_owned(),
        started_at: parse_file_stamp(stamp)?,
        session_tag: session_tag.to_owned(),
        seq: seq.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_306_757_123);
        let camera = CameraId::parse("front_door").expect("valid id");
        let name = segment_name(&camera, t, "0123456789abcdef", RecordingFormat::Fmp4, 3);
        assert_eq!(name, "front_door_2026-11-22T00-19-17.123Z_01234567_0003.mp4");
        assert!(crate::storage::files::validate_name("f", &name).is_ok());
        let parsed = parse_segment_name(&name).expect("parses");
        assert_eq!(
            parsed,
            SegmentName { camera: "front_door".into(), started_at: t, session_tag: "01234567".into(), seq: 3 }
        );
        assert_eq!(parse_segment_name("garbage.mp4"), None);
    }
}
