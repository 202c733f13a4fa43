//! The in-memory message store and delivery tracker.

use std::collections::hash_map::Entry;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use async_trait::async_trait;
use chat_core::delivery::{CursorChange, CursorUpdate, Cursors};
use chat_core::store::{Appended, HistoryPage, HistoryQuery, RoomInfo};
use chat_core::{
    ClientMsgId, DeliveryTracker, Epoch, Error, Message, MessageStore, NewMessage, Result, RoomId,
    Seq, UserId,
};
use parking_lot::{Mutex, RwLock};

/// Rooms are spread over this many shards; a shard's lock is held only to find or insert
/// a room, never while working on one.
const SHARDS: usize = 64;

/// An in-memory [`MessageStore`] and [`DeliveryTracker`].
///
/// Each room has its own lock: appends to different rooms never wait for each other, and
/// the sequencer of one room is the room's lock. Cheap to share: hold it in an `Arc`.
pub struct MemoryStore {
    rooms: Box<[RoomShard]>,
    /// user → the rooms it is a member of. Updated while the room's lock is held, so the
    /// two views never disagree for long; locked after a room, never before one.
    users: Box<[UserShard]>,
    hasher: RandomState,
}

type RoomShard = RwLock<HashMap<RoomId, Arc<RwLock<Room>>>>;
type UserShard = Mutex<HashMap<UserId, BTreeSet<RoomId>>>;

struct Room {
    epoch: Epoch,
    /// `messages[i]` has seq `i + 1`.
    messages: Vec<Message>,
    /// (sender, cid) → seq: the idempotency index.
    by_cid: HashMap<(UserId, ClientMsgId), Seq>,
    members: BTreeMap<UserId, Cursors>,
}

impl Room {
    fn latest(&self) -> Seq {
        seq_of(self.messages.len())
    }

    fn info(&self, room: &RoomId) -> RoomInfo {
        RoomInfo {
            room: room.clone(),
            epoch: self.epoch.clone(),
            latest: self.latest(),
        }
    }
}

/// The seq of the message at position `n` (1-based) of a log.
fn seq_of(n: usize) -> Seq {
    // A room would need 2^53 messages to leave the range.
    Seq::new(n as u64).unwrap_or(Seq::MAX)
}

/// A seq as a position in a log of `len` messages, clamped to the log.
fn position(seq: Seq, len: usize) -> usize {
    usize::try_from(seq.get()).unwrap_or(usize::MAX).min(len)
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rooms: usize = self.rooms.iter().map(|s| s.read().len()).sum();
        f.debug_struct("MemoryStore")
            .field("rooms", &rooms)
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore {
            rooms: (0..SHARDS).map(|_| RwLock::default()).collect(),
            users: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard_of(&self, key: &impl Hash) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    fn find(&self, room: &RoomId) -> Option<Arc<RwLock<Room>>> {
        self.rooms[self.shard_of(room)].read().get(room).cloned()
    }

    fn get(&self, room: &RoomId) -> Result<Arc<RwLock<Room>>> {
        self.find(room)
            .ok_or_else(|| Error::RoomNotFound(room.clone()))
    }

    fn user_rooms(&self, user: &UserId) -> Vec<RoomId> {
        self.users[self.shard_of(user)]
            .lock()
            .get(user)
            .map(|rooms| rooms.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Runs `f` with the user's room set (created if missing, dropped when left empty).
    fn with_user_rooms(&self, user: &UserId, f: impl FnOnce(&mut BTreeSet<RoomId>)) {
        let mut shard = self.users[self.shard_of(user)].lock();
        let rooms = shard.entry(user.clone()).or_default();
        f(rooms);
        if rooms.is_empty() {
            shard.remove(user);
        }
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn ensure_room(&self, room: &RoomId) -> Result<(RoomInfo, bool)> {
        if let Some(existing) = self.find(room) {
            return Ok((existing.read().info(room), false));
        }
        let mut shard = self.rooms[self.shard_of(room)].write();
        let mut created = false;
        let entry = shard.entry(room.clone()).or_insert_with(|| {
            created = true;
            Arc::new(RwLock::new(Room {
                epoch: Epoch::random(),
                messages: Vec::new(),
                by_cid: HashMap::new(),
                members: BTreeMap::new(),
            }))
        });
        let info = entry.read().info(room);
        Ok((info, created))
    }

    async fn room(&self, room: &RoomId) -> Result<Option<RoomInfo>> {
        Ok(self.find(room).map(|r| r.read().info(room)))
    }

    async fn append(&self, message: NewMessage) -> Result<Appended> {
        let room = self.get(&message.room)?;
        let mut room = room.write();
        let seq = room.latest().next();
        let key = (message.from.clone(), message.cid.clone());
        // One hash of the key, whether it is new or not.
        match room.by_cid.entry(key) {
            Entry::Occupied(known) => {
                let at = position(*known.get(), room.messages.len()) - 1;
                return Ok(Appended {
                    message: room.messages[at].clone(),
                    dup: true,
                });
            }
            Entry::Vacant(new) => {
                new.insert(seq);
            }
        }
        let stored = message.into_message(seq);
        room.messages.push(stored.clone());
        Ok(Appended {
            message: stored,
            dup: false,
        })
    }

    async fn history(
        &self,
        room: &RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage> {
        let room = self.get(room)?;
        let room = room.read();
        let len = room.messages.len();
        // The page is messages[start..end]: seqs start+1 ..= end.
        let (start, end, more) = match query {
            HistoryQuery::Latest => {
                let start = len.saturating_sub(limit);
                (start, len, start > 0)
            }
            HistoryQuery::Before(before) => {
                let end = position(before, len + 1).saturating_sub(1);
                let start = end.saturating_sub(limit);
                (start, end, start > 0)
            }
            HistoryQuery::After(after) => {
                let start = position(after, len);
                let end = start.saturating_add(limit).min(len);
                (start, end, end < len)
            }
        };
        Ok(HistoryPage {
            messages: room.messages[start..end].to_vec(),
            more,
        })
    }

    async fn add_member(&self, room_id: &RoomId, user: &UserId) -> Result<bool> {
        let room = self.get(room_id)?;
        let mut room = room.write();
        if room.members.contains_key(user) {
            return Ok(false);
        }
        room.members.insert(user.clone(), Cursors::default());
        self.with_user_rooms(user, |rooms| {
            rooms.insert(room_id.clone());
        });
        Ok(true)
    }

    async fn remove_member(&self, room_id: &RoomId, user: &UserId) -> Result<bool> {
        let Some(room) = self.find(room_id) else {
            return Ok(false);
        };
        let mut room = room.write();
        if room.members.remove(user).is_none() {
            return Ok(false);
        }
        self.with_user_rooms(user, |rooms| {
            rooms.remove(room_id);
        });
        Ok(true)
    }

    async fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        Ok(self
            .find(room)
            .is_some_and(|r| r.read().members.contains_key(user)))
    }

    async fn members(&self, room: &RoomId) -> Result<Vec<UserId>> {
        Ok(self.get(room)?.read().members.keys().cloned().collect())
    }

    async fn member_count(&self, room: &RoomId) -> Result<usize> {
        Ok(self.find(room).map_or(0, |r| r.read().members.len()))
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomInfo>> {
        Ok(self
            .user_rooms(user)
            .into_iter()
            .filter_map(|room| self.find(&room).map(|r| r.read().info(&room)))
            .collect())
    }
}

#[async_trait]
impl DeliveryTracker for MemoryStore {
    async fn cursors(&self, room: &RoomId, user: &UserId) -> Result<Cursors> {
        let not_member = || Error::NotMember {
            room: room.clone(),
            user: user.clone(),
        };
        let found = self.find(room).ok_or_else(not_member)?;
        let cursors = found.read().members.get(user).copied();
        cursors.ok_or_else(not_member)
    }

    async fn advance(
        &self,
        room_id: &RoomId,
        user: &UserId,
        update: CursorUpdate,
    ) -> Result<CursorChange> {
        let not_member = || Error::NotMember {
            room: room_id.clone(),
            user: user.clone(),
        };
        let room = self.find(room_id).ok_or_else(not_member)?;
        let mut room = room.write();
        let latest = room.latest();
        let cursors = room.members.get_mut(user).ok_or_else(not_member)?;
        let next = cursors.advanced(update, latest);
        let moved = next != *cursors;
        *cursors = next;
        Ok(CursorChange {
            cursors: next,
            moved,
        })
    }

    async fn room_cursors(&self, room: &RoomId) -> Result<Vec<(UserId, Cursors)>> {
        let room = self.get(room)?;
        let room = room.read();
        Ok(room
            .members
            .iter()
            .map(|(user, cursors)| (user.clone(), *cursors))
            .collect())
    }

    async fn user_cursors(&self, user: &UserId) -> Result<Vec<(RoomId, Cursors)>> {
        Ok(self
            .user_rooms(user)
            .into_iter()
            .filter_map(|room| {
                let cursors = self.find(&room)?.read().members.get(user).copied()?;
                Some((room, cursors))
            })
            .collect())
    }
}
