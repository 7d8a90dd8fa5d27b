//! Keeping a stream's output timestamps moving forward when its source's clock does not: what the publishing feeds
//! and the recorder share. A frame a little behind the last (sent out of presentation order), or too close after it,
//! is placed `MIN_STEP` after it;
//! a source clock that jumps back (a camera or an RTSP server restarting its pipeline within one connection) starts a
//! new timeline one frame spacing after the last frame, instead of stamping every frame just after the last until the
//! clock catches up, which players and muxers read as seconds of frames at one instant.

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
}
