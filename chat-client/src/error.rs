//! The client's error type.

use std::time::Duration;

use chat_core::protocol::ErrorCode;

/// The result type of the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an `error` frame.
    #[error("refused ({code}): {message}")]
    Refused {
        /// The protocol error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The token was refused (at `hello`, or when it expired): the client stopped.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The client was closed, or gave up.
    #[error("the client is closed")]
    Closed,
    /// No reply came within the request timeout (the request may still take effect:
    /// a send retried with the same `cid` is stored at most once).
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// Too many requests are waiting for a connection.
    #[error("the offline queue is full")]
    QueueFull,
    /// The first connection failed (from [`connect`](crate::connect)).
    #[error("cannot connect: {0}")]
    Connect(String),
}

impl ClientError {
    /// The protocol code of a refusal.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}
