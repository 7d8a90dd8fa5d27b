//! The inference engine with the real ONNX Runtime and the real models that `scripts/install-models.sh` installs, on
//! real photos decoded by GStreamer: the COCO model finds the person where a person is, the face model the
//! astronaut's face; a missing or corrupt model is an error naming its key. Without the assets these tests fail and
//! say how to install them.

use std::path::{Path, PathBuf};

use camhub::config::{InferenceConfig, InputRange, ModelConfig, ModelKind, Provider};
use camhub::inference::{Detection, Engine, Model};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

pub fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

/// An asset, or a failure that says how to get it.
pub fn asset(relative: &str) -> PathBuf {
    let path = assets().join(relative);
    assert!(path.is_file(), "{} is missing: run scripts/install-models.sh", path.display());
    path
}

fn model(name: &str, file: &str, kind: ModelKind, labels: Vec<String>, input: InputRange) -> ModelConfig {
    ModelConfig { name: name.into(), path: asset(file), kind, labels, min_score: 0.3, threshold: 0.5, input }
}

fn coco() -> ModelConfig {
    let labels = camhub::config::COCO80.iter().map(|l| l.to_string()).collect();
    model("coco", "models/coco-centernet.onnx", ModelKind::Boxes, labels, InputRange::Byte)
}

fn faces() -> ModelConfig {
    model("faces", "models/blazeface-front-128.onnx", ModelKind::BlazeFace, vec!["face".into()], InputRange::Signed)
}

fn engine(models: Vec<ModelConfig>) -> Result<Engine, camhub::config::ConfigError> {
    Engine::start(&InferenceConfig {
        runtime: asset("onnxruntime/libonnxruntime.so"),
        provider: Provider::Cpu,
        threads: 1,
        queue: 4,
        models,
    })
}

/// A photo decoded to raw video, as a camera's decoder would hand it over (I420).
fn photo(name: &str) -> gst::Sample {
    camhub::media::init().expect("gstreamer");
    let path = asset(&format!("photos/{name}"));
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! video/x-raw,format=I420 ! appsink name=out sync=false",
        path.display()
    ))
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .expect("a pipeline");
    let sink = pipeline.by_name("out").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).expect("appsink");
    pipeline.set_state(gst::State::Playing).expect("playing");
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(10)).expect("a decoded photo");
    pipeline.set_state(gst::State::Null).expect("null");
    sample
}

fn best<'a>(found: &'a [Detection], label: &str) -> Option<&'a Detection> {
    found.iter().filter(|d| d.label == label).max_by(|a, b| a.score.total_cmp(&b.score))
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    camhub::inference::decode::iou(&a, &b)
}

fn detect(model: &Model, name: &str) -> Vec<Detection> {
    let found = model.detect(&photo(name), model.config.min_score).expect("inference").detections;
    eprintln!("{name}: {:?}", found.iter().map(|d| (d.label.as_str(), d.score, d.rect)).collect::<Vec<_>>());
    found
}

#[test]
fn the_coco_model_finds_the_person_and_the_dog_where_they_are() {
    let engine = engine(vec![coco()]).expect("engine");
    let model = engine.model("coco").expect("coco");
    assert_eq!(model.shape.width, 512);
    let found = detect(&model, "person.jpg");
    // Measured once by hand on person.jpg (640x424): the woman spans x 190-274, y 98-380; the dog x 60-200,
    // y 262-352.
    let person = best(&found, "person").expect("a person");
    assert!(person.score >= 0.5, "{person:?}");
    let by_hand = [190.0 / 640.0, 98.0 / 424.0, 274.0 / 640.0, 380.0 / 424.0];
    assert!(iou(person.rect, by_hand) >= 0.5, "{:?} against {by_hand:?}", person.rect);
    let dog = best(&found, "dog").expect("a dog");
    assert!(iou(dog.rect, [60.0 / 640.0, 262.0 / 424.0, 200.0 / 640.0, 352.0 / 424.0]) >= 0.5, "{dog:?}");
    let kite = detect(&model, "kite.jpg");
    assert!(best(&kite, "kite").is_some_and(|k| k.score >= 0.4), "kites in kite.jpg");
    assert!(model.status().runs >= 2 && model.status().p50_ms > 0.0);
}

#[test]
fn the_face_model_finds_the_astronauts_face_and_none_in_a_horse_photo() {
    let engine = engine(vec![faces()]).expect("engine");
    let model = engine.model("faces").expect("faces");
    let found = detect(&model, "astronaut.png");
    let face = best(&found, "face").expect("a face");
    assert!(face.score >= 0.8, "{face:?}");
    // astronaut.png is 512x512; her face spans about x 170-290, y 50-200 (measured by hand).
    let by_hand = [170.0 / 512.0, 50.0 / 512.0, 290.0 / 512.0, 200.0 / 512.0];
    assert!(iou(face.rect, by_hand) >= 0.4, "{:?} against {by_hand:?}", face.rect);
    let horses = detect(&model, "horses.jpg");
    assert!(best(&horses, "face").is_none_or(|f| f.score < 0.75), "{horses:?}");
}

#[test]
fn a_missing_or_corrupt_model_is_an_error_naming_its_key() {
    let mut missing = coco();
    missing.path = PathBuf::from("/nonexistent/model.onnx");
    let err = engine(vec![faces(), missing]).expect_err("missing model");
    assert_eq!(err.key, "inference.models[1].path", "{err}");
    let dir = tempfile::tempdir().expect("temp dir");
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"this is not an onnx file").expect("write");
    let mut bad = faces();
    bad.path = corrupt;
    let err = engine(vec![bad]).expect_err("corrupt model");
    assert_eq!(err.key, "inference.models[0].path", "{err}");
}

/// The CUDA provider where there is an NVIDIA GPU and the CUDA build of ONNX Runtime: the model runs on it and says
/// so. Elsewhere (this CPU-only wheel, or no GPU) asking for CUDA runs the model on the CPU, reports `cpu`, and finds
/// the same person; the test says which of the two it checked.
#[test]
fn cuda_when_present_else_the_cpu_with_the_same_answer() {
    let engine = Engine::start(&InferenceConfig {
        runtime: asset("onnxruntime/libonnxruntime.so"),
        provider: Provider::Cuda,
        threads: 1,
        queue: 4,
        models: vec![coco()],
    })
    .expect("engine");
    let model = engine.model("coco").expect("coco");
    let gpu = Path::new("/dev/nvidia0").exists();
    if model.provider == Provider::Cuda {
        eprintln!("checked the CUDA provider");
    } else {
        eprintln!(
            "checked the CPU fallback: {} (the CUDA path runs where an NVIDIA GPU and the onnxruntime-gpu library are)",
            if gpu { "this ONNX Runtime has no CUDA provider" } else { "no NVIDIA GPU here" }
        );
        assert_eq!(engine.provider, Provider::Cpu);
    }
    let found = detect(&model, "person.jpg");
    assert!(best(&found, "person").is_some_and(|p| p.score >= 0.5), "{found:?}");
}
