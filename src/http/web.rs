//! The web page: `/` and its assets under `/assets/`, compiled into the binary (no build step, no files to install),
//! each served with its Content-Type, an ETag with `Cache-Control: no-cache` (a new binary is picked up at once, an
//! unchanged asset costs a 304), and a strict Content-Security-Policy (no inline script, nothing from another origin).
//! The page talks to the rest of this listener only: `/ws`, `/whep/...`, `/hls/...` and `/files/...`; it holds no
//! logic here. One asset is not compiled in: hls.js, read from the file `hls.player_js` names.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::Server;

/// Everything the page may load or connect to: its own origin (scripts, styles, the WebSocket, WHEP, files) and the
/// blob URLs it makes of downloaded snapshots. `connect-src 'self'` covers `ws://` to the same host (CSP level 3).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
                   media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: Asset =
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", body: include_bytes!("../web/index.html") };

const ASSETS: &[Asset] = &[
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../web/app.js") },
    Asset { name: "rpc.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../web/rpc.js") },
    Asset { name: "whep.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../web/whep.js") },
    Asset {
        name: "hlsplay.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/hlsplay.js"),
    },
    Asset {
        name: "timeline.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/timeline.js"),
    },
    Asset { name: "style.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../web/style.css") },
    Asset { name: "favicon.svg", content_type: "image/svg+xml", body: include_bytes!("../web/favicon.svg") },
];

/// Strong ETags, one per asset (index first), computed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    std::iter::once(&INDEX)
        .chain(ASSETS)
        .map(|a| {
            let digest = Sha256::digest(a.body);
            HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12]))).expect("hex is a valid header")
        })
        .collect()
});

pub fn routes() -> Router<Server> {
    Router::new().route("/", get(index)).route("/assets/{name}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    respond(INDEX.content_type, INDEX.body, &ETAGS[0], &headers)
}

async fn asset(State(server): State<Server>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if name == HLS_JS {
        return hls_js(&server, &headers).await;
    }
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => respond(ASSETS[i].content_type, ASSETS[i].body, &ETAGS[i + 1], &headers),
        None => (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-store")], "no such asset").into_response(),
    }
}

/// The one asset that is not compiled in: hls.js, the page's HLS player where the browser has none, from the file
/// `hls.player_js` names (installed from npm by scripts/install-models.sh); 404 when none is configured.
const HLS_JS: &str = "hls.js";

async fn hls_js(server: &Server, headers: &HeaderMap) -> Response {
    let Some(path) = server.app.config().hls.player_js.clone() else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            "hls.js is not configured (hls.player_js)",
        )
            .into_response();
    };
    let read = tokio::task::spawn_blocking(move || std::fs::read(path)).await;
    let Ok(Ok(body)) = read else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            "hls.js is not installed (hls.player_js)",
        )
            .into_response();
    };
    let digest = Sha256::digest(&body);
    let etag = HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12]))).expect("hex is a valid header");
    respond("text/javascript; charset=utf-8", body, &etag, headers)
}

fn respond(content_type: &'static str, body: impl IntoResponse, etag: &HeaderValue, request: &HeaderMap) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { body.into_response() };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_served_and_no_script_is_inline() {
        let html = std::str::from_utf8(INDEX.body).expect("utf-8");
        for reference in html.split("/assets/").skip(1) {
            let name = reference.split('"').next().expect("quoted");
            assert!(ASSETS.iter().any(|a| a.name == name), "index.html names /assets/{name}, which is not embedded");
        }
        // CSP forbids inline script; a <script> without src would silently not run.
        for tag in html.split("<script").skip(1) {
            assert!(tag.split('>').next().expect("tag").contains("src="), "inline <script> in index.html");
        }
        for (at, _) in html.match_indices(" on") {
            let attr: String = html[at + 3..].chars().take_while(|c| c.is_ascii_lowercase()).collect();
            assert!(!html[at + 3 + attr.len()..].starts_with('='), "inline event handler on{attr} in index.html");
        }
    }

    #[test]
    fn modules_import_only_embedded_modules() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).expect("utf-8");
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line.rsplit("from '").next().and_then(|t| t.split('\'').next()).expect("import path");
                let name = target.strip_prefix("./").expect("relative import");
                assert!(ASSETS.iter().any(|b| b.name == name), "{} imports {target}, which is not embedded", a.name);
            }
        }
    }

    #[test]
    fn etags_are_distinct_and_quoted() {
        assert_eq!(ETAGS.len(), ASSETS.len() + 1);
        let distinct: std::collections::HashSet<_> = ETAGS.iter().collect();
        assert_eq!(distinct.len(), ETAGS.len());
        for e in ETAGS.iter() {
            let s = e.to_str().expect("ascii");
            assert!(s.starts_with('"') && s.ends_with('"'), "{s}");
        }
    }
}
