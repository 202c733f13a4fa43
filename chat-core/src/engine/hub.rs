//! Per-room ordering and fan-out on this node.
//!
//! Appends finish in any order across tasks (seq 6 may return before seq 5), and a broker
//! may deliver late or never. A room's hub hands each message to the room's local member
//! connections strictly in `seq` order: a message arriving early waits in `pending`; a gap
//! that does not close within `gap_wait` is read from the store. Each member connection is
//! either live (frames go straight into its queue) or buffered while a resume replays
//! older messages from the store, then flushed and switched to live.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::cluster::TopicCommand;
use crate::broker::Topic;

use crate::connection::LocalConnection;
use crate::delivery::Cursors;
use crate::error::Result;
use crate::id::{ConnectionId, RoomId, Seq, UserId};
use crate::protocol::{CloseCode, Encoded, ReceiptPush, ServerFrame};
use crate::store::{HistoryQuery, MessageStore};

const SHARDS: usize = 64;
/// Out-of-order messages a hub keeps; later ones are read from the store when their turn
/// comes.
const MAX_PENDING: usize = 4_096;
/// Messages read per repair page.
const REPAIR_PAGE: u64 = 500;

/// How a connection joins a hub.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attach {
    /// Receives every message after the hub's current position.
    Live,
    /// Buffers messages until [`Hub::go_live`], skipping those at or below `floor`.
    Buffered { floor: Seq },
}

/// What [`Hubs::attach`] did.
pub(crate) struct Attached {
    pub(crate) hub: Arc<Hub>,
    /// The seq the member's pushes start after.
    pub(crate) at: Seq,
    /// Names this membership: a catch-up acts only while its member is still this one
    /// (a leave and a join in between make a new member).
    pub(crate) generation: u64,
    /// Whether the member was added now (`false`: it was there already, as it was).
    pub(crate) created: bool,
    /// Whether the hub itself was made by this attach (its room's topic is being
    /// subscribed, with a broker).
    pub(crate) new_hub: bool,
}

pub(crate) struct Hub {
    room: RoomId,
    state: Mutex<HubState>,
}

struct HubState {
    /// Whether `delivered` has been read from the store.
    ready: bool,
    /// Removed from the map: attach to a new hub instead.
    detached: bool,
    /// Every message up to here was handed to the members.
    delivered: Seq,
    /// The highest seq heard of.
    known: Seq,
    pending: BTreeMap<Seq, Encoded>,
    /// By connection: fan-out walks them all; a replay looks one up per chunk.
    members: HashMap<ConnectionId, Member>,
    repairing: bool,
    next_generation: u64,
    /// The cursors last pushed for each user with a connection here: receipt pushes are
    /// merged into these, so that racing receipts never push a cursor backwards.
    receipts: HashMap<UserId, Cursors>,
}

struct Member {
    conn: Arc<LocalConnection>,
    floor: Seq,
    buffer: Option<Vec<(Seq, Encoded)>>,
    generation: u64,
}

impl Member {
    /// Hands one message to the member; `false` when it should be dropped from the hub.
    fn offer(&mut self, seq: Seq, frame: &Encoded, buffer_cap: usize) -> bool {
        if seq <= self.floor {
            return true;
        }
        match &mut self.buffer {
            // A live member's push refuses a closed connection and closes one whose queue
            // is full (4008): one lock of the queue per delivery, not two.
            None => self.conn.push(frame.clone()).is_ok(),
            Some(_) if self.conn.is_closed() => false,
            Some(buffer) if buffer.len() >= buffer_cap => {
                self.conn.close(CloseCode::SlowConsumer);
                false
            }
            Some(buffer) => {
                buffer.push((seq, frame.clone()));
                true
            }
        }
    }
}

impl HubState {
    /// Delivers `pending` messages that are next in line.
    fn drain_pending(&mut self, buffer_cap: usize) {
        while let Some(entry) = self.pending.first_entry() {
            let seq = *entry.key();
            if seq <= self.delivered {
                entry.remove();
                continue;
            }
            if seq != self.delivered.next() {
                break;
            }
            let frame = entry.remove();
            self.members.retain(|_, m| m.offer(seq, &frame, buffer_cap));
            self.delivered = seq;
        }
    }

    /// Takes message `seq`: delivers it (and what waited behind it) if it is next, keeps it
    /// if it is early, ignores it if it was delivered already.
    fn accept(&mut self, seq: Seq, frame: Encoded, buffer_cap: usize) {
        self.known = self.known.max(seq);
        if self.ready && seq <= self.delivered {
            return;
        }
        if self.ready && seq == self.delivered.next() {
            self.members.retain(|_, m| m.offer(seq, &frame, buffer_cap));
            self.delivered = seq;
            self.drain_pending(buffer_cap);
        } else if self.pending.len() < MAX_PENDING {
            self.pending.insert(seq, frame);
        }
    }

    fn has_gap(&self) -> bool {
        self.ready && self.known > self.delivered
    }

    fn member(&mut self, conn: ConnectionId, generation: u64) -> Option<&mut Member> {
        self.members
            .get_mut(&conn)
            .filter(|m| m.generation == generation)
    }
}

impl Hub {
    fn new(room: RoomId) -> Hub {
        Hub {
            room,
            state: Mutex::new(HubState {
                ready: false,
                detached: false,
                delivered: Seq::ZERO,
                known: Seq::ZERO,
                pending: BTreeMap::new(),
                members: HashMap::new(),
                repairing: false,
                next_generation: 0,
                receipts: HashMap::new(),
            }),
        }
    }

    /// Takes the buffered messages of a member (oldest first). When none are left the
    /// member is switched to live and an empty list comes back. `None` when it is no longer
    /// that member.
    pub(crate) fn go_live(
        &self,
        conn: ConnectionId,
        generation: u64,
    ) -> Option<Vec<(Seq, Encoded)>> {
        let mut state = self.state.lock();
        let member = state.member(conn, generation)?;
        let taken = member
            .buffer
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        if taken.is_empty() {
            member.buffer = None;
        }
        Some(taken)
    }

    /// Pushes a `receipt` for `user`, merged with what was pushed before (so pushed cursors
    /// never go backwards, however receipts race): to every member connection but `except`
    /// when `everyone`, else only to the user's own other connections. Nothing when the
    /// merge moves nothing.
    pub(crate) fn push_receipt(
        &self,
        user: &UserId,
        cursors: Cursors,
        except: Option<ConnectionId>,
        everyone: bool,
    ) {
        let mut state = self.state.lock();
        let last = state.receipts.entry(user.clone()).or_default();
        let merged = Cursors {
            delivered: last.delivered.max(cursors.delivered),
            read: last.read.max(cursors.read),
        };
        if merged == *last {
            return;
        }
        *last = merged;
        let frame = ServerFrame::Receipt(ReceiptPush {
            room: self.room.clone(),
            user: user.clone(),
            delivered: merged.delivered,
            read: merged.read,
        })
        .encode();
        for member in state.members.values() {
            if Some(member.conn.id()) != except && (everyone || member.conn.user() == user) {
                member.conn.send(&frame);
            }
        }
    }

    /// Every message up to here was handed to the members; `None` until the hub has read
    /// its starting point.
    pub(crate) fn position(&self) -> Option<Seq> {
        let state = self.state.lock();
        state.ready.then_some(state.delivered)
    }

    /// Forgets the cursors last pushed for `user`: it left, and may come back at 0.
    pub(crate) fn forget_receipts(&self, user: &UserId) {
        self.state.lock().receipts.remove(user);
    }

    /// Queues replayed frames for a buffered member, all under one lock, if it is still
    /// that member (same generation, still buffered). `false` means stop: the member left,
    /// went live, or the connection closed (4008 if its queue overflowed).
    pub(crate) fn replay(&self, conn: ConnectionId, generation: u64, frames: Vec<Encoded>) -> bool {
        let mut state = self.state.lock();
        let Some(member) = state
            .member(conn, generation)
            .filter(|m| m.buffer.is_some())
        else {
            return false;
        };
        frames
            .into_iter()
            .all(|frame| member.conn.push(frame).is_ok())
    }

    /// Sends `frame` to every member connection that `include` accepts.
    pub(crate) fn broadcast(&self, frame: &Encoded, include: impl Fn(&LocalConnection) -> bool) {
        let state = self.state.lock();
        for member in state.members.values() {
            if include(&member.conn) {
                member.conn.send(frame);
            }
        }
    }
}

/// Settings the hubs need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HubSettings {
    pub(crate) gap_wait: Duration,
    pub(crate) buffer_cap: usize,
}

type HubShard = Mutex<HashMap<RoomId, Arc<Hub>>>;

/// Every room hub of this node.
pub(crate) struct Hubs {
    shards: Box<[HubShard]>,
    hasher: RandomState,
    store: Arc<dyn MessageStore>,
    settings: HubSettings,
    /// Room subscriptions for the broker, when there is one: a room's topic is subscribed
    /// while its hub is in the map.
    topics: Option<mpsc::UnboundedSender<TopicCommand>>,
    /// Store reads of gap repairs, and the messages they delivered.
    repair_reads: AtomicU64,
    repaired: AtomicU64,
}

impl std::fmt::Debug for Hubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hubs").field("rooms", &self.len()).finish()
    }
}

impl Hubs {
    pub(crate) fn new(
        store: Arc<dyn MessageStore>,
        settings: HubSettings,
        topics: Option<mpsc::UnboundedSender<TopicCommand>>,
    ) -> Hubs {
        Hubs {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            store,
            settings,
            topics,
            repair_reads: AtomicU64::new(0),
            repaired: AtomicU64::new(0),
        }
    }

    /// (store reads by gap repairs, messages those reads delivered).
    pub(crate) fn repairs(&self) -> (u64, u64) {
        (
            self.repair_reads.load(Ordering::Relaxed),
            self.repaired.load(Ordering::Relaxed),
        )
    }

    /// Tells the broker task to (un)subscribe a room; called under the room's shard lock,
    /// so that commands follow the map's changes in order.
    fn room_topic(&self, room: &RoomId, subscribe: bool) {
        if let Some(topics) = &self.topics {
            let _ = topics.send(TopicCommand {
                topic: Some(Topic::Room(room.clone())),
                subscribe,
                done: None,
            });
        }
    }

    /// The rooms with a hub on this node.
    pub(crate) fn rooms(&self) -> Vec<RoomId> {
        self.shards
            .iter()
            .flat_map(|s| s.lock().keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// The store's latest seq of `room` is `latest`: a hub behind it repairs from the store
    /// (after `gap_wait`, in case the messages are on their way).
    pub(crate) fn note_latest(self: &Arc<Self>, room: &RoomId, latest: Seq) {
        let Some(hub) = self.get(room) else {
            return;
        };
        let mut state = hub.state.lock();
        state.known = state.known.max(latest);
        let repair = state.has_gap() && !std::mem::replace(&mut state.repairing, true);
        drop(state);
        if repair {
            self.spawn_repair(hub);
        }
    }

    fn shard(&self, room: &RoomId) -> &HubShard {
        &self.shards[(self.hasher.hash_one(room) as usize) % SHARDS]
    }

    /// How many rooms have a hub on this node.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// The hub of `room`, if this node has one.
    pub(crate) fn get(&self, room: &RoomId) -> Option<Arc<Hub>> {
        self.shard(room).lock().get(room).cloned()
    }

    /// The live hub of `room`, created if needed (replacing a detached one).
    fn get_or_create(&self, room: &RoomId) -> (Arc<Hub>, bool) {
        let mut shard = self.shard(room).lock();
        if let Some(hub) = shard.get(room) {
            if !hub.state.lock().detached {
                return (hub.clone(), false);
            }
        }
        let hub = Arc::new(Hub::new(room.clone()));
        shard.insert(room.clone(), hub.clone());
        self.room_topic(room, true);
        (hub, true)
    }

    /// Drops `hub` from the map if it has no members and no repair running.
    fn remove_if_empty(&self, hub: &Arc<Hub>) {
        {
            let mut state = hub.state.lock();
            if !state.members.is_empty() || state.repairing {
                return;
            }
            state.detached = true;
        }
        let mut shard = self.shard(&hub.room).lock();
        if shard.get(&hub.room).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            shard.remove(&hub.room);
            self.room_topic(&hub.room, false);
        }
    }

    /// Adds `conn` to the hub of `room`, creating the hub (at the store's latest seq, read
    /// once the hub is in place so that nothing published meanwhile is missed). A member
    /// already there stays as it is. [`Error::Closed`](crate::Error::Closed) for a closed
    /// connection.
    pub(crate) async fn attach(
        self: &Arc<Self>,
        room: &RoomId,
        conn: &Arc<LocalConnection>,
        how: Attach,
    ) -> Result<Attached> {
        let mut new_hub = false;
        loop {
            let (hub, made) = self.get_or_create(room);
            new_hub |= made;
            if !hub.state.lock().ready {
                let latest = match self.store.room(room).await {
                    Ok(info) => info.map_or(Seq::ZERO, |info| info.latest),
                    Err(e) => {
                        self.remove_if_empty(&hub);
                        return Err(e);
                    }
                };
                self.initialize(&hub, latest);
            }
            let mut state = hub.state.lock();
            if state.detached {
                continue;
            }
            if conn.is_closed() {
                drop(state);
                self.remove_if_empty(&hub);
                return Err(crate::Error::Closed);
            }
            let at = state.delivered;
            if let Some(member) = state.members.get(&conn.id()) {
                let generation = member.generation;
                drop(state);
                return Ok(Attached {
                    hub,
                    at,
                    generation,
                    created: false,
                    new_hub,
                });
            }
            let (floor, buffer) = match how {
                Attach::Live => (Seq::ZERO, None),
                Attach::Buffered { floor } => (floor, Some(Vec::new())),
            };
            state.next_generation += 1;
            let generation = state.next_generation;
            state.members.insert(
                conn.id(),
                Member {
                    conn: conn.clone(),
                    floor,
                    buffer,
                    generation,
                },
            );
            drop(state);
            return Ok(Attached {
                hub,
                at,
                generation,
                created: true,
                new_hub,
            });
        }
    }

    fn initialize(self: &Arc<Self>, hub: &Arc<Hub>, latest: Seq) {
        let mut state = hub.state.lock();
        if state.ready {
            return;
        }
        state.ready = true;
        state.delivered = latest;
        state.known = state.known.max(latest);
        state.drain_pending(self.settings.buffer_cap);
        let repair = state.has_gap() && !std::mem::replace(&mut state.repairing, true);
        drop(state);
        if repair {
            self.spawn_repair(hub.clone());
        }
    }

    /// Removes `conn` from the hub of `room`; an empty hub is dropped.
    pub(crate) fn detach(&self, room: &RoomId, conn: ConnectionId) {
        let Some(hub) = self.get(room) else {
            return;
        };
        {
            hub.state.lock().members.remove(&conn);
        }
        self.remove_if_empty(&hub);
    }

    /// Hands message `seq` of `room` to the room's local members, in order. Messages at or
    /// below the room's position are ignored, so publishing twice is harmless.
    pub(crate) fn publish(self: &Arc<Self>, room: &RoomId, seq: Seq, frame: Encoded) {
        let Some(hub) = self.get(room) else {
            return;
        };
        let mut state = hub.state.lock();
        state.accept(seq, frame, self.settings.buffer_cap);
        let repair = state.has_gap() && !std::mem::replace(&mut state.repairing, true);
        drop(state);
        if repair {
            self.spawn_repair(hub);
        }
    }

    /// Reads a room's missing messages from the store after `gap_wait`, until no gap is
    /// left or nobody is left to receive them. Runs without the caller, so that a lost
    /// message never stalls a room.
    fn spawn_repair(self: &Arc<Self>, hub: Arc<Hub>) {
        let hubs = self.clone();
        tokio::spawn(async move {
            let settings = hubs.settings;
            loop {
                tokio::time::sleep(settings.gap_wait).await;
                let (from, to) = {
                    let mut state = hub.state.lock();
                    if !state.has_gap() || state.members.is_empty() {
                        state.repairing = false;
                        drop(state);
                        hubs.remove_if_empty(&hub);
                        return;
                    }
                    (state.delivered, state.known)
                };
                let limit = (to.get() - from.get()).min(REPAIR_PAGE) as usize;
                let Ok(page) = hubs
                    .store
                    .history(&hub.room, HistoryQuery::After(from), limit)
                    .await
                else {
                    // The store is unreachable: try again after the next wait.
                    continue;
                };
                hubs.repair_reads.fetch_add(1, Ordering::Relaxed);
                for message in page.messages {
                    let seq = message.seq;
                    let frame = ServerFrame::Message(message).encode();
                    let mut state = hub.state.lock();
                    if seq > state.delivered && !state.pending.contains_key(&seq) {
                        hubs.repaired.fetch_add(1, Ordering::Relaxed);
                    }
                    state.accept(seq, frame, settings.buffer_cap);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionId;
    use crate::outbox::{Outbound, Outbox, OutboxLimits};

    fn connection(id: u64, user: &str) -> Arc<LocalConnection> {
        let outbox = Outbox::new(OutboxLimits {
            max_frames: 64,
            max_bytes: 1 << 20,
        });
        Arc::new(LocalConnection::new(
            ConnectionId(id),
            UserId::new(user).unwrap(),
            SessionId::random(),
            outbox,
        ))
    }

    fn hub_with(members: &[&Arc<LocalConnection>]) -> Hub {
        let hub = Hub::new(RoomId::new("r").unwrap());
        hub.state.lock().members = members
            .iter()
            .map(|conn| {
                let member = Member {
                    conn: Arc::clone(conn),
                    floor: Seq::ZERO,
                    buffer: None,
                    generation: 0,
                };
                (conn.id(), member)
            })
            .collect();
        hub
    }

    /// The (delivered, read) of every receipt push queued for `conn`.
    async fn receipts(conn: &LocalConnection) -> Vec<(u64, u64)> {
        conn.close(CloseCode::ShuttingDown);
        let mut batch = Vec::new();
        while conn.outbox.next_batch(&mut batch).await {}
        batch
            .into_iter()
            .filter_map(|item| match item {
                Outbound::Frame(frame) => {
                    let v: serde_json::Value = serde_json::from_slice(frame.as_bytes()).unwrap();
                    Some((v["delivered"].as_u64()?, v["read"].as_u64()?))
                }
                _ => None,
            })
            .collect()
    }

    fn cursors(delivered: u64, read: u64) -> Cursors {
        Cursors {
            delivered: Seq::new(delivered).unwrap(),
            read: Seq::new(read).unwrap(),
        }
    }

    #[tokio::test]
    async fn racing_receipts_never_push_backwards() {
        let (alice_a, alice_b, bob) = (
            connection(1, "alice"),
            connection(2, "alice"),
            connection(3, "bob"),
        );
        let hub = hub_with(&[&alice_a, &alice_b, &bob]);
        let alice = UserId::new("alice").unwrap();
        // Two devices' advances finish in the wrong order: (5,3) first, then (4,2).
        hub.push_receipt(&alice, cursors(5, 3), Some(ConnectionId(2)), true);
        hub.push_receipt(&alice, cursors(4, 2), Some(ConnectionId(1)), true);
        hub.push_receipt(&alice, cursors(4, 5), Some(ConnectionId(1)), true);
        assert_eq!(
            receipts(&bob).await,
            [(5, 3), (5, 5)],
            "merged, never lower"
        );
        assert_eq!(receipts(&alice_a).await, [(5, 3)], "not back to the sender");
    }

    #[test]
    fn closed_and_overflowing_members_leave_at_the_next_message() {
        let (open, closed, full) = (
            connection(1, "alice"),
            connection(2, "bob"),
            connection(3, "carol"),
        );
        let frame = || ServerFrame::ok(None, crate::protocol::ReplyBody::Empty).encode();
        closed.close(CloseCode::ShuttingDown);
        for _ in 0..64 {
            full.push(frame()).unwrap();
        }
        let hub = hub_with(&[&open, &closed, &full]);
        hub.state.lock().ready = true;
        hub.state.lock().accept(Seq::new(1).unwrap(), frame(), 16);
        let state = hub.state.lock();
        assert_eq!(state.delivered, Seq::new(1).unwrap());
        let mut left: Vec<_> = state.members.keys().copied().collect();
        left.sort();
        assert_eq!(left, [ConnectionId(1)], "the open member stays");
        assert_eq!(full.outbox.closing(), Some(CloseCode::SlowConsumer));
        assert_eq!(closed.outbox.closing(), Some(CloseCode::ShuttingDown));
    }

    #[tokio::test]
    async fn large_room_receipts_go_to_own_connections_only() {
        let (alice_a, alice_b, bob) = (
            connection(1, "alice"),
            connection(2, "alice"),
            connection(3, "bob"),
        );
        let hub = hub_with(&[&alice_a, &alice_b, &bob]);
        hub.push_receipt(
            &UserId::new("alice").unwrap(),
            cursors(2, 1),
            Some(ConnectionId(1)),
            false,
        );
        assert_eq!(receipts(&alice_b).await, [(2, 1)]);
        assert!(receipts(&bob).await.is_empty());
        assert!(receipts(&alice_a).await.is_empty());
    }
}
