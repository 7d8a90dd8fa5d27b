//! What a detection model's outputs mean: the decoders of the common output layouts (YOLO v8/v11 `[1, 4+C, N]`, YOLO v5
//! `[1, N, 5+C]`, boxes-ready `[1, N, 6]` as CenterNet and SSD exports give, BlazeFace's anchors) into boxes in the
//! model's input pixels, and non-maximum suppression.

use crate::config::ModelKind;

/// One detected object, in the model's input pixels (before the letterbox is undone).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawBox {
    pub class: usize,
    pub score: f32,
    /// x1, y1, x2, y2.
    pub rect: [f32; 4],
}

/// One output tensor: its shape and its values, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub shape: &'a [i64],
    pub data: &'a [f32],
}

/// Boxes overlapping a better one of the same class by more than this are the same object.
pub const NMS_IOU: f32 = 0.45;
/// At most this many boxes leave a decoder.
const MAX_BOXES: usize = 300;

/// Decodes `outputs` of a model of `kind` with input `size` (width, height), keeping boxes scoring at least `min_score`.
pub fn decode(kind: ModelKind, outputs: &[Output], size: (u32, u32), min_score: f32) -> Result<Vec<RawBox>, String> {
    let boxes = match kind {
        ModelKind::Boxes => boxes_ready(first(outputs)?, size, min_score)?,
        ModelKind::YoloV8 => nms(yolo_v8(first(outputs)?, min_score)?, NMS_IOU),
        ModelKind::YoloV5 => nms(yolo_v5(first(outputs)?, min_score)?, NMS_IOU),
        ModelKind::BlazeFace => nms(blazeface(outputs, size, min_score)?, 0.3),
    };
    Ok(boxes)
}

fn first<'a>(outputs: &'a [Output<'a>]) -> Result<&'a Output<'a>, String> {
    outputs.first().ok_or_else(|| "the model has no output".to_owned())
}

/// The last two dimensions of a `[1, A, B]` (or `[A, B]`) output.
fn matrix(output: &Output) -> Result<(usize, usize), String> {
    let dims: Vec<usize> = output.shape.iter().map(|&d| d.max(0) as usize).collect();
    let (a, b) = match dims.as_slice() {
        [1, a, b] | [a, b] => (*a, *b),
        _ => return Err(format!("expected an output of shape [1, A, B], got {:?}", output.shape)),
    };
    if a * b != output.data.len() {
        return Err(format!("output shape {:?} does not match its {} values", output.shape, output.data.len()));
    }
    Ok((a, b))
}

/// `[1, N, 6]`: x1, y1, x2, y2, score, class per row, already suppressed. Coordinates are input pixels, or fractions
/// of the input when every one is within [0, 1.5] (some exports normalise).
fn boxes_ready(output: &Output, size: (u32, u32), min_score: f32) -> Result<Vec<RawBox>, String> {
    let (rows, cols) = matrix(output)?;
    if cols < 6 {
        return Err(format!("a boxes output needs 6 values per row, got {cols}"));
    }
    let rows: Vec<&[f32]> = output.data.chunks_exact(cols).take(rows).collect();
    let normalised = rows.iter().filter(|r| r[4] >= min_score).all(|r| r[..4].iter().all(|v| (-0.5..=1.5).contains(v)));
    let (sx, sy) = if normalised { (size.0 as f32, size.1 as f32) } else { (1.0, 1.0) };
    Ok(rows
        .iter()
        .filter(|r| r[4] >= min_score && r[5] >= 0.0)
        .map(|r| RawBox { class: r[5] as usize, score: r[4], rect: [r[0] * sx, r[1] * sy, r[2] * sx, r[3] * sy] })
        .take(MAX_BOXES)
        .collect())
}

/// YOLO v8/v11: `[1, 4+C, N]`, a column per candidate: cx, cy, w, h, then one score per class (no objectness).
fn yolo_v8(output: &Output, min_score: f32) -> Result<Vec<RawBox>, String> {
    let (rows, n) = matrix(output)?;
    if rows < 5 {
        return Err(format!("a YOLOv8 output needs 4 + classes rows, got {rows}"));
    }
    let at = |row: usize, i: usize| output.data[row * n + i];
    let mut boxes = Vec::new();
    for i in 0..n {
        let (class, score) =
            (4..rows).map(|r| (r - 4, at(r, i))).fold((0, f32::MIN), |best, c| if c.1 > best.1 { c } else { best });
        if score >= min_score {
            boxes.push(RawBox { class, score, rect: centre_box(at(0, i), at(1, i), at(2, i), at(3, i)) });
        }
    }
    Ok(boxes)
}

/// YOLO v5/v7: `[1, N, 5+C]`, a row per candidate: cx, cy, w, h, objectness, then class scores; a box's score is
/// objectness times its best class score.
fn yolo_v5(output: &Output, min_score: f32) -> Result<Vec<RawBox>, String> {
    let (_, cols) = matrix(output)?;
    if cols < 6 {
        return Err(format!("a YOLOv5 output needs 5 + classes values per row, got {cols}"));
    }
    let mut boxes = Vec::new();
    for r in output.data.chunks_exact(cols) {
        if r[4] < min_score {
            continue;
        }
        let (class, best) =
            r[5..].iter().enumerate().fold((0, f32::MIN), |b, (c, &s)| if s > b.1 { (c, s) } else { b });
        let score = r[4] * best;
        if score >= min_score {
            boxes.push(RawBox { class, score, rect: centre_box(r[0], r[1], r[2], r[3]) });
        }
    }
    Ok(boxes)
}

fn centre_box(cx: f32, cy: f32, w: f32, h: f32) -> [f32; 4] {
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

/// MediaPipe BlazeFace (front, 128x128): two scales of anchors, 512 at stride 8 (2 per cell) and 384 at stride 16
/// (6 per cell), each with a score logit and 16 regressors (box centre offset and size in input pixels, then six
/// key points, unused here). The outputs are told apart by their shapes, not their names.
fn blazeface(outputs: &[Output], size: (u32, u32), min_score: f32) -> Result<Vec<RawBox>, String> {
    let find = |anchors: usize, values: usize| {
        outputs
            .iter()
            .find(|o| matrix(o).is_ok_and(|(a, v)| a == anchors && v == values))
            .ok_or_else(|| format!("BlazeFace expects outputs [1,{anchors},{values}]; this model has other shapes"))
    };
    let scales = [(find(512, 1)?, find(512, 16)?, 8usize, 2usize), (find(384, 1)?, find(384, 16)?, 16, 6)];
    let logit_floor = (min_score / (1.0 - min_score).max(1e-6)).ln();
    let mut boxes = Vec::new();
    for (scores, regressors, stride, per_cell) in scales {
        let (cols, rows) = (size.0 as usize / stride, size.1 as usize / stride);
        for (i, &logit) in scores.data.iter().enumerate() {
            if logit < logit_floor {
                continue;
            }
            let cell = i / per_cell;
            if cell >= cols * rows {
                break;
            }
            // The anchor's centre; regressors are offsets and sizes in input pixels (MediaPipe's scale equals the
            // input size, and the anchors have a fixed unit size).
            let (ax, ay) = (((cell % cols) as f32 + 0.5) * stride as f32, ((cell / cols) as f32 + 0.5) * stride as f32);
            let r = &regressors.data[i * 16..i * 16 + 4];
            let (cx, cy) = (ax + r[0], ay + r[1]);
            boxes.push(RawBox { class: 0, score: sigmoid(logit), rect: centre_box(cx, cy, r[2], r[3]) });
        }
    }
    Ok(boxes)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-80.0, 80.0)).exp())
}

/// Intersection over union of two `[x1, y1, x2, y2]` rectangles.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Greedy non-maximum suppression per class: best first, dropping boxes of the same class that overlap a kept one by
/// more than `threshold`.
pub fn nms(mut boxes: Vec<RawBox>, threshold: f32) -> Vec<RawBox> {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<RawBox> = Vec::new();
    for b in boxes {
        if kept.len() == MAX_BOXES {
            break;
        }
        if !kept.iter().any(|k| k.class == b.class && iou(&k.rect, &b.rect) > threshold) {
            kept.push(b);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert!((iou(&a, &a) - 1.0).abs() < 1e-6);
        assert_eq!(iou(&a, &[20.0, 20.0, 30.0, 30.0]), 0.0);
        // Overlap 5x10 = 50, union 150.
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_per_class() {
        let b = |class, score, x| RawBox { class, score, rect: [x, 0.0, x + 10.0, 10.0] };
        let kept = nms(vec![b(0, 0.6, 1.0), b(0, 0.9, 0.0), b(1, 0.5, 0.0), b(0, 0.7, 50.0)], NMS_IOU);
        assert_eq!(kept, vec![b(0, 0.9, 0.0), b(0, 0.7, 50.0), b(1, 0.5, 0.0)]);
    }

    #[test]
    fn yolo_v8_columns_are_candidates_and_the_best_class_wins() {
        // Two candidates, two classes: rows cx, cy, w, h, class 0, class 1.
        let data = [100.0, 300.0, 100.0, 300.0, 20.0, 40.0, 20.0, 40.0, 0.1, 0.2, 0.8, 0.3];
        let output = Output { shape: &[1, 6, 2], data: &data };
        let boxes = decode(ModelKind::YoloV8, &[output], (640, 640), 0.25).expect("decodes");
        assert_eq!(
            boxes,
            vec![
                RawBox { class: 1, score: 0.8, rect: [90.0, 90.0, 110.0, 110.0] },
                RawBox { class: 1, score: 0.3, rect: [280.0, 280.0, 320.0, 320.0] },
            ]
        );
    }

    #[test]
    fn yolo_v5_scores_are_objectness_times_class() {
        let data = [50.0, 50.0, 10.0, 10.0, 0.9, 0.1, 0.8, 50.0, 50.0, 10.0, 10.0, 0.2, 0.9, 0.1];
        let output = Output { shape: &[1, 2, 7], data: &data };
        let boxes = decode(ModelKind::YoloV5, &[output], (640, 640), 0.25).expect("decodes");
        assert_eq!(boxes.len(), 1);
        assert_eq!(boxes[0].class, 1);
        assert!((boxes[0].score - 0.72).abs() < 1e-6);
        assert_eq!(boxes[0].rect, [45.0, 45.0, 55.0, 55.0]);
    }

    #[test]
    fn boxes_ready_rows_in_pixels_or_fractions() {
        let pixels = [10.0, 20.0, 110.0, 220.0, 0.7, 2.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.0];
        let boxes =
            decode(ModelKind::Boxes, &[Output { shape: &[1, 2, 6], data: &pixels }], (512, 512), 0.5).expect("ok");
        assert_eq!(boxes, vec![RawBox { class: 2, score: 0.7, rect: [10.0, 20.0, 110.0, 220.0] }]);
        let fractions = [0.25, 0.5, 0.75, 1.0, 0.9, 0.0];
        let boxes =
            decode(ModelKind::Boxes, &[Output { shape: &[1, 1, 6], data: &fractions }], (512, 256), 0.5).expect("ok");
        assert_eq!(boxes[0].rect, [128.0, 128.0, 384.0, 256.0]);
    }

    #[test]
    fn a_wrong_shape_is_an_error_not_a_panic() {
        let data = [0.0; 10];
        for kind in ModelKind::ALL {
            let err = decode(kind, &[Output { shape: &[1, 2, 5], data: &data }], (128, 128), 0.5);
            assert!(err.is_err(), "{kind:?}");
        }
        assert!(decode(ModelKind::Boxes, &[], (128, 128), 0.5).is_err());
    }

    #[test]
    fn blazeface_places_a_box_on_its_anchor() {
        let (s8, r8) = (vec![-10.0f32; 512], vec![0.0f32; 512 * 16]);
        let (mut s16, mut r16) = (vec![-10.0f32; 384], vec![0.0f32; 384 * 16]);
        // Stride 16, cell (x 3, y 2) of 8x8, its first anchor: centre (56, 40); 20x30 box, centre moved by (+4, -2).
        let i = (2 * 8 + 3) * 6;
        s16[i] = 3.0;
        r16[i * 16..i * 16 + 4].copy_from_slice(&[4.0, -2.0, 20.0, 30.0]);
        let outputs = [
            Output { shape: &[1, 512, 16], data: &r8 },
            Output { shape: &[1, 384, 16], data: &r16 },
            Output { shape: &[1, 512, 1], data: &s8 },
            Output { shape: &[1, 384, 1], data: &s16 },
        ];
        let boxes = decode(ModelKind::BlazeFace, &outputs, (128, 128), 0.5).expect("decodes");
        assert_eq!(boxes.len(), 1);
        assert!((boxes[0].score - sigmoid(3.0)).abs() < 1e-6);
        assert_eq!(boxes[0].rect, [50.0, 23.0, 70.0, 53.0]);
    }
}
