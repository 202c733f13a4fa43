//! [`RedisPresence`]: the [`PresenceTracker`] of a cluster on Redis.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chat_core::presence::{PresenceChange, PresenceInfo, PresenceStatus};
use chat_core::{ConnectionId, NodeId, PresenceTracker, Result, Timestamp, UserId};
use redis::Script;

use crate::connection::Reconnecting;
use crate::{backend, malformed_reply};

/// The script behind every call (see its header for the keys it keeps).
const SCRIPT: &str = include_str!("presence.lua");

/// How to connect a [`RedisPresence`]: the Redis URL is required, the rest has defaults.
///
/// ```no_run
/// # async fn demo() -> chat_core::Result<()> {
/// use std::time::Duration;
/// use chat_broker_redis::RedisPresenceConfig;
///
/// let presence = RedisPresenceConfig::new("redis://127.0.0.1:6379")
///     .key_prefix("myapp")
///     .lease_ttl(Duration::from_secs(15))
///     .connect()
///     .await?;
/// # drop(presence); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisPresenceConfig {
    url: String,
    prefix: String,
    lease_ttl: Duration,
    command_timeout: Duration,
}

impl RedisPresenceConfig {
    /// The default key prefix: `chat`.
    pub const DEFAULT_KEY_PREFIX: &'static str = "chat";
    /// The default lease TTL: 30 s, as [`MemoryPresence`](https://docs.rs/chat-store-memory)'s.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
    /// The default time one call may take.
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

    /// Presence on the Redis server at `url` (`redis://[:password@]host[:port][/db]`).
    pub fn new(url: &str) -> RedisPresenceConfig {
        RedisPresenceConfig {
            url: url.to_owned(),
            prefix: RedisPresenceConfig::DEFAULT_KEY_PREFIX.to_owned(),
            lease_ttl: RedisPresenceConfig::DEFAULT_LEASE_TTL,
            command_timeout: RedisPresenceConfig::DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// The cluster's name in key names (default [`DEFAULT_KEY_PREFIX`](Self::DEFAULT_KEY_PREFIX)):
    /// every key is `{<prefix>}:presence:…`. The braces make `<prefix>` a hash tag, so that
    /// on Redis Cluster all of a cluster's presence keys live in one slot, as the atomic
    /// scripts need. Nodes of one cluster use the same prefix; clusters (or tests) sharing
    /// a Redis use different ones.
    pub fn key_prefix(mut self, prefix: &str) -> RedisPresenceConfig {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// How long a node's lease lasts after a renewal (default
    /// [`DEFAULT_LEASE_TTL`](Self::DEFAULT_LEASE_TTL)). Every node of a cluster must use
    /// the same.
    pub fn lease_ttl(mut self, ttl: Duration) -> RedisPresenceConfig {
        self.lease_ttl = ttl;
        self
    }

    /// How long connecting plus one call may take before it fails (default
    /// [`DEFAULT_COMMAND_TIMEOUT`](Self::DEFAULT_COMMAND_TIMEOUT)).
    pub fn command_timeout(mut self, timeout: Duration) -> RedisPresenceConfig {
        self.command_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Connects (one multiplexed connection, made again after it broke). Fails when Redis
    /// cannot be reached now.
    ///
    /// Cancel safe.
    pub async fn connect(self) -> Result<RedisPresence> {
        let client = redis::Client::open(self.url.as_str()).map_err(backend)?;
        let conn = Reconnecting::connect(client, self.command_timeout).await?;
        Ok(RedisPresence {
            conn,
            prefix: format!("{{{}}}:presence", self.prefix),
            ttl_ms: u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX),
            ttl: self.lease_ttl,
            script: Script::new(SCRIPT),
        })
    }
}

/// A [`PresenceTracker`] on Redis, shared by every node of a cluster: who is online,
/// across devices and nodes, with node leases.
///
/// # How
///
/// Each call is one run of a Lua script, so one atomic step, whichever node makes it:
/// concurrent connects of one user report `Online` once, and a dead node's users are
/// reported by exactly one `sweep`. The keys are a sorted set of node leases by expiry,
/// a hash of connections per node, a set of connections per user, the set of users
/// reported online, a hash of last-seen times, and a list of offline changes for the next
/// sweep (found when a call expired a lease on its way).
///
/// Time comes only from the `now` each call passes; the Redis server's clock is never
/// read and no key has a Redis expiry. A node that stops renewing is noticed by the others
/// from the `now` they pass: its users read as offline at once, and the next `sweep` (on
/// any node) removes its connections.
///
/// Keys stay for users seen once (their last-seen time) and for live leases; a node that
/// closes all its connections leaves no lease behind.
///
/// # Clone
///
/// Not `Clone`: share it as `Arc<RedisPresence>`. Its connection is multiplexed, so
/// concurrent calls do not queue behind one another.
pub struct RedisPresence {
    conn: Reconnecting,
    prefix: String,
    ttl: Duration,
    ttl_ms: u64,
    script: Script,
}

impl fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPresence")
            .field("key_prefix", &self.prefix)
            .field("lease_ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisPresence {
    /// Connects to the Redis server at `url` with the default settings of
    /// [`RedisPresenceConfig`].
    ///
    /// Cancel safe.
    pub async fn connect(url: &str) -> Result<RedisPresence> {
        RedisPresenceConfig::new(url).connect().await
    }

    /// The start of every key this tracker uses (`{<prefix>}:presence`).
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    async fn call<T: redis::FromRedisValue + Send>(
        &self,
        op: &str,
        now: Timestamp,
        args: &[&str],
    ) -> Result<T> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(op)
            .arg(now.as_millis())
            .arg(self.ttl_ms);
        for arg in args {
            invocation.arg(*arg);
        }
        let invocation = &invocation;
        self.conn
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }
}

#[async_trait]
impl PresenceTracker for RedisPresence {
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
        let conn = conn.0.to_string();
        let online: i64 = self
            .call("connect", now, &[node.as_str(), &conn, user.as_str()])
            .await?;
        Ok(if online == 1 {
            PresenceChange::Online
        } else {
            PresenceChange::Unchanged
        })
    }

    async fn disconnect(
        &self,
        node: &NodeId,
        conn: ConnectionId,
        user: &UserId,
        now: Timestamp,
    ) -> Result<PresenceChange> {
        let conn = conn.0.to_string();
        let offline: i64 = self
            .call("disconnect", now, &[node.as_str(), &conn, user.as_str()])
            .await?;
        Ok(if offline == 1 {
            PresenceChange::Offline { last_seen: now }
        } else {
            PresenceChange::Unchanged
        })
    }

    async fn renew(&self, node: &NodeId, now: Timestamp) -> Result<bool> {
        let renewed: i64 = self.call("renew", now, &[node.as_str()]).await?;
        Ok(renewed == 1)
    }

    async fn status(&self, users: &[UserId], now: Timestamp) -> Result<Vec<PresenceInfo>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let args: Vec<&str> = users.iter().map(UserId::as_str).collect();
        let flat: Vec<i64> = self.call("status", now, &args).await?;
        if flat.len() != users.len() * 2 {
            return Err(malformed_reply("status"));
        }
        Ok(users
            .iter()
            .zip(flat.chunks_exact(2))
            .map(|(user, pair)| PresenceInfo {
                user: user.clone(),
                status: if pair[0] == 1 {
                    PresenceStatus::Online
                } else {
                    PresenceStatus::Offline
                },
                last_seen: u64::try_from(pair[1]).ok().map(Timestamp::from_millis),
            })
            .collect())
    }

    async fn sweep(&self, now: Timestamp) -> Result<Vec<PresenceInfo>> {
        let reports: Vec<String> = self.call("sweep", now, &[]).await?;
        let mut offline = Vec::with_capacity(reports.len());
        for report in reports {
            let Some((user, seen)) = report.split_once(' ') else {
                return Err(malformed_reply("sweep"));
            };
            let user = UserId::new(user).map_err(|_| malformed_reply("sweep"))?;
            offline.push(PresenceInfo {
                user,
                status: PresenceStatus::Offline,
                last_seen: seen.parse().ok().map(Timestamp::from_millis),
            });
        }
        Ok(offline)
    }
}
