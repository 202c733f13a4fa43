//! What the client tells the application.

use chat_core::protocol::{MemberPush, PresenceInfo, ReceiptPush, RoomState, TypingPush};
use chat_core::{Message, SessionId, UserId};

pub use crate::rooms::Reset;

/// One event for the application, in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message, exactly once per `(room, seq)` and in `seq` order per room — live,
    /// replayed after a reconnect, or fetched to fill a gap.
    Message(Message),
    /// A member's cursors moved.
    Receipt(ReceiptPush),
    /// Someone is typing, or stopped.
    Typing(TypingPush),
    /// A user came online or went offline.
    Presence(PresenceInfo),
    /// Someone joined or left a room (this user included).
    Member(MemberPush),
    /// A room's log was reset on the server (new epoch), or this user is no longer in it:
    /// drop what you hold of it and reload (`history`).
    Reset(Reset),
    /// The connection changed state.
    State(ConnectionState),
}

/// The connection's state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connecting (attempt 1, 2, … since the last session).
    Connecting {
        /// The attempt number.
        attempt: u32,
    },
    /// A session is open; requests flow.
    Connected {
        /// Who the server says we are.
        user: UserId,
        /// The session id.
        session: SessionId,
        /// Every room of the user.
        rooms: Vec<RoomState>,
    },
    /// The connection was lost; the client reconnects by itself.
    Disconnected {
        /// Why, as far as the client knows.
        reason: String,
    },
    /// The client stopped for good (closed, or unauthorized).
    Closed {
        /// Why.
        reason: String,
    },
}

/// The application's stream of [`Event`]s (also a `futures::Stream`). It ends after
/// [`ConnectionState::Closed`].
#[derive(Debug)]
pub struct Events {
    rx: tokio::sync::mpsc::Receiver<Event>,
}

impl Events {
    pub(crate) fn new(rx: tokio::sync::mpsc::Receiver<Event>) -> Events {
        Events { rx }
    }

    /// The next event; `None` once the client stopped. Cancel safe.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl futures_util::Stream for Events {
    type Item = Event;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
