//! camhub: cameras in (RTSP and local V4L2 devices), one WebSocket JSON-RPC API out. See ARCHITECTURE.md for the map.

pub mod app;
pub mod auth;
pub mod backup;
pub mod base;
pub mod camera;
pub mod cli;
pub mod client;
pub mod config;
pub mod detection;
pub mod devices;
pub mod discovery;
pub mod error;
pub mod events;
pub mod http;
pub mod inference;
pub mod media;
pub mod netprobe;
pub mod publish;
pub mod recording;
pub mod reload;
pub mod rpc;
pub mod scanner;
pub mod service;
pub mod snapshot;
pub mod storage;
pub mod telemetry;
