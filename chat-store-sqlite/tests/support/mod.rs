//! Test helpers: a store in a temporary directory that is removed with it.

#![allow(dead_code, unreachable_pub)]

use async_trait::async_trait;
use chat_core::delivery::{CursorChange, CursorUpdate, Cursors};
use chat_core::store::{Appended, HistoryPage, HistoryQuery, RoomInfo};
use chat_core::{DeliveryTracker, MessageStore, NewMessage, Result, RoomId, UserId};
use chat_store_sqlite::SqliteStore;
use tempfile::TempDir;

/// A [`SqliteStore`] on a fresh file; the directory goes when the last clone is dropped.
#[derive(Debug)]
pub struct TempStore {
    pub store: SqliteStore,
    _dir: TempDir,
}

impl TempStore {
    pub async fn new() -> TempStore {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(dir.path().join("chat.db"))
            .await
            .expect("open the store");
        TempStore { store, _dir: dir }
    }
}

#[async_trait]
impl MessageStore for TempStore {
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
impl DeliveryTracker for TempStore {
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
