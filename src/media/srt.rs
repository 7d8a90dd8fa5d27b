//! The SRT listener: publishers call `srt://HOST:PORT?streamid=<stream key>` (or the access-control form
//! `#!::r=<stream key>,m=publish`) and send MPEG-TS. One UDP port takes any number of publishers (`srt-tokio`'s
//! listener, pure Rust, interoperating with libsrt callers such as FFmpeg's); each caller's stream id is checked
//! against the [`Gate`] *before* the connection is accepted, so an unknown key is rejected in the handshake and no
//! camera is touched. An accepted caller is handed to its camera's [`PushSlot`] as an [`Arrival`], whose feed pushes
//! the received TS into `appsrc ! tsdemux ! parser ! appsink` feeding the camera's hub (AAC or G.711 sound through
//! `aacparse` to the hub's audio track).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::{SrtListener, SrtSocket};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};

use super::{make, pipeline_error};
use crate::base::Failure;
use crate::error::{Dependency, Error, Result};
use crate::media::hub::StreamHub;
use crate::media::push::{Arrival, Gate, Protocol};

/// Received TS waiting for the demuxer, at most; beyond it the publisher is too fast for us and is dropped.
const MAX_QUEUED_BYTES: u64 = 8 * 1024 * 1024;

/// Binds `listen` (UDP) and accepts publishers on `runtime` until `shutdown` fires; returns the bound address.
pub async fn start(
    listen: SocketAddr,
    gate: Gate,
    shutdown: CancellationToken,
    runtime: &tokio::runtime::Handle,
) -> Result<SocketAddr> {
    // Bound on the media runtime, which runs the listener's own task and every caller's socket.
    let bind = async move {
        let socket = tokio::net::UdpSocket::bind(listen).await?;
        let local = socket.local_addr()?;
        let (listener, incoming) = SrtListener::builder().socket(socket).bind(local).await?;
        Ok::<_, std::io::Error>((listener, incoming, local))
    };
    let (mut listener, mut incoming, local) = runtime
        .spawn(bind)
        .await
        .map_err(Error::internal)?
        .map_err(|e| Error::dependency(Dependency::IngestServer, format!("srt: cannot listen on {listen}: {e}")))?;
    info!(%local, "srt listener ready");
    runtime.spawn(async move {
        let requests = incoming.incoming();
        loop {
            let request = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = requests.next() => match r {
                    Some(r) => r,
                    None => break,
                },
            };
            let peer = request.remote();
            let span = info_span!("srt", %peer);
            let _entered = span.enter();
            let key = request.stream_id().map(|s| stream_key(&s.to_string())).unwrap_or_default();
            let Some(slot) = gate(&key) else {
                info!("srt publisher refused: unknown or revoked stream key");
                let _ = request.reject(RejectReason::Server(ServerRejectReason::Forbidden)).await;
                continue;
            };
            if slot.publishing() {
                info!("srt publisher refused: stream key already publishing");
                let _ = request.reject(RejectReason::Server(ServerRejectReason::Conflict)).await;
                continue;
            }
            let socket = match request.accept(None).await {
                Ok(socket) => socket,
                Err(e) => {
                    debug!(err = %e, "srt accept failed");
                    continue;
                }
            };
            let feed = Box::new(move |hub: Arc<StreamHub>, stop: CancellationToken| {
                Box::pin(feed(socket, hub, stop).instrument(info_span!("srt", %peer)))
                    as futures::future::BoxFuture<'static, Failure>
            });
            match slot.offer(Arrival::new(Protocol::Srt, feed)) {
                Ok(()) => info!("srt publisher accepted"),
                Err(refusal) => info!(?refusal, "srt publisher dropped"),
            }
        }
        listener.close().await;
        debug!("srt listener stopped");
    });
    Ok(local)
}

/// The stream key in a stream id: the id itself, or the `r` (resource) of SRT's access-control syntax
/// (`#!::r=KEY,m=publish`).
fn stream_key(stream_id: &str) -> String {
    match stream_id.strip_prefix("#!::") {
        Some(fields) => fields.split(',').find_map(|f| f.strip_prefix("r=")).unwrap_or_default().to_owned(),
        None => stream_id.to_owned(),
    }
}

/// Pushes one caller's MPEG-TS into the hub until it hangs up, fails, or `stop` fires.
async fn feed(mut socket: SrtSocket, hub: Arc<StreamHub>, stop: CancellationToken) -> Failure {
    let (pipeline, src) = match build(hub) {
        Ok(built) => built,
        Err(e) => return Failure::unsupported(e.to_string()),
    };
    let Some(bus) = pipeline.bus() else { return Failure::unsupported("pipeline has no bus") };
    let mut messages = bus.stream();
    let ended = match pipeline.set_state(gst::State::Playing) {
        Err(e) => Failure::unsupported(format!("cannot start the demuxer: {e}")),
        Ok(_) => loop {
            tokio::select! {
                _ = stop.cancelled() => break Failure::retry("stopped"),
                packet = socket.next() => match packet {
                    None => break Failure::retry("the publisher hung up"),
                    Some(Err(e)) => break Failure::retry(format!("the publisher's connection failed: {e}")),
                    Some(Ok((_, data))) => {
                        if src.current_level_bytes() > MAX_QUEUED_BYTES {
                            break Failure::retry("the publisher sends faster than its stream can be demuxed");
                        }
                        if src.push_buffer(buffer(data)).is_err() {
                            break Failure::retry("the demuxer stopped");
                        }
                    }
                },
                message = messages.next() => match message.as_ref().map(|m| m.view()) {
                    Some(gst::MessageView::Error(e)) => {
                        let err = e.error();
                        break if err.matches(gst::StreamError::CodecNotFound) {
                            Failure::unsupported(err.message().to_owned())
                        } else {
                            Failure::retry(format!("the publisher's stream cannot be demuxed: {}", err.message()))
                        };
                    }
                    Some(gst::MessageView::Eos(_)) | None => break Failure::retry("the stream ended"),
                    _ => {}
                },
            }
        },
    };
    let _ = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
    ended
}

fn buffer(data: Bytes) -> gst::Buffer {
    gst::Buffer::from_slice(data)
}

/// `appsrc ! tsdemux ! parser ! capsfilter ! appsink(hub)`; the parser is linked when the demuxer finds the video.
fn build(hub: Arc<StreamHub>) -> Result<(gst::Pipeline, gst_app::AppSrc)> {
    let pipeline = gst::Pipeline::with_name(&format!("srt-{}", hub.camera_id()));
    let src = gst_app::AppSrc::builder()
        .name("srt")
        .caps(&gst::Caps::builder("video/mpegts").field("systemstream", true).build())
        .is_live(true)
        .format(gst::Format::Bytes)
        .build();
    let demux = make("tsdemux")?;
    let sink = super::ingest::hub_sink(hub.clone());
    let queue = make("queue")?;
    pipeline.add_many([src.upcast_ref(), &demux, &queue, sink.upcast_ref()]).map_err(pipeline_error)?;
    src.link(&demux).map_err(pipeline_error)?;
    queue.link(&sink).map_err(pipeline_error)?;
    let pipeline_weak = pipeline.downgrade();
    let sink_weak = queue.downgrade();
    demux.connect_pad_added(move |_, pad| {
        let (Some(pipeline), Some(sink)) = (pipeline_weak.upgrade(), sink_weak.upgrade()) else { return };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(name) = caps.structure(0).map(|s| s.name().to_string()) else { return };
        let linked = if name.starts_with("video/") {
            super::ingest::link_parsed_video(&pipeline, pad, &name, sink.upcast_ref())
        } else if name.starts_with("audio/") {
            super::ingest::add_audio_branch(&pipeline, pad, hub.clone(), false, |_, _| {})
        } else {
            Ok(())
        };
        if let Err(e) = linked {
            gst::element_error!(pipeline, gst::StreamError::CodecNotFound, ("{}", e));
        }
    });
    Ok((pipeline, src))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_plain_and_access_control_stream_ids() {
        assert_eq!(stream_key("sk_abc"), "sk_abc");
        assert_eq!(stream_key("#!::r=sk_abc,m=publish"), "sk_abc");
        assert_eq!(stream_key("#!::m=publish,r=sk_abc"), "sk_abc");
        assert_eq!(stream_key("#!::m=publish"), "");
    }
}
