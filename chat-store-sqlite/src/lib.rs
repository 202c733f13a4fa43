//! A durable [`MessageStore`](chat_core::MessageStore) and
//! [`DeliveryTracker`](chat_core::DeliveryTracker) for chat-engine on one SQLite file:
//! history, epochs, membership and cursors that survive a restart and a crash, with
//! nothing to install (SQLite is compiled in).
//!
//! # Overview
//!
//! [`SqliteStore`] keeps the database in WAL mode with **one writer thread**: every write is
//! sent to it over a channel, it commits whatever is queued in one transaction (**group
//! commit**: a burst of appends shares one `fsync`) and answers each caller after the
//! commit. Reads run on a few separate connections on tokio's blocking pool. Nothing ever
//! blocks the async runtime.
//!
//! - The store is the sequencer: a room's next `seq` is computed and written inside the
//!   writer's transaction, so seqs are gapless from 1.
//! - Idempotency on `(room, sender, cid)` is a unique index; a retry gets the original.
//! - An acked append is on disk ([`Durability::Full`], the default) or at least in the
//!   operating system ([`Durability::Normal`]): see [`Durability`].
//! - The schema is created and migrated on open (tracked by `PRAGMA user_version`); a newer
//!   schema, or another application's database, is refused.
//!
//! It passes the whole `chat_core::testkit` (see this crate's `tests/testkit.rs`), and a
//! crash test kills a server on it with `SIGKILL` mid-burst, again and again, and finds
//! every acked message (`tests/crash_consistency.rs`).
//!
//! One process writes a database at a time: a second process opening the same file works
//! (SQLite's locks keep it consistent) but waits for the first one's writes. Several server
//! nodes share PostgreSQL instead (`chat-store-postgres`).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use chat_core::{ClientMsgId, MessageStore, NewMessage, RoomId, Timestamp, UserId};
//! use chat_store_sqlite::SqliteStore;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("chat.db");
//! let store = Arc::new(SqliteStore::open(&path).await?);
//! let room = RoomId::new("general")?;
//! let (info, created) = store.ensure_room(&room).await?;
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
//! drop(store);
//!
//! // After a restart: the same room, the same epoch, the same history.
//! let store = SqliteStore::open(&path).await?;
//! assert_eq!(store.room(&room).await?.map(|r| (r.epoch, r.latest.get())), Some((info.epoch, 1)));
//! # Ok::<(), chat_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! With the engine, use the store as both store and delivery tracker:
//! `EngineBuilder::new(store.clone(), store, presence, authenticator)`.
//!
//! # Errors
//!
//! Database failures are [`chat_core::Error::Backend`] with backend `"sqlite"`; a store whose
//! writer has stopped answers [`chat_core::Error::Closed`].
//!
//! # Features
//!
//! This crate has no cargo features. It depends on `rusqlite` by a version range with
//! `bundled` on, so an application's own `rusqlite` unifies with it.

mod config;
mod reader;
mod schema;
mod store;
mod writer;

pub use config::{Durability, SqliteConfig};
pub use store::SqliteStore;

/// The schema version this build creates and migrates to (`PRAGMA user_version`).
pub const SCHEMA_VERSION: usize = schema::VERSION;

fn backend(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> chat_core::Error {
    chat_core::Error::backend("sqlite", e)
}
