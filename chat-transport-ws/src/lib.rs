//! The WebSocket transport of chat-engine.
//!
//! **Not built yet.** This crate will hold the standalone WebSocket listener
//! (tokio-tungstenite), the axum integration and the Rust client. Until then it only
//! re-exports the protocol it will carry.

pub use chat_core::protocol;
