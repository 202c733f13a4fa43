//! The WebSocket transport of chat-engine: protocol v1 over RFC 6455, on
//! tokio-tungstenite.
//!
//! - [`WsServer`]: a standalone listener (`ws://HOST:PORT/ws`) with a handshake timeout, a
//!   connection cap checked before the upgrade, chat-sized buffers, and graceful shutdown
//!   (every client gets close 1001, then the server stops).
//! - `axum` (feature `axum`): the same route as an axum handler, to mount beside your own
//!   routes.
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

mod adapt;
#[cfg(feature = "axum")]
pub mod axum;
mod server;

pub use server::{WsConfig, WsServer};
