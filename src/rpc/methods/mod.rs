//! The API, declared once. Each method's name, minimum role, how it is answered, parameter type, result type and
//! handler are one line of the table below; from it come the access table (fail closed: a method not in it cannot be
//! called), the dispatcher, the set answered in place, a [`Method`] type per method for typed clients, and the
//! schemas the spec check compares with `api-spec/openrpc.json`. The handlers, by domain, live in the submodules.

pub mod cameras;
pub mod detections;
pub mod discovery;
pub mod ingest;
pub mod recordings;
pub mod snapshots;
pub mod streams;
pub mod subscriptions;
pub mod system;

use std::future::Future;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Rpc;
use super::session::Session;
use crate::base::{CameraId, Role};
use crate::camera::Camera;
use crate::error::{Error, Result};

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No authentication.
    Public,
    /// An authenticated connection with at least this role.
    AtLeast(Role),
}

/// How a connection runs a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// From memory (no database, disk, pipeline or other wait): answered in place, with no task of its own.
    InPlace,
    /// In a task of its own, so a slow one never holds up the connection's other requests.
    Task,
}

/// One method of the API, as a type: what typed clients and the spec check know of it.
pub trait Method {
    const NAME: &'static str;
    const ACCESS: Access;
    const ANSWER: Answer;
    type Params: Serialize + DeserializeOwned + JsonSchema;
    type Result: Serialize + DeserializeOwned + JsonSchema;
}

/// One row of the table, for code that walks every method.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    pub name: &'static str,
    pub access: Access,
    pub answer: Answer,
    /// JSON schemas of the parameter object (as the server reads it) and of the result (as the server writes it).
    pub params: fn() -> schemars::Schema,
    pub result: fn() -> schemars::Schema,
}

fn params_schema<T: JsonSchema>() -> schemars::Schema {
    schemars::SchemaGenerator::default().into_root_schema_for::<T>()
}

/// What is sent: an `Option` without `skip_serializing_if` is always there (as `null`), so it is required.
pub fn result_schema<T: JsonSchema>() -> schemars::Schema {
    schemars::generate::SchemaSettings::default().for_serialize().into_generator().into_root_schema_for::<T>()
}

/// Declares the API: `Type = "name", access, answer, Params => Result, handler;` per method.
macro_rules! api {
    ($($ty:ident = $name:literal, $access:expr, $answer:ident, $params:ty => $result:ty, $handler:path;)*) => {
        $(
            #[doc = concat!("`", $name, "`.")]
            #[derive(Debug, Clone, Copy)]
            pub struct $ty;

            impl Method for $ty {
                const NAME: &'static str = $name;
                const ACCESS: Access = $access;
                const ANSWER: Answer = Answer::$answer;
                type Params = $params;
                type Result = $result;
            }
        )*

        /// Every method, in the order the table lists them.
        pub const METHODS: &[MethodInfo] = &[$(MethodInfo {
            name: $name,
            access: $access,
            answer: Answer::$answer,
            params: params_schema::<$params>,
            result: result_schema::<$result>,
        },)*];

        /// Every method and its minimum role.
        pub const ACCESS: &[(&str, Access)] = &[$(($name, $access),)*];

        /// The table's row for `name`.
        pub fn info(name: &str) -> Option<&'static MethodInfo> {
            match name {
                $($name => Some(&METHODS[<$ty as Index>::INDEX]),)*
                _ => None,
            }
        }

        /// Runs method `name` with `params` (a JSON object, absent meaning `{}`) and serialises its result; `None`
        /// when there is no such method. The caller has checked access.
        pub(crate) async fn call(
            rpc: &Arc<Rpc>,
            session: &Arc<Session>,
            name: &str,
            params: Option<&str>,
        ) -> Option<Result<String>> {
            Some(match name {
                $($name => run::<$ty, _, _>(params, |p| $handler(rpc.clone(), session.clone(), p)).await,)*
                _ => return None,
            })
        }

        api!(@index 0usize; $($ty)*);
    };
    (@index $n:expr; $first:ident $($rest:ident)*) => {
        impl Index for $first {
            const INDEX: usize = $n;
        }
        api!(@index $n + 1usize; $($rest)*);
    };
    (@index $n:expr;) => {};
}

/// A method's row in [`METHODS`].
trait Index {
    const INDEX: usize;
}

use Access::{AtLeast, Public};
use Role::{Admin, Operator, Viewer};

api! {
    Ping = "ping", Public, InPlace, NoParams => String, system::ping;
    Authenticate = "authenticate", Public, Task, system::AuthenticateParams => system::Authenticated, system::authenticate;
    GetCameraList = "get_camera_list", AtLeast(Viewer), InPlace, NoParams => cameras::CameraList, cameras::list;
    GetCameraStatus = "get_camera_status", AtLeast(Viewer), InPlace, DeviceParams => super::wire::CameraDetail, cameras::status;
    GetCameraCapabilities = "get_camera_capabilities", AtLeast(Viewer), InPlace, DeviceParams => cameras::CameraCapabilities, cameras::capabilities;
    GetSystemStatus = "get_system_status", AtLeast(Viewer), InPlace, NoParams => system::SystemStatus, system::system_status;
    GetServerInfo = "get_server_info", AtLeast(Viewer), InPlace, NoParams => system::ServerInfo, system::server_info;
    SubscribeEvents = "subscribe_events", AtLeast(Viewer), InPlace, subscriptions::SubscribeParams => subscriptions::Subscribed, subscriptions::subscribe;
    UnsubscribeEvents = "unsubscribe_events", AtLeast(Viewer), InPlace, subscriptions::UnsubscribeParams => subscriptions::Unsubscribed, subscriptions::unsubscribe;
    GetSubscriptionStats = "get_subscription_stats", AtLeast(Viewer), InPlace, NoParams => subscriptions::SubscriptionStats, subscriptions::stats;
    GetExternalStreams = "get_external_streams", AtLeast(Viewer), InPlace, NoParams => cameras::ExternalStreams, cameras::external_streams;
    AddExternalStream = "add_external_stream", AtLeast(Operator), Task, cameras::AddStreamParams => super::wire::CameraDetail, cameras::add_stream;
    RemoveExternalStream = "remove_external_stream", AtLeast(Operator), Task, cameras::RemoveStreamParams => cameras::Removed, cameras::remove_stream;
    DiscoverExternalStreams = "discover_external_streams", AtLeast(Operator), Task, discovery::DiscoverParams => discovery::Discovered, discovery::discover;
    SetDiscoveryInterval = "set_discovery_interval", AtLeast(Admin), Task, discovery::IntervalParams => discovery::IntervalSet, discovery::set_interval;
    ListRecordings = "list_recordings", AtLeast(Viewer), Task, PageParams => recordings::RecordingList, recordings::list;
    ListSnapshots = "list_snapshots", AtLeast(Viewer), Task, PageParams => snapshots::SnapshotList, snapshots::list;
    ListRecordingSpans = "list_recording_spans", AtLeast(Viewer), Task, recordings::SpansParams => recordings::Spans, recordings::spans;
    ExportRecording = "export_recording", AtLeast(Operator), Task, recordings::ExportParams => recordings::Exported, recordings::export;
    GetRecordingInfo = "get_recording_info", AtLeast(Viewer), Task, FileParams => recordings::RecordingFile, recordings::info;
    GetSnapshotInfo = "get_snapshot_info", AtLeast(Viewer), Task, FileParams => snapshots::SnapshotFile, snapshots::info;
    TakeSnapshot = "take_snapshot", AtLeast(Operator), Task, snapshots::SnapshotParams => snapshots::Snapshot, snapshots::take;
    StartRecording = "start_recording", AtLeast(Operator), Task, recordings::StartParams => recordings::Started, recordings::start;
    StopRecording = "stop_recording", AtLeast(Operator), Task, DeviceParams => recordings::Stopped, recordings::stop;
    StartStreaming = "start_streaming", AtLeast(Operator), InPlace, DeviceParams => streams::StreamStarted, streams::start;
    StopStreaming = "stop_streaming", AtLeast(Operator), Task, DeviceParams => streams::StreamStopped, streams::stop;
    GetStreamUrl = "get_stream_url", AtLeast(Viewer), InPlace, DeviceParams => streams::StreamUrl, streams::url;
    GetStreamStatus = "get_stream_status", AtLeast(Viewer), InPlace, DeviceParams => streams::StreamStatus, streams::status;
    CreateMediaToken = "create_media_token", AtLeast(Viewer), InPlace, streams::MediaTokenParams => streams::MediaToken, streams::media_token;
    GetStreams = "get_streams", AtLeast(Viewer), InPlace, NoParams => Vec<streams::StreamEntry>, streams::list;
    GetStatus = "get_status", AtLeast(Admin), InPlace, NoParams => system::Status, system::status;
    GetMetrics = "get_metrics", AtLeast(Admin), Task, NoParams => system::Metrics, system::metrics;
    DeleteRecording = "delete_recording", AtLeast(Admin), Task, FileParams => Deleted, recordings::delete;
    DeleteSnapshot = "delete_snapshot", AtLeast(Admin), Task, FileParams => Deleted, snapshots::delete;
    GetStorageInfo = "get_storage_info", AtLeast(Admin), Task, NoParams => recordings::StorageInfo, recordings::storage;
    SetRetentionPolicy = "set_retention_policy", AtLeast(Admin), Task, recordings::RetentionParams => recordings::RetentionSet, recordings::set_retention;
    CleanupOldFiles = "cleanup_old_files", AtLeast(Admin), Task, NoParams => recordings::Cleanup, recordings::cleanup;
    ListEvents = "list_events", AtLeast(Viewer), Task, detections::ListEventsParams => detections::EventList, detections::list;
    GetEvent = "get_event", AtLeast(Viewer), Task, detections::EventParams => detections::Event, detections::get;
    SetDetection = "set_detection", AtLeast(Operator), Task, detections::SetDetectionParams => detections::Detection, detections::set;
    GetInferenceStatus = "get_inference_status", AtLeast(Viewer), InPlace, NoParams => detections::InferenceStatus, detections::status;
    CreateStreamKey = "create_stream_key", AtLeast(Operator), Task, ingest::CreateStreamKeyParams => ingest::StreamKeyCreated, ingest::create;
    ListStreamKeys = "list_stream_keys", AtLeast(Operator), InPlace, NoParams => ingest::StreamKeyList, ingest::list;
    RevokeStreamKey = "revoke_stream_key", AtLeast(Operator), Task, ingest::RevokeStreamKeyParams => ingest::StreamKeyRevoked, ingest::revoke;
    ReloadConfig = "reload_config", AtLeast(Admin), Task, system::ReloadParams => system::Reloaded, system::reload_config;
}

/// Parses the params, runs the handler, serialises its result.
async fn run<M, F, Fut>(params: Option<&str>, handler: F) -> Result<String>
where
    M: Method,
    F: FnOnce(M::Params) -> Fut,
    Fut: Future<Output = Result<M::Result>>,
{
    let params = parse_params::<M::Params>(params)?;
    let result = handler(params).await?;
    serde_json::to_string(&result).map_err(Error::internal)
}

/// Params are named (a JSON object); absent params are an empty object.
fn parse_params<P: DeserializeOwned>(raw: Option<&str>) -> Result<P> {
    let raw = raw.unwrap_or("{}");
    if !raw.trim_start().starts_with('{') {
        return Err(Error::invalid_param("params", "must be an object of named parameters"));
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(&mut de).map_err(super::errors::from_params_error)
}

// ---- params several methods share ----

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceParams {
    pub device: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileParams {
    pub filename: String,
}

/// The result of deleting a file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Deleted {
    pub filename: String,
    pub deleted: bool,
    pub message: String,
}

/// The camera a `device` parameter names: -32602 for a malformed id, -32010 for an unknown one.
pub(crate) fn find_camera(rpc: &Rpc, device: &str) -> Result<Arc<Camera>> {
    let id = CameraId::parse(device).map_err(|rule| Error::invalid_param("device", rule))?;
    rpc.app.cameras().get(&id).ok_or_else(|| Error::camera_not_found(device))
}

/// A limit (1..=1000, default 50) and an offset (0 or more).
fn page(p: &PageParams) -> Result<(i64, i64)> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid_param("limit", "between 1 and 1000"));
    }
    let offset = p.offset.unwrap_or(0);
    if offset < 0 {
        return Err(Error::invalid_param("offset", "0 or more"));
    }
    Ok((limit, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_declared_once_and_found_by_name() {
        let mut names: Vec<_> = METHODS.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), METHODS.len());
        for m in METHODS {
            assert_eq!(info(m.name).map(|i| i.name), Some(m.name));
        }
        assert!(info("no_such_method").is_none());
        assert_eq!(<GetCameraStatus as Method>::NAME, "get_camera_status");
    }
}
