//! Trace export. With `[telemetry] otlp_endpoint`, the spans named in [`EXPORTED_SPANS`] (each RPC and HTTP request,
//! camera connect attempts, recording sessions and their segments, snapshots, detection events) become OpenTelemetry
//! spans sent over OTLP/HTTP (protobuf) by a batch processor on a thread of its own; without it nothing here runs and
//! spans stay in the log. Also W3C trace context (`traceparent`) that clients send, turned into a span's parent.
//! It knows neither HTTP nor JSON-RPC: the transport hands it the header's or the parameter's text.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::{Level, Metadata, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::config::TelemetryConfig;

/// The spans exported, by name. Each is short, or (a recording session) the parent of short ones. Long-lived spans
/// (a camera's life, a WebSocket connection, a detector, a viewer's session) stay in the log only: a span is sent
/// when it ends, and a trace that lasts for days helps no one. A child of one of those becomes a root here.
pub const EXPORTED_SPANS: &[&str] =
    &["rpc", "http", "camera.connect", "recording", "recording.segment", "snapshot", "detection.event"];

/// A span's parent from outside the process (a client's trace context).
pub type Parent = Context;

/// How long shutdown waits for the last spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The running exporter. [`Telemetry::shutdown`] flushes what is queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sends the spans still queued and stops the batch thread (blocks up to a few seconds: call it off the async
    /// runtime, as the process ends).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(err = %e, "trace export did not flush");
        }
    }
}

/// The OpenTelemetry layer for `config`, and the exporter behind it; `None` without an endpoint. The exporter's
/// HTTP client is reqwest's blocking one, used only on the batch processor's own thread (the async client needs a
/// runtime that thread does not have). The layer sees only camhub's spans, so the exporter's own requests
/// (reqwest, hyper, h2) are never traced into the export they are part of.
pub fn layer<S>(
    config: &TelemetryConfig,
) -> Result<Option<(Telemetry, impl Layer<S> + use<S>)>, opentelemetry_otlp::ExporterBuildError>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(base) = &config.otlp_endpoint else { return Ok(None) };
    // The endpoint is the collector's base URL (as OTEL_EXPORTER_OTLP_ENDPOINT is); traces go under /v1/traces.
    let endpoint = format!("{}/v1/traces", base.as_str().trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new("service.version", crate::base::VERSION))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("camhub");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(exported));
    Ok(Some((Telemetry { provider }, layer)))
}

/// What the OpenTelemetry layer sees: the exported spans, and camhub's events at info and above within them (they
/// become span events).
fn exported(meta: &Metadata<'_>) -> bool {
    if !meta.target().starts_with("camhub") {
        return false;
    }
    if meta.is_span() { EXPORTED_SPANS.contains(&meta.name()) } else { *meta.level() <= Level::INFO }
}

/// The remote parent a client named with a W3C `traceparent` (and optionally `tracestate`); `None` when it is not a
/// valid one (the W3C rule: an invalid traceparent is ignored and a new trace starts).
pub fn remote_parent(traceparent: &str, tracestate: Option<&str>) -> Option<Parent> {
    // The propagator takes short ids too ("00-4bf9-00f0-01"); W3C asks for exactly 2-32-16-2 lowercase hex digits.
    let hex =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    if parts.len() < 4 || !parts.iter().zip([2, 32, 16, 2]).all(|(part, len)| hex(part, len)) {
        return None;
    }
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), traceparent.trim().to_owned());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_owned(), state.trim().to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes the current span the trace parent of `span`, a new span made with `parent: None`: for work that outlives
/// the request that started it (a recording session). In the trace it is the request's child; in the process it holds
/// nothing open (a tracing span stays open, and unsent, while a child of it lives).
pub fn follow_current(span: &tracing::Span) {
    // Fails only when no exporter is installed: nothing to do.
    let _ = span.set_parent(tracing::Span::current().context());
}

/// Makes `parent` the parent of `span` (a new span, not yet entered). Without an exporter this does nothing.
pub fn adopt(span: &tracing::Span, parent: Option<&Parent>) {
    if let Some(cx) = parent {
        // Fails only when no exporter is installed (nothing to do) or the span already started (not ours to fix).
        let _ = span.set_parent(cx.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_names_the_remote_parent() {
        let cx = remote_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Some("k=v"))
            .expect("a valid traceparent");
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote() && sc.is_sampled());
    }

    #[test]
    fn an_invalid_traceparent_is_ignored() {
        for bad in ["", "nonsense", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf9-00f0-01"] {
            assert!(remote_parent(bad, None).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn only_camhub_spans_are_exported() {
        assert!(EXPORTED_SPANS.contains(&"rpc") && !EXPORTED_SPANS.contains(&"camera"));
    }
}
