//! One camera's object tracker: detections of successive frames matched to tracks by overlap (same label, greedy by
//! IoU), a track confirmed when the median of its recent scores reaches the threshold (Frigate's rule, which one lucky
//! frame cannot pass), and the events a client sees: `new` when confirmed, `update` when its best score rises or it
//! moves (at most once a second) and every five seconds while it stays, `end` when it has not been seen for `end_after`.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use crate::inference::Detection;
use crate::inference::decode::iou;

/// Scores kept per track for the median.
const SCORES_KEPT: usize = 10;
/// A detection belongs to a track when their boxes overlap at least this much.
const MATCH_IOU: f32 = 0.3;
/// Updates of one track are at least this far apart.
const UPDATE_EVERY: Duration = Duration::from_secs(1);
/// A box whose overlap with the last reported one falls below this has moved.
const MOVED_IOU: f32 = 0.7;
/// An object still in view that neither improves nor moves is reported this often, so a client that missed nothing
/// knows it is still there (the web page drops a box not heard of for 10 s).
const STILL_THERE: Duration = Duration::from_secs(5);

/// What happened to a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    New,
    Update,
    End,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::New => "new",
            Phase::Update => "update",
            Phase::End => "end",
        }
    }
}

/// A tracked object as an event reports it.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub phase: Phase,
    pub track: u64,
    pub label: String,
    /// This frame's score (the last one for `end`).
    pub score: f32,
    pub top_score: f32,
    /// The box in this frame, as fractions of the frame.
    pub rect: [f32; 4],
    pub frame_time: SystemTime,
    /// This frame is the best so far: its picture is worth keeping.
    pub best: bool,
}

#[derive(Debug)]
struct Track {
    id: u64,
    label: String,
    rect: [f32; 4],
    scores: VecDeque<f32>,
    top_score: f32,
    last_seen: Instant,
    last_frame_time: SystemTime,
    confirmed: bool,
    /// The box and best score when an event last went out, and when.
    reported: Option<([f32; 4], f32, Instant)>,
}

impl Track {
    fn median(&self) -> f32 {
        let mut s: Vec<f32> = self.scores.iter().copied().collect();
        s.sort_by(f32::total_cmp);
        // With an even count the lower middle: a track needs most of its frames at the threshold.
        s[(s.len() - 1) / 2]
    }
}

#[derive(Debug)]
pub struct Tracker {
    tracks: Vec<Track>,
    next_id: u64,
    threshold: f32,
    end_after: Duration,
}

impl Tracker {
    pub fn new(threshold: f32, end_after: Duration) -> Tracker {
        Tracker { tracks: Vec::new(), next_id: 1, threshold, end_after }
    }

    /// Whether any confirmed object is in view.
    pub fn active(&self) -> bool {
        self.tracks.iter().any(|t| t.confirmed)
    }

    pub fn set_threshold(&mut self, threshold: f32) {
        self.threshold = threshold;
    }

    /// Feeds one frame's detections (already filtered by label and minimum score), seen at `now`; returns the events
    /// they cause, ends of tracks gone too long included.
    pub fn update(&mut self, detections: &[Detection], now: Instant, frame_time: SystemTime) -> Vec<Sighting> {
        let mut events = Vec::new();
        let mut matched = vec![false; self.tracks.len()];
        // Best-scoring detections pick their track first.
        let mut order: Vec<&Detection> = detections.iter().collect();
        order.sort_by(|a, b| b.score.total_cmp(&a.score));
        for d in order {
            let best = self
                .tracks
                .iter()
                .enumerate()
                .filter(|(i, t)| !matched[*i] && t.label == d.label)
                .map(|(i, t)| (i, iou(&t.rect, &d.rect)))
                .filter(|(_, overlap)| *overlap >= MATCH_IOU)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let index = match best {
                Some((i, _)) => i,
                None => {
                    self.tracks.push(Track {
                        id: self.next_id,
                        label: d.label.clone(),
                        rect: d.rect,
                        scores: VecDeque::new(),
                        top_score: 0.0,
                        last_seen: now,
                        last_frame_time: frame_time,
                        confirmed: false,
                        reported: None,
                    });
                    self.next_id += 1;
                    matched.push(false);
                    self.tracks.len() - 1
                }
            };
            matched[index] = true;
            let threshold = self.threshold;
            let t = &mut self.tracks[index];
            t.rect = d.rect;
            t.last_seen = now;
            t.last_frame_time = frame_time;
            if t.scores.len() == SCORES_KEPT {
                t.scores.pop_front();
            }
            t.scores.push_back(d.score);
            let best = d.score > t.top_score;
            if best {
                t.top_score = d.score;
            }
            if !t.confirmed {
                if t.median() >= threshold {
                    t.confirmed = true;
                    t.reported = Some((t.rect, t.top_score, now));
                    events.push(sighting(t, Phase::New, d.score, frame_time, true));
                }
                continue;
            }
            let Some((rect, top, at)) = t.reported else { continue };
            let changed = t.top_score > top + 0.02 || iou(&rect, &t.rect) < MOVED_IOU;
            let since = now.duration_since(at);
            if (changed && since >= UPDATE_EVERY) || since >= STILL_THERE {
                t.reported = Some((t.rect, t.top_score, now));
                events.push(sighting(t, Phase::Update, d.score, frame_time, best));
            }
        }
        events.extend(self.expire(now));
        events
    }

    /// Ends tracks unseen for `end_after`; unconfirmed ones vanish without an event.
    pub fn expire(&mut self, now: Instant) -> Vec<Sighting> {
        let end_after = self.end_after;
        let mut events = Vec::new();
        self.tracks.retain(|t| {
            if now.duration_since(t.last_seen) < end_after {
                return true;
            }
            if t.confirmed {
                let last = t.scores.back().copied().unwrap_or(0.0);
                events.push(sighting(t, Phase::End, last, t.last_frame_time, false));
            }
            false
        });
        events
    }

    /// Ends every track now (detection turned off, camera removed).
    pub fn end_all(&mut self) -> Vec<Sighting> {
        let events = self
            .tracks
            .iter()
            .filter(|t| t.confirmed)
            .map(|t| sighting(t, Phase::End, t.scores.back().copied().unwrap_or(0.0), t.last_frame_time, false))
            .collect();
        self.tracks.clear();
        events
    }
}

fn sighting(t: &Track, phase: Phase, score: f32, frame_time: SystemTime, best: bool) -> Sighting {
    Sighting {
        phase,
        track: t.id,
        label: t.label.clone(),
        score,
        top_score: t.top_score,
        rect: t.rect,
        frame_time,
        best,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(score: f32, x: f32) -> Detection {
        Detection { class: 0, label: "person".into(), score, rect: [x, 0.2, x + 0.2, 0.8] }
    }

    #[test]
    fn one_good_frame_among_poor_ones_does_not_confirm_a_track() {
        let t0 = Instant::now();
        let now = SystemTime::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut tracker = Tracker::new(0.6, Duration::from_secs(3));
        assert_eq!(tracker.update(&[person(0.9, 0.1)], t0, now).len(), 1, "a clear first frame confirms at once");
        let mut tracker = Tracker::new(0.6, Duration::from_secs(3));
        tracker.update(&[person(0.5, 0.1)], at(0), now);
        tracker.update(&[person(0.5, 0.1)], at(200), now);
        assert!(tracker.update(&[person(0.95, 0.1)], at(400), now).is_empty(), "median 0.5");
        assert!(tracker.update(&[person(0.7, 0.1)], at(600), now).is_empty(), "median of 0.5 0.5 0.7 0.95 is 0.5");
        let events = tracker.update(&[person(0.7, 0.1)], at(800), now);
        assert_eq!(events.len(), 1, "median of 0.5 0.5 0.7 0.7 0.95 is 0.7");
        assert_eq!((events[0].phase, events[0].top_score), (Phase::New, 0.95));
    }

    #[test]
    fn new_update_end_for_one_object_that_moves_then_leaves() {
        let mut tracker = Tracker::new(0.6, Duration::from_secs(2));
        let t0 = Instant::now();
        let now = SystemTime::now();
        let e = tracker.update(&[person(0.7, 0.1)], t0, now);
        assert_eq!((e.len(), e[0].phase, e[0].track), (1, Phase::New, 1));
        // Moved a little within a second: the same track, no event yet.
        assert!(tracker.update(&[person(0.7, 0.15)], t0 + Duration::from_millis(500), now).is_empty());
        // Moved more, a second after the last event: an update.
        let e = tracker.update(&[person(0.8, 0.2)], t0 + Duration::from_millis(1200), now);
        assert_eq!((e.len(), e[0].phase, e[0].track), (1, Phase::Update, 1));
        assert!((e[0].top_score - 0.8).abs() < 1e-6 && e[0].best);
        assert!(tracker.active());
        // Standing still: an update every five seconds says it is still there.
        assert!(tracker.update(&[person(0.8, 0.2)], t0 + Duration::from_millis(4000), now).is_empty());
        let e = tracker.update(&[person(0.8, 0.2)], t0 + Duration::from_millis(6300), now);
        assert_eq!((e.len(), e[0].phase), (1, Phase::Update));
        // Gone: nothing until end_after, then one end.
        assert!(tracker.update(&[], t0 + Duration::from_millis(7500), now).is_empty());
        let e = tracker.update(&[], t0 + Duration::from_millis(8400), now);
        assert_eq!((e.len(), e[0].phase, e[0].track), (1, Phase::End, 1));
        assert!(!tracker.active());
    }

    #[test]
    fn two_objects_far_apart_are_two_tracks_and_labels_never_mix() {
        let mut tracker = Tracker::new(0.5, Duration::from_secs(2));
        let t0 = Instant::now();
        let now = SystemTime::now();
        let mut dog = person(0.9, 0.1);
        dog.label = "dog".into();
        let e = tracker.update(&[person(0.9, 0.1), person(0.8, 0.7), dog], t0, now);
        let mut tracks: Vec<(u64, String)> = e.iter().map(|s| (s.track, s.label.clone())).collect();
        tracks.sort();
        assert_eq!(tracks.len(), 3);
        assert_eq!(tracks.iter().filter(|(_, l)| l == "dog").count(), 1);
        assert_eq!(tracker.end_all().len(), 3);
    }
}
