//! The background task that owns the connection: connects, says hello with the resume
//! points, sends requests (again after a reconnect), hands events to the application in
//! order, and reconnects with backoff when the connection is lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chat_core::protocol::{
    ClientFrame, CloseCode, ErrorCode, HistoryQuery, ReplyBody, Request, ServerFrame,
};
use chat_core::{Message, RequestId, RoomId};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::client::{Command, Shared};
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::event::{Backlog, ConnectionState, Event};
use crate::rooms::{Fill, Rooms};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Who waits for a request's reply.
enum Waiter {
    /// The application.
    User(oneshot::Sender<Result<ReplyBody, ClientError>>),
    /// The client itself, filling a gap of this room.
    Fill(RoomId),
    /// The client itself, learning the epoch of a room it was made a member of elsewhere
    /// (a `join` by a member changes nothing on the server).
    Learn,
}

struct Pending {
    frame: ClientFrame,
    waiter: Waiter,
    /// The id it was sent with on the current connection; `None` until (re)sent.
    wire: Option<u64>,
    deadline: Instant,
}

/// How a session ended.
enum Ended {
    /// Lost: reconnect.
    Lost(String),
    /// Refused for good (bad token): stop.
    Fatal(ClientError),
    /// The application closed the client.
    Closed,
}

pub(crate) struct Driver {
    config: ClientConfig,
    commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    backlog: Arc<Backlog>,
    shared: Arc<Shared>,
    rooms: Rooms,
    pending: VecDeque<Pending>,
    next_wire: u64,
    /// Told once the first session opened (or the first attempt failed).
    first: Option<oneshot::Sender<Result<(), ClientError>>>,
}

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::UnboundedSender<Event>,
        backlog: Arc<Backlog>,
        shared: Arc<Shared>,
        first: Option<oneshot::Sender<Result<(), ClientError>>>,
    ) -> Driver {
        Driver {
            config,
            commands,
            events,
            backlog,
            shared,
            rooms: Rooms::default(),
            pending: VecDeque::new(),
            next_wire: 1,
            first,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.emit(Event::State(ConnectionState::Connecting { attempt }))
                .await;
            let ended = self.session(&mut attempt).await;
            self.shared.set_connected(false);
            // Requests the client made for itself belong to the lost connection.
            self.pending.retain(|p| matches!(p.waiter, Waiter::User(_)));
            for pending in &mut self.pending {
                pending.wire = None;
            }
            let reason = match ended {
                Ended::Closed => {
                    self.finish(ClientError::Closed, "closed by the application")
                        .await;
                    return;
                }
                Ended::Fatal(error) => {
                    let reason = error.to_string();
                    if let Some(first) = self.first.take() {
                        let _ = first.send(Err(error.clone()));
                    }
                    self.finish(error, &reason).await;
                    return;
                }
                Ended::Lost(reason) => reason,
            };
            if let Some(first) = self.first.take() {
                let _ = first.send(Err(ClientError::Connect(reason.clone())));
                self.finish(ClientError::Connect(reason.clone()), &reason)
                    .await;
                return;
            }
            self.emit(Event::State(ConnectionState::Disconnected { reason }))
                .await;
            if !self.back_off(attempt).await {
                self.finish(ClientError::Closed, "closed by the application")
                    .await;
                return;
            }
        }
    }

    /// Fails every waiting request and says so.
    async fn finish(&mut self, error: ClientError, reason: &str) {
        self.shared.set_closed();
        for pending in self.pending.drain(..) {
            if let Waiter::User(reply) = pending.waiter {
                let _ = reply.send(Err(error.clone()));
            }
        }
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Request { reply, .. } = command {
                let _ = reply.send(Err(error.clone()));
            }
        }
        self.emit(Event::State(ConnectionState::Closed {
            reason: reason.to_owned(),
        }))
        .await;
    }

    /// Waits before the next attempt (exponential backoff with jitter), taking requests
    /// meanwhile. `false` when the application closed the client.
    async fn back_off(&mut self, attempt: u32) -> bool {
        let exp = self
            .config
            .backoff_min
            .saturating_mul(1 << attempt.min(16).saturating_sub(1));
        let ceiling = exp.min(self.config.backoff_max);
        // Full jitter in [ceiling/2, ceiling]: reconnect storms spread out.
        let jitter = (random_u64() % 1_000) as u32;
        let delay = ceiling / 2 + ceiling / 2 * jitter / 1_000;
        let wake = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(wake) => return true,
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => return false,
                    Some(command) => self.accept(command),
                },
            }
        }
    }

    async fn emit(&self, event: Event) {
        // The application may have dropped its event stream: nothing to do then.
        if self.events.send(event).is_ok() {
            self.backlog.added();
        }
    }

    /// Whether to stop reading the connection for now: the application is behind — unless
    /// it waits for a reply (which can only be read after the pushes before it), up to a
    /// hard limit.
    fn reading_paused(&self) -> bool {
        let queued = self.backlog.queued();
        let waiting = self
            .pending
            .iter()
            .any(|p| p.wire.is_some() && matches!(p.waiter, Waiter::User(_)));
        queued >= hard_limit(self.config.event_buffer)
            || (queued >= self.config.event_buffer && !waiting)
    }

    /// Takes a command while not connected (or before sending it).
    fn accept(&mut self, command: Command) {
        match command {
            Command::Request { frame, reply } => {
                let user_pending = self
                    .pending
                    .iter()
                    .filter(|p| matches!(p.waiter, Waiter::User(_)))
                    .count();
                if user_pending >= self.config.queue_limit {
                    let _ = reply.send(Err(ClientError::QueueFull));
                    return;
                }
                // Measured with the longest id it could be sent with.
                let size = Request::new(Some(RequestId::MAX), frame.clone())
                    .encode()
                    .len();
                if size > self.config.max_frame_bytes {
                    let _ = reply.send(Err(ClientError::Refused {
                        code: ErrorCode::TooLarge,
                        message: format!(
                            "the request is {size} bytes encoded, over the frame limit of {}",
                            self.config.max_frame_bytes
                        ),
                    }));
                    return;
                }
                self.pending.push_back(Pending {
                    frame,
                    waiter: Waiter::User(reply),
                    wire: None,
                    deadline: Instant::now() + self.config.request_timeout,
                });
            }
            // Typing is of the moment: not worth sending late.
            Command::Typing { .. } | Command::Close => {}
        }
    }

    /// Follows a room this user was made a member of elsewhere, and asks for its epoch
    /// when unknown: without it, a server that comes back with a new log for the room
    /// could not be told from one that kept it.
    fn joined_elsewhere(&mut self, room: &RoomId) {
        if self.rooms.on_joined_elsewhere(room) {
            self.pending.push_back(Pending {
                frame: ClientFrame::Join { room: room.clone() },
                waiter: Waiter::Learn,
                wire: None,
                deadline: Instant::now() + self.config.request_timeout,
            });
        }
    }

    fn fill(&mut self, fill: Fill) {
        self.pending.push_back(Pending {
            frame: ClientFrame::History {
                room: fill.room.clone(),
                query: HistoryQuery::After(fill.after),
                limit: Some(fill.limit),
            },
            waiter: Waiter::Fill(fill.room),
            wire: None,
            deadline: Instant::now() + self.config.request_timeout,
        });
    }

    /// One connection, from connect to loss.
    async fn session(&mut self, attempt: &mut u32) -> Ended {
        let connect = tokio_tungstenite::connect_async(self.config.url.as_str());
        let mut ws = match tokio::time::timeout(self.config.connect_timeout, connect).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return Ended::Lost(format!("connect: {e}")),
            Err(_) => return Ended::Lost("connect: timed out".to_owned()),
        };
        let heartbeat = match self.hello(&mut ws).await {
            Ok(heartbeat) => heartbeat,
            Err(ended) => return ended,
        };
        *attempt = 0;
        if let Some(first) = self.first.take() {
            let _ = first.send(Ok(()));
        }
        self.shared.set_connected(true);
        // Everything still unanswered goes (again) in its original order; sends keep
        // their cid, so one that was stored before the loss is not stored twice.
        if let Err(e) = self.send_pending(&mut ws).await {
            return Ended::Lost(e);
        }
        // The server pings every heartbeat: three without a word means the connection is dead
        // (half-open), even if the socket never says so.
        let silent_limit = heartbeat * 3;
        let mut last_heard = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let paused = self.reading_paused();
            tokio::select! {
                () = self.backlog.consumed(), if paused => {}
                read = ws.next(), if !paused => {
                    last_heard = Instant::now();
                    match read {
                        Some(Ok(WsMessage::Text(text))) => {
                            if let Err(ended) = self.on_frame(text.as_bytes()).await {
                                return ended;
                            }
                            if let Err(e) = self.send_pending(&mut ws).await {
                                return Ended::Lost(e);
                            }
                        }
                        Some(Ok(WsMessage::Close(frame))) => {
                            let code = frame.as_ref().map(|f| u16::from(f.code));
                            if code == Some(CloseCode::Unauthorized.code()) {
                                return Ended::Fatal(ClientError::Unauthorized("the server closed the session (4001)".to_owned()));
                            }
                            return Ended::Lost(match frame {
                                Some(frame) => format!("closed by the server ({} {})", u16::from(frame.code), frame.reason),
                                None => "closed by the server".to_owned(),
                            });
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Ended::Lost(format!("read: {e}")),
                        None => return Ended::Lost("the connection ended".to_owned()),
                    }
                }
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => {
                        let _ = ws.close(None).await;
                        return Ended::Closed;
                    }
                    Some(Command::Typing { room, active }) => {
                        let frame = Request::new(None, ClientFrame::Typing { room, active }).encode();
                        if let Err(e) = ws.send(WsMessage::Text(frame.into())).await {
                            return Ended::Lost(format!("write: {e}"));
                        }
                    }
                    Some(command) => {
                        self.accept(command);
                        if let Err(e) = self.send_pending(&mut ws).await {
                            return Ended::Lost(e);
                        }
                    }
                },
                _ = tick.tick() => {
                    self.expire();
                    if last_heard.elapsed() > silent_limit {
                        return Ended::Lost("the server went silent".to_owned());
                    }
                }
            }
        }
    }

    /// Says hello with the resume points; handles the reply. Returns the heartbeat.
    async fn hello(&mut self, ws: &mut Ws) -> Result<Duration, Ended> {
        let hello = Request::new(
            Some(RequestId::ZERO),
            ClientFrame::Hello {
                token: self.config.token.clone(),
                resume: self.rooms.resume_points(),
            },
        );
        if let Err(e) = ws.send(WsMessage::Text(hello.encode().into())).await {
            return Err(Ended::Lost(format!("write: {e}")));
        }
        let reply = loop {
            let read = tokio::time::timeout(self.config.connect_timeout, ws.next()).await;
            match read {
                Err(_) => return Err(Ended::Lost("no hello reply".to_owned())),
                Ok(Some(Ok(WsMessage::Text(text)))) => match ServerFrame::decode(text.as_bytes()) {
                    Ok(frame) => break frame,
                    Err(e) => return Err(Ended::Lost(e.to_string())),
                },
                Ok(Some(Ok(WsMessage::Close(frame)))) => {
                    return Err(Ended::Lost(format!(
                        "closed during hello ({:?})",
                        frame.map(|f| u16::from(f.code))
                    )));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => return Err(Ended::Lost(format!("read: {e}"))),
                Ok(None) => {
                    return Err(Ended::Lost("the connection ended during hello".to_owned()));
                }
            }
        };
        let hello = match reply {
            ServerFrame::Ok(reply) => match reply.body {
                ReplyBody::Hello(hello) => hello,
                other => return Err(Ended::Lost(format!("unexpected hello reply {other:?}"))),
            },
            ServerFrame::Error(e) if e.code == ErrorCode::Unauthorized => {
                return Err(Ended::Fatal(ClientError::Unauthorized(e.message)));
            }
            ServerFrame::Error(e) => {
                return Err(Ended::Lost(format!(
                    "hello refused: {}: {}",
                    e.code, e.message
                )));
            }
            other => {
                return Err(Ended::Lost(format!(
                    "unexpected frame before the hello reply: {}",
                    other.kind()
                )));
            }
        };
        self.next_wire = 1;
        self.shared
            .set_identity(hello.user.clone(), hello.session.clone());
        for reset in self.rooms.on_hello(&hello.rooms) {
            self.emit(Event::Reset(reset)).await;
        }
        self.emit(Event::State(ConnectionState::Connected {
            user: hello.user,
            session: hello.session,
            rooms: hello.rooms,
        }))
        .await;
        Ok(Duration::from_millis(hello.heartbeat_ms.max(100)))
    }

    /// Sends every pending request that has not gone out on this connection.
    async fn send_pending(&mut self, ws: &mut Ws) -> Result<(), String> {
        let mut sent = false;
        for pending in self.pending.iter_mut().filter(|p| p.wire.is_none()) {
            let wire = self.next_wire;
            self.next_wire += 1;
            pending.wire = Some(wire);
            let id = RequestId::new(wire).unwrap_or(RequestId::MAX);
            let text = Request::new(Some(id), pending.frame.clone()).encode();
            ws.feed(WsMessage::Text(text.into()))
                .await
                .map_err(|e| format!("write: {e}"))?;
            sent = true;
        }
        if sent {
            ws.flush().await.map_err(|e| format!("write: {e}"))?;
        }
        Ok(())
    }

    /// Fails requests past their deadline.
    fn expire(&mut self) {
        let now = Instant::now();
        if self.pending.iter().all(|p| p.deadline > now) {
            return;
        }
        let timeout = self.config.request_timeout;
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for pending in self.pending.drain(..) {
            if pending.deadline > now {
                kept.push_back(pending);
            } else if let Waiter::User(reply) = pending.waiter {
                let _ = reply.send(Err(ClientError::Timeout(timeout)));
            }
        }
        self.pending = kept;
    }

    /// Acts on one frame from the server.
    async fn on_frame(&mut self, text: &[u8]) -> Result<(), Ended> {
        let frame = match ServerFrame::decode(text) {
            Ok(frame) => frame,
            Err(e) => {
                // A newer server's push: skip it.
                tracing::debug!(error = %e, "skipped a frame this client does not know");
                return Ok(());
            }
        };
        match frame {
            ServerFrame::Ok(reply) => {
                let Some(id) = reply.id else { return Ok(()) };
                self.on_reply(id.get(), Ok(reply.body)).await;
            }
            ServerFrame::Error(error) => match error.id {
                Some(id) => {
                    let refused = ClientError::Refused {
                        code: error.code,
                        message: error.message,
                    };
                    self.on_reply(id.get(), Err(refused)).await;
                }
                None => {
                    tracing::warn!(code = %error.code, message = %error.message, "the server refused a frame");
                }
            },
            ServerFrame::Message(message) => self.on_message(message).await,
            ServerFrame::Member(member) => {
                if Some(&member.user) == self.shared.user().as_ref() {
                    match member.action {
                        chat_core::protocol::MemberAction::Join => {
                            self.joined_elsewhere(&member.room);
                        }
                        chat_core::protocol::MemberAction::Leave => {
                            self.rooms.on_left(&member.room);
                        }
                    }
                }
                self.emit(Event::Member(member)).await;
            }
            ServerFrame::Receipt(receipt) => self.emit(Event::Receipt(receipt)).await,
            ServerFrame::Typing(typing) => self.emit(Event::Typing(typing)).await,
            ServerFrame::Presence(presence) => self.emit(Event::Presence(presence)).await,
            _ => {}
        }
        Ok(())
    }

    async fn on_message(&mut self, message: Message) {
        let offered = self.rooms.offer(message);
        for message in offered.deliver {
            self.emit(Event::Message(message)).await;
        }
        if let Some(fill) = offered.fill {
            self.fill(fill);
        }
    }

    async fn on_reply(&mut self, wire: u64, result: Result<ReplyBody, ClientError>) {
        let Some(at) = self.pending.iter().position(|p| p.wire == Some(wire)) else {
            return;
        };
        let Some(pending) = self.pending.remove(at) else {
            return;
        };
        match pending.waiter {
            Waiter::Fill(room) => {
                // A refused fill (the room was left meanwhile) is not retried before the
                // next session: asking again would only be refused again.
                if let Ok(ReplyBody::History(page)) = result {
                    for message in page.messages {
                        self.on_message(message).await;
                    }
                    if let Some(fill) = self.rooms.fill_done(&room) {
                        self.fill(fill);
                    }
                }
            }
            Waiter::Learn => {
                if let Ok(ReplyBody::Join(state)) = result {
                    if let Some(reset) = self.rooms.learn_epoch(&state) {
                        self.emit(Event::Reset(reset)).await;
                    }
                }
            }
            Waiter::User(reply) => {
                match (&pending.frame, &result) {
                    (ClientFrame::Join { .. }, Ok(ReplyBody::Join(state))) => {
                        if let Some(reset) = self.rooms.on_join(state) {
                            self.emit(Event::Reset(reset)).await;
                        }
                    }
                    (ClientFrame::Leave { room }, Ok(_)) => self.rooms.on_left(room),
                    (ClientFrame::Send { .. }, Ok(ReplyBody::Send(sent))) => {
                        // A `to` send may have made us a member of the direct room.
                        self.joined_elsewhere(&sent.room);
                    }
                    _ => {}
                }
                let _ = reply.send(result);
            }
        }
    }
}

/// Events that may wait for the application while it waits for a reply: 16 times the
/// buffer, at least 8,192. Beyond, the client stops reading whatever happens.
pub(crate) fn hard_limit(event_buffer: usize) -> usize {
    event_buffer.saturating_mul(16).max(8_192)
}

/// 64 random bits (jitter only; never a secret).
pub(crate) fn random_u64() -> u64 {
    getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15)
}
