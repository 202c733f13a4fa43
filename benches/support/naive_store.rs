//! The baseline store of the benches: the simplest correct `MessageStore` — every room
//! behind one mutex, a `Vec` of messages and a `HashMap` for idempotency. Included by
//! `store_append.rs` and `engine_paths.rs` with `#[path]`.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chat_engine::core::store::{Appended, HistoryPage, HistoryQuery, RoomInfo};
use chat_engine::{
    ClientMsgId, Epoch, Error, Message, MessageStore, NewMessage, Result, RoomId, Seq, UserId,
};
use parking_lot::Mutex;

/// The baseline store: every room behind one mutex, a `Vec` of messages and a `HashMap`
/// for idempotency.
#[derive(Debug, Default)]
pub(crate) struct NaiveStore {
    rooms: Mutex<HashMap<RoomId, NaiveRoom>>,
}

#[derive(Debug)]
struct NaiveRoom {
    epoch: Epoch,
    messages: Vec<Message>,
    by_cid: HashMap<(UserId, ClientMsgId), Seq>,
    members: BTreeSet<UserId>,
}

impl NaiveRoom {
    fn info(&self, room: &RoomId) -> RoomInfo {
        RoomInfo {
            room: room.clone(),
            epoch: self.epoch.clone(),
            latest: Seq::new(self.messages.len() as u64).unwrap(),
        }
    }
}

#[async_trait]
impl MessageStore for NaiveStore {
    async fn ensure_room(&self, room: &RoomId) -> Result<(RoomInfo, bool)> {
        let mut rooms = self.rooms.lock();
        let created = !rooms.contains_key(room);
        let r = rooms.entry(room.clone()).or_insert_with(|| NaiveRoom {
            epoch: Epoch::random(),
            messages: Vec::new(),
            by_cid: HashMap::new(),
            members: BTreeSet::new(),
        });
        Ok((r.info(room), created))
    }

    async fn room(&self, room: &RoomId) -> Result<Option<RoomInfo>> {
        Ok(self.rooms.lock().get(room).map(|r| r.info(room)))
    }

    async fn append(&self, message: NewMessage) -> Result<Appended> {
        let mut rooms = self.rooms.lock();
        let room = rooms
            .get_mut(&message.room)
            .ok_or_else(|| Error::RoomNotFound(message.room.clone()))?;
        let key = (message.from.clone(), message.cid.clone());
        if let Some(seq) = room.by_cid.get(&key) {
            let original = room.messages[seq.get() as usize - 1].clone();
            return Ok(Appended {
                message: original,
                dup: true,
            });
        }
        let seq = Seq::new(room.messages.len() as u64 + 1).unwrap();
        let stored = message.into_message(seq);
        room.by_cid.insert(key, seq);
        room.messages.push(stored.clone());
        Ok(Appended {
            message: stored,
            dup: false,
        })
    }

    async fn history(&self, room: &RoomId, _: HistoryQuery, limit: usize) -> Result<HistoryPage> {
        let rooms = self.rooms.lock();
        let r = rooms
            .get(room)
            .ok_or_else(|| Error::RoomNotFound(room.clone()))?;
        let start = r.messages.len().saturating_sub(limit);
        Ok(HistoryPage {
            messages: r.messages[start..].to_vec(),
            more: start > 0,
        })
    }

    async fn add_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        let mut rooms = self.rooms.lock();
        let r = rooms
            .get_mut(room)
            .ok_or_else(|| Error::RoomNotFound(room.clone()))?;
        Ok(r.members.insert(user.clone()))
    }

    async fn remove_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        Ok(self
            .rooms
            .lock()
            .get_mut(room)
            .is_some_and(|r| r.members.remove(user)))
    }

    async fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        Ok(self
            .rooms
            .lock()
            .get(room)
            .is_some_and(|r| r.members.contains(user)))
    }

    async fn members(&self, room: &RoomId) -> Result<Vec<UserId>> {
        let rooms = self.rooms.lock();
        let r = rooms
            .get(room)
            .ok_or_else(|| Error::RoomNotFound(room.clone()))?;
        Ok(r.members.iter().cloned().collect())
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomInfo>> {
        let rooms = self.rooms.lock();
        let mut mine: Vec<RoomInfo> = rooms
            .iter()
            .filter(|(_, r)| r.members.contains(user))
            .map(|(id, r)| r.info(id))
            .collect();
        mine.sort_by(|a, b| a.room.cmp(&b.room));
        Ok(mine)
    }
}
