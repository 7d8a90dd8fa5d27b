//! Camera methods: `get_camera_list`, `get_camera_status`, `get_camera_capabilities`, and the network cameras
//! clients add and remove at run time (`add_external_stream`, `remove_external_stream`, `get_external_streams`).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DeviceParams, NoParams, find_camera};
use crate::base::url::{parse_stream_url, redact_url};
use crate::base::{CameraId, CameraStatus};
use crate::camera::Camera;
use crate::error::{Error, Resource, Result};
use crate::rpc::Rpc;
use crate::rpc::session::Session;
use crate::rpc::wire::{self, CameraDetail, CameraSummary, ModeOption};

/// `get_camera_list`'s result (also `/health/cameras`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CameraList {
    pub cameras: Vec<CameraSummary>,
    pub total: usize,
    pub connected: usize,
}

impl CameraList {
    pub fn of(rpc: &Rpc) -> CameraList {
        let app = &rpc.app;
        let cameras: Vec<_> = app.cameras().list().iter().map(|c| wire::summary(c, app.streams())).collect();
        let connected = cameras.iter().filter(|c| c.status == CameraStatus::Connected).count();
        CameraList { total: cameras.len(), connected, cameras }
    }
}

pub async fn list(rpc: Arc<Rpc>, _: Arc<Session>, _: NoParams) -> Result<CameraList> {
    Ok(CameraList::of(&rpc))
}

pub async fn status(rpc: Arc<Rpc>, _: Arc<Session>, p: DeviceParams) -> Result<CameraDetail> {
    Ok(wire::detail(&*find_camera(&rpc, &p.device)?, rpc.app.streams()))
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Validation {
    /// Never delivered a frame.
    None,
    /// Delivered frames before, not now.
    Disconnected,
    /// Delivering now.
    Confirmed,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CameraCapabilities {
    pub device: String,
    pub formats: Vec<String>,
    pub resolutions: Vec<String>,
    /// Frame rates, rounded, fastest first (`modes` has them exact).
    pub fps_options: Vec<u32>,
    pub modes: Vec<ModeOption>,
    pub validation_status: Validation,
}

pub async fn capabilities(rpc: Arc<Rpc>, _: Arc<Session>, p: DeviceParams) -> Result<CameraCapabilities> {
    let camera = find_camera(&rpc, &p.device)?;
    let stats = camera.hub.stats();
    let modes = wire::modes(&camera, &stats);
    let caps = wire::capabilities(&modes);
    let validation_status = match (camera.state().status, stats.frames) {
        (CameraStatus::Connected, _) => Validation::Confirmed,
        (_, 0) => Validation::None,
        _ => Validation::Disconnected,
    };
    let mut fps_options: Vec<u32> = modes.iter().flat_map(|m| m.fps.iter().map(|f| f.round() as u32)).collect();
    fps_options.sort_by(|a, b| b.cmp(a));
    fps_options.dedup();
    Ok(CameraCapabilities {
        device: camera.id.to_string(),
        formats: caps.formats,
        resolutions: caps.resolutions,
        fps_options,
        modes,
        validation_status,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddStreamParams {
    pub stream_url: String,
    pub stream_name: String,
    pub stream_type: Option<String>,
}

pub async fn add_stream(rpc: Arc<Rpc>, _: Arc<Session>, p: AddStreamParams) -> Result<CameraDetail> {
    if let Some(t) = p.stream_type.as_deref()
        && !t.eq_ignore_ascii_case("rtsp")
    {
        return Err(Error::invalid_param("stream_type", "must be \"rtsp\""));
    }
    if p.stream_name.chars().count() > 128 {
        return Err(Error::invalid_param("stream_name", "at most 128 characters"));
    }
    if p.stream_url.len() > 2048 {
        return Err(Error::invalid_param("stream_url", "at most 2048 characters"));
    }
    let url = parse_stream_url(&p.stream_url).map_err(|rule| Error::invalid_param("stream_url", rule))?;
    let id = CameraId::from_name(&p.stream_name).ok_or_else(|| {
        Error::invalid_param("stream_name", "must contain a letter or digit; its id is [a-z0-9_-]{1,64}")
    })?;
    let camera = rpc.app.cameras().add(id, p.stream_name.trim().to_owned(), url).await?;
    Ok(wire::detail(&camera, rpc.app.streams()))
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveStreamParams {
    pub stream_url: Option<String>,
    pub device: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Removed {
    pub removed: bool,
    pub device: String,
}

pub async fn remove_stream(rpc: Arc<Rpc>, _: Arc<Session>, p: RemoveStreamParams) -> Result<Removed> {
    let camera: Arc<Camera> = match (p.device, p.stream_url) {
        (Some(device), None) => find_camera(&rpc, &device)?,
        (None, Some(url)) => {
            let url = parse_stream_url(&url).map_err(|rule| Error::invalid_param("stream_url", rule))?;
            rpc.app.cameras().find_by_url(&url).ok_or_else(|| Error::not_found(Resource::Stream, redact_url(&url)))?
        }
        _ => return Err(Error::invalid_param("device", "give exactly one of device and stream_url")),
    };
    rpc.app.cameras().remove(&camera.id).await?;
    Ok(Removed { removed: true, device: camera.id.to_string() })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExternalStream {
    pub device: String,
    pub name: String,
    /// The stream's URL without credentials.
    pub url: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: CameraStatus,
    /// `config` or `api`.
    pub origin: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExternalStreams {
    pub total: usize,
    pub external_streams: Vec<ExternalStream>,
}

pub async fn external_streams(rpc: Arc<Rpc>, _: Arc<Session>, _: NoParams) -> Result<ExternalStreams> {
    let streams: Vec<ExternalStream> = rpc
        .app
        .cameras()
        .list()
        .iter()
        .filter(|c| c.source.kind() == "rtsp")
        .map(|c| ExternalStream {
            device: c.id.to_string(),
            name: c.name.clone(),
            url: c.public_url(),
            kind: c.source.kind().to_owned(),
            status: c.state().status,
            origin: c.origin.as_str().to_owned(),
        })
        .collect();
    Ok(ExternalStreams { total: streams.len(), external_streams: streams })
}
