//! `/metrics`: Prometheus text exposition of the process, its connections, each camera, each stream, and detection
//! (per camera frame counts and objects, the inference queue's drops, and per model an inference-time histogram).

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Server;
use crate::base::CameraStatus;
use crate::camera::CameraState;
use crate::media::hub::StreamStats;

pub fn routes() -> Router<Server> {
    Router::new().route("/metrics", get(metrics))
}

/// One camera's value of a metric.
type CameraSample = fn(&CameraState, &StreamStats) -> u64;

async fn metrics(State(server): State<Server>) -> Response {
    let app = &server.app;
    let mut out = String::new();
    let p = app.process_metrics().await.unwrap_or_default();
    let _ = writeln!(out, "# TYPE camhub_uptime_seconds gauge\ncamhub_uptime_seconds {}", app.uptime_secs());
    let _ = writeln!(out, "# TYPE camhub_resident_memory_bytes gauge\ncamhub_resident_memory_bytes {}", p.rss_bytes);
    let connections = server.rpc.sessions.len();
    let _ = writeln!(out, "# TYPE camhub_websocket_connections gauge\ncamhub_websocket_connections {connections}");
    // One look at each camera; the text format then wants each metric's samples together.
    let cameras: Vec<_> = app.cameras().list().into_iter().map(|c| (c.state(), c.hub.stats(), c)).collect();
    let families: [(&str, &str, CameraSample); 4] = [
        ("camhub_camera_up", "gauge", |s, _| (s.status == CameraStatus::Connected) as u64),
        ("camhub_camera_frames_total", "counter", |_, st| st.frames),
        ("camhub_camera_received_bytes_total", "counter", |_, st| st.bytes),
        ("camhub_camera_reconnects_total", "counter", |s, _| s.reconnects),
    ];
    for (name, kind, value) in families {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (state, stats, camera) in &cameras {
            let _ = writeln!(out, "{name}{{camera=\"{}\"}} {}", camera.id, value(state, stats));
        }
    }
    let streams = app.streams();
    let counters: Vec<_> = cameras.iter().map(|(_, _, c)| (&c.id, streams.counters(&c.id))).collect();
    let _ = writeln!(out, "# TYPE camhub_stream_readers gauge");
    for (id, c) in &counters {
        let (rtsp, webrtc) = (c.rtsp_readers.load(Relaxed), c.webrtc_sessions.load(Relaxed));
        let _ = writeln!(out, "camhub_stream_readers{{camera=\"{id}\",protocol=\"rtsp\"}} {rtsp}");
        let _ = writeln!(out, "camhub_stream_readers{{camera=\"{id}\",protocol=\"webrtc\"}} {webrtc}");
    }
    let _ = writeln!(out, "# TYPE camhub_stream_sent_bytes_total counter");
    for (id, c) in &counters {
        let _ = writeln!(out, "camhub_stream_sent_bytes_total{{camera=\"{id}\"}} {}", c.bytes_sent.load(Relaxed));
    }
    detection(&mut out, &app.detections().status());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

fn detection(out: &mut String, status: &crate::detection::InferenceStatus) {
    type Sample = fn(&crate::detection::CameraDetection) -> u64;
    let families: [(&str, Sample); 4] = [
        ("camhub_detection_frames_decoded_total", |c| c.frames_decoded),
        ("camhub_detection_frames_inferred_total", |c| c.frames_inferred),
        ("camhub_detection_dropped_frames_total", |c| c.dropped),
        ("camhub_detection_objects_total", |c| c.objects),
    ];
    for (name, value) in families {
        let _ = writeln!(out, "# TYPE {name} counter");
        for c in &status.cameras {
            let _ = writeln!(out, "{name}{{camera=\"{}\"}} {}", c.camera, value(c));
        }
    }
    let _ = writeln!(out, "# TYPE camhub_inference_queue_dropped_total counter");
    let _ = writeln!(out, "camhub_inference_queue_dropped_total {}", status.dropped);
    let _ = writeln!(out, "# TYPE camhub_inference_seconds histogram");
    for m in &status.models {
        let mut cumulative = 0;
        for (i, count) in m.buckets.iter().enumerate() {
            cumulative += count;
            let le = crate::inference::BUCKETS_MS.get(i).map(|ms| format!("{}", ms / 1000.0)).unwrap_or("+Inf".into());
            let _ = writeln!(out, "camhub_inference_seconds_bucket{{model=\"{}\",le=\"{le}\"}} {cumulative}", m.name);
        }
        let _ = writeln!(out, "camhub_inference_seconds_sum{{model=\"{}\"}} {}", m.name, m.sum_ms / 1000.0);
        let _ = writeln!(out, "camhub_inference_seconds_count{{model=\"{}\"}} {}", m.name, m.runs);
    }
}
