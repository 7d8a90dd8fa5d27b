//! Per-connection state: who is authenticated, what they subscribed to, and the registry of live connections that
//! `get_subscription_stats` reads. Methods reach their session through the request's extensions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::base::Role;
use crate::error::{Error, Result};

#[derive(Debug, Default, Clone)]
pub struct Subscriptions {
    pub topics: BTreeSet<String>,
    /// Only events about this camera, when set.
    pub device: Option<String>,
}

#[derive(Debug)]
pub struct Session {
    pub conn_id: u64,
    pub session_id: String,
    /// Set by `authenticate`, an `auth_token` in a request, or the upgrade's Bearer header; read on every request.
    /// With it, a digest of the credential it came from, so a client that sends the same token in every request's
    /// params is not verified again each time (an API key costs a database lookup).
    principal: Mutex<Option<(Principal, [u8; 32])>>,
    /// Opt-in topics; camera and recording status updates need none.
    pub subscriptions: Mutex<Subscriptions>,
    /// Notifications this client lost because it read too slowly.
    pub dropped_notifications: AtomicU64,
}

impl Session {
    pub fn new(conn_id: u64) -> Session {
        let mut bytes = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        Session {
            conn_id,
            session_id: hex::encode(bytes),
            principal: Mutex::new(None),
            subscriptions: Mutex::new(Subscriptions::default()),
            dropped_notifications: AtomicU64::new(0),
        }
    }

    /// Authenticates the connection as `principal`, verified from `credential`.
    pub fn set_principal(&self, principal: Principal, credential: &str) {
        *self.principal.lock() = Some((principal, digest(credential)));
    }

    /// The principal, if authenticated and not expired.
    pub fn principal(&self) -> Option<Principal> {
        self.principal.lock().as_ref().map(|(p, _)| p.clone()).filter(|p| !p.is_expired())
    }

    /// Whether `credential` is the one the connection is authenticated with, still valid.
    pub fn holds(&self, credential: &str) -> bool {
        self.principal.lock().as_ref().is_some_and(|(p, d)| !p.is_expired() && *d == digest(credential))
    }

    /// Checks that the connection may call a method needing `required`.
    pub fn authorize(&self, required: Role) -> Result<Principal> {
        let principal = self.principal.lock().as_ref().map(|(p, _)| p.clone());
        match principal {
            None => Err(Error::Unauthenticated("authentication required: call authenticate first".into())),
            Some(p) if p.is_expired() => Err(Error::Unauthenticated("token expired".into())),
            Some(p) if p.role < required => Err(Error::PermissionDenied { required, have: p.role }),
            Some(p) => Ok(p),
        }
    }

    pub fn count_dropped(&self, n: u64) {
        self.dropped_notifications.fetch_add(n, Ordering::Relaxed);
    }
}

fn digest(credential: &str) -> [u8; 32] {
    Sha256::digest(credential.as_bytes()).into()
}

/// Live connections, by id.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<u64, Arc<Session>>>,
    next_id: AtomicU64,
}

impl Sessions {
    pub fn open(&self) -> Arc<Session> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let session = Arc::new(Session::new(id));
        self.by_id.lock().insert(id, session.clone());
        session
    }

    pub fn close(&self, conn_id: u64) {
        self.by_id.lock().remove(&conn_id);
    }

    pub fn len(&self) -> usize {
        self.by_id.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (total subscriptions, clients with at least one, count per topic).
    pub fn topic_stats(&self) -> (usize, usize, BTreeMap<String, usize>) {
        let sessions: Vec<_> = self.by_id.lock().values().cloned().collect();
        let mut counts = BTreeMap::new();
        let mut total = 0;
        let mut clients = 0;
        for s in sessions {
            let subs = s.subscriptions.lock();
            if !subs.topics.is_empty() {
                clients += 1;
            }
            for t in &subs.topics {
                total += 1;
                *counts.entry(t.clone()).or_insert(0) += 1;
            }
        }
        (total, clients, counts)
    }
}
