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

/// How many events wait for the application, shared by the driver and [`Events`].
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    queued: std::sync::atomic::AtomicUsize,
    /// Wakes the driver when the application took events.
    consumed: tokio::sync::Notify,
}

impl Backlog {
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn added(&self) {
        self.queued
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn taken(&self) {
        self.queued
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.consumed.notify_one();
    }

    /// Waits until the application took an event. Cancel safe.
    pub(crate) async fn consumed(&self) {
        self.consumed.notified().await;
    }
}

/// The application's stream of [`Event`]s (also a `futures::Stream`). It ends after
/// [`ConnectionState::Closed`].
///
/// # Backpressure
///
/// When the application does not keep up, the client stops reading the connection once
/// [`event_buffer`](crate::ClientBuilder::event_buffer) events wait here; the server then
/// closes it as a slow consumer (4008) and the client resumes later, losing nothing. While a
/// request of the application waits for its reply, the client reads on (up to 16 times the
/// buffer, and at least 8,192 events), so that awaiting a request inside the event loop
/// does not stall the client.
#[derive(Debug)]
pub struct Events {
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    backlog: std::sync::Arc<Backlog>,
}

impl Events {
    pub(crate) fn new(
        rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
        backlog: std::sync::Arc<Backlog>,
    ) -> Events {
        Events { rx, backlog }
    }

    /// The next event; `None` once the client stopped. Cancel safe.
    pub async fn next(&mut self) -> Option<Event> {
        let event = self.rx.recv().await;
        if event.is_some() {
            self.backlog.taken();
        }
        event
    }

    /// The next event if one is waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        let event = self.rx.try_recv().ok();
        if event.is_some() {
            self.backlog.taken();
        }
        event
    }
}

impl futures_util::Stream for Events {
    type Item = Event;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        let polled = self.rx.poll_recv(cx);
        if let std::task::Poll::Ready(Some(_)) = &polled {
            self.backlog.taken();
        }
        polled
    }
}
