//! [`DeliveryTracker`]: how far each member has received and read each room.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::error::Result;
use crate::id::{RoomId, Seq, UserId};

/// A member's cumulative cursors in one room: every message up to `delivered` reached one
/// of its devices; every message up to `read` was read. `read <= delivered` always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cursors {
    /// Delivered up to this `seq`.
    pub delivered: Seq,
    /// Read up to this `seq`.
    pub read: Seq,
}

impl Cursors {
    /// The cursors after applying `update` to these, in a room whose latest `seq` is
    /// `latest`: each cursor becomes the maximum of old and new, clamped to `latest` (but
    /// never lowered), and `delivered` is raised to at least `read`.
    ///
    /// This is the rule every [`DeliveryTracker`] applies; backends may call it.
    ///
    /// ```
    /// # use chat_core::delivery::{CursorUpdate, Cursors};
    /// # use chat_core::Seq;
    /// let s = |n| Seq::new(n).unwrap();
    /// let now = Cursors { delivered: s(5), read: s(2) };
    /// let next = now.advanced(CursorUpdate { delivered: Some(s(3)), read: Some(s(9)) }, s(7));
    /// assert_eq!(next, Cursors { delivered: s(7), read: s(7) });
    /// ```
    #[must_use]
    pub fn advanced(self, update: CursorUpdate, latest: Seq) -> Cursors {
        let bump = |old: Seq, new: Option<Seq>| match new {
            Some(new) if new > old => new.min(latest).max(old),
            _ => old,
        };
        let read = bump(self.read, update.read);
        let delivered = bump(self.delivered, update.delivered).max(read);
        Cursors { delivered, read }
    }
}

/// A requested move of a member's cursors (a `receipt` frame). `None` leaves a cursor alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CursorUpdate {
    /// The new delivered cursor.
    pub delivered: Option<Seq>,
    /// The new read cursor (it also moves `delivered` up to it).
    pub read: Option<Seq>,
}

/// What [`DeliveryTracker::advance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CursorChange {
    /// The cursors now.
    pub cursors: Cursors,
    /// Whether either cursor moved (the server pushes a `receipt` only then).
    pub moved: bool,
}

/// Delivered and read cursors per `(user, room)`.
///
/// A backend usually implements this on the same type as its
/// [`MessageStore`](crate::store::MessageStore): clamping needs the room's latest `seq`, and
/// cursors exist only for members.
///
/// # Contract
///
/// - **Only forward.** Cursors are `max()` updates ([`Cursors::advanced`]): a lower value is
///   ignored; concurrent advances keep the highest; `read` raises `delivered` to it.
/// - **Never beyond the log.** A value above the room's latest `seq` is clamped to it.
/// - **Only members.** A member's cursors start at 0 when it joins; a non-member (or a room
///   that does not exist) has none: [`Error::NotMember`](crate::Error::NotMember). When a
///   member leaves, its cursors are dropped; if it rejoins they start at 0 again.
///
/// Cancel safety: an `advance` that is dropped either happened or did not; cursors stay
/// consistent.
#[async_trait]
pub trait DeliveryTracker: Send + Sync + Debug + 'static {
    /// The cursors of `user` in `room`.
    async fn cursors(&self, room: &RoomId, user: &UserId) -> Result<Cursors>;

    /// Moves the cursors of `user` in `room` forward.
    async fn advance(
        &self,
        room: &RoomId,
        user: &UserId,
        update: CursorUpdate,
    ) -> Result<CursorChange>;

    /// The cursors of every member of `room`, sorted by user id (members who never moved
    /// theirs included, at 0). [`Error::RoomNotFound`](crate::Error::RoomNotFound) when the
    /// room does not exist.
    async fn room_cursors(&self, room: &RoomId) -> Result<Vec<(UserId, Cursors)>>;

    /// The cursors of `user` in every room it is a member of, sorted by room id.
    async fn user_cursors(&self, user: &UserId) -> Result<Vec<(RoomId, Cursors)>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Seq {
        Seq::new(n).unwrap()
    }

    #[test]
    fn advancing_is_max_and_clamped() {
        let c = |d, r| Cursors {
            delivered: s(d),
            read: s(r),
        };
        let up = |d: Option<u64>, r: Option<u64>| CursorUpdate {
            delivered: d.map(s),
            read: r.map(s),
        };
        assert_eq!(c(5, 3).advanced(up(Some(4), Some(2)), s(10)), c(5, 3));
        assert_eq!(c(5, 3).advanced(up(Some(8), None), s(10)), c(8, 3));
        assert_eq!(c(5, 3).advanced(up(None, Some(6)), s(10)), c(6, 6));
        assert_eq!(c(5, 3).advanced(up(Some(50), Some(40)), s(10)), c(10, 10));
        assert_eq!(c(0, 0).advanced(up(None, None), s(10)), c(0, 0));
        // Never lowered, even if `latest` is somehow below the cursor.
        assert_eq!(c(5, 3).advanced(up(Some(9), Some(9)), s(4)), c(5, 4));
    }
}
