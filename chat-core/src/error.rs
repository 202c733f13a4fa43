//! The error type of chat-core and of the backends behind its traits.

use crate::id::{InvalidId, RoomId, UserId};
use crate::protocol::ErrorCode;

/// The result type of chat-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, named by what the caller can do about it.
///
/// [`Error::code`] maps each variant to the protocol error a client is sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The room does not exist.
    #[error("room {0} not found")]
    RoomNotFound(RoomId),
    /// The user is not a member of the room.
    #[error("{user} is not a member of {room}")]
    NotMember {
        /// The room.
        room: RoomId,
        /// The user.
        user: UserId,
    },
    /// The credentials were refused.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The authorizer refused the action.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// An identifier broke its rules.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// The request is not valid here (for example a second `hello`).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A bug: an invariant broke or a task panicked. Nothing was stored.
    #[error("internal error: {0}")]
    Internal(String),
    /// A bounded resource is full (a queue, a connection table); retry later.
    #[error("{0} is full")]
    Full(&'static str),
    /// The component was shut down.
    #[error("closed")]
    Closed,
    /// The backend (database, cache, broker) failed or is unreachable; nothing was changed
    /// by the failed call unless the backend says otherwise.
    #[error("{backend} backend failed: {source}")]
    Backend {
        /// Which backend (`"postgres"`, `"redis"`, …).
        backend: &'static str,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// A backend failure.
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Error {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }

    /// The protocol error code a client gets for this error.
    ///
    /// `RoomNotFound` and `NotMember` both map to `forbidden`: protocol v1 never reveals
    /// whether a room the user may not see exists.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::RoomNotFound(_) | Error::NotMember { .. } | Error::Forbidden(_) => {
                ErrorCode::Forbidden
            }
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
            Error::InvalidId(_) | Error::BadRequest(_) => ErrorCode::BadRequest,
            Error::Internal(_) => ErrorCode::Internal,
            Error::Full(_) | Error::Closed | Error::Backend { .. } => ErrorCode::Unavailable,
        }
    }
}
