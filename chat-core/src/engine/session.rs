//! One connection: `hello`, then requests, pushes, replays and heartbeats until it closes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;

use super::hub::{Attach, Hub};
use super::parts::Parts;
use super::rate::TokenBucket;
use super::{Admission, Inbound, Inner, Peer};
use crate::auth::{Action, DefaultAuthorizer};
use crate::broker::{EventKind, Topic};
use crate::connection::LocalConnection;
use crate::delivery::CursorUpdate;
use crate::error::{Error, Result};
use crate::id::{ClientMsgId, ConnectionId, RequestId, RoomId, Seq, SessionId, UserId};
use crate::message::{Meta, NewMessage};
use crate::outbox::{Outbound, Outbox, OutboxLimits};
use crate::presence::PresenceChange;
use crate::protocol::{
    ClientFrame, CloseCode, Encoded, ErrorCode, HelloReply, HistoryQuery, HistoryReply,
    MemberAction, MemberInfo, MembersReply, PresenceInfo, PresenceReply, PresenceStatus,
    ReceiptPush, ReplyBody, Request, RoomState, SendReply, SendTarget, ServerFrame,
};
use crate::store::Appended;

/// How long a connection that we closed may take to answer our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a connection may take to receive what was queued before its close (a slow
/// consumer's socket may not drain at all): then it is dropped.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// Which part of a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Reader,
    Writer,
    Heartbeat,
    Deadline,
    /// Every room is live: this part is done (and its memory freed); the others go on.
    CaughtUp,
}

/// Polls the rest of a session's parts until `wanted` ends, for at most [`CLOSE_GRACE`].
async fn wait_for<S: Stream<Item = Part> + Unpin>(parts: &mut S, wanted: Part) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(part) = parts.next().await {
            if part == wanted {
                return;
            }
        }
    })
    .await;
}

/// A room to bring up to date after `hello`.
pub(super) struct Catchup {
    pub(super) hub: Arc<Hub>,
    pub(super) room: RoomId,
    /// The membership in the hub this catch-up belongs to.
    pub(super) generation: u64,
    /// Replay the store's messages in `(from, to]` first.
    pub(super) replay: Option<(Seq, Seq)>,
}

/// Ends a session however `serve` ends: normally through [`SessionGuard::end`], or — if the
/// future is dropped — on drop, so that a dropped connection never stays registered,
/// attached to rooms, or online.
struct SessionGuard {
    engine: Arc<Inner>,
    conn: Arc<LocalConnection>,
    armed: bool,
}

impl SessionGuard {
    async fn end(mut self) {
        self.armed = false;
        end_session_quietly(&self.engine, &self.conn);
        disconnect(&self.engine, &self.conn).await;
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        end_session_quietly(&self.engine, &self.conn);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (engine, conn) = (self.engine.clone(), self.conn.clone());
            runtime.spawn(async move { disconnect(&engine, &conn).await });
        }
    }
}

// Not an `async fn`: its arguments would be kept twice in the future, once as arguments
// and once as locals, in every connection's task.
#[allow(clippy::manual_async_fn)]
pub(super) fn serve<I, O>(
    engine: Arc<Inner>,
    admission: Admission,
    peer: Peer,
    mut inbound: I,
    mut outbound: O,
) -> impl Future<Output = ()> + Send + use<I, O>
where
    I: Stream<Item = Inbound> + Unpin + Send,
    O: Sink<Outbound> + Unpin + Send,
{
    async move {
        // Held until the session ends (mentioned, so the block owns it).
        let _ = &admission;
        // Boxed: the hello phase's state is freed once the session runs.
        let Some((guard, catchups, expires)) =
            Box::pin(hello(&engine, &mut inbound, &mut outbound)).await
        else {
            return;
        };
        let conn = guard.conn.clone();
        tracing::debug!(user = %conn.user(), conn = %conn.id(), peer = ?peer.addr, "session open");

        let started = Instant::now();
        // The parts of a session, polled together (see `Parts`).
        let mut parts = Parts::new();
        parts.push(Box::pin(async {
            read_loop(&engine, &conn, &mut inbound, started).await;
            Part::Reader
        }));
        parts.push_every_wake(Box::pin(async {
            write_loop(&conn, &mut outbound).await;
            Part::Writer
        }));
        parts.push(Box::pin(heartbeat(
            &conn,
            started,
            engine.config.heartbeat,
            expires,
        )));
        parts.push(Box::pin(async {
            catch_up(&engine, &conn, catchups).await;
            Part::CaughtUp
        }));
        let first = loop {
            match parts.next().await {
                Some(Part::CaughtUp) => continue,
                other => break other,
            }
        };
        match first {
            // The peer is gone, or stopped reading after a frame we must answer with a close
            // (1009): let the writer send what is queued, briefly.
            Some(Part::Reader) if conn.is_closed() => {
                Box::pin(wait_for(&mut parts, Part::Writer)).await;
            }
            // We closed: give the peer a moment to answer, then let go.
            Some(Part::Writer) => {
                Box::pin(wait_for(&mut parts, Part::Reader)).await;
            }
            Some(Part::Heartbeat) => {
                tracing::debug!(user = %conn.user(), conn = %conn.id(), "silent for two heartbeats: closed");
            }
            Some(Part::Deadline) => {
                tracing::debug!(user = %conn.user(), conn = %conn.id(), "closing took too long: dropped");
            }
            _ => {}
        }
        drop(parts);
        // Boxed: the ending's state exists only while it runs.
        Box::pin(guard.end()).await;
        tracing::debug!(user = %conn.user(), conn = %conn.id(), "session closed");
    }
}

/// Sends a last frame and a close straight to the sink (no session, no queue yet).
async fn refuse<O: Sink<Outbound> + Unpin>(
    outbound: &mut O,
    error: Option<ServerFrame>,
    close: CloseCode,
) {
    if let Some(error) = error {
        let _ = outbound.feed(Outbound::Frame(error.encode())).await;
    }
    let _ = outbound.send(Outbound::Close(close)).await;
}

/// The `hello` phase: the first frame must be a well-formed `hello` with a good token.
/// On success the session is registered, its rooms are attached (buffered) and the reply
/// is queued; the returned catch-ups bring each room live.
async fn hello<I, O>(
    engine: &Arc<Inner>,
    inbound: &mut I,
    outbound: &mut O,
) -> Option<(SessionGuard, Vec<Catchup>, Option<Instant>)>
where
    I: Stream<Item = Inbound> + Unpin,
    O: Sink<Outbound> + Unpin,
{
    let unauthorized = |id: Option<RequestId>, message: String| {
        Some(ServerFrame::error(id, ErrorCode::Unauthorized, message))
    };
    if engine.shutting_down.load(Ordering::Acquire) {
        refuse(outbound, None, CloseCode::ShuttingDown).await;
        return None;
    }
    let deadline = Instant::now() + engine.config.hello_timeout;
    let text = loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, inbound.next()) => next,
            () = engine.shutting_down() => {
                refuse(outbound, None, CloseCode::ShuttingDown).await;
                return None;
            }
        };
        match next {
            Err(_) => {
                refuse(outbound, None, CloseCode::Unauthorized).await;
                return None;
            }
            Ok(None) => return None,
            Ok(Some(Inbound::Heartbeat)) => continue,
            Ok(Some(Inbound::TooLarge)) => {
                refuse(outbound, None, CloseCode::TooBig).await;
                return None;
            }
            Ok(Some(Inbound::Binary)) => {
                let error = unauthorized(None, "the first frame must be a hello".to_owned());
                refuse(outbound, error, CloseCode::Unauthorized).await;
                return None;
            }
            Ok(Some(Inbound::Text(text))) => break text,
        }
    };
    let request = match Request::decode(&text, &engine.config.decode) {
        Ok(request) => request,
        Err(rejection) => {
            let error = unauthorized(
                rejection.id,
                format!("a well-formed hello must come first: {}", rejection.message),
            );
            refuse(outbound, error, CloseCode::Unauthorized).await;
            return None;
        }
    };
    let id = request.id;
    let ClientFrame::Hello { token, resume } = request.frame else {
        let error = unauthorized(
            id,
            format!(
                "the first frame must be a hello, not {}",
                request.frame.kind()
            ),
        );
        refuse(outbound, error, CloseCode::Unauthorized).await;
        return None;
    };
    let identity = match engine.authenticator.authenticate(&token).await {
        Ok(identity) => identity,
        Err(Error::Backend { .. }) => {
            let error = ServerFrame::error(
                id,
                ErrorCode::Unavailable,
                "authentication is unavailable; retry later",
            );
            refuse(outbound, Some(error), CloseCode::TryAgainLater).await;
            return None;
        }
        Err(e) => {
            refuse(
                outbound,
                unauthorized(id, e.to_string()),
                CloseCode::Unauthorized,
            )
            .await;
            return None;
        }
    };
    // Credentials that expire end the session then, with 4001 (see `heartbeat`).
    let expires = match identity.expires_at {
        None => None,
        Some(at) => {
            let now = engine.clock.now();
            if at <= now {
                let error = unauthorized(id, "the credentials have expired".to_owned());
                refuse(outbound, error, CloseCode::Unauthorized).await;
                return None;
            }
            Some(Instant::now() + at.saturating_since(now))
        }
    };

    let conn_id = ConnectionId(engine.next_connection.fetch_add(1, Ordering::Relaxed));
    let outbox = Outbox::new(OutboxLimits {
        max_frames: engine.config.outbox_frames,
        max_bytes: engine.config.outbox_bytes,
    });
    let conn = Arc::new(LocalConnection::new(
        conn_id,
        identity.user,
        SessionId::random(),
        outbox,
    ));
    // Registered first, so that no membership change of this user is missed; whatever it
    // brings before the reply is queued behind the reply (`push_front` below).
    engine.connections.register(conn.clone());
    let guard = SessionGuard {
        engine: engine.clone(),
        conn: conn.clone(),
        armed: true,
    };
    if let Some(cluster) = &engine.cluster {
        // Subscribed before the rooms are read: no membership change elsewhere is missed.
        cluster.user_connected(conn.user()).await;
    }

    let setup = async {
        let user = conn.user();
        let _membership = engine.membership_lock(user).lock().await;
        let rooms = engine.store.rooms_of(user).await?;
        let cursors: HashMap<RoomId, _> = engine
            .delivery
            .user_cursors(user)
            .await?
            .into_iter()
            .collect();
        let mut states = Vec::with_capacity(rooms.len());
        let mut catchups = Vec::with_capacity(rooms.len());
        let mut new_hubs = false;
        for info in rooms {
            let resume_from = resume
                .get(&info.room)
                .filter(|point| point.epoch == info.epoch)
                .map(|point| point.seq);
            let floor = resume_from.unwrap_or(Seq::ZERO);
            let attached = engine
                .hubs
                .attach(&info.room, &conn, Attach::Buffered { floor })
                .await?;
            conn.rooms.lock().insert(info.room.clone());
            new_hubs |= attached.new_hub;
            let cursors = cursors.get(&info.room).copied().unwrap_or_default();
            states.push(RoomState {
                room: info.room.clone(),
                epoch: info.epoch,
                seq: attached.at,
                read: cursors.read,
                delivered: cursors.delivered,
            });
            if attached.created {
                catchups.push(Catchup {
                    replay: resume_from
                        .filter(|from| *from < attached.at)
                        .map(|from| (from, attached.at)),
                    hub: attached.hub,
                    generation: attached.generation,
                    room: info.room,
                });
            }
        }
        if let (true, Some(cluster)) = (new_hubs, &engine.cluster) {
            // Rooms new to this node: their topics are subscribed before the reply.
            cluster.settle().await;
        }
        Ok::<_, Error>((states, catchups))
    };
    let (states, catchups) = match setup.await {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(user = %conn.user(), error = %e, "hello failed: the store is unavailable");
            drop(guard);
            let error = ServerFrame::error(
                id,
                ErrorCode::Unavailable,
                "the store is unavailable; retry later",
            );
            refuse(outbound, Some(error), CloseCode::TryAgainLater).await;
            return None;
        }
    };
    let reply = ServerFrame::ok(
        id,
        ReplyBody::Hello(HelloReply {
            user: conn.user().clone(),
            session: conn.session().clone(),
            heartbeat_ms: u64::try_from(engine.config.heartbeat.as_millis()).unwrap_or(u64::MAX),
            rooms: states,
        }),
    );
    conn.outbox.push_front(reply.encode());
    if engine.shutting_down.load(Ordering::Acquire) {
        conn.close(CloseCode::ShuttingDown);
    }

    let now = engine.now();
    match engine
        .presence
        .connect(&engine.node, conn.id(), conn.user(), now)
        .await
    {
        Ok(PresenceChange::Online) => engine.announce_presence(PresenceInfo {
            user: conn.user().clone(),
            status: PresenceStatus::Online,
            last_seen: Some(now),
        }),
        Ok(_) => {}
        Err(e) => tracing::warn!(user = %conn.user(), error = %e, "presence connect failed"),
    }
    Some((guard, catchups, expires))
}

/// Unregisters a connection and takes it out of every hub. Unregistered first, so that
/// no membership change attaches it again meanwhile.
fn end_session_quietly(engine: &Inner, conn: &LocalConnection) {
    conn.outbox.finish();
    engine.connections.unregister(conn.id(), conn.user());
    if let Some(cluster) = &engine.cluster {
        // Once per session, as `user_connected` was.
        cluster.user_disconnected(conn.user());
    }
    let rooms: Vec<RoomId> = conn.rooms.lock().drain().collect();
    for room in rooms {
        engine.hubs.detach(&room, conn.id());
    }
}

/// Tells the presence tracker the connection is gone, and announces the user offline if
/// it was its last.
async fn disconnect(engine: &Inner, conn: &LocalConnection) {
    let now = engine.now();
    match engine
        .presence
        .disconnect(&engine.node, conn.id(), conn.user(), now)
        .await
    {
        Ok(PresenceChange::Offline { last_seen }) => engine.announce_presence(PresenceInfo {
            user: conn.user().clone(),
            status: PresenceStatus::Offline,
            last_seen: Some(last_seen),
        }),
        Ok(_) => {}
        Err(e) => tracing::warn!(user = %conn.user(), error = %e, "presence disconnect failed"),
    }
}

/// Brings each room of a new session live: rooms with nothing to replay first (so a long
/// replay elsewhere does not hold them buffered), then each resumed room's replay from the
/// store, the live messages buffered meanwhile, and the switch to live.
pub(super) async fn catch_up(engine: &Inner, conn: &LocalConnection, catchups: Vec<Catchup>) {
    let (plain, resumed): (Vec<_>, Vec<_>) = catchups.into_iter().partition(|c| c.replay.is_none());
    for catchup in plain.iter().chain(&resumed) {
        if let Some((from, to)) = catchup.replay {
            match replay(engine, conn, catchup, from, to).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(user = %conn.user(), room = %catchup.room, error = %e, "replay failed");
                    conn.close(CloseCode::TryAgainLater);
                    return;
                }
            }
        }
        if !flush_and_go_live(conn, catchup).await && conn.is_closed() {
            return;
        }
    }
}

/// Queues replayed frames, a chunk at a time once the queue is at most half full, each
/// chunk under one lock of the hub if the membership is still the same. A chunk is at most
/// a quarter of the queue (in frames and in bytes), so it always fits.
async fn push_replayed(conn: &LocalConnection, catchup: &Catchup, frames: Vec<Encoded>) -> bool {
    let (max_frames, max_bytes) = conn.outbox.chunk_limits();
    let mut frames = frames.into_iter().peekable();
    while frames.peek().is_some() {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        while let Some(frame) = frames.next_if(|f| {
            chunk.is_empty() || (chunk.len() < max_frames && bytes + f.len() <= max_bytes)
        }) {
            bytes += frame.len();
            chunk.push(frame);
        }
        if conn.outbox.wait_for_room(bytes).await.is_err()
            || !catchup.hub.replay(conn.id(), catchup.generation, chunk)
        {
            return false;
        }
    }
    true
}

/// Flushes what was buffered during the replay and switches the member to live; `false`
/// when the membership ended or the connection closed first.
async fn flush_and_go_live(conn: &LocalConnection, catchup: &Catchup) -> bool {
    while let Some(buffered) = catchup.hub.go_live(conn.id(), catchup.generation) {
        if buffered.is_empty() {
            return true;
        }
        let frames = buffered.into_iter().map(|(_, frame)| frame).collect();
        if !push_replayed(conn, catchup, frames).await {
            return false;
        }
    }
    false
}

/// Pushes the stored messages of the room in `(from, to]`, page by page, paced by the
/// connection's queue. `Ok(false)` when the membership ended or the connection closed.
async fn replay(
    engine: &Inner,
    conn: &LocalConnection,
    catchup: &Catchup,
    from: Seq,
    to: Seq,
) -> Result<bool> {
    let mut after = from;
    while after < to {
        let limit = (to.get() - after.get()).min(engine.config.replay_page as u64) as usize;
        let page = engine
            .store
            .history(&catchup.room, HistoryQuery::After(after), limit)
            .await?;
        if page.messages.is_empty() {
            break;
        }
        let mut frames = Vec::with_capacity(page.messages.len());
        for message in page.messages {
            if message.seq > to {
                break;
            }
            after = message.seq;
            frames.push(ServerFrame::Message(message).encode());
        }
        if !push_replayed(conn, catchup, frames).await {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Drains the queue into the sink: every queued frame fed, then one flush. Ends after a
/// close frame, when the session is gone, or when the sink fails.
async fn write_loop<O: Sink<Outbound> + Unpin>(conn: &LocalConnection, outbound: &mut O) {
    let mut batch = Vec::new();
    loop {
        if !conn.outbox.next_batch(&mut batch).await {
            return;
        }
        let mut closing = false;
        for item in batch.drain(..) {
            closing |= matches!(item, Outbound::Close(_));
            if outbound.feed(item).await.is_err() {
                return;
            }
        }
        if outbound.flush().await.is_err() || closing {
            return;
        }
    }
}

/// Pings every interval; ends with [`Part::Heartbeat`] when nothing was heard from the
/// peer for two intervals, or with [`Part::Deadline`] when closing has taken longer than
/// [`CLOSE_DEADLINE`]. At `expires` (the credentials' end), sends `unauthorized` and
/// closes with 4001. One timer, reset to whichever comes first.
async fn heartbeat(
    conn: &LocalConnection,
    started: Instant,
    every: Duration,
    mut expires: Option<Instant>,
) -> Part {
    let last_heard = || started + Duration::from_millis(conn.heard.load(Ordering::Relaxed));
    let mut next_ping = started + every;
    let mut close_by: Option<Instant> = None;
    let timer = tokio::time::sleep_until(next_ping);
    tokio::pin!(timer);
    loop {
        let silence = last_heard() + every * 2;
        let mut wake = next_ping.min(silence);
        if let Some(expires) = expires {
            wake = wake.min(expires);
        }
        timer
            .as_mut()
            .reset(close_by.map_or(wake, |close_by| wake.min(close_by)));
        if close_by.is_none() {
            tokio::select! {
                () = timer.as_mut() => {}
                () = conn.outbox.wait_closing() => {
                    close_by = Some(Instant::now() + CLOSE_DEADLINE);
                    continue;
                }
            }
        } else {
            timer.as_mut().await;
        }
        let now = Instant::now();
        if close_by.is_some_and(|close_by| close_by <= now) {
            return Part::Deadline;
        }
        if expires.is_some_and(|expires| expires <= now) {
            expires = None;
            let error = ServerFrame::error(
                None,
                ErrorCode::Unauthorized,
                "the credentials have expired",
            );
            let _ = conn.outbox.push(error.encode());
            conn.close(CloseCode::Unauthorized);
        }
        if last_heard() + every * 2 <= now {
            return Part::Heartbeat;
        }
        if now >= next_ping {
            conn.outbox.ping();
            while next_ping <= now {
                next_ping += every;
            }
        }
    }
}

/// Reads frames until the peer is gone, acting on each in order.
async fn read_loop<I: Stream<Item = Inbound> + Unpin>(
    engine: &Arc<Inner>,
    conn: &Arc<LocalConnection>,
    inbound: &mut I,
    started: Instant,
) {
    let session = Session { engine, conn };
    let mut rate = TokenBucket::new(engine.config.rate_burst, engine.config.rate_per_sec);
    let violations = engine.config.rate_violations;
    let mut strikes = TokenBucket::new(violations, violations.div_ceil(10));
    while let Some(frame) = inbound.next().await {
        conn.heard.store(
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if conn.is_closed() {
            // Closing: read on only to let the peer finish.
            continue;
        }
        // Decided outside this future: nothing of the frame or the request is borrowed
        // here, so none of it is stored in the reader's resident state (which is an idle
        // connection's memory); the rare waits are boxed.
        // The triage is consumed before any wait, so it is not kept either.
        let next = match triage(engine, frame, &mut rate) {
            Triage::Skip => continue,
            Triage::TooLarge => {
                conn.close(CloseCode::TooBig);
                continue;
            }
            Triage::Handle(request) => Ok(Box::pin(session.handle(request))),
            Triage::Refuse(error) => Err((error, false)),
            Triage::Throttle(error) => Err((error, true)),
        };
        match next {
            Ok(handling) => handling.await,
            Err((error, strike)) => {
                let _ = Box::pin(conn.outbox.push_paced(error)).await;
                if strike && !strikes.take() {
                    conn.close(CloseCode::RateLimited);
                }
            }
        }
    }
}

/// What the reader does with one frame.
enum Triage {
    /// A heartbeat: nothing.
    Skip,
    /// Over the frame limit: close with 1009.
    TooLarge,
    Handle(Request),
    /// Malformed: answer with this error.
    Refuse(Encoded),
    /// Over the rate limit: answer with this error, and count a strike.
    Throttle(Encoded),
}

fn triage(engine: &Inner, frame: Inbound, rate: &mut TokenBucket) -> Triage {
    let request = match frame {
        Inbound::Heartbeat => return Triage::Skip,
        Inbound::TooLarge => return Triage::TooLarge,
        Inbound::Binary => Err(crate::protocol::Rejection::binary_frame()),
        Inbound::Text(text) => Request::decode(&text, &engine.config.decode),
    };
    if !rate.take() {
        let id = request.as_ref().map_or_else(|r| r.id, |r| r.id);
        let error = ServerFrame::error(id, ErrorCode::RateLimited, "too many frames; slow down");
        return Triage::Throttle(error.encode());
    }
    match request {
        Ok(request) => Triage::Handle(request),
        Err(rejection) => Triage::Refuse(rejection.to_frame().encode()),
    }
}

/// Acts on one connection's requests.
struct Session<'a> {
    engine: &'a Arc<Inner>,
    conn: &'a Arc<LocalConnection>,
}

impl Session<'_> {
    fn user(&self) -> &UserId {
        self.conn.user()
    }

    async fn handle(&self, request: Request) {
        let id = request.id;
        // A panic (a bug, here or in a backend) answers `internal` and ends only this
        // request: the session and everyone else go on.
        let outcome = std::panic::AssertUnwindSafe(self.dispatch(request.frame))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(Error::Internal("a request handler panicked".to_owned())));
        let reply = match outcome {
            Ok(body) => match id {
                Some(_) => ServerFrame::ok(id, body),
                None => return,
            },
            Err(e) => {
                let (code, message) = client_error(&e);
                if code == ErrorCode::Internal || code == ErrorCode::Unavailable {
                    tracing::warn!(user = %self.user(), error = %e, "request failed");
                }
                ServerFrame::error(id, code, message)
            }
        };
        // Replies wait for room in the queue (they answer this client's own requests);
        // only pushes from others close a full queue with 4008.
        let _ = self.conn.outbox.push_paced(reply.encode()).await;
    }

    async fn dispatch(&self, frame: ClientFrame) -> Result<ReplyBody> {
        match frame {
            ClientFrame::Hello { .. } => Err(Error::BadRequest(
                "this connection already said hello".to_owned(),
            )),
            ClientFrame::Join { room } => self.join(room).await,
            ClientFrame::Leave { room } => self.leave(room).await,
            ClientFrame::Send {
                target,
                cid,
                body,
                meta,
            } => self.send(target, cid, body, meta).await,
            ClientFrame::History { room, query, limit } => self.history(room, query, limit).await,
            ClientFrame::Members { room } => self.members(room).await,
            ClientFrame::Presence { users } => {
                let users = self
                    .engine
                    .presence
                    .status(&users, self.engine.now())
                    .await?;
                Ok(ReplyBody::Presence(PresenceReply { users }))
            }
            ClientFrame::Ping => Ok(ReplyBody::Empty),
            ClientFrame::Receipt {
                room,
                delivered,
                read,
            } => self.receipt(room, CursorUpdate { delivered, read }).await,
            ClientFrame::Typing { room, active } => {
                self.require_member(&room).await?;
                self.engine.typing(&room, self.user(), active);
                Ok(ReplyBody::Empty)
            }
            // `ClientFrame` is non-exhaustive for other crates only.
            #[allow(unreachable_patterns)]
            other => Err(Error::BadRequest(format!(
                "{} is not supported",
                other.kind()
            ))),
        }
    }

    async fn require_member(&self, room: &RoomId) -> Result<()> {
        if self.engine.is_member(self.conn, room).await? {
            Ok(())
        } else {
            Err(Error::NotMember {
                room: room.clone(),
                user: self.user().clone(),
            })
        }
    }

    /// The direct-room rule, whatever the authorizer, then the authorizer if one was set
    /// (the default policy is that rule alone).
    async fn authorize(&self, room: &RoomId, action: Action) -> Result<()> {
        DefaultAuthorizer::check(self.user(), room)?;
        match &self.engine.authorizer {
            Some(authorizer) => authorizer.authorize(self.user(), room, action).await,
            None => Ok(()),
        }
    }

    /// Refuses a new membership beyond `max_rooms_per_user`.
    fn check_room_quota(&self, room: &RoomId) -> Result<()> {
        let rooms = self.conn.rooms.lock();
        if !rooms.contains(room) && rooms.len() >= self.engine.config.max_rooms_per_user {
            return Err(Error::Forbidden(format!(
                "a user may be in at most {} rooms",
                self.engine.config.max_rooms_per_user
            )));
        }
        Ok(())
    }

    async fn join(&self, room: RoomId) -> Result<ReplyBody> {
        self.authorize(&room, Action::Join).await?;
        let user = self.user();
        let _membership = self.engine.membership_lock(user).lock().await;
        self.check_room_quota(&room)?;
        let (info, _) = self.engine.store.ensure_room(&room).await?;
        let (added, at) = self
            .engine
            .add_member(&room, user, Some(self.conn.id()))
            .await?;
        let done = async {
            let at = match at {
                Some(at) => at,
                None => self.engine.attach(self.conn, &room).await?,
            };
            let cursors = self.engine.delivery.cursors(&room, user).await?;
            Ok::<_, Error>((at, cursors))
        };
        match done.await {
            Ok((at, cursors)) => Ok(ReplyBody::Join(RoomState {
                room,
                epoch: info.epoch,
                seq: at,
                read: cursors.read,
                delivered: cursors.delivered,
            })),
            Err(e) => {
                if added {
                    // Refused frames change nothing stored: undo the membership.
                    self.engine.detach_user(user, &room);
                    let _ = self.engine.store.remove_member(&room, user).await;
                }
                Err(e)
            }
        }
    }

    async fn leave(&self, room: RoomId) -> Result<ReplyBody> {
        let user = self.user();
        let _membership = self.engine.membership_lock(user).lock().await;
        if self.engine.store.remove_member(&room, user).await? {
            self.engine
                .push_member(&room, user, MemberAction::Leave, None);
            if let Some(hub) = self.engine.hubs.get(&room) {
                hub.forget_receipts(user);
            }
            self.engine
                .typing
                .lock()
                .remove(&(room.clone(), user.clone()));
        }
        self.engine.detach_user(user, &room);
        Ok(ReplyBody::Leave { room })
    }

    async fn send(
        &self,
        target: SendTarget,
        cid: ClientMsgId,
        body: String,
        meta: Option<Meta>,
    ) -> Result<ReplyBody> {
        let user = self.user();
        let room = match target {
            SendTarget::Room(room) => {
                self.require_member(&room).await?;
                self.authorize(&room, Action::Send).await?;
                room
            }
            SendTarget::To(other) => {
                let room = RoomId::direct(user, &other);
                self.authorize(&room, Action::Send).await?;
                // Both users must be members, whoever joined or left before: the sender's
                // cache answers for the sender, the store for the other.
                let mine = self.conn.rooms.lock().contains(&room);
                let theirs = other == *user || self.engine.store.is_member(&room, &other).await?;
                if !mine || !theirs {
                    let _memberships = self.engine.lock_memberships(user, &other).await;
                    self.check_room_quota(&room)?;
                    self.engine.store.ensure_room(&room).await?;
                    self.engine.add_member(&room, user, None).await?;
                    if other != *user {
                        self.engine.add_member(&room, &other, None).await?;
                    }
                    self.engine.attach(self.conn, &room).await?;
                }
                room
            }
        };
        let message = NewMessage {
            room: room.clone(),
            from: user.clone(),
            cid,
            body,
            meta,
            ts: self.engine.now(),
        };
        // The hand-off follows the append with no await between them: once the store has
        // the message, the room gets it in the same poll. Only a store whose append is
        // itself cancelled mid-way (the connection went away) can leave a stored message
        // unannounced; its retry (same cid, `dup`) announces it then — the hub delivers
        // each seq once, so announcing a duplicate again costs nothing — and a later
        // message makes the hub read any gap from the store.
        let room_id = message.room.clone();
        let Appended { message, dup } = self.engine.store.append(message).await?;
        let (seq, ts) = (message.seq, message.ts);
        let frame = ServerFrame::Message(message).encode();
        if !dup && self.engine.cluster.is_some() {
            // Other nodes: ordering is restored by the receivers' hubs.
            let topic = Topic::Room(room_id.clone());
            self.engine
                .publish(topic, EventKind::Message { seq }, &frame);
        }
        self.engine.hubs.publish(&room_id, seq, frame);
        Ok(ReplyBody::Send(SendReply { room, seq, ts, dup }))
    }

    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
        limit: Option<u32>,
    ) -> Result<ReplyBody> {
        self.require_member(&room).await?;
        self.authorize(&room, Action::Read).await?;
        let config = &self.engine.config;
        let limit = limit
            .map_or(config.history_default, |l| l as usize)
            .min(config.history_cap);
        let page = self.engine.store.history(&room, query, limit).await?;
        let (messages, more) =
            cut_to_size(page.messages, page.more, query, config.history_max_bytes);
        Ok(ReplyBody::History(HistoryReply {
            room,
            messages,
            more,
        }))
    }

    async fn members(&self, room: RoomId) -> Result<ReplyBody> {
        self.require_member(&room).await?;
        self.authorize(&room, Action::Read).await?;
        let cursors = self.engine.delivery.room_cursors(&room).await?;
        let users: Vec<UserId> = cursors.iter().map(|(user, _)| user.clone()).collect();
        let presence = self
            .engine
            .presence
            .status(&users, self.engine.now())
            .await?;
        let members = cursors
            .into_iter()
            .zip(presence)
            .map(|((user, cursors), presence)| MemberInfo {
                user,
                status: presence.status,
                last_seen: presence.last_seen,
                read: cursors.read,
                delivered: cursors.delivered,
            })
            .collect();
        Ok(ReplyBody::Members(MembersReply { room, members }))
    }

    async fn receipt(&self, room: RoomId, update: CursorUpdate) -> Result<ReplyBody> {
        self.require_member(&room).await?;
        let user = self.user();
        let change = self.engine.delivery.advance(&room, user, update).await?;
        if change.moved {
            let everyone =
                self.engine.store.member_count(&room).await? <= self.engine.config.large_room;
            if let Some(hub) = self.engine.hubs.get(&room) {
                hub.push_receipt(user, change.cursors, Some(self.conn.id()), everyone);
            }
            if self.engine.cluster.is_some() {
                let frame = ServerFrame::Receipt(ReceiptPush {
                    room: room.clone(),
                    user: user.clone(),
                    delivered: change.cursors.delivered,
                    read: change.cursors.read,
                })
                .encode();
                // A large room's receipts reach only the user's own devices.
                let topic = if everyone {
                    Topic::Room(room.clone())
                } else {
                    Topic::User(user.clone())
                };
                self.engine.publish(topic, EventKind::Receipt, &frame);
            }
        }
        Ok(ReplyBody::Empty)
    }
}

/// The code and text a client gets for an error. Rooms the user may not see are all
/// "not a member", whether or not they exist; backend details stay in the server's log.
fn client_error(e: &Error) -> (ErrorCode, String) {
    match e {
        Error::RoomNotFound(room) | Error::NotMember { room, .. } => {
            (ErrorCode::Forbidden, format!("not a member of {room}"))
        }
        Error::Backend { .. } | Error::Full(_) | Error::Closed => (
            ErrorCode::Unavailable,
            "the store is unavailable; nothing was stored; retry".to_owned(),
        ),
        Error::Internal(_) => (
            ErrorCode::Internal,
            "internal error; nothing was stored".to_owned(),
        ),
        other => (other.code(), other.to_string()),
    }
}

/// Cuts a history page to at most `max_bytes` of encoded messages, keeping the end nearest
/// to where the client pages from (the newest for `before`/latest, the oldest for `after`);
/// a cut page has `more: true`. At least one message is kept.
fn cut_to_size(
    mut messages: Vec<crate::message::Message>,
    more: bool,
    query: HistoryQuery,
    max_bytes: usize,
) -> (Vec<crate::message::Message>, bool) {
    let sizes: Vec<usize> = messages.iter().map(encoded_len).collect();
    let total: usize = sizes.iter().sum();
    if total <= max_bytes {
        return (messages, more);
    }
    let mut kept = 0;
    let mut bytes = 0;
    let order: Box<dyn Iterator<Item = &usize>> = match query {
        HistoryQuery::After(_) => Box::new(sizes.iter()),
        _ => Box::new(sizes.iter().rev()),
    };
    for size in order {
        if kept > 0 && bytes + size > max_bytes {
            break;
        }
        bytes += size;
        kept += 1;
    }
    match query {
        HistoryQuery::After(_) => messages.truncate(kept),
        _ => {
            messages.drain(..messages.len() - kept);
        }
    }
    (messages, true)
}

/// The size of a message's JSON encoding, counted without keeping it.
fn encoded_len(message: &crate::message::Message) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(16); // `"type":"message",` and a comma
    let _ = serde_json::to_writer(&mut count, message);
    count.0
}
