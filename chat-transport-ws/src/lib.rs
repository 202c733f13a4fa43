//! The WebSocket transport of chat-engine: protocol v1 over RFC 6455.
//!
//! - [`WsServer`]: a standalone listener (`ws://HOST:PORT/ws`) on this crate's own RFC 6455
//!   implementation: frames encoded once by the engine go straight onto the socket, an idle
//!   connection keeps no buffers, the request head is bounded in size and header count, a
//!   handshake has a deadline, the connection cap is checked before the upgrade, and
//!   shutdown is graceful (every client gets close 1001, then the server stops). It can
//!   also serve a few static pages ([`WsServer::with_page`]), e.g. a chat page.
//! - `axum` (feature `axum`): the same route as an axum handler (on axum's own WebSocket,
//!   tokio-tungstenite), to mount beside your own routes.
//!
//! Both hand each connection to [`Engine::serve`](chat_core::Engine::serve), which does
//! everything else.
//!
//! ```no_run
//! use std::sync::Arc;
//! use chat_core::auth::DevAuthenticator;
//! use chat_transport_ws::WsServer;
//!
//! # async fn run() -> std::io::Result<()> {
//! let engine = chat_store_memory::engine_builder(Arc::new(DevAuthenticator)).build();
//! let server = WsServer::bind("127.0.0.1:8080", engine).await?;
//! server.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```
//!
//! # Features
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `axum` | no | `chat_transport_ws::axum`: a `Router` / handler for an axum app |

#[cfg(feature = "axum")]
pub mod axum;
pub mod conformance;
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
mod server;
mod socket;
mod wire;

pub use server::{WsConfig, WsServer};
