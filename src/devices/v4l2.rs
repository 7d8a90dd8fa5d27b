//! V4L2: whether a node captures video, and the modes (pixel format, frame size, frame rate) it offers, probed with
//! the `v4l` crate; and the choice of a mode within a ceiling. Probing is a few ioctls on the node: callers run it off
//! the async runtime.

use std::io;
use std::path::Path;

use v4l::capability::Flags;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::video::Capture;

/// What a capture node is and what it can deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The driver's name for the card (`vivid`, `HD Pro Webcam C920`).
    pub card: String,
    pub driver: String,
    /// The physical location as the driver names it (`usb-0000:00:14.0-1`, `platform:vivid-000`).
    pub bus: String,
    /// The node captures only through the multi-planar interface (SoC cameras), which camhub's capture does not
    /// speak yet; its modes are then empty.
    pub multiplanar_only: bool,
    pub modes: Vec<Mode>,
}

/// One frame size of one pixel format, with the frame rates offered at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mode {
    /// The V4L2 FourCC as v4l2-ctl writes it (`YUYV`, `MJPG`, `H264`, `Y10`, `Y16 -BE`).
    pub format: String,
    pub width: u32,
    pub height: u32,
    /// Frame rates as (numerator, denominator) frames per second, fastest first.
    pub rates: Vec<(u32, u32)>,
}

impl Mode {
    pub fn resolution(&self) -> String {
        format!("{}x{}", self.width, self.height)
    }
}

/// How a pixel format reaches H.264.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// The device sends H.264: parsed and passed through.
    H264,
    /// Motion JPEG: decoded, then encoded.
    Jpeg,
    /// Raw frames in this GStreamer video format: converted if needed and encoded.
    Raw(&'static str),
}

/// How camhub ingests a pixel format, if it can.
pub fn handling(format: &str) -> Option<Handling> {
    Some(match format {
        "H264" => Handling::H264,
        "MJPG" | "JPEG" => Handling::Jpeg,
        // V4L2 FourCC -> GStreamer video format, for the raw formats cameras send.
        "YUYV" => Handling::Raw("YUY2"),
        "UYVY" => Handling::Raw("UYVY"),
        "YVYU" => Handling::Raw("YVYU"),
        "NV12" => Handling::Raw("NV12"),
        "NV21" => Handling::Raw("NV21"),
        "NV16" => Handling::Raw("NV16"),
        "YU12" => Handling::Raw("I420"),
        "YV12" => Handling::Raw("YV12"),
        "422P" => Handling::Raw("Y42B"),
        "GREY" => Handling::Raw("GRAY8"),
        "RGB3" => Handling::Raw("RGB"),
        "BGR3" => Handling::Raw("BGR"),
        "RGBP" => Handling::Raw("RGB16"),
        "XR24" | "BX24" => Handling::Raw("BGRx"),
        "AR24" | "BA24" => Handling::Raw("BGRA"),
        _ => return None,
    })
}

/// Preference among formats of equal size and rate: passing H.264 through costs nothing; MJPEG is compressed on the
/// wire (more modes fit the bus) but must be decoded; among raw formats, 4:2:0 and 4:2:2 need the least conversion.
fn preference(format: &str) -> u8 {
    match handling(format) {
        Some(Handling::H264) => 4,
        Some(Handling::Raw("NV12" | "I420" | "YUY2")) => 3,
        Some(Handling::Raw(_)) => 2,
        Some(Handling::Jpeg) => 1,
        None => 0,
    }
}

/// Whether a node's capabilities make it a video capture device: not an output, metadata, VBI, radio, SDR or touch
/// node (touch nodes claim video capture too).
pub fn is_video_capture(caps: Flags) -> bool {
    caps.intersects(Flags::VIDEO_CAPTURE | Flags::VIDEO_CAPTURE_MPLANE) && !caps.contains(Flags::TOUCH)
}

/// Opens the node and reads what it is. `Ok(None)` when it is not a video capture node.
pub fn probe(path: &Path) -> io::Result<Option<Probe>> {
    let device = v4l::Device::with_path(path)?;
    let caps = device.query_caps()?;
    if !is_video_capture(caps.capabilities) {
        return Ok(None);
    }
    let mut modes = Vec::new();
    for description in device.enum_formats()? {
        let fourcc = description.fourcc;
        let format = fourcc_text(&fourcc.repr);
        for size in device.enum_framesizes(fourcc).unwrap_or_default() {
            for (width, height) in sizes(&size.size) {
                let intervals = device.enum_frameintervals(fourcc, width, height).unwrap_or_default();
                let mut rates: Vec<(u32, u32)> = intervals.iter().flat_map(|i| rates(&i.interval)).collect();
                rates.sort_by(|a, b| fps(*b).total_cmp(&fps(*a)));
                rates.dedup();
                modes.push(Mode { format: format.clone(), width, height, rates });
            }
        }
    }
    let multiplanar_only = !caps.capabilities.contains(Flags::VIDEO_CAPTURE);
    Ok(Some(Probe { card: caps.card, driver: caps.driver, bus: caps.bus, multiplanar_only, modes }))
}

/// A FourCC as text, the way v4l2-ctl writes it: seven-bit characters, trailing spaces trimmed (`Y10 ` is `Y10`),
/// and `-BE` for big-endian variants (the high bit of the last byte).
fn fourcc_text(repr: &[u8; 4]) -> String {
    let text: String = repr
        .iter()
        .map(|&b| b & 0x7f)
        .map(|b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' })
        .collect();
    if repr[3] & 0x80 != 0 { format!("{text}-BE") } else { text.trim_end().to_owned() }
}

/// The FourCC code of a format as [`fourcc_text`] writes it (`YUYV`, `Y10`); `None` for big-endian variants and
/// anything longer than four characters.
pub fn fourcc_code(text: &str) -> Option<[u8; 4]> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() > 4 || !text.is_ascii() {
        return None;
    }
    let mut code = [b' '; 4];
    code[..bytes.len()].copy_from_slice(bytes);
    Some(code)
}

/// Standard sizes tried when a device offers a range instead of a list.
const STANDARD_SIZES: &[(u32, u32)] = &[
    (160, 120),
    (320, 240),
    (640, 360),
    (640, 480),
    (800, 600),
    (1024, 768),
    (1280, 720),
    (1280, 960),
    (1600, 1200),
    (1920, 1080),
    (2560, 1440),
    (3840, 2160),
];

fn sizes(size: &FrameSizeEnum) -> Vec<(u32, u32)> {
    match size {
        FrameSizeEnum::Discrete(d) => vec![(d.width, d.height)],
        FrameSizeEnum::Stepwise(s) => {
            let fits = |v: u32, min: u32, max: u32, step: u32| {
                (min..=max).contains(&v) && (step <= 1 || (v - min).is_multiple_of(step))
            };
            STANDARD_SIZES
                .iter()
                .copied()
                .filter(|&(w, h)| {
                    fits(w, s.min_width, s.max_width, s.step_width)
                        && fits(h, s.min_height, s.max_height, s.step_height)
                })
                .collect()
        }
    }
}

/// Standard rates tried when a device offers a range of intervals.
const STANDARD_RATES: &[u32] = &[60, 50, 30, 25, 20, 15, 10, 5];

fn rates(interval: &FrameIntervalEnum) -> Vec<(u32, u32)> {
    match interval {
        // An interval of n/d seconds is d/n frames per second.
        FrameIntervalEnum::Discrete(f) if f.numerator > 0 => vec![(f.denominator, f.numerator)],
        FrameIntervalEnum::Discrete(_) => vec![],
        FrameIntervalEnum::Stepwise(s) => {
            let seconds = |f: &v4l::Fraction| f.numerator as f64 / f.denominator.max(1) as f64;
            let (shortest, longest) = (seconds(&s.min), seconds(&s.max));
            STANDARD_RATES
                .iter()
                .filter(|&&r| (shortest - 1e-9..=longest + 1e-9).contains(&(1.0 / r as f64)))
                .map(|&r| (r, 1))
                .collect()
        }
    }
}

/// Frames per second of a rate.
pub fn fps((num, den): (u32, u32)) -> f64 {
    if den == 0 { 0.0 } else { num as f64 / den as f64 }
}

/// What a camera's settings ask for; `None` fields are free.
#[derive(Debug, Clone, Default)]
pub struct Wanted<'a> {
    pub format: Option<&'a str>,
    pub size: Option<(u32, u32)>,
    pub fps: Option<u32>,
}

/// The mode chosen to stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    pub format: String,
    pub handling: Handling,
    pub width: u32,
    pub height: u32,
    pub rate: (u32, u32),
}

/// The best mode that camhub can ingest and that matches `wanted`: the largest picture within the ceiling (width,
/// height, fps), then the highest rate within it, then the cheapest format. The ceiling (and a wanted rate) is a
/// preference, not a refusal: a device whose every mode exceeds it streams its smallest, slowest mode rather than
/// nothing (a loopback device, say, reports only 30 fps).
pub fn choose(modes: &[Mode], wanted: &Wanted<'_>, ceiling: (u32, u32, u32)) -> Option<Chosen> {
    let (max_w, max_h, max_fps) = ceiling;
    let rate_cap = wanted.fps.unwrap_or(max_fps) as f64 + 1e-6;
    let candidates: Vec<(bool, Chosen)> = modes
        .iter()
        .filter_map(|m| {
            let handling = handling(&m.format)?;
            if wanted.format.is_some_and(|f| f != m.format) || wanted.size.is_some_and(|s| s != (m.width, m.height)) {
                return None;
            }
            let size_fits = wanted.size.is_some() || (m.width <= max_w && m.height <= max_h);
            // Devices that list no rate for a size still stream at their default rate.
            let (rate, rate_fits) = match m.rates.iter().copied().find(|r| fps(*r) <= rate_cap) {
                Some(rate) => (rate, true),
                None => (m.rates.last().copied().unwrap_or((0, 1)), m.rates.is_empty()),
            };
            let chosen = Chosen { format: m.format.clone(), handling, width: m.width, height: m.height, rate };
            Some((size_fits && rate_fits, chosen))
        })
        .collect();
    let area = |c: &Chosen| c.width as u64 * c.height as u64;
    let within = candidates.iter().filter(|(fits, _)| *fits).map(|(_, c)| c);
    if let Some(best) = within.max_by(|a, b| {
        area(a)
            .cmp(&area(b))
            .then(fps(a.rate).total_cmp(&fps(b.rate)))
            .then(preference(&a.format).cmp(&preference(&b.format)))
    }) {
        return Some(best.clone());
    }
    candidates.into_iter().map(|(_, c)| c).min_by(|a, b| {
        area(a)
            .cmp(&area(b))
            .then(fps(a.rate).total_cmp(&fps(b.rate)))
            .then(preference(&b.format).cmp(&preference(&a.format)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(format: &str, width: u32, height: u32, rates: &[u32]) -> Mode {
        Mode { format: format.into(), width, height, rates: rates.iter().map(|&r| (r, 1)).collect() }
    }

    #[test]
    fn the_best_mode_within_the_ceiling_wins() {
        let modes = [
            mode("YUYV", 640, 480, &[30, 15]),
            mode("YUYV", 1920, 1080, &[5]),
            mode("MJPG", 1920, 1080, &[30]),
            mode("MJPG", 3840, 2160, &[30]),
            mode("H264", 1920, 1080, &[30, 15]),
            mode("BA81", 1920, 1080, &[30]),
        ];
        let c = choose(&modes, &Wanted::default(), (1920, 1080, 30)).expect("a mode");
        assert_eq!((c.format.as_str(), c.width, c.height, c.rate), ("H264", 1920, 1080, (30, 1)));
        let c = choose(&modes, &Wanted::default(), (1280, 720, 30)).expect("a mode");
        assert_eq!((c.format.as_str(), c.width, c.rate), ("YUYV", 640, (30, 1)));
        let c = choose(&modes, &Wanted { fps: Some(20), ..Default::default() }, (1920, 1080, 30)).expect("a mode");
        assert_eq!((c.format.as_str(), c.rate), ("H264", (15, 1)));
        let wanted = Wanted { format: Some("YUYV"), size: Some((1920, 1080)), fps: None };
        let c = choose(&modes, &wanted, (640, 480, 30)).expect("an explicit size beats the ceiling");
        assert_eq!((c.width, c.rate, c.handling), (1920, (5, 1), Handling::Raw("YUY2")));
        assert!(choose(&modes, &Wanted { format: Some("BA81"), ..Default::default() }, (1920, 1080, 30)).is_none());
        // Above the ceiling in every mode: the smallest, slowest one rather than nothing.
        let over = [mode("YUYV", 320, 240, &[30]), mode("YUYV", 640, 480, &[30])];
        let c = choose(&over, &Wanted::default(), (1920, 1080, 15)).expect("a mode");
        assert_eq!((c.width, c.rate), (320, (30, 1)));
    }

    #[test]
    fn touch_and_metadata_nodes_are_not_cameras() {
        assert!(is_video_capture(Flags::VIDEO_CAPTURE | Flags::STREAMING));
        assert!(is_video_capture(Flags::VIDEO_CAPTURE_MPLANE));
        assert!(!is_video_capture(Flags::VIDEO_CAPTURE | Flags::TOUCH));
        assert!(!is_video_capture(Flags::META_CAPTURE | Flags::STREAMING));
        assert!(!is_video_capture(Flags::VIDEO_OUTPUT));
        assert!(!is_video_capture(Flags::VBI_CAPTURE));
        assert!(!is_video_capture(Flags::SDR_CAPTURE | Flags::TUNER));
    }

    #[test]
    fn ranges_become_standard_sizes_and_rates() {
        let stepwise = FrameSizeEnum::Stepwise(v4l::framesize::Stepwise {
            min_width: 320,
            max_width: 1280,
            step_width: 16,
            min_height: 240,
            max_height: 720,
            step_height: 16,
        });
        let s = sizes(&stepwise);
        assert!(s.contains(&(640, 480)) && s.contains(&(1280, 720)) && !s.contains(&(1920, 1080)), "{s:?}");
        let interval = FrameIntervalEnum::Stepwise(v4l::frameinterval::Stepwise {
            min: v4l::Fraction::new(1, 30),
            max: v4l::Fraction::new(1, 10),
            step: v4l::Fraction::new(1, 1000),
        });
        assert_eq!(rates(&interval), vec![(30, 1), (25, 1), (20, 1), (15, 1), (10, 1)]);
        assert_eq!(fourcc_text(b"Y10 "), "Y10");
        assert_eq!(fourcc_text(&[b'Y', b'1', b'6', b' ' | 0x80]), "Y16 -BE");
        assert_eq!(fourcc_code("Y10"), Some(*b"Y10 "));
        assert_eq!(fourcc_code("MJPG").map(|c| fourcc_text(&c)).as_deref(), Some("MJPG"));
        assert_eq!(fourcc_code("Y16 -BE"), None);
    }
}
