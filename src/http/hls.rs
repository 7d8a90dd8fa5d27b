//! Low-latency HLS over HTTP: `GET /hls/{id}/index.m3u8` (the playlist; `_HLS_msn`/`_HLS_part` block until the
//! stream has that segment or part), `init{N}.mp4`, `seg{N}.mp4` and `part{N}.mp4` (a part not made yet, the preload
//! hint's, is waited for). Auth as media: a header (Bearer, X-API-Key) or `?token=` (a media token or a JWT); every
//! URI a playlist lists carries a fresh media token, so players that cannot set headers (a `<video>`, Safari) follow
//! it. The first request for a camera starts its stream.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::{MEDIA_TOKEN_TTL, Server, authorize_media};
use crate::publish::hls::{Miss, Wanted};

pub fn routes() -> Router<Server> {
    Router::new().route("/hls/{id}/{file}", get(file))
}

/// The query a player may send: LL-HLS's directives and the token.
#[derive(Debug, Default, Deserialize)]
struct HlsQuery {
    #[serde(rename = "_HLS_msn")]
    msn: Option<String>,
    #[serde(rename = "_HLS_part")]
    part: Option<String>,
    #[serde(rename = "_HLS_skip")]
    _skip: Option<String>,
    token: Option<String>,
}

/// What a file name asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Playlist,
    Init(u64),
    Segment(u64),
    Part(u64),
}

fn parse_name(name: &str) -> Option<Asked> {
    if name == "index.m3u8" {
        return Some(Asked::Playlist);
    }
    let stem = name.strip_suffix(".mp4")?;
    let number = |prefix: &str| {
        let digits = stem.strip_prefix(prefix)?;
        (!digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    };
    number("init")
        .map(Asked::Init)
        .or_else(|| number("seg").map(Asked::Segment))
        .or_else(|| number("part").map(Asked::Part))
}

async fn file(
    State(server): State<Server>,
    Path((id, name)): Path<(String, String)>,
    Query(query): Query<HlsQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let app = &server.app;
    let Some(asked) = parse_name(&name) else {
        return (StatusCode::NOT_FOUND, "no such HLS file").into_response();
    };
    // Who asks is known before anything about the camera is said.
    if let Err(resp) = authorize_media(app, &headers, query.token.as_deref(), &id).await {
        return resp;
    }
    let streams = app.streams();
    if !streams.hls.enabled() {
        return (StatusCode::NOT_FOUND, "hls is disabled").into_response();
    }
    let Some(camera) = app.cameras().get_str(&id) else {
        return (StatusCode::NOT_FOUND, "no such camera").into_response();
    };
    if !streams.is_published(&camera.id) {
        return (StatusCode::NOT_FOUND, "camera is not published (stop_streaming)").into_response();
    }
    let number = |s: &Option<String>| s.as_deref().map(str::parse::<u64>).transpose();
    let wanted = match (number(&query.msn), number(&query.part)) {
        (Err(_), _) => return (StatusCode::BAD_REQUEST, "_HLS_msn must be a whole number").into_response(),
        (_, Err(_)) => return (StatusCode::BAD_REQUEST, "_HLS_part must be a whole number").into_response(),
        (Ok(None), Ok(Some(_))) => return (StatusCode::BAD_REQUEST, "_HLS_part needs _HLS_msn").into_response(),
        (Ok(msn), Ok(part)) => msn.map(|msn| Wanted { msn, part }),
    };
    let stream = match streams.hls.stream(&camera, streams.counters(&camera.id)) {
        Ok(s) => s,
        Err(e) => return (crate::rpc::errors::http_status(&e), e.to_string()).into_response(),
    };
    stream.touch(viewer(&peer, &headers));
    let mp4 = |bytes: Body, size: usize| {
        stream.sent(size);
        ([(header::CONTENT_TYPE, "video/mp4"), (header::CACHE_CONTROL, "max-age=60")], bytes).into_response()
    };
    match asked {
        Asked::Playlist => {
            // A player that came with a token in the URL gets one in every URI; one that sends a header sends it again.
            let token = match query.token.as_ref().map(|_| app.media_token(camera.id.as_str(), MEDIA_TOKEN_TTL)) {
                None => String::new(),
                Some(Ok((token, _))) => format!("token={token}"),
                Some(Err(e)) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            };
            match stream.playlist(wanted, &token).await {
                Ok(text) => {
                    stream.sent(text.len());
                    (
                        [(header::CONTENT_TYPE, "application/vnd.apple.mpegurl"), (header::CACHE_CONTROL, "no-cache")],
                        text,
                    )
                        .into_response()
                }
                Err(miss) => missed(&miss),
            }
        }
        Asked::Init(generation) => match stream.init(generation) {
            Some(data) => {
                let size = data.len();
                mp4(Body::from(data), size)
            }
            None => (StatusCode::NOT_FOUND, "no such init segment").into_response(),
        },
        Asked::Segment(msn) => match stream.segment(msn) {
            Some(parts) => {
                let size = parts.iter().map(|p| p.len()).sum();
                let body = Body::from_stream(futures::stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>)));
                let mut resp = mp4(body, size);
                resp.headers_mut().insert(header::CONTENT_LENGTH, size.into());
                resp
            }
            None => {
                (StatusCode::NOT_FOUND, "no such segment (gone from the playlist, or not made yet)").into_response()
            }
        },
        Asked::Part(number) => match stream.part(number).await {
            Ok(Some(data)) => {
                let size = data.len();
                mp4(Body::from(data), size)
            }
            Ok(None) => (StatusCode::NOT_FOUND, "no such part (gone from the playlist, or not hinted)").into_response(),
            Err(miss) => missed(&miss),
        },
    }
}

fn missed(miss: &Miss) -> Response {
    let status = match miss {
        Miss::Timeout | Miss::Ended(_) => StatusCode::SERVICE_UNAVAILABLE,
        Miss::TooFarAhead => StatusCode::BAD_REQUEST,
    };
    (status, miss.to_string()).into_response()
}

/// Who a viewer is, as far as counting goes: the address and the player (a viewer's requests come over several
/// connections, so not the port).
fn viewer(peer: &SocketAddr, headers: &HeaderMap) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    peer.ip().hash(&mut h);
    headers.get(header::USER_AGENT).map(|v| v.as_bytes()).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_the_playlist_or_numbered_mp4s_only() {
        assert_eq!(parse_name("index.m3u8"), Some(Asked::Playlist));
        assert_eq!(parse_name("init3.mp4"), Some(Asked::Init(3)));
        assert_eq!(parse_name("seg12.mp4"), Some(Asked::Segment(12)));
        assert_eq!(parse_name("part120.mp4"), Some(Asked::Part(120)));
        for bad in ["seg.mp4", "seg-1.mp4", "seg1.mp4.mp4", "../seg1.mp4", "part1", "init+1.mp4", "x.m3u8", ""] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        assert_eq!(parse_name("seg99999999999999999999.mp4"), None, "too big");
    }
}
