//! A decoded frame made into a model's input: letterboxed (scaled with its aspect kept, black borders) to the input
//! size by GStreamer's video converter, as RGB, then laid out and scaled the way the model wants (NHWC or NCHW; 0..255,
//! 0..1 or -1..1). `Letterbox` maps the model's boxes back to fractions of the frame.

use gstreamer as gst;
use gstreamer_video as gst_video;

use crate::config::InputRange;

/// Where the frame sits inside the model's input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Input pixels per frame pixel.
    pub scale: f32,
    /// The picture's offset inside the input, in input pixels.
    pub pad_x: f32,
    pub pad_y: f32,
    pub frame_width: u32,
    pub frame_height: u32,
}

impl Letterbox {
    /// The placement of a `frame` in an `input`-sized square or rectangle, centred.
    pub fn fit(frame: (u32, u32), input: (u32, u32)) -> Letterbox {
        let scale = (input.0 as f32 / frame.0 as f32).min(input.1 as f32 / frame.1 as f32);
        let (w, h) = ((frame.0 as f32 * scale).round(), (frame.1 as f32 * scale).round());
        Letterbox {
            scale,
            pad_x: ((input.0 as f32 - w) / 2.0).floor(),
            pad_y: ((input.1 as f32 - h) / 2.0).floor(),
            frame_width: frame.0,
            frame_height: frame.1,
        }
    }

    /// A box in input pixels as fractions of the frame, clamped to it.
    pub fn to_frame(&self, rect: [f32; 4]) -> [f32; 4] {
        let x = |v: f32| ((v - self.pad_x) / self.scale / self.frame_width as f32).clamp(0.0, 1.0);
        let y = |v: f32| ((v - self.pad_y) / self.scale / self.frame_height as f32).clamp(0.0, 1.0);
        [x(rect[0]), y(rect[1]), x(rect[2]), y(rect[3])]
    }
}

/// How a model takes its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputShape {
    pub width: u32,
    pub height: u32,
    /// `[1, 3, H, W]` rather than `[1, H, W, 3]`.
    pub planar: bool,
    pub range: InputRange,
}

/// Converts frames of one format to one model's input; rebuilt when the frames' format changes.
pub struct Preparer {
    shape: InputShape,
    converter: Option<(gst_video::VideoInfo, gst_video::VideoConverter, Letterbox)>,
}

impl Preparer {
    pub fn new(shape: InputShape) -> Preparer {
        Preparer { shape, converter: None }
    }

    /// The model input for `frame` (a raw video sample) and where the picture sits in it.
    pub fn prepare(&mut self, frame: &gst::Sample) -> Result<(Vec<f32>, Letterbox), String> {
        let caps = frame.caps().ok_or("a frame without caps")?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| format!("not raw video: {e}"))?;
        let buffer = frame.buffer().ok_or("a frame without a buffer")?;
        if self.converter.as_ref().is_none_or(|(known, _, _)| *known != info) {
            self.converter = Some(self.converter_for(&info)?);
        }
        let (_, converter, letterbox) = self.converter.as_ref().ok_or("no converter")?;
        let src = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|_| "cannot map the frame".to_owned())?;
        let out_info = converter.out_info().clone();
        let mut out = gst::Buffer::with_size(out_info.size()).map_err(|e| e.to_string())?;
        {
            let out = out.get_mut().ok_or("new buffer not writable")?;
            let mut dest = gst_video::VideoFrameRef::from_buffer_ref_writable(out, &out_info)
                .map_err(|_| "cannot map the input buffer".to_owned())?;
            converter.frame_ref(&src, &mut dest);
        }
        let map = out.map_readable().map_err(|e| e.to_string())?;
        let stride = out_info.stride()[0] as usize;
        Ok((self.tensor(map.as_slice(), stride), *letterbox))
    }

    fn converter_for(
        &self,
        info: &gst_video::VideoInfo,
    ) -> Result<(gst_video::VideoInfo, gst_video::VideoConverter, Letterbox), String> {
        let (w, h) = (self.shape.width, self.shape.height);
        let letterbox = Letterbox::fit((info.width(), info.height()), (w, h));
        let out = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w, h)
            .fps(info.fps())
            .build()
            .map_err(|e| e.to_string())?;
        let mut config = gst_video::VideoConverterConfig::new();
        config.set_dest_x(letterbox.pad_x as i32);
        config.set_dest_y(letterbox.pad_y as i32);
        config.set_dest_width(Some((info.width() as f32 * letterbox.scale).round() as i32));
        config.set_dest_height(Some((info.height() as f32 * letterbox.scale).round() as i32));
        config.set_fill_border(true);
        config.set_border_argb(0xff00_0000);
        // The caller's thread does the work: inference threads are ours, not GStreamer's.
        config.set_threads(1);
        let converter = gst_video::VideoConverter::new(info, &out, Some(config)).map_err(|e| e.to_string())?;
        Ok((info.clone(), converter, letterbox))
    }

    /// Packed RGB rows (with their stride) as the model's tensor values.
    fn tensor(&self, rgb: &[u8], stride: usize) -> Vec<f32> {
        let (w, h) = (self.shape.width as usize, self.shape.height as usize);
        let value: fn(u8) -> f32 = match self.shape.range {
            InputRange::Byte => |v| v as f32,
            InputRange::Unit => |v| v as f32 / 255.0,
            InputRange::Signed => |v| v as f32 / 127.5 - 1.0,
        };
        let mut out = vec![0f32; w * h * 3];
        for y in 0..h {
            let row = &rgb[y * stride..y * stride + w * 3];
            for x in 0..w {
                for c in 0..3 {
                    let at = if self.shape.planar { c * w * h + y * w + x } else { (y * w + x) * 3 + c };
                    out[at] = value(row[x * 3 + c]);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer_video::prelude::*;

    #[test]
    fn a_wide_frame_is_centred_with_bands_above_and_below() {
        let l = Letterbox::fit((1280, 720), (512, 512));
        assert_eq!(l.scale, 0.4);
        assert_eq!((l.pad_x, l.pad_y), (0.0, 112.0));
        // The picture's corners map to the frame's.
        assert_eq!(l.to_frame([0.0, 112.0, 512.0, 400.0]), [0.0, 0.0, 1.0, 1.0]);
        // A box in the band is clamped into the frame.
        assert_eq!(l.to_frame([256.0, 0.0, 300.0, 120.0])[1], 0.0);
    }

    #[test]
    fn frames_become_tensors_letterboxed_in_the_models_layout() {
        crate::media::init().expect("gstreamer");
        // A 4x2 frame, left half red, right half blue, into a 4x4 input: one black row above and below... twice.
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, 4, 2).build().expect("info");
        let mut buffer = gst::Buffer::with_size(info.size()).expect("buffer");
        {
            let b = buffer.get_mut().expect("writable");
            let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(b, &info).expect("map");
            let stride = frame.plane_stride()[0] as usize;
            let data = frame.plane_data_mut(0).expect("plane");
            for y in 0..2 {
                for x in 0..4 {
                    let px = if x < 2 { [255, 0, 0] } else { [0, 0, 255] };
                    data[y * stride + x * 3..y * stride + x * 3 + 3].copy_from_slice(&px);
                }
            }
        }
        let sample = gst::Sample::builder().buffer(&buffer).caps(&info.to_caps().expect("caps")).build();
        let shape = InputShape { width: 4, height: 4, planar: false, range: InputRange::Byte };
        let (tensor, letterbox) = Preparer::new(shape).prepare(&sample).expect("prepared");
        assert_eq!((letterbox.pad_x, letterbox.pad_y, letterbox.scale), (0.0, 1.0, 1.0));
        let px = |x: usize, y: usize| &tensor[(y * 4 + x) * 3..(y * 4 + x) * 3 + 3];
        assert_eq!(px(0, 0), [0.0, 0.0, 0.0], "the border is black");
        assert_eq!(px(0, 1), [255.0, 0.0, 0.0]);
        assert_eq!(px(3, 2), [0.0, 0.0, 255.0]);
        assert_eq!(px(3, 3), [0.0, 0.0, 0.0]);
        let planar = InputShape { planar: true, range: InputRange::Signed, ..shape };
        let (tensor, _) = Preparer::new(planar).prepare(&sample).expect("prepared");
        // Channel 0 (red) of pixel (0, 1), then channel 2 (blue) of pixel (3, 2), in -1..1.
        assert_eq!(tensor[4], 1.0);
        assert_eq!(tensor[2 * 16 + 2 * 4 + 3], 1.0);
        assert_eq!(tensor[0], -1.0);
    }
}
