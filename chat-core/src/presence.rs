//! [`PresenceTracker`]: who is online, across devices and nodes.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::id::{ConnectionId, NodeId, UserId};
pub use crate::protocol::{PresenceInfo, PresenceStatus};
use crate::time::Timestamp;

/// How a user's status changed through one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceChange {
    /// The user was offline and is now online (its first live connection opened).
    Online,
    /// The user was online and is now offline (its last live connection closed), last
    /// seen at the given time.
    Offline {
        /// The time of the change.
        last_seen: Timestamp,
    },
    /// The status did not change.
    Unchanged,
}

/// Connections per user across devices and nodes, with node leases.
///
/// Each node holds a **lease** that lasts [`lease_ttl`](Self::lease_ttl) after its latest
/// renewal ([`renew`](Self::renew) or [`connect`](Self::connect)). A connection counts only
/// while its node's lease is live, so the users of a node that died (and stopped renewing)
/// go offline within one TTL: no ghost "online".
///
/// Time is passed in as `now` (wall-clock milliseconds) rather than read inside, so that
/// several nodes agree on lease expiry through the shared backend and tests control time.
///
/// # Contract
///
/// - **Online while any connection is open.** A user is online while at least one of its
///   connections, on any node with a live lease, is registered. `connect` reports
///   [`PresenceChange::Online`] only for the first such connection; `disconnect` reports
///   [`PresenceChange::Offline`] only for the last. Connecting a registered connection again,
///   or disconnecting an unknown one, is [`PresenceChange::Unchanged`].
/// - **Last seen.** An offline user's `last_seen` is when its last connection closed (or,
///   after a lease expired, the node's last renewal); `None` for a user never seen. An
///   online user's `last_seen` is `now`.
/// - **Leases.** Once `now` passes a node's renewal time plus the TTL, [`status`](Self::status)
///   stops counting that node's connections at once, and the next [`sweep`](Self::sweep)
///   removes them and reports each user who went offline because of it, exactly once
///   (whichever node sweeps). [`renew`](Self::renew) on an expired or unknown lease
///   returns `false` and does not revive it: the node must `connect` its connections again.
///
/// Cancel safety: each call is one atomic change; a dropped future either made it or not.
#[async_trait]
pub trait PresenceTracker: Send + Sync + Debug + 'static {
    /// How long a node's lease lasts after a renewal. Nodes renew well within it (the
    /// engine renews every third of it).
    fn lease_ttl(&self) -> Duration;

    /// Registers connection `conn` of `user` on `node`, renewing the node's lease.
    async fn connect(
        &self,
        node: &NodeId,
        conn: ConnectionId,
        user: &UserId,
        now: Timestamp,
    ) -> Result<PresenceChange>;

    /// Unregisters connection `conn` of `user` on `node`.
    async fn disconnect(
        &self,
        node: &NodeId,
        conn: ConnectionId,
        user: &UserId,
        now: Timestamp,
    ) -> Result<PresenceChange>;

    /// Extends `node`'s lease to `now + lease_ttl`. `false` when the node has no live lease
    /// (it expired, or the node has no connections registered): its connections, if it
    /// still holds any, must be registered again.
    async fn renew(&self, node: &NodeId, now: Timestamp) -> Result<bool>;

    /// The presence of each user in `users`, in the same order.
    async fn status(&self, users: &[UserId], now: Timestamp) -> Result<Vec<PresenceInfo>>;

    /// Removes the connections of every expired lease and returns the users who went
    /// offline because of it (each once, with its `last_seen`).
    async fn sweep(&self, now: Timestamp) -> Result<Vec<PresenceInfo>>;
}
