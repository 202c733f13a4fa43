//! The application's handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chat_core::protocol::{
    ClientFrame, HistoryQuery, MemberInfo, PresenceInfo, ReplyBody, RoomState, SendTarget,
};
use chat_core::{ClientMsgId, Message, Meta, RoomId, Seq, SessionId, Timestamp, UserId};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::error::{ClientError, Result};

/// A request from the handle to the driver.
pub(crate) enum Command {
    Request {
        frame: ClientFrame,
        reply: oneshot::Sender<Result<ReplyBody>>,
    },
    Typing {
        room: RoomId,
        active: bool,
    },
    Close,
}

/// State the driver shares with handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    connected: AtomicBool,
    closed: AtomicBool,
    identity: Mutex<Option<(UserId, SessionId)>>,
}

impl Shared {
    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    pub(crate) fn set_closed(&self) {
        self.closed.store(true, Ordering::Release);
        self.connected.store(false, Ordering::Release);
    }

    pub(crate) fn set_identity(&self, user: UserId, session: SessionId) {
        *self.identity.lock() = Some((user, session));
    }

    pub(crate) fn user(&self) -> Option<UserId> {
        self.identity.lock().as_ref().map(|(user, _)| user.clone())
    }
}

/// A message to send, with the options [`Client::send`] leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// A room, or a user for the direct room.
    pub target: SendTarget,
    /// The text.
    pub body: String,
    /// Metadata forwarded untouched.
    pub meta: Option<Meta>,
    /// The client message id; `None` makes a random one. Reusing a cid makes the send a
    /// retry of the earlier one (stored once).
    pub cid: Option<ClientMsgId>,
}

/// The server's acknowledgement of a send: the message is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAck {
    /// The room (the direct room for a send to a user).
    pub room: RoomId,
    /// The message's seq.
    pub seq: Seq,
    /// The message's timestamp.
    pub ts: Timestamp,
    /// The cid it was sent with.
    pub cid: ClientMsgId,
    /// Whether it had been stored already (a retry).
    pub dup: bool,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// Ascending by seq.
    pub messages: Vec<Message>,
    /// Whether more exist beyond the page in its direction.
    pub more: bool,
}

/// A handle on a chat-engine client: cheap to clone, usable from any task.
///
/// Every method waits for the server's reply. While the connection is down, requests
/// wait (up to the request timeout) and go out when the client has reconnected; a `send`
/// interrupted by a disconnect is retried with the same `cid`, so it is stored once.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Request { frame, .. } => write!(f, "Request({})", frame.kind()),
            Command::Typing { room, active } => write!(f, "Typing({room}, {active})"),
            Command::Close => f.write_str("Close"),
        }
    }
}

fn random_cid() -> ClientMsgId {
    let (a, b) = (crate::driver::random_u64(), crate::driver::random_u64());
    ClientMsgId::new(&format!("c-{a:016x}{b:016x}"))
        .unwrap_or_else(|_| unreachable!("hex is a valid cid"))
}

impl Client {
    pub(crate) fn new(commands: mpsc::Sender<Command>, shared: Arc<Shared>) -> Client {
        Client { commands, shared }
    }

    async fn request(&self, frame: ClientFrame) -> Result<ReplyBody> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request { frame, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Whether a session is open right now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Whether the client stopped for good.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// The user the server authenticated (once connected).
    pub fn user(&self) -> Option<UserId> {
        self.shared.user()
    }

    /// Sends `body` to `room`; returns once the message is stored.
    pub async fn send(&self, room: &RoomId, body: impl Into<String>) -> Result<SendAck> {
        self.send_message(Outgoing {
            target: SendTarget::Room(room.clone()),
            body: body.into(),
            meta: None,
            cid: None,
        })
        .await
    }

    /// Sends `body` to `user` in your direct room (created if needed).
    pub async fn send_to(&self, user: &UserId, body: impl Into<String>) -> Result<SendAck> {
        self.send_message(Outgoing {
            target: SendTarget::To(user.clone()),
            body: body.into(),
            meta: None,
            cid: None,
        })
        .await
    }

    /// Sends a message with every option.
    pub async fn send_message(&self, message: Outgoing) -> Result<SendAck> {
        let cid = message.cid.unwrap_or_else(random_cid);
        let frame = ClientFrame::Send {
            target: message.target,
            cid: cid.clone(),
            body: message.body,
            meta: message.meta,
        };
        match self.request(frame).await? {
            ReplyBody::Send(sent) => Ok(SendAck {
                room: sent.room,
                seq: sent.seq,
                ts: sent.ts,
                cid,
                dup: sent.dup,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Joins `room` (created if it does not exist); returns its state for this user.
    pub async fn join(&self, room: &RoomId) -> Result<RoomState> {
        match self
            .request(ClientFrame::Join { room: room.clone() })
            .await?
        {
            ReplyBody::Join(state) => Ok(state),
            other => Err(unexpected(&other)),
        }
    }

    /// Leaves `room`.
    pub async fn leave(&self, room: &RoomId) -> Result<()> {
        self.request(ClientFrame::Leave { room: room.clone() })
            .await
            .map(drop)
    }

    /// A page of `room`'s history (`limit` `None`: the server's default, 50).
    pub async fn history(
        &self,
        room: &RoomId,
        query: HistoryQuery,
        limit: Option<u32>,
    ) -> Result<History> {
        let frame = ClientFrame::History {
            room: room.clone(),
            query,
            limit,
        };
        match self.request(frame).await? {
            ReplyBody::History(page) => Ok(History {
                messages: page.messages,
                more: page.more,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// The members of `room` with their presence and cursors.
    pub async fn members(&self, room: &RoomId) -> Result<Vec<MemberInfo>> {
        match self
            .request(ClientFrame::Members { room: room.clone() })
            .await?
        {
            ReplyBody::Members(members) => Ok(members.members),
            other => Err(unexpected(&other)),
        }
    }

    /// The presence of `users`.
    pub async fn presence(&self, users: &[UserId]) -> Result<Vec<PresenceInfo>> {
        match self
            .request(ClientFrame::Presence {
                users: users.to_vec(),
            })
            .await?
        {
            ReplyBody::Presence(reply) => Ok(reply.users),
            other => Err(unexpected(&other)),
        }
    }

    /// Marks `room` read up to `seq` (which also marks it delivered up to there).
    pub async fn mark_read(&self, room: &RoomId, seq: Seq) -> Result<()> {
        let frame = ClientFrame::Receipt {
            room: room.clone(),
            delivered: None,
            read: Some(seq),
        };
        self.request(frame).await.map(drop)
    }

    /// Marks `room` delivered up to `seq`.
    pub async fn mark_delivered(&self, room: &RoomId, seq: Seq) -> Result<()> {
        let frame = ClientFrame::Receipt {
            room: room.clone(),
            delivered: Some(seq),
            read: None,
        };
        self.request(frame).await.map(drop)
    }

    /// Tells the room's other members this user is typing (or stopped). Sent only while
    /// connected: a late typing indicator is worth nothing.
    pub async fn typing(&self, room: &RoomId, active: bool) -> Result<()> {
        self.commands
            .send(Command::Typing {
                room: room.clone(),
                active,
            })
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Closes the connection and stops the client; waiting requests fail with
    /// [`ClientError::Closed`].
    pub async fn close(&self) {
        let _ = self.commands.send(Command::Close).await;
    }
}

fn unexpected(reply: &ReplyBody) -> ClientError {
    ClientError::Refused {
        code: chat_core::protocol::ErrorCode::Internal,
        message: format!("unexpected reply {reply:?}"),
    }
}
