//! **chat-engine**: real-time chat for Rust applications — direct messages and group rooms
//! over WebSocket, history for users who were offline, presence, delivery and read
//! receipts, typing indicators, and connections that drop and come back without losing or
//! repeating a message.
//!
//! This crate is the facade: it re-exports the parts behind cargo features, so an
//! application depends on `chat-engine` alone.
//!
//! | path | crate | feature |
//! |---|---|---|
//! | [`core`] | `chat-core`: ids, protocol v1 frames and codec, backend traits | always |
//! | `memory` | `chat-store-memory`: in-memory store, delivery and presence | `memory` (default) |
//! | `sqlite` | `chat-store-sqlite`: durable store and delivery on one SQLite file | `sqlite` |
//! | `postgres` | `chat-store-postgres`: shared store and delivery on PostgreSQL, the sequencer of a cluster | `postgres` |
//! | `redis` | `chat-broker-redis`: the broker (pub/sub) and presence of a cluster on Redis | `redis` |
//! | `ws` | `chat-transport-ws`: the WebSocket transport | `ws` (default) |
//! | `client` | `chat-client`: the Rust client (reconnects, resumes, never a duplicate or a gap) | `client` |
//! | `jwt` | `chat-auth-jwt`: an `Authenticator` for JSON Web Tokens (HS256, RS256, EdDSA) | `jwt` |
//!
//! The most used items are also at the root: [`RoomId`], [`UserId`], [`MessageStore`], …
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use chat_engine::memory::MemoryStore;
//! use chat_engine::{ClientMsgId, MessageStore, NewMessage, RoomId, Timestamp, UserId};
//!
//! let store = MemoryStore::new();
//! let room = RoomId::new("general")?;
//! store.ensure_room(&room).await?;
//! let sent = store
//!     .append(NewMessage {
//!         room: room.clone(),
//!         from: UserId::new("alice")?,
//!         cid: ClientMsgId::new("c-1")?,
//!         body: "hello".into(),
//!         meta: None,
//!         ts: Timestamp::now(),
//!     })
//!     .await?;
//! assert_eq!(sent.message.seq.get(), 1);
//! # Ok::<(), chat_engine::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Features
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `memory` | yes | [`memory`]: `MemoryStore`, `MemoryPresence` |
//! | `ws` | yes | [`ws`]: the WebSocket transport |
//! | `sqlite` | no | `sqlite`: `SqliteStore` |
//! | `postgres` | no | `postgres`: `PostgresStore` |
//! | `redis` | no | `redis`: `RedisBroker`, `RedisPresence` |
//! | `axum` | no | `ws::axum`: the chat route for an axum app |
//! | `client` | no | [`client`]: the Rust client |
//! | `jwt` | no | [`jwt`]: `JwtAuthenticator` |
//! | `testkit` | no | `core::testkit`: the conformance suite for your own backends |

pub use chat_core as core;
pub use chat_core::{
    Authenticator, Authorizer, Broker, ClientMsgId, Clock, DeliveryTracker, Engine, EngineBuilder,
    EngineConfig, Epoch, Error, Message, MessageStore, Meta, NewMessage, PresenceTracker, Result,
    RoomId, Seq, Timestamp, UserId,
};

#[cfg(feature = "memory")]
pub use chat_store_memory as memory;

#[cfg(feature = "sqlite")]
pub use chat_store_sqlite as sqlite;

#[cfg(feature = "postgres")]
pub use chat_store_postgres as postgres;

#[cfg(feature = "redis")]
pub use chat_broker_redis as redis;

#[cfg(feature = "ws")]
pub use chat_transport_ws as ws;

#[cfg(feature = "client")]
pub use chat_client as client;

#[cfg(feature = "jwt")]
pub use chat_auth_jwt as jwt;

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
