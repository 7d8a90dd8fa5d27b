//! Stream keys: the cameras publishers push to. A key is created with its camera and shown once (only its SHA-256 is
//! kept), listed by its first characters, and revoked with its camera.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::find_camera;
use crate::app::Listener;
use crate::base::CameraId;
use crate::error::{Error, Resource, Result};
use crate::rpc::Rpc;
use crate::rpc::session::Session;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStreamKeyParams {
    /// The camera's name; its id is derived from it.
    pub name: String,
}

/// A new stream key: shown in this answer only.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StreamKeyCreated {
    pub device: String,
    pub name: String,
    pub stream_key: String,
    /// Where to publish with it over RTMP and SRT (`null` for a listener that is off).
    pub rtmp_url: Option<String>,
    pub srt_url: Option<String>,
    /// Where a WHIP publisher POSTs its offer, with the key as `Authorization: Bearer`.
    pub whip_url: String,
    pub message: String,
}

pub async fn create(rpc: Arc<Rpc>, _: Arc<Session>, p: CreateStreamKeyParams) -> Result<StreamKeyCreated> {
    if p.name.trim().is_empty() || p.name.chars().count() > 128 {
        return Err(Error::invalid_param("name", "1 to 128 characters"));
    }
    let id = CameraId::from_name(&p.name)
        .ok_or_else(|| Error::invalid_param("name", "must contain a letter or digit; its id is [a-z0-9_-]{1,64}"))?;
    let (camera, key) = rpc.app.cameras().create_push(id, p.name.trim().to_owned()).await?;
    Ok(StreamKeyCreated {
        device: camera.id.to_string(),
        name: camera.name.clone(),
        rtmp_url: rpc.app.push_base(Listener::Rtmp).map(|base| format!("{base}/{key}")),
        srt_url: rpc.app.push_base(Listener::Srt).map(|base| format!("{base}?streamid={key}")),
        whip_url: rpc.app.streams().whip_url(&camera.id),
        stream_key: key,
        message: "the stream key is shown once: keep it now".into(),
    })
}

/// A pushed camera and its key, without the key.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StreamKeyEntry {
    pub device: String,
    pub name: String,
    /// The key's first characters, to tell keys apart.
    pub key_prefix: String,
    /// `config` (its hash is in the config file) or `api`.
    pub origin: String,
    /// Whether a publisher is pushing now, and with which protocol (the last one when none is).
    pub publishing: bool,
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StreamKeyList {
    pub keys: Vec<StreamKeyEntry>,
    /// The RTMP URL to publish to, without the key (`<rtmp_url>/<stream key>`); `null` when RTMP is off.
    pub rtmp_url: Option<String>,
    /// The SRT URL to publish to, without the stream id (`<srt_url>?streamid=<stream key>`); `null` when SRT is off.
    pub srt_url: Option<String>,
}

pub async fn list(rpc: Arc<Rpc>, _: Arc<Session>, _: super::NoParams) -> Result<StreamKeyList> {
    let keys = rpc
        .app
        .cameras()
        .stream_keys()
        .into_iter()
        .map(|k| {
            let slot = k.camera.source.push_slot();
            StreamKeyEntry {
                device: k.camera.id.to_string(),
                name: k.camera.name.clone(),
                key_prefix: k.prefix,
                origin: k.camera.origin.as_str().to_owned(),
                publishing: slot.is_some_and(|s| s.publishing()),
                protocol: slot.and_then(|s| s.protocol()).map(|p| p.as_str().to_owned()),
            }
        })
        .collect();
    Ok(StreamKeyList { keys, rtmp_url: rpc.app.push_base(Listener::Rtmp), srt_url: rpc.app.push_base(Listener::Srt) })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeStreamKeyParams {
    /// The pushed camera whose key is revoked.
    pub device: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StreamKeyRevoked {
    pub device: String,
    pub revoked: bool,
    pub message: String,
}

pub async fn revoke(rpc: Arc<Rpc>, _: Arc<Session>, p: RevokeStreamKeyParams) -> Result<StreamKeyRevoked> {
    let camera = find_camera(&rpc, &p.device)?;
    if camera.source.push_slot().is_none() {
        return Err(Error::not_found(Resource::StreamKey, p.device));
    }
    rpc.app.cameras().remove(&camera.id).await?;
    Ok(StreamKeyRevoked {
        device: camera.id.to_string(),
        revoked: true,
        message: "key revoked: its publisher was dropped and the camera removed (its recordings are kept)".into(),
    })
}
