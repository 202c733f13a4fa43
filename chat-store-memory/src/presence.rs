//! The in-memory presence tracker.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chat_core::presence::{PresenceChange, PresenceInfo, PresenceStatus};
use chat_core::{ConnectionId, NodeId, PresenceTracker, Result, Timestamp, UserId};
use parking_lot::Mutex;

/// An in-memory [`PresenceTracker`] with node leases.
///
/// One lock guards the whole table: presence changes once per connection opened or closed,
/// not per message.
#[derive(Debug)]
pub struct MemoryPresence {
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    nodes: HashMap<NodeId, Lease>,
    users: HashMap<UserId, UserEntry>,
    /// Offline changes found while expiring a lease outside `sweep`, for `sweep` to report.
    pending: Vec<PresenceInfo>,
}

#[derive(Debug)]
struct Lease {
    expires_at: Timestamp,
    renewed_at: Timestamp,
    conns: HashMap<ConnectionId, UserId>,
}

/// A user's connections. Few per user: a vector, sized exactly while small (a hash set
/// cost about 100 bytes more per connected user).
#[derive(Debug, Default)]
struct ConnSet(Vec<(NodeId, ConnectionId)>);

impl ConnSet {
    fn insert(&mut self, conn: (NodeId, ConnectionId)) {
        if !self.0.contains(&conn) {
            if self.0.len() < 4 {
                self.0.reserve_exact(1);
            }
            self.0.push(conn);
        }
    }

    fn remove(&mut self, conn: &(NodeId, ConnectionId)) {
        if let Some(at) = self.0.iter().position(|c| c == conn) {
            self.0.swap_remove(at);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &(NodeId, ConnectionId)> {
        self.0.iter()
    }
}

#[derive(Debug, Default)]
struct UserEntry {
    conns: ConnSet,
    last_seen: Option<Timestamp>,
    /// Whether the last change reported for this user was `Online`.
    announced: bool,
}

impl State {
    fn is_live(&self, node: &NodeId, now: Timestamp) -> bool {
        self.nodes.get(node).is_some_and(|l| now < l.expires_at)
    }

    fn has_live_conn(&self, user: &UserId, now: Timestamp) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.conns.iter().any(|(node, _)| self.is_live(node, now)))
    }

    /// Expires `node`'s lease if it has run out, recording who went offline.
    fn expire_if_due(&mut self, node: &NodeId, now: Timestamp) {
        if self.nodes.get(node).is_some_and(|l| now >= l.expires_at) {
            self.expire(node, now);
        }
    }

    fn expire(&mut self, node: &NodeId, now: Timestamp) {
        let Some(lease) = self.nodes.remove(node) else {
            return;
        };
        let mut affected = HashSet::new();
        for (conn, user) in lease.conns {
            if let Some(entry) = self.users.get_mut(&user) {
                entry.conns.remove(&(node.clone(), conn));
            }
            affected.insert(user);
        }
        for user in affected {
            let still_online = self.has_live_conn(&user, now);
            let Some(entry) = self.users.get_mut(&user) else {
                continue;
            };
            if still_online || !entry.announced {
                continue;
            }
            entry.announced = false;
            let last_seen = entry.last_seen.max(Some(lease.renewed_at));
            entry.last_seen = last_seen;
            self.pending.push(PresenceInfo {
                user,
                status: PresenceStatus::Offline,
                last_seen,
            });
        }
    }

    fn info(&self, user: &UserId, now: Timestamp) -> PresenceInfo {
        if self.has_live_conn(user, now) {
            return PresenceInfo {
                user: user.clone(),
                status: PresenceStatus::Online,
                last_seen: Some(now),
            };
        }
        let entry = self.users.get(user);
        // Connections on expired, not yet swept nodes: seen when their node last renewed.
        let on_dead_nodes = entry
            .into_iter()
            .flat_map(|u| u.conns.iter())
            .filter_map(|(node, _)| self.nodes.get(node).map(|l| l.renewed_at))
            .max();
        PresenceInfo {
            user: user.clone(),
            status: PresenceStatus::Offline,
            last_seen: entry.and_then(|u| u.last_seen).max(on_dead_nodes),
        }
    }
}

impl MemoryPresence {
    /// The default lease TTL: 30 s.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

    /// A tracker whose node leases last `lease_ttl` after each renewal.
    pub fn new(lease_ttl: Duration) -> MemoryPresence {
        MemoryPresence {
            ttl: lease_ttl,
            state: Mutex::default(),
        }
    }
}

impl Default for MemoryPresence {
    fn default() -> Self {
        MemoryPresence::new(MemoryPresence::DEFAULT_LEASE_TTL)
    }
}

#[async_trait]
impl PresenceTracker for MemoryPresence {
    fn lease_ttl(&self) -> Duration {
        self.ttl
    }

    async fn connect(
        &self,
        node: &NodeId,
        conn: ConnectionId,
        user: &UserId,
        now: Timestamp,
    ) -> Result<PresenceChange> {
        let mut state = self.state.lock();
        state.expire_if_due(node, now);
        let lease = state.nodes.entry(node.clone()).or_insert_with(|| Lease {
            expires_at: now,
            renewed_at: now,
            conns: HashMap::new(),
        });
        lease.expires_at = now.saturating_add(self.ttl);
        lease.renewed_at = now;
        let previous = lease.conns.insert(conn, user.clone());
        if let Some(other) = previous.filter(|other| other != user) {
            // The connection id was reused for another user: the old registration is gone.
            if let Some(entry) = state.users.get_mut(&other) {
                entry.conns.remove(&(node.clone(), conn));
            }
        }
        let entry = state.users.entry(user.clone()).or_default();
        entry.conns.insert((node.clone(), conn));
        if entry.announced {
            return Ok(PresenceChange::Unchanged);
        }
        entry.announced = true;
        Ok(PresenceChange::Online)
    }

    async fn disconnect(
        &self,
        node: &NodeId,
        conn: ConnectionId,
        user: &UserId,
        now: Timestamp,
    ) -> Result<PresenceChange> {
        let mut state = self.state.lock();
        state.expire_if_due(node, now);
        let Some(lease) = state.nodes.get_mut(node) else {
            return Ok(PresenceChange::Unchanged);
        };
        if lease.conns.get(&conn) != Some(user) {
            return Ok(PresenceChange::Unchanged);
        }
        lease.conns.remove(&conn);
        if lease.conns.is_empty() {
            state.nodes.remove(node);
        }
        if let Some(entry) = state.users.get_mut(user) {
            entry.conns.remove(&(node.clone(), conn));
        }
        let still_online = state.has_live_conn(user, now);
        let Some(entry) = state.users.get_mut(user) else {
            return Ok(PresenceChange::Unchanged);
        };
        if still_online || !entry.announced {
            return Ok(PresenceChange::Unchanged);
        }
        entry.announced = false;
        entry.last_seen = Some(now);
        Ok(PresenceChange::Offline { last_seen: now })
    }

    async fn renew(&self, node: &NodeId, now: Timestamp) -> Result<bool> {
        let mut state = self.state.lock();
        state.expire_if_due(node, now);
        let Some(lease) = state.nodes.get_mut(node) else {
            return Ok(false);
        };
        lease.expires_at = now.saturating_add(self.ttl);
        lease.renewed_at = now;
        Ok(true)
    }

    async fn status(&self, users: &[UserId], now: Timestamp) -> Result<Vec<PresenceInfo>> {
        let state = self.state.lock();
        Ok(users.iter().map(|user| state.info(user, now)).collect())
    }

    async fn sweep(&self, now: Timestamp) -> Result<Vec<PresenceInfo>> {
        let mut state = self.state.lock();
        let expired: Vec<NodeId> = state
            .nodes
            .iter()
            .filter(|(_, lease)| now >= lease.expires_at)
            .map(|(node, _)| node.clone())
            .collect();
        for node in expired {
            state.expire(&node, now);
        }
        Ok(std::mem::take(&mut state.pending))
    }
}
