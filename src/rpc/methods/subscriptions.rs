//! Event subscriptions: `subscribe_events`, `unsubscribe_events`, `get_subscription_stats`. What a connection
//! subscribed to lives in its session; the connection renders the events it asked for.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::NoParams;
use crate::base::CameraId;
use crate::error::{Error, Result};
use crate::events::TOPICS;
use crate::rpc::Rpc;
use crate::rpc::session::Session;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeParams {
    pub topics: Vec<String>,
    pub filters: Option<Filters>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    pub device: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Subscribed {
    pub subscribed: bool,
    pub topics: BTreeSet<String>,
    pub filters: Filters,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeParams {
    pub topics: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Unsubscribed {
    pub unsubscribed: bool,
    pub topics: Vec<String>,
}

fn validate_topics(topics: &[String], param: &'static str) -> Result<()> {
    if topics.len() > TOPICS.len() {
        return Err(Error::invalid_param(param, format!("at most {} topics", TOPICS.len())));
    }
    if let Some(bad) = topics.iter().find(|t| !TOPICS.contains(&t.as_str())) {
        return Err(Error::invalid_param(param, format!("unknown topic {bad:?}; known: {}", TOPICS.join(", "))));
    }
    Ok(())
}

pub async fn subscribe(_: Arc<Rpc>, session: Arc<Session>, p: SubscribeParams) -> Result<Subscribed> {
    if p.topics.is_empty() {
        return Err(Error::invalid_param("topics", "must name at least one topic"));
    }
    validate_topics(&p.topics, "topics")?;
    let device = p.filters.and_then(|f| f.device);
    if let Some(d) = &device {
        CameraId::parse(d).map_err(|rule| Error::invalid_param("filters.device", rule))?;
    }
    let mut subs = session.subscriptions.lock();
    subs.topics.extend(p.topics.iter().cloned());
    subs.device = device.clone();
    Ok(Subscribed { subscribed: true, topics: subs.topics.clone(), filters: Filters { device } })
}

pub async fn unsubscribe(_: Arc<Rpc>, session: Arc<Session>, p: UnsubscribeParams) -> Result<Unsubscribed> {
    if let Some(topics) = &p.topics {
        validate_topics(topics, "topics")?;
    }
    let mut subs = session.subscriptions.lock();
    let removed: Vec<String> = match p.topics {
        Some(topics) => topics.into_iter().filter(|t| subs.topics.remove(t)).collect(),
        None => std::mem::take(&mut subs.topics).into_iter().collect(),
    };
    if subs.topics.is_empty() {
        subs.device = None;
    }
    Ok(Unsubscribed { unsubscribed: true, topics: removed })
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GlobalStats {
    pub total_subscriptions: usize,
    pub active_clients: usize,
    pub topic_counts: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionStats {
    pub global_stats: GlobalStats,
    pub client_topics: Vec<String>,
    pub client_id: String,
    /// Notifications this client lost because it read too slowly.
    pub dropped_notifications: u64,
}

pub async fn stats(rpc: Arc<Rpc>, session: Arc<Session>, _: NoParams) -> Result<SubscriptionStats> {
    let (total, clients, counts) = rpc.sessions.topic_stats();
    let mine: Vec<String> = session.subscriptions.lock().topics.iter().cloned().collect();
    Ok(SubscriptionStats {
        global_stats: GlobalStats { total_subscriptions: total, active_clients: clients, topic_counts: counts },
        client_topics: mine,
        client_id: session.session_id.clone(),
        dropped_notifications: session.dropped_notifications.load(std::sync::atomic::Ordering::Relaxed),
    })
}
