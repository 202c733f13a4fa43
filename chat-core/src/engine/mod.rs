//! The chat server logic behind any transport: sessions, every request and push of
//! protocol v1, ordering, presence, receipts and typing.
//!
//! A transport accepts a connection, asks [`Engine::admit`] for a place, and hands the
//! connection to [`Engine::serve`] as a stream of [`Inbound`] frames and a sink of
//! [`Outbound`] ones. Everything else — `hello`, requests, pushes, heartbeats, closes — is
//! the engine's.
//!
//! # The path of one `send`
//!
//! decode (once) → rate limit → membership (cached per connection) → authorizer →
//! `MessageStore::append` (the store assigns the seq) → encode the push once → the room's
//! hub hands the shared bytes to each local member connection in seq order → `ok`.
//! The hand-off follows the append with no await between them, so a message the store
//! accepted reaches the room even if its sender disconnects right then; a store whose
//! append is cancelled half-way is covered by the retry (same `cid`) and the hub's gap
//! repair.

mod cluster;
mod config;
mod hub;
mod parts;
mod rate;
mod session;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use self::cluster::Cluster;
pub use self::config::EngineConfig;
use self::hub::{Attach, HubSettings, Hubs};
use crate::auth::{Authenticator, Authorizer};
use crate::broker::{Broker, EventKind, Topic};
use crate::connection::{ConnectionManager, LocalConnection, LocalConnections};
use crate::delivery::DeliveryTracker;
use crate::error::{Error, Result};
use crate::id::{ConnectionId, NodeId, RoomId, Seq, UserId};
pub use crate::outbox::Outbound;
use crate::presence::PresenceTracker;
use crate::protocol::{CloseCode, MemberAction, MemberPush, PresenceInfo, ServerFrame, TypingPush};
use crate::store::MessageStore;
use crate::time::{Clock, Timestamp};

/// A frame (or event) a transport read from a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inbound {
    /// A complete text message (its bytes; the engine checks the JSON, the transport
    /// need not check UTF-8).
    Text(Bytes),
    /// A binary message: refused with `bad_request`.
    Binary,
    /// A WebSocket ping or pong: the peer is alive.
    Heartbeat,
    /// A message over the frame limit: the engine closes with 1009.
    TooLarge,
}

/// Who is on the other end, for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The remote address, when the transport knows it.
    pub addr: Option<SocketAddr>,
}

/// A place among the engine's connections, from [`Engine::admit`]; released on drop.
#[derive(Debug)]
pub struct Admission {
    engine: Weak<Inner>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.upgrade() {
            engine.admitted.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The chat server: cheap to clone (a shared handle), `Send + Sync`.
///
/// Build one with [`Engine::builder`]; it must be built inside a tokio runtime, where it
/// keeps this node's presence lease alive until [`Engine::shutdown`] or the last clone is
/// dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("node", &self.inner.node)
            .field("connections", &self.inner.connections.len())
            .finish()
    }
}

/// Builds an [`Engine`]: the backends are required, the rest has defaults.
#[derive(Debug)]
pub struct EngineBuilder {
    store: Arc<dyn MessageStore>,
    delivery: Arc<dyn DeliveryTracker>,
    presence: Arc<dyn PresenceTracker>,
    authenticator: Arc<dyn Authenticator>,
    /// `None`: the default policy, which the session applies itself.
    authorizer: Option<Arc<dyn Authorizer>>,
    connections: Arc<dyn ConnectionManager>,
    config: EngineConfig,
    node: Option<NodeId>,
    clock: Clock,
    broker: Option<Arc<dyn Broker>>,
}

impl EngineBuilder {
    /// A builder with the four parts every engine needs.
    pub fn new(
        store: Arc<dyn MessageStore>,
        delivery: Arc<dyn DeliveryTracker>,
        presence: Arc<dyn PresenceTracker>,
        authenticator: Arc<dyn Authenticator>,
    ) -> EngineBuilder {
        EngineBuilder {
            store,
            delivery,
            presence,
            authenticator,
            authorizer: None,
            connections: Arc::new(LocalConnections::new()),
            config: EngineConfig::default(),
            node: None,
            clock: Clock::system(),
            broker: None,
        }
    }

    /// Who may do what (default: [`DefaultAuthorizer`](crate::auth::DefaultAuthorizer)).
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// The registry of local connections (default: [`LocalConnections`]).
    pub fn connections(mut self, connections: Arc<dyn ConnectionManager>) -> Self {
        self.connections = connections;
        self
    }

    /// Limits and timings (default: [`EngineConfig::default`]).
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// This node's id (default: the broker's node, else random).
    pub fn node(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }

    /// Joins other nodes through `broker` (default: none — a single node, with nothing
    /// spawned or published for the broker).
    ///
    /// With a broker, the engine publishes each newly stored message to the room's topic,
    /// member changes, receipts, typing and presence pushes; subscribes a room's topic while
    /// the room has a local member and a user's topic while the user has a local
    /// connection; and delivers what other nodes publish in `seq` order, reading what the
    /// broker lost from the store (see [`Engine::stats`]). All nodes must share the store
    /// and the presence tracker.
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Where time comes from (default: [`Clock::system`]; tests use [`Clock::tokio`]).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the engine and starts its presence lease. Must be called inside a tokio
    /// runtime.
    pub fn build(self) -> Engine {
        let mut config = self.config;
        config.history_cap = config.history_cap.max(500);
        let node = match (self.node, &self.broker) {
            (Some(node), Some(broker)) if node != *broker.node() => {
                tracing::warn!(engine = %node, broker = %broker.node(), "the engine and its broker name different nodes");
                node
            }
            (Some(node), _) => node,
            (None, Some(broker)) => broker.node().clone(),
            (None, None) => NodeId::random(),
        };
        let (cluster, cluster_tasks) = match self.broker {
            Some(broker) => {
                let (cluster, tasks) = Cluster::new(broker);
                (Some(cluster), Some(tasks))
            }
            None => (None, None),
        };
        let hubs = Arc::new(Hubs::new(
            self.store.clone(),
            HubSettings {
                gap_wait: config.gap_wait,
                buffer_cap: config.catchup_buffer,
            },
            cluster.as_ref().map(Cluster::topic_sender),
        ));
        let (presence_tx, presence_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            config,
            node,
            clock: self.clock,
            store: self.store,
            delivery: self.delivery,
            presence: self.presence,
            authenticator: self.authenticator,
            authorizer: self.authorizer,
            connections: self.connections,
            hubs,
            cluster,
            membership_locks: (0..MEMBERSHIP_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            lock_hasher: RandomState::new(),
            presence_tx,
            typing: Mutex::default(),
            remote_typing: Mutex::default(),
            next_connection: AtomicU64::new(1),
            admitted: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            lease_stop: Arc::new(tokio::sync::Notify::new()),
            shutdown: tokio::sync::Notify::new(),
        });
        tokio::spawn(Inner::keep_lease(
            Arc::downgrade(&inner),
            inner.lease_stop.clone(),
        ));
        tokio::spawn(Inner::announce_loop(Arc::downgrade(&inner), presence_rx));
        if let (Some(cluster), Some(tasks)) = (&inner.cluster, cluster_tasks) {
            cluster.start(&inner, tasks, inner.config.broker_probe);
        }
        Engine { inner }
    }
}

impl Engine {
    /// A builder (see [`EngineBuilder::new`]).
    pub fn builder(
        store: Arc<dyn MessageStore>,
        delivery: Arc<dyn DeliveryTracker>,
        presence: Arc<dyn PresenceTracker>,
        authenticator: Arc<dyn Authenticator>,
    ) -> EngineBuilder {
        EngineBuilder::new(store, delivery, presence, authenticator)
    }

    /// The engine's limits and timings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    /// How many connections have a session (passed `hello`) on this node.
    pub fn connections(&self) -> usize {
        self.inner.connections.len()
    }

    /// Takes a place for a new connection: [`Error::Full`] at `max_connections`, and
    /// [`Error::Closed`] once shutting down. Transports ask before accepting the upgrade.
    pub fn admit(&self) -> Result<Admission> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let max = self.inner.config.max_connections;
        let taken = self
            .inner
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Admission {
                engine: Arc::downgrade(&self.inner),
            }),
            Err(_) => Err(Error::Full("the connection table")),
        }
    }

    /// Serves one connection until it closes: reads `inbound`, writes `outbound` (queued
    /// frames are fed in batches with one flush each).
    ///
    /// Cancel safe in the sense that matters: dropping the future closes the session
    /// (presence, hubs) the next time the engine notices, and never loses a message that
    /// was acknowledged.
    // Not an `async fn`: a wrapper future would keep a second copy of the arguments in
    // every connection's task.
    pub fn serve<I, O>(
        &self,
        admission: Admission,
        peer: Peer,
        inbound: I,
        outbound: O,
    ) -> impl Future<Output = ()> + Send + use<I, O>
    where
        I: futures_util::Stream<Item = Inbound> + Unpin + Send,
        O: futures_util::Sink<Outbound> + Unpin + Send,
    {
        session::serve(self.inner.clone(), admission, peer, inbound, outbound)
    }

    /// Starts a graceful shutdown: refuses new connections, and closes every connection
    /// with 1001 after the frames already queued for it. Transports wait for their
    /// connection tasks to end.
    pub fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        self.inner.shutdown.notify_waiters();
        for connection in self.inner.connections.all() {
            connection.close(CloseCode::ShuttingDown);
        }
        self.inner.lease_stop.notify_one();
    }

    /// Counters of this node's ordering and broker traffic.
    pub fn stats(&self) -> EngineStats {
        let (repair_reads, repaired) = self.inner.hubs.repairs();
        let (published, publish_failed, received) = self
            .inner
            .cluster
            .as_ref()
            .map_or((0, 0, 0), Cluster::stats);
        EngineStats {
            rooms: self.inner.hubs.len(),
            repair_reads,
            repaired,
            published,
            publish_failed,
            received,
        }
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }
}

/// Counters from [`Engine::stats`], since the engine was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Rooms with a hub (a local member connection) on this node now.
    pub rooms: usize,
    /// Gap repairs: store reads of messages that did not arrive in time (a lost or late
    /// broker event, a cancelled append).
    pub repair_reads: u64,
    /// Messages those repairs delivered.
    pub repaired: u64,
    /// Events published to the broker.
    pub published: u64,
    /// Events not published: the queue was full or the broker failed (receivers repair).
    pub publish_failed: u64,
    /// Events received from other nodes.
    pub received: u64,
}

pub(crate) type TypingKey = (RoomId, UserId);

/// Whose typing a deadline stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Typer {
    /// A user connected here: this node pushes `active: false` to everyone.
    Local,
    /// A user of another node, whose node pushes it; this node does so for its own
    /// connections only if that node dies first.
    Remote,
}

/// Stripes of the membership lock.
const MEMBERSHIP_LOCKS: usize = 256;

/// The shared state behind [`Engine`].
struct Inner {
    config: EngineConfig,
    node: NodeId,
    clock: Clock,
    store: Arc<dyn MessageStore>,
    delivery: Arc<dyn DeliveryTracker>,
    presence: Arc<dyn PresenceTracker>,
    authenticator: Arc<dyn Authenticator>,
    /// `None`: `DefaultAuthorizer`'s policy only, applied by the session: no call and no
    /// boxed future per request.
    authorizer: Option<Arc<dyn Authorizer>>,
    connections: Arc<dyn ConnectionManager>,
    hubs: Arc<Hubs>,
    /// The broker side, when there are other nodes.
    cluster: Option<Cluster>,
    /// Membership changes per user, striped (see [`Inner::membership_lock`]).
    membership_locks: Box<[tokio::sync::Mutex<()>]>,
    lock_hasher: RandomState,
    /// Presence changes for the announcer task.
    presence_tx: mpsc::UnboundedSender<PresenceInfo>,
    /// (room, user) → when their `typing` expires.
    typing: Mutex<HashMap<TypingKey, tokio::time::Instant>>,
    /// (room, user) typing on another node → when this node pushes `active: false` itself
    /// if that node never does (it died).
    remote_typing: Mutex<HashMap<TypingKey, tokio::time::Instant>>,
    next_connection: AtomicU64,
    admitted: AtomicUsize,
    shutting_down: AtomicBool,
    lease_stop: Arc<tokio::sync::Notify>,
    /// Wakes connections that have no session yet when shutting down.
    shutdown: tokio::sync::Notify,
}

impl Inner {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Returns once [`Engine::shutdown`] was called. Cancel safe.
    async fn shutting_down(&self) {
        loop {
            let mut notified = std::pin::pin!(self.shutdown.notified());
            notified.as_mut().enable();
            if self.shutting_down.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Whether the user of `conn` is a member of `room`: the connection's cache first, the
    /// store when the cache does not know.
    async fn is_member(&self, conn: &LocalConnection, room: &RoomId) -> Result<bool> {
        if conn.rooms.lock().contains(room) {
            return Ok(true);
        }
        self.store.is_member(room, conn.user()).await
    }

    /// The lock that serializes the membership changes of `user` on this node (and the setup
    /// of its sessions). It is held across the store's change and the hubs' change, so that
    /// a join and a leave racing from two devices cannot leave a non-member attached.
    fn membership_lock(&self, user: &UserId) -> &tokio::sync::Mutex<()> {
        let stripe = (self.lock_hasher.hash_one(user) as usize) % self.membership_locks.len();
        &self.membership_locks[stripe]
    }

    /// Locks the memberships of two users, in a fixed order (once when they share a lock).
    async fn lock_memberships<'a>(
        &'a self,
        a: &UserId,
        b: &UserId,
    ) -> (
        tokio::sync::MutexGuard<'a, ()>,
        Option<tokio::sync::MutexGuard<'a, ()>>,
    ) {
        let (first, second) = (self.membership_lock(a), self.membership_lock(b));
        if std::ptr::eq(first, second) {
            return (first.lock().await, None);
        }
        let (first, second) = if (first as *const _) < (second as *const _) {
            (first, second)
        } else {
            (second, first)
        };
        let guard = first.lock().await;
        (guard, Some(second.lock().await))
    }

    /// Puts `conn` into the room's hub, live from the hub's position; returns that position.
    async fn attach(&self, conn: &Arc<LocalConnection>, room: &RoomId) -> Result<Seq> {
        let attached = self.hubs.attach(room, conn, Attach::Live).await?;
        conn.rooms.lock().insert(room.clone());
        if attached.new_hub {
            if let Some(cluster) = &self.cluster {
                // The reply to a join promises the room's pushes from other nodes too.
                cluster.settle().await;
            }
        }
        Ok(attached.at)
    }

    /// Puts every local connection of `user` into the room's hub; returns the position of
    /// connection `me` if it is one of them.
    async fn attach_user(
        &self,
        user: &UserId,
        room: &RoomId,
        me: Option<ConnectionId>,
    ) -> Result<Option<Seq>> {
        let mut mine = None;
        for conn in self.connections.connections_of(user) {
            match self.attach(&conn, room).await {
                Ok(at) if Some(conn.id()) == me => mine = Some(at),
                Ok(_) | Err(Error::Closed) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(mine)
    }

    /// Takes every local connection of `user` out of the room's hub.
    fn detach_user(&self, user: &UserId, room: &RoomId) {
        for conn in self.connections.connections_of(user) {
            conn.rooms.lock().remove(room);
            self.hubs.detach(room, conn.id());
        }
    }

    /// Pushes a `member` frame to every local connection of the room's members.
    /// `at`: for a join, the room's position then (see [`EventKind::Member`]).
    fn push_member(&self, room: &RoomId, user: &UserId, action: MemberAction, at: Option<Seq>) {
        if let Some(hub) = self.hubs.get(room) {
            let frame = ServerFrame::Member(MemberPush {
                room: room.clone(),
                user: user.clone(),
                action,
            })
            .encode();
            hub.broadcast(&frame, |_| true);
        }
        if self.cluster.is_some() {
            let frame = ServerFrame::Member(MemberPush {
                room: room.clone(),
                user: user.clone(),
                action,
            })
            .encode();
            let kind = EventKind::Member {
                user: user.clone(),
                action,
                at,
            };
            self.publish(Topic::Room(room.clone()), kind.clone(), &frame);
            self.publish(Topic::User(user.clone()), kind, &frame);
        }
    }

    /// Makes `user` a member of `room` (which must exist); when it was not one, its
    /// connections start receiving the room and every member gets a `member` push. Returns
    /// whether it was added, and where connection `me` was attached then. The caller holds
    /// the user's [`membership_lock`](Self::membership_lock).
    async fn add_member(
        &self,
        room: &RoomId,
        user: &UserId,
        me: Option<ConnectionId>,
    ) -> Result<(bool, Option<Seq>)> {
        if !self.store.add_member(room, user).await? {
            return Ok((false, None));
        }
        match self.attach_user(user, room, me).await {
            Ok(at) => {
                // Where the user's devices on other nodes start: where the ones here did.
                let joined_at = match &self.cluster {
                    None => None,
                    Some(_) => match self.hubs.get(room).and_then(|hub| hub.position()) {
                        Some(position) => Some(position),
                        None => self
                            .store
                            .room(room)
                            .await
                            .ok()
                            .flatten()
                            .map(|info| info.latest),
                    },
                };
                self.push_member(room, user, MemberAction::Join, joined_at);
                Ok((true, at))
            }
            Err(e) => {
                // Refused frames change nothing stored: undo the membership.
                self.detach_user(user, room);
                if let Err(undo) = self.store.remove_member(room, user).await {
                    tracing::warn!(%room, %user, error = %undo, "could not undo a membership");
                }
                Err(e)
            }
        }
    }

    /// Queues a presence change for the announcer, which pushes changes one at a time, in
    /// the order they happened.
    fn announce_presence(&self, info: PresenceInfo) {
        let _ = self.presence_tx.send(info);
    }

    /// Pushes queued presence changes to the users who share a room that is not large with
    /// the user. Each change is checked against the tracker first: a change that a later one
    /// already overtook (a quick reconnect) is skipped, so peers never end on a stale status.
    async fn announce_loop(
        engine: Weak<Inner>,
        mut changes: mpsc::UnboundedReceiver<PresenceInfo>,
    ) {
        while let Some(info) = changes.recv().await {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let now = engine.now();
            let current = match engine
                .presence
                .status(std::slice::from_ref(&info.user), now)
                .await
            {
                Ok(mut current) => current.pop(),
                Err(e) => {
                    tracing::warn!(user = %info.user, error = %e, "presence push skipped: the tracker failed");
                    continue;
                }
            };
            if current.is_none_or(|c| c.status != info.status) {
                continue;
            }
            let recipients = match engine.co_members(&info.user).await {
                Ok(recipients) => recipients,
                Err(e) => {
                    tracing::warn!(user = %info.user, error = %e, "presence push skipped: the store failed");
                    continue;
                }
            };
            let frame = ServerFrame::Presence(info).encode();
            for user in recipients {
                engine.connections.send_to_user(&user, &frame, None);
                engine.publish(Topic::User(user), EventKind::Presence, &frame);
            }
        }
    }

    /// The other members of the rooms of `user` that are not large.
    async fn co_members(&self, user: &UserId) -> Result<HashSet<UserId>> {
        let mut recipients = HashSet::new();
        for room in self.store.rooms_of(user).await? {
            if self.store.member_count(&room.room).await? > self.config.large_room {
                continue;
            }
            for member in self.store.members(&room.room).await? {
                if member != *user {
                    recipients.insert(member);
                }
            }
        }
        Ok(recipients)
    }

    /// Pushes a typing change to this node's connections in `room` (but the typer's own),
    /// and, for a local typer, to the other nodes.
    fn push_typing(&self, room: &RoomId, user: &UserId, active: bool, typer: Typer) {
        let hub = self.hubs.get(room);
        let publish = typer == Typer::Local && self.cluster.is_some();
        if hub.is_none() && !publish {
            return;
        }
        let frame = ServerFrame::Typing(TypingPush {
            room: room.clone(),
            user: user.clone(),
            active,
        })
        .encode();
        if let Some(hub) = hub {
            hub.broadcast(&frame, |c| c.user() != user);
        }
        if publish {
            self.publish(Topic::Room(room.clone()), EventKind::Typing, &frame);
        }
    }

    fn typers(&self, typer: Typer) -> &Mutex<HashMap<TypingKey, tokio::time::Instant>> {
        match typer {
            Typer::Local => &self.typing,
            Typer::Remote => &self.remote_typing,
        }
    }

    /// Forwards a `typing` frame; after `typing_timeout` without a new `active: true`, the
    /// others get `active: false` once.
    fn typing(self: &Arc<Self>, room: &RoomId, user: &UserId, active: bool) {
        let key = (room.clone(), user.clone());
        if !active {
            let was_typing = self.typing.lock().remove(&key).is_some();
            if was_typing {
                self.push_typing(room, user, false, Typer::Local);
            }
            return;
        }
        let deadline = tokio::time::Instant::now() + self.config.typing_timeout;
        let first = self.typing.lock().insert(key.clone(), deadline).is_none();
        self.push_typing(room, user, true, Typer::Local);
        if first {
            tokio::spawn(Self::expire_typing(
                Arc::downgrade(self),
                Typer::Local,
                key,
                deadline,
            ));
        }
    }

    /// Pushes `active: false` once `key`'s deadline passes with no later one set (a new
    /// `active: true` moves it); nothing if the typing stopped meanwhile.
    pub(crate) async fn expire_typing(
        engine: Weak<Inner>,
        typer: Typer,
        key: TypingKey,
        mut deadline: tokio::time::Instant,
    ) {
        loop {
            tokio::time::sleep_until(deadline).await;
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let mut typing = engine.typers(typer).lock();
            match typing.get(&key) {
                // Stopped explicitly (and pushed then), or the user left.
                None => return,
                Some(later) if *later > deadline => deadline = *later,
                Some(_) => {
                    typing.remove(&key);
                    drop(typing);
                    engine.push_typing(&key.0, &key.1, false, typer);
                    return;
                }
            }
        }
    }

    /// Renews this node's presence lease a few times per TTL, and sweeps expired leases of
    /// other nodes, announcing their users' departure.
    /// Holds only a weak reference between rounds, so that dropping the last [`Engine`]
    /// ends it.
    async fn keep_lease(engine: Weak<Inner>, stop: Arc<tokio::sync::Notify>) {
        let period = match engine.upgrade() {
            Some(engine) => engine.presence.lease_ttl() / 3,
            None => return,
        };
        let period = period.max(std::time::Duration::from_millis(10));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.notified() => return,
            }
            let Some(engine) = engine.upgrade() else {
                return;
            };
            engine.renew_lease().await;
        }
    }

    async fn renew_lease(self: &Arc<Self>) {
        let now = self.now();
        match self.presence.renew(&self.node, now).await {
            Ok(true) => {}
            Ok(false) => {
                // The lease lapsed (a long pause, a backend restart): register again.
                for conn in self.connections.all() {
                    match self
                        .presence
                        .connect(&self.node, conn.id(), conn.user(), now)
                        .await
                    {
                        Ok(crate::presence::PresenceChange::Online) => {
                            self.announce_presence(PresenceInfo {
                                user: conn.user().clone(),
                                status: crate::protocol::PresenceStatus::Online,
                                last_seen: Some(now),
                            });
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "presence re-registration failed"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "presence lease renewal failed"),
        }
        match self.presence.sweep(now).await {
            Ok(gone) => {
                for info in gone {
                    self.announce_presence(info);
                }
            }
            Err(e) => tracing::warn!(error = %e, "presence sweep failed"),
        }
    }
}
