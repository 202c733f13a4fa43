//! The Rust client of chat-engine: for bots, services, command-line tools and tests that
//! talk to a chat-engine server over protocol v1.
//!
//! - [`connect`] (or [`ClientBuilder`]) gives a [`Client`] handle and a stream of
//!   [`Event`]s.
//! - The client reconnects by itself, with exponential backoff and jitter, and resumes
//!   every room from the `(epoch, seq)` it holds.
//! - The application never sees a duplicate or a gap: messages are delivered once per
//!   `(room, seq)`, in order; a gap is filled from `history` before later messages are
//!   delivered. A room whose log was reset on the server (a new epoch) is announced with
//!   [`Event::Reset`] instead of silently missing messages.
//! - [`Client::send`] returns the server's acknowledgement (the message is stored). A send
//!   interrupted by a disconnect is retried with the same `cid` after reconnecting, so it
//!   is stored once; sends made while offline wait in a bounded queue.
//!
//! ```
//! use chat_client::{Event, connect};
//! # use std::sync::Arc;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // A server to talk to, in process (in your code it runs elsewhere).
//! # let store = Arc::new(chat_store_memory::MemoryStore::new());
//! # let engine = chat_core::Engine::builder(store.clone(), store, Arc::new(chat_store_memory::MemoryPresence::default()), Arc::new(chat_core::auth::DevAuthenticator)).build();
//! # let server = chat_transport_ws::WsServer::bind("127.0.0.1:0", engine).await?;
//! # let url = format!("ws://{}/ws", server.local_addr()?);
//! # tokio::spawn(server.run_until(std::future::pending()));
//!
//! let (client, mut events) = connect(url.as_str(), "dev:alice").await?;
//! let general = "general".parse()?;
//! client.join(&general).await?;
//! let ack = client.send(&general, "hello").await?;
//! println!("stored as #{}", ack.seq);
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Message(m) => {
//!             println!("[{}] {}: {}", m.room, m.from, m.body);
//!             # break;
//!         }
//!         Event::Reset(reset) => println!("{} was reset; reload it", reset.room),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

mod client;
mod config;
mod driver;
mod error;
mod event;
mod rooms;

pub use chat_core::protocol::{HistoryQuery, MemberInfo, PresenceInfo, RoomState, SendTarget};
pub use client::{Client, History, Outgoing, SendAck};
pub use config::{ClientBuilder, connect};
pub use error::{ClientError, Result};
pub use event::{ConnectionState, Event, Events, Reset};
