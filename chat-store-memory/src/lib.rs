//! In-memory backends for chat-engine: [`MemoryStore`] (a
//! [`MessageStore`](chat_core::MessageStore) and
//! [`DeliveryTracker`](chat_core::DeliveryTracker)) and [`MemoryPresence`] (a
//! [`PresenceTracker`](chat_core::PresenceTracker)).
//!
//! Everything lives in the process and dies with it: a restarted server has new rooms with
//! new epochs, so clients that resume see a reset rather than silently missing messages.
//! Use them for a single-node server without persistence, for development and for tests;
//! use a durable store when history must survive a restart.
//!
//! Both pass the whole [`chat_core::testkit`] (see this crate's `tests/testkit.rs`).
//!
//! ```
//! use std::sync::Arc;
//! use chat_core::{MessageStore, RoomId};
//! use chat_store_memory::MemoryStore;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
//! let (info, created) = store.ensure_room(&RoomId::new("general")?).await?;
//! assert!(created && info.latest.get() == 0);
//! # Ok::<(), chat_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Memory
//!
//! The store keeps every message, its idempotency key and every membership for the life
//! of the process; presence keeps each user's `last_seen`. Nothing else grows.

mod presence;
mod store;

use std::sync::Arc;

use chat_core::{Authenticator, EngineBuilder};

pub use presence::MemoryPresence;
pub use store::MemoryStore;

/// An engine builder on fresh in-memory backends: one [`MemoryStore`] as store and delivery
/// tracker, a [`MemoryPresence`] with the default lease, and `authenticator`.
///
/// ```
/// use std::sync::Arc;
/// use chat_core::auth::DevAuthenticator;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let engine = chat_store_memory::engine_builder(Arc::new(DevAuthenticator)).build();
/// assert_eq!(engine.connections(), 0);
/// # });
/// ```
pub fn engine_builder(authenticator: Arc<dyn Authenticator>) -> EngineBuilder {
    let store = Arc::new(MemoryStore::new());
    EngineBuilder::new(
        store.clone(),
        store,
        Arc::new(MemoryPresence::default()),
        authenticator,
    )
}
