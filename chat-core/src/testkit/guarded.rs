//! A store kept together with whatever must outlive it (a temporary directory, a schema
//! to drop), so that a backend's test can hand the testkit one value.

use std::any::Any;
use std::fmt;

use async_trait::async_trait;

use crate::delivery::{CursorChange, CursorUpdate, Cursors};
use crate::store::{Appended, HistoryPage, HistoryQuery, RoomInfo};
use crate::{DeliveryTracker, MessageStore, NewMessage, Result, RoomId, UserId};

/// `store`, acting as itself, with `guard` dropped after it.
pub struct Guarded<S> {
    /// The store every call goes to.
    pub store: S,
    _guard: Box<dyn Any + Send + Sync>,
}

impl<S> Guarded<S> {
    /// Keeps `guard` (e.g. a temporary directory) alive as long as `store`.
    pub fn new(store: S, guard: impl Any + Send + Sync) -> Guarded<S> {
        Guarded {
            store,
            _guard: Box::new(guard),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("store", &self.store)
            .finish()
    }
}

#[async_trait]
impl<S: MessageStore> MessageStore for Guarded<S> {
    async fn ensure_room(&self, room: &RoomId) -> Result<(RoomInfo, bool)> {
        self.store.ensure_room(room).await
    }
    async fn room(&self, room: &RoomId) -> Result<Option<RoomInfo>> {
        self.store.room(room).await
    }
    async fn append(&self, message: NewMessage) -> Result<Appended> {
        self.store.append(message).await
    }
    async fn history(
        &self,
        room: &RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.store.history(room, query, limit).await
    }
    async fn add_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        self.store.add_member(room, user).await
    }
    async fn remove_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        self.store.remove_member(room, user).await
    }
    async fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        self.store.is_member(room, user).await
    }
    async fn members(&self, room: &RoomId) -> Result<Vec<UserId>> {
        self.store.members(room).await
    }
    async fn member_count(&self, room: &RoomId) -> Result<usize> {
        self.store.member_count(room).await
    }
    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomInfo>> {
        self.store.rooms_of(user).await
    }
}

#[async_trait]
impl<S: DeliveryTracker> DeliveryTracker for Guarded<S> {
    async fn cursors(&self, room: &RoomId, user: &UserId) -> Result<Cursors> {
        self.store.cursors(room, user).await
    }
    async fn advance(
        &self,
        room: &RoomId,
        user: &UserId,
        update: CursorUpdate,
    ) -> Result<CursorChange> {
        self.store.advance(room, user, update).await
    }
    async fn room_cursors(&self, room: &RoomId) -> Result<Vec<(UserId, Cursors)>> {
        self.store.room_cursors(room).await
    }
    async fn user_cursors(&self, user: &UserId) -> Result<Vec<(RoomId, Cursors)>> {
        self.store.user_cursors(user).await
    }
}
