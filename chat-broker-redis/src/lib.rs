//! Several chat-engine server nodes, one chat: a [`Broker`](chat_core::Broker) over Redis
//! pub/sub and a [`PresenceTracker`](chat_core::PresenceTracker) on Redis.
//!
//! # Overview
//!
//! - [`RedisBroker`] carries events between nodes — the **doorbell, not the truth**: each
//!   event names its room and `seq` and carries the encoded frame; a node that misses one
//!   reads it from the shared store. Each topic is a channel; a node never hears its own
//!   events; a slow consumer loses events rather than slowing publishers; after Redis
//!   drops or restarts, the broker reconnects and subscribes everything again by itself.
//! - [`RedisPresence`] keeps who is online across devices and nodes: per-connection
//!   registrations under per-node leases with a TTL, so the users of a node that died go
//!   offline within one TTL. Every call is one Lua script (one atomic step), and time is
//!   only ever the `now` the caller passes.
//!
//! Both pass the whole `chat_core::testkit` (`tests/testkit.rs`, against the Redis in
//! `CHAT_TEST_REDIS_URL`, each clause under a channel and key prefix of its own), and
//! `tests/broker_reconnect.rs` cuts and restores the broker's connections through a TCP
//! proxy.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use chat_broker_redis::{RedisBroker, RedisPresence};
//! use chat_core::broker::{Broker, Topic};
//! use chat_core::{NodeId, RoomId};
//!
//! # async fn demo() -> chat_core::Result<()> {
//! let url = "redis://127.0.0.1:6379";
//! let broker = Arc::new(RedisBroker::connect(url, NodeId::new("node-1")?).await?);
//! let presence = Arc::new(RedisPresence::connect(url).await?);
//!
//! let mut events = broker.events();
//! broker.subscribe(&Topic::Room(RoomId::new("general")?)).await?;
//! while let Some(event) = events.recv().await {
//!     println!("{:?} from {}", event.kind, event.origin);
//! }
//! # drop(presence); Ok(()) }
//! ```
//!
//! # The envelope
//!
//! A payload on a channel is one byte of version (`1`), one byte of length and the
//! publishing node's id, then the event in chat-core's network form
//! ([`BrokerEvent::to_bytes`](chat_core::broker::BrokerEvent::to_bytes): a line of JSON
//! with origin, topic and kind, then the frame as it goes to clients). A node compares the
//! publisher with its own id before parsing anything, and drops (and counts, in
//! [`RedisBrokerStats::malformed`]) a payload of a version it does not know.
//!
//! # Errors
//!
//! Redis failures are [`chat_core::Error::Backend`] with backend `"redis"`, timeouts
//! included. A call that failed on a broken connection is not retried (it may have
//! reached Redis); the next call makes a new connection.
//!
//! # Features
//!
//! This crate has no cargo features. Connections are plain TCP (`redis://`).

mod broker;
mod connection;
mod envelope;
mod presence;

pub use broker::{RedisBroker, RedisBrokerConfig, RedisBrokerStats};
pub use presence::{RedisPresence, RedisPresenceConfig};

fn backend(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> chat_core::Error {
    chat_core::Error::backend("redis", e)
}

fn timed_out(after: std::time::Duration) -> chat_core::Error {
    backend(format!("no answer within {after:?}"))
}

fn malformed_reply(op: &str) -> chat_core::Error {
    backend(format!("an unexpected reply to {op}"))
}
