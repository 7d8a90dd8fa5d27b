//! `/metrics`: the process, its connections, each camera, each stream, storage per root, and detection (per camera
//! frame counts and objects, the inference queue's drops, per model an inference-time histogram), written by the
//! `prometheus-client` crate in base units (seconds, bytes) with `_total` on counters. A scrape reads the figures once
//! into [`Figures`] and encodes them (OpenMetrics when the scraper asks for it, else the Prometheus text format);
//! nothing is counted here, so a scrape changes nothing.

use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::Server;
use crate::base::CameraStatus;
use crate::detection::InferenceStatus;

pub fn routes() -> Router<Server> {
    Router::new().route("/metrics", get(metrics))
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics(State(server): State<Server>, headers: HeaderMap) -> Response {
    let figures = Figures::read(&server).await;
    let mut registry = Registry::with_prefix("camhub");
    registry.register_collector(Box::new(figures));
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let mut out = String::new();
    let (encoded, content_type) = if openmetrics {
        (prometheus_client::encoding::text::encode(&mut out, &registry), OPENMETRICS)
    } else {
        (prometheus_client::encoding::prometheus_text::encode(&mut out, &registry), PROMETHEUS_TEXT)
    };
    if encoded.is_err() {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, content_type)], out).into_response()
}

/// One camera's figures.
#[derive(Debug)]
struct CameraFigures {
    id: String,
    up: bool,
    frames: u64,
    received_bytes: u64,
    reconnects: u64,
    rtsp_readers: u64,
    webrtc_sessions: u64,
    sent_bytes: u64,
}

/// One storage root's figures, by its path.
#[derive(Debug)]
struct RootFigures {
    root: String,
    size: u64,
    available: u64,
    recordings: u64,
    min_free: u64,
    /// Its state is `ok`: new segments may go there.
    usable: bool,
}

/// Everything one scrape reports, read at once.
#[derive(Debug)]
struct Figures {
    uptime_seconds: u64,
    resident_memory_bytes: u64,
    websocket_connections: usize,
    cameras: Vec<CameraFigures>,
    roots: Vec<RootFigures>,
    /// Snapshot files in the data dir; `None` when storage could not be measured.
    snapshots: Option<u64>,
    active_recordings: usize,
    detection: InferenceStatus,
}

impl Figures {
    async fn read(server: &Server) -> Figures {
        let app = &server.app;
        let process = app.process_metrics().await.unwrap_or_default();
        let streams = app.streams();
        let cameras = app
            .cameras()
            .list()
            .into_iter()
            .map(|c| {
                let (state, stats, counters) = (c.state(), c.hub.stats(), streams.counters(&c.id));
                CameraFigures {
                    id: c.id.to_string(),
                    up: state.status == CameraStatus::Connected,
                    frames: stats.frames,
                    received_bytes: stats.bytes,
                    reconnects: state.reconnects,
                    rtsp_readers: counters.rtsp_readers.load(Relaxed) as u64,
                    webrtc_sessions: counters.webrtc_sessions.load(Relaxed) as u64,
                    sent_bytes: counters.bytes_sent.load(Relaxed),
                }
            })
            .collect();
        let (roots, snapshots, active_recordings) = match app.recordings().storage().await {
            Ok(s) => {
                let roots = s
                    .roots
                    .iter()
                    .map(|(r, recordings)| RootFigures {
                        root: r.path.display().to_string(),
                        size: r.total,
                        available: r.available,
                        recordings: *recordings,
                        min_free: r.min_free,
                        usable: r.state == crate::storage::roots::RootState::Ok,
                    })
                    .collect();
                (roots, Some(s.snapshots), s.active)
            }
            // Storage that cannot be measured has no samples this scrape (absent, not zero).
            Err(_) => (Vec::new(), None, app.recordings().active_count()),
        };
        Figures {
            uptime_seconds: app.uptime_secs(),
            resident_memory_bytes: process.rss_bytes,
            websocket_connections: server.rpc.sessions.len(),
            cameras,
            roots,
            snapshots,
            active_recordings,
            detection: app.detections().status(),
        }
    }
}

/// A family of samples: its name (without the prefix, unit and `_total`, which the encoder adds), help, unit, type,
/// and one value per label set.
fn family<'a, L, V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, V)>,
) -> std::fmt::Result
where
    L: prometheus_client::encoding::EncodeLabelSet + 'a,
    V: Into<u64>,
{
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in samples {
        let sample = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value.into()).encode(sample)?,
            _ => ConstGauge::new(value.into() as i64).encode(sample)?,
        }
    }
    Ok(())
}

type CameraLabel<'a> = [(&'static str, &'a str); 1];

impl Collector for Figures {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let one = |v: u64| [([("", ""); 0], v)];
        family(
            &mut e,
            "uptime",
            "Time since the service started.",
            Some(&Unit::Seconds),
            Gauge,
            one(self.uptime_seconds),
        )?;
        let rss = one(self.resident_memory_bytes);
        family(&mut e, "resident_memory", "Resident memory of the process.", Some(&Unit::Bytes), Gauge, rss)?;
        let ws = one(self.websocket_connections as u64);
        family(&mut e, "websocket_connections", "Open WebSocket JSON-RPC connections.", None, Gauge, ws)?;

        let per_camera = |value: fn(&CameraFigures) -> u64| {
            self.cameras.iter().map(move |c| -> (CameraLabel<'_>, u64) { ([("camera", c.id.as_str())], value(c)) })
        };
        family(&mut e, "camera_up", "1 while the camera is CONNECTED.", None, Gauge, per_camera(|c| c.up as u64))?;
        family(&mut e, "camera_frames", "Video frames received.", None, Counter, per_camera(|c| c.frames))?;
        let received = per_camera(|c| c.received_bytes);
        family(&mut e, "camera_received", "Video bytes received.", Some(&Unit::Bytes), Counter, received)?;
        let reconnects = per_camera(|c| c.reconnects);
        family(&mut e, "camera_reconnects", "Connection attempts after the first.", None, Counter, reconnects)?;
        let readers = self.cameras.iter().flat_map(|c| {
            [
                ([("camera", c.id.as_str()), ("protocol", "rtsp")], c.rtsp_readers),
                ([("camera", c.id.as_str()), ("protocol", "webrtc")], c.webrtc_sessions),
            ]
        });
        family(&mut e, "stream_readers", "Viewers of the camera's stream, by protocol.", None, Gauge, readers)?;
        let sent = per_camera(|c| c.sent_bytes);
        family(&mut e, "stream_sent", "Bytes sent to the camera's viewers.", Some(&Unit::Bytes), Counter, sent)?;

        self.encode_storage(&mut e)?;
        self.encode_detection(&mut e)
    }
}

impl Figures {
    fn encode_storage(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        use MetricType::Gauge;
        let per_root =
            |value: fn(&RootFigures) -> u64| self.roots.iter().map(move |r| ([("root", r.root.as_str())], value(r)));
        let bytes = Some(&Unit::Bytes);
        family(e, "storage_size", "Size of the filesystem holding the root.", bytes, Gauge, per_root(|r| r.size))?;
        let available = per_root(|r| r.available);
        family(e, "storage_available", "Space available to camhub on the root.", bytes, Gauge, available)?;
        let used = per_root(|r| r.size.saturating_sub(r.available));
        family(e, "storage_used", "Space used on the root's filesystem (by anything).", bytes, Gauge, used)?;
        let recordings = per_root(|r| r.recordings);
        family(e, "storage_recordings", "Recording files on the root.", bytes, Gauge, recordings)?;
        let floor = per_root(|r| r.min_free);
        family(e, "storage_min_free", "The free space recording keeps on the root.", bytes, Gauge, floor)?;
        let usable = per_root(|r| u64::from(r.usable));
        family(
            e,
            "storage_root_usable",
            "1 while new segments may go to the root (its state is ok).",
            None,
            Gauge,
            usable,
        )?;
        let snapshots = self.snapshots.map(|b| ([("", ""); 0], b));
        family(e, "storage_snapshots", "Snapshot files in the data dir.", bytes, Gauge, snapshots)?;
        let active = [([("", ""); 0], self.active_recordings as u64)];
        family(e, "recordings_active", "Recording sessions in progress.", None, Gauge, active)
    }

    fn encode_detection(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        use MetricType::Counter;
        type Sample = fn(&crate::detection::CameraDetection) -> u64;
        let families: [(&str, &str, Sample); 4] = [
            ("detection_frames_decoded", "Frames the detector decoded.", |c| c.frames_decoded),
            ("detection_frames_inferred", "Frames the model ran on.", |c| c.frames_inferred),
            ("detection_dropped_frames", "Frames the detector dropped (queue full).", |c| c.dropped),
            ("detection_objects", "Objects confirmed by the tracker.", |c| c.objects),
        ];
        for (name, help, value) in families {
            let samples = self.detection.cameras.iter().map(|c| ([("camera", c.camera.as_str())], value(c)));
            family(e, name, help, None, Counter, samples)?;
        }
        let dropped = [([("", ""); 0], self.detection.dropped)];
        family(e, "inference_queue_dropped", "Frames refused by the inference queue.", None, Counter, dropped)?;
        let mut histogram = e.encode_descriptor(
            "inference",
            "Time to run the model on one frame.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for m in &self.detection.models {
            let buckets: Vec<(f64, u64)> = m
                .buckets
                .iter()
                .enumerate()
                .map(|(i, count)| (crate::inference::BUCKETS_MS.get(i).map_or(f64::INFINITY, |ms| ms / 1000.0), *count))
                .collect();
            histogram.encode_family(&[("model", m.name.as_str())])?.encode_histogram::<NoLabelSet>(
                m.sum_ms / 1000.0,
                m.runs,
                &buckets,
                None,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::CameraId;
    use crate::config::{ModelKind, Provider};
    use crate::inference::{BUCKETS_MS, ModelStatus};

    fn figures() -> Figures {
        let camera = CameraId::parse("cam0").expect("an id");
        let mut buckets = [0; BUCKETS_MS.len() + 1];
        (buckets[0], buckets[BUCKETS_MS.len()]) = (3, 1);
        Figures {
            uptime_seconds: 42,
            resident_memory_bytes: 1 << 20,
            websocket_connections: 2,
            cameras: vec![CameraFigures {
                id: "cam0".into(),
                up: true,
                frames: 300,
                received_bytes: 123_456,
                reconnects: 1,
                rtsp_readers: 2,
                webrtc_sessions: 0,
                sent_bytes: 99,
            }],
            roots: vec![RootFigures {
                root: "/var/lib/camhub".into(),
                size: 1000,
                available: 400,
                recordings: 500,
                min_free: 100,
                usable: true,
            }],
            snapshots: Some(7),
            active_recordings: 1,
            detection: InferenceStatus {
                unavailable: None,
                provider: Some("cpu"),
                threads: 1,
                queue: (0, 4),
                dropped: 5,
                models: vec![ModelStatus {
                    name: "coco".into(),
                    kind: ModelKind::Boxes,
                    provider: Provider::Cpu,
                    input: (512, 512),
                    labels: 80,
                    runs: 4,
                    p50_ms: 4.0,
                    p99_ms: 2000.0,
                    sum_ms: 2012.0,
                    buckets,
                }],
                cameras: vec![crate::detection::CameraDetection {
                    camera,
                    enabled: true,
                    model: "coco".into(),
                    target_fps: 5.0,
                    fps: 5.0,
                    labels: Vec::new(),
                    decode_mode: "keyframes",
                    frames_decoded: 10,
                    frames_inferred: 4,
                    dropped: 0,
                    objects: 2,
                    latency_p50_ms: 1.0,
                    latency_p99_ms: 1.0,
                }],
            },
        }
    }

    fn encode(openmetrics: bool) -> String {
        let mut registry = Registry::with_prefix("camhub");
        registry.register_collector(Box::new(figures()));
        let mut out = String::new();
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        };
        encoded.expect("encodes");
        out
    }

    #[test]
    fn names_are_in_base_units_with_total_on_counters() {
        let text = encode(false);
        for line in [
            "camhub_uptime_seconds 42",
            "camhub_resident_memory_bytes 1048576",
            "camhub_websocket_connections 2",
            "camhub_camera_up{camera=\"cam0\"} 1",
            "camhub_camera_frames_total{camera=\"cam0\"} 300",
            "camhub_camera_received_bytes_total{camera=\"cam0\"} 123456",
            "camhub_camera_reconnects_total{camera=\"cam0\"} 1",
            "camhub_stream_readers{camera=\"cam0\",protocol=\"rtsp\"} 2",
            "camhub_stream_readers{camera=\"cam0\",protocol=\"webrtc\"} 0",
            "camhub_stream_sent_bytes_total{camera=\"cam0\"} 99",
            "camhub_storage_size_bytes{root=\"/var/lib/camhub\"} 1000",
            "camhub_storage_available_bytes{root=\"/var/lib/camhub\"} 400",
            "camhub_storage_used_bytes{root=\"/var/lib/camhub\"} 600",
            "camhub_storage_recordings_bytes{root=\"/var/lib/camhub\"} 500",
            "camhub_storage_min_free_bytes{root=\"/var/lib/camhub\"} 100",
            "camhub_storage_root_usable{root=\"/var/lib/camhub\"} 1",
            "camhub_storage_snapshots_bytes 7",
            "camhub_recordings_active 1",
            "camhub_detection_frames_decoded_total{camera=\"cam0\"} 10",
            "camhub_detection_objects_total{camera=\"cam0\"} 2",
            "camhub_inference_queue_dropped_total 5",
            "camhub_inference_seconds_bucket{model=\"coco\",le=\"0.005\"} 3",
            "camhub_inference_seconds_bucket{model=\"coco\",le=\"1\"} 3",
            "camhub_inference_seconds_bucket{model=\"coco\",le=\"+Inf\"} 4",
            "camhub_inference_seconds_sum{model=\"coco\"} 2.012",
            "camhub_inference_seconds_count{model=\"coco\"} 4",
            "# TYPE camhub_camera_frames_total counter",
            "# TYPE camhub_inference_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn the_dashboard_and_the_docs_use_only_names_that_exist() {
        let text = encode(false);
        let docs = [include_str!("../../docs/grafana-camhub.json"), include_str!("../../docs/operations.md")];
        for doc in docs {
            let mut rest = doc;
            while let Some(at) = rest.find("camhub_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                rest = &rest[at + name.len()..];
                let sample = |l: &str| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"));
                let family = |l: &str| l.starts_with(&format!("# TYPE {name} "));
                assert!(text.lines().any(|l| sample(l) || family(l)), "{name} is not a metric:\n{text}");
            }
        }
    }

    #[test]
    fn openmetrics_says_units_and_ends_with_eof() {
        let text = encode(true);
        assert!(text.contains("# UNIT camhub_uptime_seconds seconds"), "{text}");
        assert!(text.contains("camhub_camera_frames_total{camera=\"cam0\"} 300"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
