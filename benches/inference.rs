//! Inference time in camhub's own engine, in process and on an idle machine: each model (the COCO CenterNet and
//! BlazeFace files of `scripts/install-models.sh`) runs on its photo, decoded by GStreamer as a camera's frame would
//! be, through `Model::detect` (letterbox, tensor, session run, decode) on this thread. The figure is the session run
//! alone, as `get_inference_status` reports it, so that it compares with `scripts/bench/inference_peer.py`
//! (ONNX Runtime's Python API on the same file and photo), which `scripts/bench/inference.sh` runs beside it.
//!
//! Run with `cargo bench --bench inference` (or through `scripts/bench/inference.sh`). Prints one JSON object per model
//! on stdout: `{"model", "photo", "runs", "p50_ms", "p99_ms", "mean_ms", "prepare_p50_ms"}`. Settings, from the
//! environment: `INFERENCE_RUNS` (default 100) runs per model after 3 warm-up runs. Under `cargo test --benches` (no
//! `--bench` argument) it does nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use camhub::config::{COCO80, InferenceConfig, InputRange, ModelConfig, ModelKind, Provider};
use camhub::inference::{Engine, percentile};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

fn asset(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets").join(relative);
    if !path.is_file() {
        eprintln!("inference bench: {} is missing: run scripts/install-models.sh", path.display());
        std::process::exit(1);
    }
    path
}

/// A photo as a camera's decoder hands frames over: raw I420.
fn photo(path: &Path) -> gst::Sample {
    let launch = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! video/x-raw,format=I420 ! appsink name=out sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&launch).expect("pipeline").downcast::<gst::Pipeline>().expect("a pipeline");
    let sink = pipeline.by_name("out").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).expect("appsink");
    pipeline.set_state(gst::State::Playing).expect("playing");
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(10)).expect("a decoded photo");
    pipeline.set_state(gst::State::Null).expect("null");
    sample
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    camhub::media::init().expect("gstreamer");
    let runs: usize = std::env::var("INFERENCE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(100).max(1);
    let coco = ModelConfig {
        name: "coco".into(),
        path: asset("models/coco-centernet.onnx"),
        kind: ModelKind::Boxes,
        labels: COCO80.iter().map(|l| l.to_string()).collect(),
        min_score: 0.4,
        threshold: 0.5,
        input: InputRange::Byte,
    };
    let faces = ModelConfig {
        name: "blazeface".into(),
        path: asset("models/blazeface-front-128.onnx"),
        kind: ModelKind::BlazeFace,
        labels: vec!["face".into()],
        min_score: 0.6,
        threshold: 0.75,
        input: InputRange::Signed,
    };
    let engine = Engine::start(&InferenceConfig {
        runtime: asset("onnxruntime/libonnxruntime.so"),
        provider: Provider::Cpu,
        threads: 1,
        queue: 1,
        models: vec![coco, faces],
    })
    .unwrap_or_else(|e| panic!("engine: {e}"));
    for (name, file) in [("coco", "person.jpg"), ("blazeface", "astronaut.png")] {
        let model = engine.model(name).expect("loaded");
        let frame = photo(&asset(&format!("photos/{file}")));
        for _ in 0..3 {
            model.detect(&frame, model.config.min_score).expect("warm-up");
        }
        let (mut run, mut prepare): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let i = model.detect(&frame, model.config.min_score).expect("inference");
            run.push(ms(i.run));
            prepare.push(ms(i.prepare));
        }
        let mean = run.iter().sum::<f64>() / run.len() as f64;
        run.sort_by(f64::total_cmp);
        prepare.sort_by(f64::total_cmp);
        println!(
            "{}",
            serde_json::json!({
                "model": name, "photo": file, "runs": runs,
                "p50_ms": round(percentile(&run, 0.5)), "p99_ms": round(percentile(&run, 0.99)), "mean_ms": round(mean),
                "prepare_p50_ms": round(percentile(&prepare, 0.5)),
            })
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
