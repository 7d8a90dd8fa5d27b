//! Keeping a stream's output timestamps moving forward when its source's clock does not: what the publishing feeds
//! and the recorder share, and the continuous `Timeline` recordings and HLS streams are written on. A frame a little behind the last (sent out of presentation order), or too close after it,
//! is placed `MIN_STEP` after it;
//! a source clock that jumps back (a camera or an RTSP server restarting its pipeline within one connection) starts a
//! new timeline one frame spacing after the last frame, instead of stamping every frame just after the last until the
//! clock catches up, which players and muxers read as seconds of frames at one instant.

use std::time::Instant;

use gstreamer as gst;

/// How far a timestamp may fall behind the last one before it counts as the source's clock going back, not as a
/// frame sent out of order.
pub const CLOCK_WENT_BACK: gst::ClockTime = gst::ClockTime::from_mseconds(500);

/// The least spacing between two frames: the coarsest time unit of the containers frames are written to (Matroska
/// counts milliseconds; mp4mux's timescale may too), so two frames never get the same decoding time in a file (a
/// muxer or player refuses a timestamp that does not increase). A camera, or an RTSP client's jitter buffer on a
/// loaded machine, can stamp two frames alike.
pub const MIN_STEP: gst::ClockTime = gst::ClockTime::MSECOND;

/// The longest spacing remembered as a frame step: the step after a stall is no frame spacing.
const MAX_STEP: gst::ClockTime = gst::ClockTime::SECOND;

/// The last output timestamp and the spacing of the frames before it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Forward {
    last: Option<gst::ClockTime>,
    step: Option<gst::ClockTime>,
}

impl Forward {
    /// The output for a frame the caller placed at `out`, and, when the source's clock went back, how far (in ns)
    /// the caller must move its offset so that later frames follow the new timeline.
    pub fn next(&mut self, out: gst::ClockTime) -> (gst::ClockTime, Option<i128>) {
        let (out, shift) = match self.last {
            Some(last) if out + CLOCK_WENT_BACK < last => {
                let target = last + self.step.unwrap_or(gst::ClockTime::MSECOND);
                (target, Some(target.nseconds() as i128 - out.nseconds() as i128))
            }
            Some(last) if out < last + MIN_STEP => (last + MIN_STEP, None),
            Some(last) => {
                self.step = Some((out - last).min(MAX_STEP));
                (out, None)
            }
            None => (out, None),
        };
        self.last = Some(out);
        (out, shift)
    }

    /// The last output, if any.
    pub fn last(&self) -> Option<gst::ClockTime> {
        self.last
    }
}

/// Maps hub timestamps (one timeline per camera connection) onto one continuous timeline (a recording session's, an HLS stream's), which starts at 0 and
/// advances by wall-clock time across reconnects, so a gap stays a gap.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Added to a frame's timestamp; `None` until the first frame of a connection.
    offset: Option<i128>,
    /// The last output and when its frame arrived (a reconnect resumes after it by the wall-clock gap).
    last_arrival: Option<Instant>,
    /// Never backwards: a muxer refuses non-monotonic DTS, and a camera clock that jumps back within one connection
    /// must not collapse the frames after it onto one instant (`media::clock`).
    forward: Forward,
}

impl Timeline {
    pub fn gap(&mut self) {
        self.offset = None;
    }

    /// The timeline's time of a frame (from its DTS, else its PTS).
    pub fn map(
        &mut self,
        pts: Option<gst::ClockTime>,
        dts: Option<gst::ClockTime>,
        arrived: Instant,
    ) -> gst::ClockTime {
        let anchor = dts.or(pts).map(|t| t.nseconds() as i128).unwrap_or(0);
        let (last, last_arrival) = (self.forward.last(), self.last_arrival);
        let offset = *self.offset.get_or_insert_with(|| {
            let target = match (last, last_arrival) {
                (Some(last), Some(at)) => {
                    last.nseconds() as i128 + arrived.saturating_duration_since(at).as_nanos().max(1) as i128
                }
                _ => 0,
            };
            target - anchor
        });
        let (out, shift) = self.forward.next(gst::ClockTime::from_nseconds((anchor + offset).max(0) as u64));
        if let Some(shift) = shift {
            self.offset = Some(offset + shift);
        }
        self.last_arrival = Some(arrived);
        out
    }

    /// The timeline's time of an audio frame: the video's offset applies, so sound and picture stay together. `None`
    /// before the connection's first video frame placed the timeline, or before the session's start.
    pub fn map_audio(&self, pts: gst::ClockTime) -> Option<gst::ClockTime> {
        let at = pts.nseconds() as i128 + self.offset?;
        u64::try_from(at).ok().map(gst::ClockTime::from_nseconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_that_goes_back_continues_one_frame_after_the_last() {
        let frame = gst::ClockTime::from_mseconds(40);
        let mut f = Forward::default();
        for i in 0..20 {
            assert_eq!(f.next(frame * i), (frame * i, None));
        }
        // Slightly behind (out of order): MIN_STEP after the last, the timeline kept.
        assert_eq!(f.next(frame * 18), (frame * 19 + MIN_STEP, None));
        // As good as equal to the last: MIN_STEP after it too.
        let close = frame * 19 + MIN_STEP + gst::ClockTime::from_nseconds(1);
        assert_eq!(f.next(close), (frame * 19 + MIN_STEP * 2, None));
        // Far behind (more than CLOCK_WENT_BACK): one frame after the last, and the caller told to shift.
        let (out, shift) = f.next(gst::ClockTime::ZERO);
        assert_eq!(out, frame * 20 + MIN_STEP * 2);
        assert_eq!(shift, Some(out.nseconds() as i128));
    }

    #[test]
    fn the_timeline_starts_at_zero_and_keeps_gaps() {
        use std::time::Duration;
        let mut t = Timeline::default();
        let start = Instant::now();
        let s = gst::ClockTime::SECOND;
        assert_eq!(t.map(Some(s * 10), None, start), gst::ClockTime::ZERO);
        assert_eq!(t.map(Some(s * 11), None, start + Duration::from_secs(1)), s);
        // The camera comes back 3 s later with a timeline of its own.
        t.gap();
        let after = t.map(Some(s / 2), None, start + Duration::from_secs(4));
        assert_eq!(after, s * 4);
        assert_eq!(t.map(Some(s / 2 + s), None, start + Duration::from_secs(5)), s * 5);
        // The camera's clock jumps back within the connection: the frames after it keep their spacing.
        let frame = gst::ClockTime::from_mseconds(40);
        let mut t = Timeline::default();
        for i in 0..20 {
            assert_eq!(t.map(Some(s * 100 + frame * i), None, start), frame * i);
        }
        let back = t.map(Some(gst::ClockTime::ZERO), None, start);
        assert_eq!(back, frame * 20);
        assert_eq!(t.map(Some(frame), None, start), frame * 21);
    }
}
