//! [`ConnectionManager`]: the registry of this node's live connections.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Debug};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;

use crate::id::{ConnectionId, RoomId, SessionId, UserId};
use crate::outbox::{Outbox, Refused};
use crate::protocol::{CloseCode, Encoded};

/// One live, authenticated connection on this node, as the engine's registry holds it.
///
/// Sending never waits: a frame goes into the connection's bounded queue, or — when the
/// queue is full — the connection is closed with 4008 (slow consumer) and the client
/// resumes without losing anything.
pub struct LocalConnection {
    id: ConnectionId,
    user: UserId,
    session: SessionId,
    pub(crate) outbox: Outbox,
    /// The rooms whose hub this connection is in: the engine's membership cache.
    pub(crate) rooms: Mutex<HashSet<RoomId>>,
    /// When the peer was last heard from, in milliseconds after its session started: the
    /// reader notes it, the heartbeat reads it.
    pub(crate) heard: AtomicU64,
}

impl Debug for LocalConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalConnection")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("session", &self.session)
            .finish()
    }
}

impl LocalConnection {
    pub(crate) fn new(id: ConnectionId, user: UserId, session: SessionId, outbox: Outbox) -> Self {
        LocalConnection {
            id,
            user,
            session,
            outbox,
            rooms: Mutex::default(),
            heard: AtomicU64::new(0),
        }
    }

    /// The connection's id on this node.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// The authenticated user.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// The session id its `hello` reply reported.
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// Queues a frame. `false` when the connection is closed, or was closed now because its
    /// queue is full (4008).
    pub fn send(&self, frame: &Encoded) -> bool {
        self.outbox.push(frame.clone()).is_ok()
    }

    /// Closes the connection with `code` after the frames already queued (4008 drops them).
    pub fn close(&self, code: CloseCode) {
        self.outbox.close(code);
    }

    /// Whether the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.outbox.closing().is_some()
    }

    pub(crate) fn push(&self, frame: Encoded) -> Result<(), Refused> {
        self.outbox.push(frame)
    }
}

/// The registry of this node's live connections: who is connected here, on how many
/// devices, and how to reach them.
///
/// The engine registers a connection once its `hello` succeeded and unregisters it when it
/// closes; it asks the manager for a user's connections to deliver user-targeted pushes
/// (presence, member, receipts to one's other devices). Room messages are fanned out by the
/// engine's per-room ordering, which keeps its own list of member connections.
///
/// The engine ships [`LocalConnections`]; wrap it to observe or meter connections, or
/// replace it.
///
/// # Contract
///
/// - After `register(c)` returns, `connections_of(c.user())` includes `c` until
///   `unregister(c.id())`.
/// - Calls are synchronous and fast (they run on every push); no I/O, no waiting.
pub trait ConnectionManager: Send + Sync + Debug + 'static {
    /// Adds a connection.
    fn register(&self, connection: Arc<LocalConnection>);

    /// Removes a connection; returns it if it was registered.
    fn unregister(&self, id: ConnectionId, user: &UserId) -> Option<Arc<LocalConnection>>;

    /// The live connections of `user` on this node.
    fn connections_of(&self, user: &UserId) -> Vec<Arc<LocalConnection>>;

    /// Every live connection on this node.
    fn all(&self) -> Vec<Arc<LocalConnection>>;

    /// How many connections are registered.
    fn len(&self) -> usize;

    /// Whether no connection is registered.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `frame` to every connection of `user` except `except`; returns how many
    /// connections it was queued for.
    fn send_to_user(&self, user: &UserId, frame: &Encoded, except: Option<ConnectionId>) -> usize {
        self.connections_of(user)
            .iter()
            .filter(|c| Some(c.id()) != except)
            .filter(|c| c.send(frame))
            .count()
    }
}

const SHARDS: usize = 64;

type UserShard = Mutex<HashMap<UserId, Vec<Arc<LocalConnection>>>>;

/// The default [`ConnectionManager`]: users sharded over 64 locks.
pub struct LocalConnections {
    shards: Box<[UserShard]>,
    hasher: RandomState,
}

impl Debug for LocalConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalConnections")
            .field("connections", &self.len())
            .finish()
    }
}

impl Default for LocalConnections {
    fn default() -> Self {
        LocalConnections {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl LocalConnections {
    /// An empty registry.
    pub fn new() -> LocalConnections {
        LocalConnections::default()
    }

    fn shard(&self, user: &UserId) -> &UserShard {
        &self.shards[(self.hasher.hash_one(user) as usize) % SHARDS]
    }
}

impl ConnectionManager for LocalConnections {
    fn register(&self, connection: Arc<LocalConnection>) {
        let mut shard = self.shard(connection.user()).lock();
        let list = shard.entry(connection.user().clone()).or_default();
        if !list.iter().any(|c| c.id() == connection.id()) {
            list.push(connection);
        }
    }

    fn unregister(&self, id: ConnectionId, user: &UserId) -> Option<Arc<LocalConnection>> {
        let mut shard = self.shard(user).lock();
        let list = shard.get_mut(user)?;
        let at = list.iter().position(|c| c.id() == id)?;
        let removed = list.swap_remove(at);
        if list.is_empty() {
            shard.remove(user);
        }
        Some(removed)
    }

    fn connections_of(&self, user: &UserId) -> Vec<Arc<LocalConnection>> {
        self.shard(user)
            .lock()
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    fn all(&self) -> Vec<Arc<LocalConnection>> {
        self.shards
            .iter()
            .flat_map(|s| s.lock().values().flatten().cloned().collect::<Vec<_>>())
            .collect()
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().values().map(Vec::len).sum::<usize>())
            .sum()
    }
}
