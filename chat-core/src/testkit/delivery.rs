//! [`DeliveryTracker`] clauses. Each takes the backend's store (to make rooms, members and
//! messages) and its tracker.

use std::sync::Arc;

use crate::delivery::{CursorUpdate, Cursors, DeliveryTracker};
use crate::error::Error;
use crate::id::{ClientMsgId, RoomId, Seq, UserId};
use crate::message::NewMessage;
use crate::store::MessageStore;
use crate::testkit::{unique_room, unique_user};
use crate::time::Timestamp;

type Store = Arc<dyn MessageStore>;
type Tracker = Arc<dyn DeliveryTracker>;

fn seq(n: u64) -> Seq {
    Seq::new(n).expect("a small seq")
}

fn cursors(delivered: u64, read: u64) -> Cursors {
    Cursors {
        delivered: seq(delivered),
        read: seq(read),
    }
}

fn update(delivered: Option<u64>, read: Option<u64>) -> CursorUpdate {
    CursorUpdate {
        delivered: delivered.map(seq),
        read: read.map(seq),
    }
}

/// A room with `messages` messages and the given members.
async fn room_with(store: &Store, prefix: &str, messages: u64, members: &[&UserId]) -> RoomId {
    let room = unique_room(prefix);
    store.ensure_room(&room).await.expect("ensure_room");
    let from = unique_user("writer");
    for i in 0..messages {
        store
            .append(NewMessage {
                room: room.clone(),
                from: from.clone(),
                cid: ClientMsgId::new(&format!("m{i}")).expect("cid"),
                body: "x".to_owned(),
                meta: None,
                ts: Timestamp::now(),
            })
            .await
            .expect("append");
    }
    for member in members {
        store.add_member(&room, member).await.expect("add_member");
    }
    room
}

async fn advance(
    tracker: &Tracker,
    room: &RoomId,
    user: &UserId,
    up: CursorUpdate,
) -> (Cursors, bool) {
    let change = tracker
        .advance(room, user, up)
        .await
        .unwrap_or_else(|e| panic!("advance {up:?}: {e}"));
    (change.cursors, change.moved)
}

/// A new member's cursors are 0/0.
pub async fn cursors_start_at_zero_for_members(store: Store, tracker: Tracker) {
    let user = unique_user("u");
    let room = room_with(&store, "zero", 5, &[&user]).await;
    assert_eq!(
        tracker.cursors(&room, &user).await.expect("cursors"),
        Cursors::default()
    );
}

/// Lower values are ignored; equal ones do not count as a move; higher ones move.
pub async fn cursors_only_move_forward(store: Store, tracker: Tracker) {
    let user = unique_user("u");
    let room = room_with(&store, "fwd", 10, &[&user]).await;
    assert_eq!(
        advance(&tracker, &room, &user, update(Some(6), Some(4))).await,
        (cursors(6, 4), true)
    );
    assert_eq!(
        advance(&tracker, &room, &user, update(Some(3), Some(2))).await,
        (cursors(6, 4), false),
        "lower values are ignored"
    );
    assert_eq!(
        advance(&tracker, &room, &user, update(Some(6), Some(4))).await,
        (cursors(6, 4), false),
        "equal values are no move"
    );
    assert_eq!(
        advance(&tracker, &room, &user, update(None, None)).await,
        (cursors(6, 4), false),
        "an empty update is no move"
    );
    assert_eq!(
        advance(&tracker, &room, &user, update(None, Some(5))).await,
        (cursors(6, 5), true)
    );
    assert_eq!(
        advance(&tracker, &room, &user, update(Some(8), None)).await,
        (cursors(8, 5), true)
    );
    assert_eq!(
        tracker.cursors(&room, &user).await.expect("cursors"),
        cursors(8, 5)
    );
}

/// Values above the room's latest seq are clamped to it.
pub async fn cursors_are_clamped_to_latest_seq(store: Store, tracker: Tracker) {
    let user = unique_user("u");
    let room = room_with(&store, "clamp", 7, &[&user]).await;
    assert_eq!(
        advance(&tracker, &room, &user, update(Some(1_000), Some(900))).await,
        (cursors(7, 7), true),
        "clamped to the latest seq"
    );
    let empty = room_with(&store, "clamp-empty", 0, &[&user]).await;
    assert_eq!(
        advance(&tracker, &empty, &user, update(Some(5), Some(5))).await,
        (cursors(0, 0), false),
        "an empty room keeps cursors at 0"
    );
}

/// Reading up to a seq means it was delivered too.
pub async fn read_raises_delivered(store: Store, tracker: Tracker) {
    let user = unique_user("u");
    let room = room_with(&store, "read", 9, &[&user]).await;
    assert_eq!(
        advance(&tracker, &room, &user, update(None, Some(5))).await,
        (cursors(5, 5), true)
    );
    assert_eq!(
        advance(&tracker, &room, &user, update(Some(2), Some(7))).await,
        (cursors(7, 7), true),
        "delivered is at least read"
    );
}

/// A non-member, or a room that does not exist, has no cursors: `NotMember`, and nothing
/// is created.
pub async fn non_members_have_no_cursors(store: Store, tracker: Tracker) {
    let (member, stranger) = (unique_user("member"), unique_user("stranger"));
    let room = room_with(&store, "nm", 3, &[&member]).await;
    let advanced = tracker
        .advance(&room, &stranger, update(Some(2), Some(2)))
        .await;
    assert!(
        matches!(advanced, Err(Error::NotMember { .. })),
        "advance by a stranger: {advanced:?}"
    );
    let read = tracker.cursors(&room, &stranger).await;
    assert!(
        matches!(read, Err(Error::NotMember { .. })),
        "cursors of a stranger: {read:?}"
    );
    let listed = tracker.room_cursors(&room).await.expect("room_cursors");
    assert_eq!(
        listed,
        vec![(member.clone(), Cursors::default())],
        "the stranger got no cursors"
    );
    assert!(!store.is_member(&room, &stranger).await.expect("is_member"));

    let missing = unique_room("missing");
    let advanced = tracker
        .advance(&missing, &member, update(Some(1), None))
        .await;
    assert!(
        matches!(advanced, Err(Error::NotMember { .. })),
        "advance in a missing room: {advanced:?}"
    );
    assert_eq!(store.room(&missing).await.expect("room"), None);
}

/// Leaving drops a member's cursors; rejoining starts again from 0.
pub async fn leaving_drops_cursors(store: Store, tracker: Tracker) {
    let user = unique_user("u");
    let room = room_with(&store, "leave", 5, &[&user]).await;
    advance(&tracker, &room, &user, update(Some(5), Some(3))).await;
    store
        .remove_member(&room, &user)
        .await
        .expect("remove_member");
    let gone = tracker.cursors(&room, &user).await;
    assert!(
        matches!(gone, Err(Error::NotMember { .. })),
        "cursors after leaving: {gone:?}"
    );
    assert!(
        tracker
            .user_cursors(&user)
            .await
            .expect("user_cursors")
            .is_empty()
    );
    store.add_member(&room, &user).await.expect("rejoin");
    assert_eq!(
        tracker.cursors(&room, &user).await.expect("cursors"),
        Cursors::default()
    );
}

/// `room_cursors` lists every member (sorted, at 0 if never moved); `user_cursors` every
/// room of the user (sorted).
pub async fn room_and_user_cursor_listings(store: Store, tracker: Tracker) {
    let (a, b) = (unique_user("a"), unique_user("b"));
    let (a, b) = if a < b { (a, b) } else { (b, a) };
    let r1 = room_with(&store, "list1", 4, &[&a, &b]).await;
    let r2 = room_with(&store, "list2", 6, &[&a]).await;
    advance(&tracker, &r1, &a, update(Some(4), Some(2))).await;
    advance(&tracker, &r2, &a, update(None, Some(6))).await;
    assert_eq!(
        tracker.room_cursors(&r1).await.expect("room_cursors"),
        vec![(a.clone(), cursors(4, 2)), (b.clone(), Cursors::default())]
    );
    let mut expected = vec![(r1.clone(), cursors(4, 2)), (r2.clone(), cursors(6, 6))];
    expected.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        tracker.user_cursors(&a).await.expect("user_cursors"),
        expected
    );
    assert_eq!(
        tracker.user_cursors(&b).await.expect("user_cursors"),
        vec![(r1.clone(), Cursors::default())]
    );
    let missing = tracker.room_cursors(&unique_room("missing")).await;
    assert!(
        matches!(missing, Err(Error::RoomNotFound(_))),
        "room_cursors of a missing room: {missing:?}"
    );
}

/// Concurrent advances keep the highest values; every reported state is consistent.
pub async fn concurrent_advances_keep_the_highest(store: Store, tracker: Tracker) {
    let user = unique_user("u");
    let room = room_with(&store, "cursor-race", 200, &[&user]).await;
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let (tracker, room, user) = (tracker.clone(), room.clone(), user.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                // Values go up and down across tasks; the maximum sent is 199/190.
                let d = (t * 37 + i * 11) % 200;
                let r = (t * 53 + i * 7) % 191;
                let change = tracker
                    .advance(&room, &user, update(Some(d), Some(r)))
                    .await
                    .expect("advance");
                let c = change.cursors;
                assert!(c.read <= c.delivered, "read above delivered: {c:?}");
                assert!(
                    c.delivered.get() >= d && c.read.get() >= r,
                    "a cursor went below the update: {c:?}"
                );
            }
        }));
    }
    for task in tasks {
        task.await.expect("an advancing task panicked");
    }
    let mut max_d = 0;
    let mut max_r = 0;
    for t in 0..16u64 {
        for i in 0..20u64 {
            max_d = max_d.max((t * 37 + i * 11) % 200);
            max_r = max_r.max((t * 53 + i * 7) % 191);
        }
    }
    assert_eq!(
        tracker.cursors(&room, &user).await.expect("cursors"),
        cursors(max_d.max(max_r), max_r),
        "the highest values win"
    );
}
