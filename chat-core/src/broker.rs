//! [`Broker`]: room and user events between server nodes — a doorbell, not the truth.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Debug};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::id::{NodeId, RoomId, Seq, UserId};
use crate::protocol::{Encoded, MemberAction};

/// Where an event goes: the nodes with members of a room, or with connections of a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Every node with a connection of a member of the room.
    Room(RoomId),
    /// Every node with a connection of the user.
    User(UserId),
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Room(room) => write!(f, "room/{room}"),
            Topic::User(user) => write!(f, "user/{user}"),
        }
    }
}

/// What an event is about, as far as a receiving node needs to know to route it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A stored message with this `seq`. Nodes deliver a room's messages in `seq` order and
    /// read a missing `seq` from the store.
    Message {
        /// The message's seq.
        seq: Seq,
    },
    /// A user joined or left the room: nodes update their routing.
    Member {
        /// The user.
        user: UserId,
        /// Joined or left.
        action: MemberAction,
        /// For a join: the room's position when it happened. The user's connections on
        /// other nodes receive the messages after it (read from the store if they were
        /// sent before those nodes heard of the join). `None`: from when they hear of it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<Seq>,
    },
    /// A receipt push.
    Receipt,
    /// A typing push.
    Typing,
    /// A presence push.
    Presence,
}

/// One event between nodes: routing facts plus the push, already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEvent {
    /// The node that published it.
    pub origin: NodeId,
    /// Where it goes.
    pub topic: Topic,
    /// What it is.
    pub kind: EventKind,
    /// The frame to push to the local connections it reaches.
    pub frame: Encoded,
}

#[derive(Serialize, Deserialize)]
struct Header {
    o: NodeId,
    #[serde(skip_serializing_if = "Option::is_none")]
    r: Option<RoomId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<UserId>,
    #[serde(flatten)]
    kind: EventKind,
}

impl BrokerEvent {
    /// The event as bytes, for brokers that cross a network: a one-line JSON header, a
    /// newline, then the frame.
    pub fn to_bytes(&self) -> Bytes {
        let (r, u) = match &self.topic {
            Topic::Room(room) => (Some(room.clone()), None),
            Topic::User(user) => (None, Some(user.clone())),
        };
        let header = Header {
            o: self.origin.clone(),
            r,
            u,
            kind: self.kind.clone(),
        };
        let mut buf = BytesMut::with_capacity(96 + self.frame.len());
        // Serializing the header cannot fail: its keys are strings.
        let _ = serde_json::to_writer((&mut buf).writer(), &header);
        buf.put_u8(b'\n');
        buf.put_slice(self.frame.as_bytes());
        buf.freeze()
    }

    /// Reads an event written by [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<BrokerEvent> {
        let bad = |why: &str| Error::backend("broker", format!("malformed event: {why}"));
        let split = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| bad("no header line"))?;
        let header: Header =
            serde_json::from_slice(&bytes[..split]).map_err(|e| bad(&e.to_string()))?;
        let topic = match (header.r, header.u) {
            (Some(room), None) => Topic::Room(room),
            (None, Some(user)) => Topic::User(user),
            _ => return Err(bad("the topic must be one room or one user")),
        };
        let frame = &bytes[split + 1..];
        if std::str::from_utf8(frame).is_err() {
            return Err(bad("the frame is not UTF-8"));
        }
        Ok(BrokerEvent {
            origin: header.o,
            topic,
            kind: header.kind,
            frame: Encoded::from_json(Bytes::copy_from_slice(frame)),
        })
    }
}

/// The stream of events that reach this node, from [`Broker::events`].
#[derive(Debug)]
pub struct BrokerEvents {
    rx: mpsc::Receiver<BrokerEvent>,
}

impl BrokerEvents {
    /// Wraps the receiving end of a channel a broker implementation feeds.
    pub fn new(rx: mpsc::Receiver<BrokerEvent>) -> BrokerEvents {
        BrokerEvents { rx }
    }

    /// The next event; `None` once the broker has closed this stream.
    ///
    /// Cancel safe: no event is lost when the future is dropped.
    pub async fn recv(&mut self) -> Option<BrokerEvent> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<BrokerEvent> {
        self.rx.try_recv().ok()
    }
}

/// Carries events between server nodes.
///
/// A broker is a **doorbell, not the truth**: it may lose, delay, or reorder events, and
/// the engine copes (each node delivers a room's messages in `seq` order and reads what is
/// missing from the shared store). The broker must not invent events.
///
/// One broker value serves one node ([`node`](Self::node)).
///
/// # Contract
///
/// - An event [`publish`](Self::publish)ed to a topic reaches every **other** node that is
///   [`subscribe`](Self::subscribe)d to the topic — barring loss, which should be rare
///   (a broker restart, a full buffer) — with its fields and frame unchanged. It never
///   reaches the publishing node itself, nor a node not subscribed to the topic.
/// - After [`unsubscribe`](Self::unsubscribe) returns, no further events of that topic
///   are delivered (save ones already in the node's buffer).
/// - Events reach the stream most recently opened with [`events`](Self::events).
///   A slow consumer makes the broker drop events, never block publishers indefinitely.
///
/// Cancel safety: `subscribe`/`unsubscribe` are idempotent, so a dropped call can be
/// repeated; a dropped `publish` may or may not have published.
#[async_trait]
pub trait Broker: Send + Sync + Debug + 'static {
    /// The node this broker serves.
    fn node(&self) -> &NodeId;

    /// Opens the stream of events that reach this node; an earlier stream ends.
    fn events(&self) -> BrokerEvents;

    /// Sends an event to the other nodes subscribed to its topic.
    async fn publish(&self, event: BrokerEvent) -> Result<()>;

    /// Starts receiving events of `topic`. Subscribing twice is the same as once.
    async fn subscribe(&self, topic: &Topic) -> Result<()>;

    /// Stops receiving events of `topic`.
    async fn unsubscribe(&self, topic: &Topic) -> Result<()>;
}

/// An in-process bus joining [`LocalBroker`]s: one per node, for a single server (where it
/// carries nothing, since there is no other node) or for several nodes in one process
/// (tests, demos).
///
/// ```
/// use chat_core::broker::{Broker, LocalBus};
/// use chat_core::NodeId;
///
/// let bus = LocalBus::new();
/// let a = bus.broker(NodeId::new("a")?);
/// let b = bus.broker(NodeId::new("b")?);
/// assert_eq!(b.node().as_str(), "b");
/// # drop(a);
/// # Ok::<(), chat_core::InvalidId>(())
/// ```
#[derive(Clone, Default)]
pub struct LocalBus {
    state: Arc<Mutex<BusState>>,
    capacity: usize,
}

#[derive(Default)]
struct BusState {
    nodes: HashMap<NodeId, NodeSlot>,
}

#[derive(Default)]
struct NodeSlot {
    topics: HashSet<Topic>,
    tx: Option<mpsc::Sender<BrokerEvent>>,
}

impl Debug for LocalBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("LocalBus")
            .field("nodes", &state.nodes.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl LocalBus {
    /// The default number of events buffered per node before new ones are dropped.
    pub const DEFAULT_CAPACITY: usize = 16_384;

    /// An empty bus.
    pub fn new() -> LocalBus {
        LocalBus::with_capacity(LocalBus::DEFAULT_CAPACITY)
    }

    /// An empty bus buffering at most `capacity` events per node.
    pub fn with_capacity(capacity: usize) -> LocalBus {
        LocalBus {
            state: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// The broker of `node` on this bus. A node id already on the bus is taken over.
    pub fn broker(&self, node: NodeId) -> LocalBroker {
        self.state
            .lock()
            .nodes
            .insert(node.clone(), NodeSlot::default());
        LocalBroker {
            bus: self.clone(),
            node,
            dropped: AtomicU64::new(0),
        }
    }
}

/// One node's side of a [`LocalBus`].
pub struct LocalBroker {
    bus: LocalBus,
    node: NodeId,
    dropped: AtomicU64,
}

impl Debug for LocalBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalBroker")
            .field("node", &self.node)
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl LocalBroker {
    /// A broker alone on its own bus: a single-node server's default.
    pub fn standalone(node: NodeId) -> LocalBroker {
        LocalBus::new().broker(node)
    }

    /// How many events this node's publishes dropped because a receiver's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        self.bus.state.lock().nodes.remove(&self.node);
    }
}

#[async_trait]
impl Broker for LocalBroker {
    fn node(&self) -> &NodeId {
        &self.node
    }

    fn events(&self) -> BrokerEvents {
        let (tx, rx) = mpsc::channel(self.bus.capacity);
        let mut state = self.bus.state.lock();
        state.nodes.entry(self.node.clone()).or_default().tx = Some(tx);
        BrokerEvents::new(rx)
    }

    async fn publish(&self, event: BrokerEvent) -> Result<()> {
        let state = self.bus.state.lock();
        for (node, slot) in &state.nodes {
            if *node == self.node || !slot.topics.contains(&event.topic) {
                continue;
            }
            if let Some(tx) = &slot.tx {
                if tx.try_send(event.clone()).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &Topic) -> Result<()> {
        let mut state = self.bus.state.lock();
        state
            .nodes
            .entry(self.node.clone())
            .or_default()
            .topics
            .insert(topic.clone());
        Ok(())
    }

    async fn unsubscribe(&self, topic: &Topic) -> Result<()> {
        if let Some(slot) = self.bus.state.lock().nodes.get_mut(&self.node) {
            slot.topics.remove(topic);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ServerFrame, TypingPush};

    fn event(topic: Topic, kind: EventKind) -> BrokerEvent {
        let frame = ServerFrame::Typing(TypingPush {
            room: RoomId::new("r").unwrap(),
            user: UserId::new("u").unwrap(),
            active: true,
        })
        .encode();
        BrokerEvent {
            origin: NodeId::new("n1").unwrap(),
            topic,
            kind,
            frame,
        }
    }

    #[test]
    fn events_round_trip_through_bytes() {
        for e in [
            event(
                Topic::Room(RoomId::new("dm:a:b").unwrap()),
                EventKind::Message {
                    seq: Seq::new(7).unwrap(),
                },
            ),
            event(
                Topic::Room(RoomId::new("r").unwrap()),
                EventKind::Member {
                    user: UserId::new("u").unwrap(),
                    action: MemberAction::Leave,
                    at: None,
                },
            ),
            event(Topic::User(UserId::new("u").unwrap()), EventKind::Presence),
        ] {
            assert_eq!(BrokerEvent::from_bytes(&e.to_bytes()).unwrap(), e);
        }
    }

    #[test]
    fn malformed_event_bytes_are_errors() {
        for bad in [
            &b""[..],
            b"{}",
            b"{}\n{}",
            b"{\"o\":\"n\",\"k\":\"typing\"}\n{}",
            b"{\"o\":\"n\",\"r\":\"r\",\"u\":\"u\",\"k\":\"typing\"}\n{}",
            b"{\"o\":\"n\",\"r\":\"r\",\"k\":\"typing\"}\n\xff",
        ] {
            assert!(BrokerEvent::from_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
