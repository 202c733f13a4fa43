//! The core of chat-engine: identifiers, the protocol v1 frames and their JSON codec, the
//! traits every backend implements, and the conformance suite that proves an
//! implementation right.
//!
//! # Overview
//!
//! | module | what |
//! |---|---|
//! | [`id`] | validated ids: [`UserId`], [`RoomId`] (with direct rooms), [`Seq`], [`Epoch`], [`ClientMsgId`], … |
//! | [`protocol`] | every frame of protocol v1; [`Request::decode`](protocol::Request::decode) maps bad input to protocol error codes; [`ServerFrame::encode`](protocol::ServerFrame::encode) serializes a push once |
//! | [`store`] | [`MessageStore`]: rooms, the per-room sequencer, idempotent append, history, membership |
//! | [`delivery`] | [`DeliveryTracker`]: delivered/read cursors that only move forward |
//! | [`presence`] | [`PresenceTracker`]: multi-device, multi-node presence with leases |
//! | [`broker`] | [`Broker`]: events between nodes, and [`LocalBus`](broker::LocalBus) in process |
//! | [`auth`] | [`Authenticator`] (with [`DevAuthenticator`](auth::DevAuthenticator)) and [`Authorizer`] |
//! | `testkit` | (feature `testkit`) one test per contract clause, for any backend |
//!
//! chat-core does no I/O of its own: backends (`chat-store-memory`, …) implement its
//! traits, transports (`chat-transport-ws`) carry its frames.
//!
//! # Example
//!
//! Decode a client frame, refuse it or act on it, encode the reply once:
//!
//! ```
//! use chat_core::protocol::{ClientFrame, DecodeLimits, ReplyBody, Request, ServerFrame};
//!
//! let text = br#"{"type":"ping","id":10}"#;
//! let reply = match Request::decode(text, &DecodeLimits::default()) {
//!     Ok(Request { id, frame: ClientFrame::Ping }) => ServerFrame::ok(id, ReplyBody::Empty),
//!     Ok(_) => unreachable!("a ping"),
//!     Err(rejection) => rejection.to_frame(),
//! };
//! assert_eq!(reply.encode().as_str(), r#"{"type":"ok","id":10}"#);
//! ```
//!
//! # Features
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `testkit` | no | `chat_core::testkit`, the backend conformance suite (pulls in a tokio runtime) |

pub mod auth;
pub mod broker;
pub mod connection;
pub mod delivery;
pub mod engine;
mod error;
pub mod id;
mod message;
mod outbox;
pub mod presence;
pub mod protocol;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod time;

pub use auth::{Authenticator, Authorizer};
pub use broker::Broker;
pub use connection::{ConnectionManager, LocalConnection};
pub use delivery::DeliveryTracker;
pub use engine::{Engine, EngineBuilder, EngineConfig, EngineStats};
pub use error::{Error, Result};
pub use id::{
    ClientMsgId, ConnectionId, Epoch, InvalidId, NodeId, RequestId, RoomId, Seq, SessionId, UserId,
};
pub use message::{InvalidMeta, Message, Meta, NewMessage};
pub use presence::PresenceTracker;
pub use store::MessageStore;
pub use time::{Clock, Timestamp};
