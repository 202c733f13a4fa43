//! A shared [`MessageStore`](chat_core::MessageStore) and
//! [`DeliveryTracker`](chat_core::DeliveryTracker) for chat-engine on PostgreSQL: durable
//! history, epochs, membership and cursors, and the **sequencer of a cluster** — any number
//! of server nodes append to one room and every member sees one order.
//!
//! # Overview
//!
//! [`PostgresStore`] holds a `deadpool-postgres` pool of `tokio-postgres` connections.
//!
//! - **Gapless under concurrency from many processes.** A room's next `seq` is taken from
//!   its row (`rooms.last_seq`) in the same transaction as the insert, with the row locked:
//!   appends to one room queue on that lock, appends to different rooms do not meet.
//! - **Idempotent.** `(room, sender, cid)` is a unique index; a retry, from any node, gets
//!   the original message with `dup = true`.
//! - **Batched.** Appends that arrive together go to the database together: one call of the
//!   `chat_append` function (one round trip, one commit) for the whole batch.
//! - **Migrations embedded**, applied on connect under an advisory lock and recorded in
//!   `chat_migrations`; a database with a newer schema is refused.
//! - Tables: `rooms`, `messages`, `members`, `cursors` (a member's cursors are dropped with
//!   its membership), optionally in a schema of their own ([`PostgresConfig::schema`]).
//!
//! It passes the whole `chat_core::testkit` (`tests/testkit.rs`, against the database in
//! `CHAT_TEST_POSTGRES_URL`, in a fresh schema per clause), a crash test that kills a server
//! on it with `SIGKILL` mid-burst, and a test with two server processes on one database.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use chat_core::{MessageStore, RoomId};
//! use chat_store_postgres::PostgresStore;
//!
//! # async fn demo() -> chat_core::Result<()> {
//! let store = Arc::new(PostgresStore::connect("postgres://chat@127.0.0.1/chat").await?);
//! let (info, _) = store.ensure_room(&RoomId::new("general")?).await?;
//! println!("general: epoch {}, {} messages", info.epoch, info.latest);
//! // With the engine, the same value is store and delivery tracker:
//! // EngineBuilder::new(store.clone(), store, presence, authenticator)
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! Database failures are [`chat_core::Error::Backend`] with backend `"postgres"`, whose
//! message includes the server's. When a connection breaks after a commit was sent, an
//! `append` cannot know whether it happened: it fails, and a retry with the same `cid`
//! returns the stored message if it did.
//!
//! # Features
//!
//! This crate has no cargo features. Connections made by [`PostgresConfig::connect`] are
//! plain TCP; for TLS, build the pool yourself and use [`PostgresStore::from_pool`].

mod config;
mod schema;
mod store;

pub use config::PostgresConfig;
pub use store::PostgresStore;

/// The pool type [`PostgresStore::from_pool`] takes.
pub use deadpool_postgres::Pool;

/// The schema version this build creates and migrates to (`chat_migrations`).
pub const SCHEMA_VERSION: usize = schema::VERSION;

fn backend(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> chat_core::Error {
    chat_core::Error::backend("postgres", e)
}
