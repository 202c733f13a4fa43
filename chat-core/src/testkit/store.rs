//! [`MessageStore`] clauses.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::Error;
use crate::id::{ClientMsgId, RoomId, Seq, UserId};
use crate::message::{Message, Meta, NewMessage};
use crate::store::{HistoryPage, HistoryQuery, MessageStore};
use crate::testkit::{unique_room, unique_user};
use crate::time::Timestamp;

type Store = Arc<dyn MessageStore>;

fn seq(n: u64) -> Seq {
    Seq::new(n).expect("a small seq")
}

fn cid(s: &str) -> ClientMsgId {
    ClientMsgId::new(s).expect("a valid cid")
}

fn new_message(room: &RoomId, from: &UserId, c: &str, body: &str) -> NewMessage {
    NewMessage {
        room: room.clone(),
        from: from.clone(),
        cid: cid(c),
        body: body.to_owned(),
        meta: None,
        ts: Timestamp::now(),
    }
}

async fn room_with(store: &Store, prefix: &str, messages: u64) -> (RoomId, Vec<Message>) {
    let room = unique_room(prefix);
    store.ensure_room(&room).await.expect("ensure_room");
    let from = unique_user("writer");
    let mut stored = Vec::new();
    for i in 1..=messages {
        let appended = store
            .append(new_message(
                &room,
                &from,
                &format!("m{i}"),
                &format!("body {i}"),
            ))
            .await
            .expect("append");
        stored.push(appended.message);
    }
    (room, stored)
}

async fn page(store: &Store, room: &RoomId, query: HistoryQuery, limit: usize) -> HistoryPage {
    store
        .history(room, query, limit)
        .await
        .unwrap_or_else(|e| panic!("history {query:?} limit {limit}: {e}"))
}

fn seqs(page: &HistoryPage) -> Vec<u64> {
    page.messages.iter().map(|m| m.seq.get()).collect()
}

/// `ensure_room` creates a room once, empty, with an epoch that then stays the same.
pub async fn ensure_room_creates_once(store: Store) {
    let room = unique_room("create");
    assert_eq!(
        store.room(&room).await.expect("room"),
        None,
        "a new name is no room yet"
    );
    let (info, created) = store.ensure_room(&room).await.expect("ensure_room");
    assert!(created, "the first ensure_room creates the room");
    assert_eq!(info.room, room);
    assert_eq!(info.latest, Seq::ZERO, "a new room is empty");
    let (again, created) = store.ensure_room(&room).await.expect("ensure_room again");
    assert!(!created, "the second ensure_room finds the room");
    assert_eq!(again, info, "the epoch does not change");
    assert_eq!(store.room(&room).await.expect("room"), Some(info));
}

/// Operations on a room that does not exist fail with `RoomNotFound` (or answer "nothing")
/// and do not create it.
pub async fn missing_room_is_reported_and_not_created(store: Store) {
    let room = unique_room("missing");
    let user = unique_user("u");
    let append = store.append(new_message(&room, &user, "c", "x")).await;
    assert!(
        matches!(append, Err(Error::RoomNotFound(ref r)) if *r == room),
        "append to a missing room: {append:?}"
    );
    let history = store.history(&room, HistoryQuery::Latest, 10).await;
    assert!(
        matches!(history, Err(Error::RoomNotFound(_))),
        "history: {history:?}"
    );
    let add = store.add_member(&room, &user).await;
    assert!(
        matches!(add, Err(Error::RoomNotFound(_))),
        "add_member: {add:?}"
    );
    let members = store.members(&room).await;
    assert!(
        matches!(members, Err(Error::RoomNotFound(_))),
        "members: {members:?}"
    );
    assert!(
        !store
            .remove_member(&room, &user)
            .await
            .expect("remove_member")
    );
    assert!(!store.is_member(&room, &user).await.expect("is_member"));
    assert_eq!(store.member_count(&room).await.expect("member_count"), 0);
    assert!(store.rooms_of(&user).await.expect("rooms_of").is_empty());
    assert_eq!(
        store.room(&room).await.expect("room"),
        None,
        "failed calls must not create the room"
    );
}

/// Appends get seqs 1, 2, 3, … in order, and the room's latest seq follows.
pub async fn append_assigns_gapless_seqs_from_one(store: Store) {
    let room = unique_room("seq");
    let (info, _) = store.ensure_room(&room).await.expect("ensure_room");
    let users = [unique_user("a"), unique_user("b")];
    for i in 1..=20u64 {
        let from = &users[(i % 2) as usize];
        let appended = store
            .append(new_message(&room, from, &format!("c{i}"), "hi"))
            .await
            .expect("append");
        assert!(!appended.dup, "a new cid is not a duplicate");
        assert_eq!(appended.message.seq, seq(i), "append #{i} gets seq {i}");
        assert_eq!(appended.message.room, room);
        assert_eq!(appended.message.from, *from);
        let now = store
            .room(&room)
            .await
            .expect("room")
            .expect("the room exists");
        assert_eq!(now.latest, seq(i), "latest follows the appends");
        assert_eq!(now.epoch, info.epoch, "appending does not change the epoch");
    }
}

/// A retry of `(room, from, cid)` returns the original unchanged with `dup`; the same cid
/// from another sender, or in another room, is a new message.
pub async fn append_is_idempotent_per_room_sender_and_cid(store: Store) {
    let room = unique_room("idem");
    let other_room = unique_room("idem-other");
    store.ensure_room(&room).await.expect("ensure_room");
    store.ensure_room(&other_room).await.expect("ensure_room");
    let (alice, bob) = (unique_user("alice"), unique_user("bob"));

    let mut first = new_message(&room, &alice, "c-1", "original");
    first.meta = Some(Meta::from_json(r#"{"v":1}"#).expect("meta"));
    first.ts = Timestamp::from_millis(1_000);
    let original = store.append(first).await.expect("append");
    assert!(!original.dup);

    let mut retry = new_message(&room, &alice, "c-1", "changed on retry");
    retry.ts = Timestamp::from_millis(2_000);
    let again = store.append(retry).await.expect("retry");
    assert!(again.dup, "a retry is reported as a duplicate");
    assert_eq!(
        again.message, original.message,
        "a retry returns the original message: seq, ts, body and meta"
    );

    let bobs = store
        .append(new_message(&room, &bob, "c-1", "bob's"))
        .await
        .expect("append");
    assert!(!bobs.dup, "another sender's cid is its own");
    assert_eq!(bobs.message.seq, seq(2));

    let elsewhere = store
        .append(new_message(&other_room, &alice, "c-1", "elsewhere"))
        .await
        .expect("append");
    assert!(
        !elsewhere.dup,
        "the same cid in another room is a new message"
    );
    assert_eq!(elsewhere.message.seq, seq(1));

    let stored = page(&store, &room, HistoryQuery::Latest, 10).await;
    assert_eq!(seqs(&stored), [1, 2], "the retry stored nothing");
    assert_eq!(stored.messages[0].body, "original");
}

/// 16 tasks appending to one room at once get seqs 1..=N, each exactly once, and each
/// task's own appends in increasing order.
pub async fn concurrent_appends_are_gapless(store: Store) {
    const TASKS: u64 = 16;
    const EACH: u64 = 25;
    let room = unique_room("race");
    store.ensure_room(&room).await.expect("ensure_room");
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, room) = (store.clone(), room.clone());
        tasks.push(tokio::spawn(async move {
            let from = unique_user(&format!("t{t}"));
            let mut mine = Vec::new();
            for i in 0..EACH {
                let appended = store
                    .append(new_message(&room, &from, &format!("t{t}-{i}"), "x"))
                    .await
                    .expect("append");
                assert!(!appended.dup);
                mine.push(appended.message.seq.get());
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let mine = task.await.expect("an appending task panicked");
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "one task's appends got decreasing seqs: {mine:?}"
        );
        all.extend(mine);
    }
    all.sort_unstable();
    let expected: Vec<u64> = (1..=TASKS * EACH).collect();
    assert_eq!(
        all, expected,
        "seqs must be 1..=N with no gap and no duplicate"
    );
    let info = store.room(&room).await.expect("room").expect("exists");
    assert_eq!(info.latest, seq(TASKS * EACH));
    let stored = page(&store, &room, HistoryQuery::After(Seq::ZERO), 1000).await;
    assert_eq!(
        seqs(&stored),
        expected,
        "history holds every seq once, in order"
    );
}

/// Retries of one cid racing each other store one message: exactly one call is not a
/// duplicate, and all of them return the same seq.
pub async fn concurrent_retries_store_once(store: Store) {
    const ROUNDS: usize = 20;
    const RACERS: usize = 16;
    let room = unique_room("retry-race");
    store.ensure_room(&room).await.expect("ensure_room");
    let from = unique_user("sender");
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for racer in 0..RACERS {
            let (store, room, from) = (store.clone(), room.clone(), from.clone());
            tasks.push(tokio::spawn(async move {
                let body = format!("round {round} racer {racer}");
                store
                    .append(new_message(&room, &from, &format!("r{round}"), &body))
                    .await
                    .expect("append")
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("a racing task panicked"));
        }
        let fresh = results.iter().filter(|a| !a.dup).count();
        assert_eq!(
            fresh, 1,
            "round {round}: {fresh} racers stored the same cid"
        );
        let first = &results[0].message;
        assert!(
            results.iter().all(|a| a.message == *first),
            "round {round}: racers saw different messages for one cid"
        );
        assert_eq!(first.seq, seq(round as u64 + 1), "one seq per cid");
    }
    let stored = page(&store, &room, HistoryQuery::Latest, 1000).await;
    assert_eq!(stored.messages.len(), ROUNDS, "one message stored per cid");
}

/// Each room has its own sequence, from 1, also when rooms are appended to concurrently.
pub async fn rooms_sequence_independently(store: Store) {
    const ROOMS: usize = 4;
    const EACH: u64 = 30;
    let rooms: Vec<RoomId> = (0..ROOMS)
        .map(|i| unique_room(&format!("indep{i}")))
        .collect();
    for room in &rooms {
        store.ensure_room(room).await.expect("ensure_room");
    }
    let mut tasks = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        for t in 0..2 {
            let (store, room) = (store.clone(), room.clone());
            tasks.push(tokio::spawn(async move {
                let from = unique_user(&format!("r{i}t{t}"));
                for n in 0..EACH {
                    store
                        .append(new_message(&room, &from, &format!("{n}"), "x"))
                        .await
                        .expect("append");
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("an appending task panicked");
    }
    for room in &rooms {
        let stored = page(&store, room, HistoryQuery::After(Seq::ZERO), 1000).await;
        let expected: Vec<u64> = (1..=2 * EACH).collect();
        assert_eq!(
            seqs(&stored),
            expected,
            "{room} has its own gapless sequence"
        );
    }
}

/// `Latest` returns the last `limit` messages, ascending; `more` tells whether older exist.
pub async fn history_latest_page(store: Store) {
    let (room, stored) = room_with(&store, "latest", 12).await;
    let last5 = page(&store, &room, HistoryQuery::Latest, 5).await;
    assert_eq!(seqs(&last5), [8, 9, 10, 11, 12]);
    assert!(last5.more, "older messages exist");
    assert_eq!(last5.messages, stored[7..].to_vec(), "messages as appended");
    let all = page(&store, &room, HistoryQuery::Latest, 12).await;
    assert_eq!(all.messages.len(), 12);
    assert!(!all.more, "the page reaches seq 1");
    let beyond = page(&store, &room, HistoryQuery::Latest, 100).await;
    assert_eq!(beyond.messages.len(), 12);
    assert!(!beyond.more);
    let none = page(&store, &room, HistoryQuery::Latest, 0).await;
    assert!(none.messages.is_empty(), "limit 0 gives no messages");
    assert!(none.more, "…but says that messages exist");
}

/// `Before(s)` pages backwards through every message exactly once.
pub async fn history_pages_backwards_with_before(store: Store) {
    let (room, _) = room_with(&store, "before", 23).await;
    let mut collected = Vec::new();
    let mut before = seq(24);
    loop {
        let p = page(&store, &room, HistoryQuery::Before(before), 5).await;
        let got = seqs(&p);
        assert!(got.len() <= 5, "at most limit messages: {got:?}");
        assert!(
            got.iter().all(|s| *s < before.get()),
            "before {before}: got {got:?}"
        );
        let lowest = got.first().copied().unwrap_or(1);
        assert_eq!(
            p.more,
            lowest > 1,
            "more = older messages exist, page {got:?}"
        );
        collected.splice(0..0, got);
        if !p.more {
            break;
        }
        before = seq(lowest);
    }
    assert_eq!(collected, (1..=23).collect::<Vec<_>>());
    let far = page(&store, &room, HistoryQuery::Before(seq(1_000)), 3).await;
    assert_eq!(
        seqs(&far),
        [21, 22, 23],
        "before beyond the end pages from the end"
    );
    let first = page(&store, &room, HistoryQuery::Before(seq(1)), 3).await;
    assert!(
        first.messages.is_empty() && !first.more,
        "nothing is before seq 1"
    );
    let zero = page(&store, &room, HistoryQuery::Before(Seq::ZERO), 3).await;
    assert!(
        zero.messages.is_empty() && !zero.more,
        "nothing is before seq 0"
    );
    let empty_limit = page(&store, &room, HistoryQuery::Before(seq(10)), 0).await;
    assert!(empty_limit.messages.is_empty() && empty_limit.more);
}

/// `After(s)` pages forwards through every message exactly once.
pub async fn history_pages_forwards_with_after(store: Store) {
    let (room, stored) = room_with(&store, "after", 23).await;
    let mut collected = Vec::new();
    let mut after = Seq::ZERO;
    loop {
        let p = page(&store, &room, HistoryQuery::After(after), 5).await;
        let got = seqs(&p);
        assert!(got.len() <= 5, "at most limit messages: {got:?}");
        let highest = got.last().copied().unwrap_or(after.get());
        assert_eq!(
            p.more,
            highest < 23,
            "more = newer messages exist, page {got:?}"
        );
        collected.extend(got);
        if !p.more {
            break;
        }
        after = seq(highest);
    }
    assert_eq!(collected, (1..=23).collect::<Vec<_>>());
    let tail = page(&store, &room, HistoryQuery::After(seq(20)), 50).await;
    assert_eq!(tail.messages, stored[20..].to_vec());
    assert!(!tail.more);
    let end = page(&store, &room, HistoryQuery::After(seq(23)), 5).await;
    assert!(
        end.messages.is_empty() && !end.more,
        "nothing after the latest"
    );
    let past = page(&store, &room, HistoryQuery::After(seq(500)), 5).await;
    assert!(
        past.messages.is_empty() && !past.more,
        "nothing after a seq past the end"
    );
    let empty_limit = page(&store, &room, HistoryQuery::After(seq(3)), 0).await;
    assert!(empty_limit.messages.is_empty() && empty_limit.more);
}

/// An empty room's history is empty with `more = false`, in every direction.
pub async fn history_of_an_empty_room(store: Store) {
    let room = unique_room("empty");
    store.ensure_room(&room).await.expect("ensure_room");
    for query in [
        HistoryQuery::Latest,
        HistoryQuery::Before(seq(10)),
        HistoryQuery::After(Seq::ZERO),
    ] {
        let p = page(&store, &room, query, 50).await;
        assert!(
            p.messages.is_empty() && !p.more,
            "{query:?} on an empty room: {p:?}"
        );
    }
}

/// A message comes back from history exactly as appended: sender, cid, body (any Unicode,
/// up to the protocol's 16 KiB), timestamp, and meta byte for byte.
pub async fn messages_are_kept_exactly(store: Store) {
    let room = unique_room("exact");
    store.ensure_room(&room).await.expect("ensure_room");
    let from = unique_user("writer");
    let bodies = [
        String::new(),
        "plain".to_owned(),
        "ünïcödé 🙂 \u{0} \"quotes\" \\ <script>alert(1)</script> \n\t".to_owned(),
        "é".repeat(8 * 1024),
    ];
    let meta =
        Meta::from_json(r#"{"reply_to":41,"n":1.50,"s":"a\"b","deep":{"x":[1,{"y":null}]}}"#)
            .expect("meta");
    let mut appended = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let message = NewMessage {
            room: room.clone(),
            from: from.clone(),
            cid: cid(&format!("ключ-{i}-🙂")),
            body: body.clone(),
            meta: (i % 2 == 1).then(|| meta.clone()),
            ts: Timestamp::from_millis(1_764_412_345_678 + i as u64),
        };
        let a = store.append(message.clone()).await.expect("append");
        assert_eq!(a.message, message.into_message(seq(i as u64 + 1)));
        appended.push(a.message);
    }
    let stored = page(&store, &room, HistoryQuery::Latest, 10).await;
    assert_eq!(
        stored.messages, appended,
        "history returns messages as appended"
    );
    assert_eq!(
        stored.messages[1].meta.as_ref().map(Meta::as_str),
        Some(meta.as_str()),
        "meta comes back byte for byte"
    );
}

/// Membership is a set: add and remove report whether they changed it, members are listed
/// sorted, and the count matches.
pub async fn membership_is_a_set(store: Store) {
    let room = unique_room("members");
    store.ensure_room(&room).await.expect("ensure_room");
    let users: Vec<UserId> = ["carol", "alice", "bob"]
        .iter()
        .map(|u| unique_user(u))
        .collect();
    for user in &users {
        assert!(
            store.add_member(&room, user).await.expect("add"),
            "{user} is new"
        );
        assert!(
            !store.add_member(&room, user).await.expect("add again"),
            "{user} already in"
        );
        assert!(store.is_member(&room, user).await.expect("is_member"));
    }
    let mut sorted = users.clone();
    sorted.sort();
    assert_eq!(
        store.members(&room).await.expect("members"),
        sorted,
        "sorted by user id"
    );
    assert_eq!(store.member_count(&room).await.expect("count"), 3);

    assert!(store.remove_member(&room, &users[0]).await.expect("remove"));
    assert!(
        !store
            .remove_member(&room, &users[0])
            .await
            .expect("remove again")
    );
    assert!(!store.is_member(&room, &users[0]).await.expect("is_member"));
    assert_eq!(store.member_count(&room).await.expect("count"), 2);
    let stranger = unique_user("stranger");
    assert!(
        !store
            .remove_member(&room, &stranger)
            .await
            .expect("remove a stranger")
    );
    assert!(!store.is_member(&room, &stranger).await.expect("is_member"));
    assert!(
        store.add_member(&room, &users[0]).await.expect("rejoin"),
        "a former member can join again"
    );
}

/// Concurrent adds and removes of distinct users leave exactly the expected set.
pub async fn concurrent_membership_changes_converge(store: Store) {
    let room = unique_room("member-race");
    store.ensure_room(&room).await.expect("ensure_room");
    let users: Vec<UserId> = (0..32).map(|i| unique_user(&format!("m{i}"))).collect();
    let mut tasks = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let (store, room, user) = (store.clone(), room.clone(), user.clone());
        tasks.push(tokio::spawn(async move {
            assert!(store.add_member(&room, &user).await.expect("add"));
            if i % 2 == 0 {
                assert!(store.remove_member(&room, &user).await.expect("remove"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("a membership task panicked");
    }
    let mut expected: Vec<UserId> = users.iter().skip(1).step_by(2).cloned().collect();
    expected.sort();
    assert_eq!(store.members(&room).await.expect("members"), expected);
    for (i, user) in users.iter().enumerate() {
        let rooms: BTreeSet<RoomId> = store
            .rooms_of(user)
            .await
            .expect("rooms_of")
            .into_iter()
            .map(|info| info.room)
            .collect();
        assert_eq!(
            rooms.contains(&room),
            i % 2 == 1,
            "rooms_of({user}) agrees with members"
        );
    }
}

/// `rooms_of` lists exactly the user's rooms, sorted, each with its epoch and latest seq.
pub async fn rooms_of_lists_memberships_with_latest_seq(store: Store) {
    let user = unique_user("member");
    assert!(store.rooms_of(&user).await.expect("rooms_of").is_empty());
    let (a, _) = room_with(&store, "ra", 3).await;
    let (b, _) = room_with(&store, "rb", 0).await;
    let (c, _) = room_with(&store, "rc", 2).await;
    for room in [&a, &b, &c] {
        store.add_member(room, &user).await.expect("add");
    }
    store.remove_member(&c, &user).await.expect("remove");
    let rooms = store.rooms_of(&user).await.expect("rooms_of");
    let mut expected = vec![
        store.room(&a).await.expect("room").expect("exists"),
        store.room(&b).await.expect("room").expect("exists"),
    ];
    expected.sort_by(|x, y| x.room.cmp(&y.room));
    assert_eq!(
        rooms, expected,
        "rooms of the user, sorted, with epoch and latest seq"
    );
    assert_eq!(
        rooms
            .iter()
            .map(|r| r.latest.get())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 3])
    );
    store
        .append(new_message(&a, &user, "later", "x"))
        .await
        .expect("append");
    let after = store.rooms_of(&user).await.expect("rooms_of");
    let a_info = after
        .iter()
        .find(|r| r.room == a)
        .expect("still a member of a");
    assert_eq!(a_info.latest, seq(4), "latest seq is current");
}
