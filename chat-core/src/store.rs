//! [`MessageStore`]: the rooms, their logs and their members. The store is the sequencer.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::error::Result;
use crate::id::{Epoch, RoomId, Seq, UserId};
use crate::message::{Message, NewMessage};
pub use crate::protocol::HistoryQuery;

/// A room's identity and the end of its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room.
    pub room: RoomId,
    /// The epoch of its log: fixed from creation until the log is reset.
    pub epoch: Epoch,
    /// The latest `seq` (0 while the room is empty).
    pub latest: Seq,
}

/// What [`MessageStore::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stored message: the new one, or — for a retry — the original, unchanged.
    pub message: Message,
    /// True when `(room, from, cid)` was already stored and nothing new was appended.
    pub dup: bool,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    /// Ascending by `seq`, without gaps.
    pub messages: Vec<Message>,
    /// Whether further messages exist beyond the page in its direction: older ones for
    /// [`HistoryQuery::Before`] and [`HistoryQuery::Latest`], newer ones for
    /// [`HistoryQuery::After`].
    pub more: bool,
}

/// Rooms, their message logs and their members.
///
/// Held as `Arc<dyn MessageStore>`; the engine calls it from many tasks at once.
///
/// # Contract
///
/// Every implementation passes [`testkit`](crate::testkit) (feature `testkit`), which checks
/// each clause below.
///
/// - **Rooms.** [`ensure_room`](Self::ensure_room) creates a room once, with a fresh epoch;
///   the epoch stays until the room's log is reset (which a durable store never does on
///   its own; an in-memory store's rooms die with the process, so a new process has new
///   epochs).
/// - **The store is the sequencer.** [`append`](Self::append) gives the room's next `seq`,
///   from 1, growing by exactly 1, atomically: concurrent appends (from any number of
///   tasks, or processes sharing the store) never produce a gap or a duplicate `seq`.
/// - **Idempotency.** `append` is idempotent on `(room, from, cid)`: a retry returns the
///   original message (its `seq`, `ts`, `body` and `meta`, whatever the retry carries) with
///   `dup = true` and stores nothing. This holds when retries race each other: exactly one
///   of them stores, the others see `dup = true` and the same `seq`. Another sender's
///   identical `cid` is a new message.
/// - **Ack means stored.** When `append` returns `Ok`, the message is in the store (durably,
///   for a durable store). When it returns `Err`, nothing was appended — or, where a
///   backend cannot know (a lost commit reply), a retry with the same `cid` finds it.
/// - **History** returns messages exactly as appended, ascending, at most `limit`, with
///   `more` as [`HistoryPage`] defines it. A room that does not exist is
///   [`Error::RoomNotFound`](crate::Error::RoomNotFound).
/// - **Membership** is a set per room: adding twice or removing a non-member changes
///   nothing and says so (`false`). Removing a member also drops its
///   [delivery cursors](crate::delivery::DeliveryTracker) where the same backend keeps them.
///
/// The store does not check authorization or membership before appending: the engine
/// does. Rooms are never deleted by the engine.
///
/// # Cancel safety
///
/// Dropping a returned future must not corrupt the store: an `append` that is cancelled
/// either happened entirely or not at all (a retry with the same `cid` tells which).
#[async_trait]
pub trait MessageStore: Send + Sync + Debug + 'static {
    /// Creates `room` if it does not exist. Returns its info and whether it was created now.
    async fn ensure_room(&self, room: &RoomId) -> Result<(RoomInfo, bool)>;

    /// The room's info, or `None` when it does not exist.
    async fn room(&self, room: &RoomId) -> Result<Option<RoomInfo>>;

    /// Appends a message at the room's next `seq`, or returns the original for a retry.
    /// [`Error::RoomNotFound`](crate::Error::RoomNotFound) when the room does not exist.
    async fn append(&self, message: NewMessage) -> Result<Appended>;

    /// A page of at most `limit` messages (`limit` 0 gives an empty page whose `more`
    /// still tells whether messages exist in that direction).
    async fn history(
        &self,
        room: &RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage>;

    /// Makes `user` a member of `room`; `true` when it was not one before.
    /// [`Error::RoomNotFound`](crate::Error::RoomNotFound) when the room does not exist.
    async fn add_member(&self, room: &RoomId, user: &UserId) -> Result<bool>;

    /// Removes `user` from `room`; `true` when it was a member. A room that does not exist
    /// has no members: `Ok(false)`.
    async fn remove_member(&self, room: &RoomId, user: &UserId) -> Result<bool>;

    /// Whether `user` is a member of `room` (`false` when the room does not exist).
    async fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool>;

    /// The members of `room`, sorted by user id.
    /// [`Error::RoomNotFound`](crate::Error::RoomNotFound) when the room does not exist.
    async fn members(&self, room: &RoomId) -> Result<Vec<UserId>>;

    /// How many members `room` has (0 when it does not exist). The default counts
    /// [`members`](Self::members); backends should answer without listing them.
    async fn member_count(&self, room: &RoomId) -> Result<usize> {
        match self.members(room).await {
            Ok(members) => Ok(members.len()),
            Err(crate::Error::RoomNotFound(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Every room `user` is a member of, with its epoch and latest `seq`, sorted by room id.
    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomInfo>>;
}
