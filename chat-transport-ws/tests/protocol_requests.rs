//! Every request row of protocol v1 over a real WebSocket: `hello`, `join`, `leave`, `send`
//! (to a room and to a user), `history`, `members`, `presence`, `ping`, and the `ok` each
//! gets — its fields, its order under pipelining, and what it promises to the other members
//! and to the user's other connections.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::{Client, TestServer, seqs};

/// Request ids this file chooses for raw (pipelined) frames; far above the ids the
/// support client hands out.
static RAW_ID: AtomicU64 = AtomicU64::new(1 << 40);

fn raw_id() -> u64 {
    RAW_ID.fetch_add(1, Ordering::Relaxed)
}

/// Wall-clock milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Asserts that `frame` has every field of `expected` with that value (a server may add
/// optional fields, so others are not checked).
fn assert_fields(frame: &Value, expected: &Value) {
    for (key, want) in expected.as_object().unwrap() {
        assert_eq!(&frame[key], want, "field `{key}` of {frame}");
    }
}

/// Sends `n` messages to `room` back to back (bodies `{prefix}-{i}`, cids the same), then
/// waits for every `ok`; returns the replies in order.
async fn fill(client: &mut Client, room: &str, prefix: &str, n: usize) -> Vec<Value> {
    let mut ids = Vec::with_capacity(n);
    for i in 1..=n {
        let id = raw_id();
        let cid = format!("{prefix}-{i}");
        client
            .send_json(json!({"type": "send", "id": id, "room": room, "cid": cid, "body": cid}))
            .await;
        ids.push(id);
    }
    let mut replies = Vec::with_capacity(n);
    for id in ids {
        let reply = client.reply(id).await;
        assert_eq!(reply["type"], "ok", "send {id} refused: {reply}");
        replies.push(reply);
    }
    replies
}

/// One `history` page: (the seqs, `more`). Checks the reply's `room` and that the messages
/// ascend.
async fn page(client: &mut Client, request: Value) -> (Vec<u64>, bool) {
    let room = request["room"].clone();
    let reply = client.ok(request).await;
    assert_eq!(reply["room"], room, "{reply}");
    let messages = reply["messages"].as_array().unwrap();
    let got = seqs(messages);
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "messages must ascend by seq: {got:?}"
    );
    (got, reply["more"].as_bool().unwrap())
}

/// The member entry of `user` in a `members` reply.
fn member<'a>(reply: &'a Value, user: &str) -> &'a Value {
    reply["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == user)
        .unwrap_or_else(|| panic!("{user} is not in {reply}"))
}

/// The entry of `user` in a `presence` reply.
fn presence_of<'a>(reply: &'a Value, user: &str) -> &'a Value {
    reply["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == user)
        .unwrap_or_else(|| panic!("{user} is not in {reply}"))
}

/// Waits for the `presence` push saying `user` went offline; returns it.
async fn offline_push(client: &mut Client, user: &str) -> Value {
    for _ in 0..16 {
        let push = client.push("presence").await;
        if push["user"] == user && push["status"] == "offline" {
            return push;
        }
    }
    panic!("no offline presence push for {user}");
}

/// Closes the client's connection from its side.
async fn disconnect(mut client: Client) {
    client.ws.close(None).await.unwrap();
    let _ = client.closed().await;
}

// ---------------------------------------------------------------- hello

#[tokio::test]
async fn hello_reply_names_the_user_a_session_and_the_heartbeat() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let other = server.client("alice").await;
    let heartbeat = u64::try_from(server.engine.config().heartbeat.as_millis()).unwrap();

    assert_eq!(alice.hello["type"], "ok");
    assert_eq!(alice.hello["user"], "alice");
    assert_eq!(alice.hello["heartbeat_ms"], heartbeat);
    assert_eq!(alice.hello["heartbeat_ms"], 25_000, "the default heartbeat");
    assert_eq!(alice.hello["rooms"], json!([]), "a new user is in no room");
    let session = alice.hello["session"].as_str().unwrap();
    assert!(!session.is_empty());
    assert_ne!(
        alice.hello["session"], other.hello["session"],
        "each connection gets its own session"
    );
    server.stop().await;
}

#[tokio::test]
async fn hello_lists_every_room_of_the_user_with_latest_seq_and_cursors() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;

    let general = alice.join("general").await["epoch"].clone();
    let random = alice.join("random").await["epoch"].clone();
    let quiet = alice.join("quiet").await["epoch"].clone();
    alice.join("gone").await;
    alice.ok(json!({"type": "leave", "room": "gone"})).await;
    bob.join("general").await;
    bob.join("bobs-own").await;

    for cid in ["g-1", "g-2", "g-3"] {
        alice.say("general", cid, cid).await;
    }
    bob.say("general", "g-4", "from bob").await;
    alice.say("random", "r-1", "one").await;
    alice.say("random", "r-2", "two").await;
    let dm = bob
        .ok(json!({"type": "send", "to": "alice", "cid": "d-1", "body": "psst"}))
        .await;
    assert_eq!(dm["room"], "dm:alice:bob");
    let direct = bob.join("dm:alice:bob").await["epoch"].clone();

    // read 2 moves delivered to 2; then delivered alone moves to 3.
    alice
        .ok(json!({"type": "receipt", "room": "general", "read": 2}))
        .await;
    alice
        .ok(json!({"type": "receipt", "room": "general", "delivered": 3}))
        .await;
    alice
        .ok(json!({"type": "receipt", "room": "random", "delivered": 1}))
        .await;
    let first_session = alice.hello["session"].clone();
    disconnect(alice).await;

    let alice = server.client("alice").await;
    assert_eq!(alice.hello["user"], "alice");
    assert_ne!(alice.hello["session"], first_session);
    let mut rooms = alice.hello["rooms"].as_array().unwrap().clone();
    rooms.sort_by_key(|r| r["room"].as_str().unwrap().to_owned());
    let names: Vec<&str> = rooms.iter().map(|r| r["room"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["dm:alice:bob", "general", "quiet", "random"],
        "exactly the rooms alice is a member of: {}",
        alice.hello
    );
    let expected = [
        json!({"room": "dm:alice:bob", "epoch": direct, "seq": 1, "read": 0, "delivered": 0}),
        json!({"room": "general", "epoch": general, "seq": 4, "read": 2, "delivered": 3}),
        json!({"room": "quiet", "epoch": quiet, "seq": 0, "read": 0, "delivered": 0}),
        json!({"room": "random", "epoch": random, "seq": 2, "read": 0, "delivered": 1}),
    ];
    for (room, want) in rooms.iter().zip(&expected) {
        assert_fields(room, want);
        assert!(room["epoch"].is_string(), "{room}");
    }
    server.stop().await;
}

// ---------------------------------------------------------------- join

#[tokio::test]
async fn join_replies_with_the_rooms_epoch_latest_seq_and_cursors() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let created = alice.join("general").await;
    for cid in ["c-1", "c-2", "c-3"] {
        alice.say("general", cid, "hi").await;
    }

    let mut bob = server.client("bob").await;
    let joined = bob.join("general").await;
    assert_fields(
        &joined,
        &json!({
            "type": "ok", "room": "general", "epoch": created["epoch"],
            "seq": 3, "read": 0, "delivered": 0,
        }),
    );
    server.stop().await;
}

#[tokio::test]
async fn joining_a_room_one_is_in_is_ok_again_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let created = alice.join("general").await;
    bob.join("general").await;
    assert_eq!(alice.push("member").await["user"], "alice");
    assert_eq!(alice.push("member").await["user"], "bob");
    alice.say("general", "c-1", "one").await;
    alice.say("general", "c-2", "two").await;
    bob.ok(json!({"type": "receipt", "room": "general", "read": 1}))
        .await;

    let again = bob.join("general").await;
    assert_fields(
        &again,
        &json!({
            "room": "general", "epoch": created["epoch"],
            "seq": 2, "read": 1, "delivered": 1,
        }),
    );
    // A repeated join is not a join: the next member push alice sees is carol's.
    let mut carol = server.client("carol").await;
    carol.join("general").await;
    assert_eq!(
        alice.push("member").await,
        json!({"type": "member", "room": "general", "user": "carol", "action": "join"})
    );
    // And bob still receives the room exactly once.
    let sent = alice.say("general", "c-3", "three").await;
    let pushes = bob.messages_until("general", |m| m["cid"] == "c-3").await;
    assert_eq!(seqs(&pushes), [1, 2, 3], "one push per message");
    assert_eq!(sent["seq"], 3);
    server.stop().await;
}

#[tokio::test]
async fn join_creates_a_room_that_does_not_exist() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let created = alice.join("brand-new.room:1").await;
    assert_fields(
        &created,
        &json!({"type": "ok", "room": "brand-new.room:1", "seq": 0, "read": 0, "delivered": 0}),
    );
    assert!(!created["epoch"].as_str().unwrap().is_empty());
    assert_eq!(
        alice.push("member").await,
        json!({"type": "member", "room": "brand-new.room:1", "user": "alice", "action": "join"})
    );
    let (got, more) = page(
        &mut alice,
        json!({"type": "history", "room": "brand-new.room:1"}),
    )
    .await;
    assert_eq!((got, more), (vec![], false), "a new room is empty");
    let sent = alice.say("brand-new.room:1", "c-1", "first").await;
    assert_eq!(sent["seq"], 1, "seq starts at 1");

    let mut bob = server.client("bob").await;
    let joined = bob.join("brand-new.room:1").await;
    assert_eq!(joined["epoch"], created["epoch"], "the same room");
    assert_eq!(joined["seq"], 1);
    server.stop().await;
}

// ---------------------------------------------------------------- leave

#[tokio::test]
async fn leave_replies_with_the_room_and_tells_every_member() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    bob.join("general").await;

    let left = bob.ok(json!({"type": "leave", "room": "general"})).await;
    assert_fields(&left, &json!({"type": "ok", "room": "general"}));
    let leave = json!({"type": "member", "room": "general", "user": "bob", "action": "leave"});
    let mut seen = None;
    for _ in 0..4 {
        let push = alice.push("member").await;
        if push["action"] == "leave" {
            seen = Some(push);
            break;
        }
    }
    assert_eq!(seen, Some(leave.clone()), "the remaining members are told");
    let mut own = None;
    for _ in 0..4 {
        let push = bob.push("member").await;
        if push["action"] == "leave" {
            own = Some(push);
            break;
        }
    }
    assert_eq!(
        own,
        Some(leave),
        "the leaving user's own connection is told"
    );
    server.stop().await;
}

#[tokio::test]
async fn leaving_a_room_one_is_not_in_is_ok() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join("general").await;

    let existing = bob.ok(json!({"type": "leave", "room": "general"})).await;
    assert_eq!(existing["room"], "general");
    let missing = bob.ok(json!({"type": "leave", "room": "nowhere"})).await;
    assert_eq!(missing["room"], "nowhere");
    let twice = alice.ok(json!({"type": "leave", "room": "general"})).await;
    assert_eq!(twice["room"], "general");
    let again = alice.ok(json!({"type": "leave", "room": "general"})).await;
    assert_eq!(again["room"], "general", "leaving twice is ok too");
    server.stop().await;
}

#[tokio::test]
async fn requests_naming_a_room_one_is_not_in_are_forbidden() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    alice.say("general", "c-1", "members only").await;

    for room in ["general", "does-not-exist"] {
        for request in [
            json!({"type": "send", "room": room, "cid": "c-9", "body": "x"}),
            json!({"type": "history", "room": room}),
            json!({"type": "history", "room": room, "after": 0}),
            json!({"type": "members", "room": room}),
            json!({"type": "receipt", "room": room, "read": 1}),
            json!({"type": "typing", "room": room, "active": true}),
        ] {
            bob.refused(request, "forbidden").await;
        }
    }
    let (got, _) = page(&mut alice, json!({"type": "history", "room": "general"})).await;
    assert_eq!(got, [1], "the refused send stored nothing");
    let members = alice
        .ok(json!({"type": "members", "room": "general"}))
        .await;
    assert_eq!(
        members["members"].as_array().unwrap().len(),
        1,
        "no refused request made bob a member: {members}"
    );
    server.stop().await;
}

#[tokio::test]
async fn after_leaving_sends_and_history_are_forbidden() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    bob.join("general").await;
    bob.say("general", "c-1", "before").await;
    bob.ok(json!({"type": "leave", "room": "general"})).await;

    bob.refused(
        json!({"type": "send", "room": "general", "cid": "c-2", "body": "after"}),
        "forbidden",
    )
    .await;
    bob.refused(json!({"type": "history", "room": "general"}), "forbidden")
        .await;
    bob.refused(json!({"type": "members", "room": "general"}), "forbidden")
        .await;
    let (got, _) = page(&mut alice, json!({"type": "history", "room": "general"})).await;
    assert_eq!(got, [1], "the refused send stored nothing");
    server.stop().await;
}

#[tokio::test]
async fn after_leaving_no_more_messages_of_the_room_arrive() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    for room in ["general", "other"] {
        alice.join(room).await;
        bob.join(room).await;
    }
    alice.say("general", "g-1", "while bob is in").await;
    let first = bob.push("message").await;
    assert_eq!(
        (first["room"].clone(), first["seq"].clone()),
        (json!("general"), json!(1))
    );

    bob.ok(json!({"type": "leave", "room": "general"})).await;
    alice.say("general", "g-2", "after bob left").await;
    let marker = alice.say("other", "marker", "marker").await;
    let next = bob.push("message").await;
    assert_eq!(
        (
            next["room"].clone(),
            next["cid"].clone(),
            next["seq"].clone()
        ),
        (json!("other"), json!("marker"), marker["seq"].clone()),
        "bob received a message of a room he left: {next}"
    );
    server.stop().await;
}

// ---------------------------------------------------------------- send

#[tokio::test]
async fn send_replies_with_room_seq_ts_and_dup_false() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    bob.join("general").await;

    let before = now_ms();
    let first = alice
        .ok(json!({"type": "send", "room": "general", "cid": "c-1", "body": "hello", "meta": {"k": 1}}))
        .await;
    let second = alice.say("general", "c-2", "again").await;
    let after = now_ms();
    assert_fields(
        &first,
        &json!({"type": "ok", "room": "general", "seq": 1, "dup": false}),
    );
    assert_fields(
        &second,
        &json!({"type": "ok", "room": "general", "seq": 2, "dup": false}),
    );
    let ts = first["ts"].as_u64().unwrap();
    assert!(
        before.saturating_sub(1_000) <= ts && ts <= after + 1_000,
        "ts {ts} is not the wall clock in ms ({before}..{after})"
    );
    assert!(second["ts"].as_u64().unwrap() >= ts);

    let pushed = bob.push("message").await;
    assert_fields(
        &pushed,
        &json!({
            "type": "message", "room": "general", "seq": 1, "from": "alice", "cid": "c-1",
            "body": "hello", "ts": first["ts"], "meta": {"k": 1},
        }),
    );
    server.stop().await;
}

#[tokio::test]
async fn a_repeated_send_returns_the_same_seq_and_ts_with_dup_true() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    let request = json!({"type": "send", "room": "general", "cid": "c-1", "body": "hello"});
    let first = alice.ok(request.clone()).await;
    let retry = alice.ok(request).await;
    let changed = alice
        .ok(json!({"type": "send", "room": "general", "cid": "c-1", "body": "edited"}))
        .await;
    assert_eq!(first["dup"], false);
    for repeat in [&retry, &changed] {
        assert_fields(
            repeat,
            &json!({"room": "general", "seq": first["seq"], "ts": first["ts"], "dup": true}),
        );
    }
    let history = alice
        .ok(json!({"type": "history", "room": "general"}))
        .await;
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(seqs(messages), [1], "stored once: {history}");
    assert_eq!(
        messages[0]["body"], "hello",
        "the first send is what is stored"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_repeated_send_is_pushed_only_once() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    bob.join("general").await;
    let request = json!({"type": "send", "room": "general", "cid": "c-1", "body": "hello"});
    let first = alice.ok(request.clone()).await;
    alice.ok(request).await;
    let marker = alice.say("general", "c-2", "marker").await;
    assert_eq!(marker["seq"], first["seq"].as_u64().unwrap() + 1);

    for client in [&mut bob, &mut alice] {
        let once = client.push("message").await;
        assert_eq!(
            (once["cid"].clone(), once["seq"].clone()),
            (json!("c-1"), first["seq"].clone())
        );
        let next = client.push("message").await;
        assert_eq!(
            (next["cid"].clone(), next["seq"].clone()),
            (json!("c-2"), marker["seq"].clone()),
            "the retry was pushed again: {next}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn another_sender_with_the_same_cid_sends_a_new_message() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    bob.join("general").await;
    let from_alice = alice.say("general", "c-1", "alice's").await;
    let from_bob = bob.say("general", "c-1", "bob's").await;
    assert_eq!(from_alice["seq"], 1);
    assert_fields(
        &from_bob,
        &json!({"room": "general", "seq": 2, "dup": false}),
    );

    let pushes = alice
        .messages_until("general", |m| m["from"] == "bob")
        .await;
    let last = pushes.last().unwrap();
    assert_eq!(
        (
            last["seq"].clone(),
            last["body"].clone(),
            last["cid"].clone()
        ),
        (json!(2), json!("bob's"), json!("c-1"))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_spoofed_from_in_a_send_is_ignored() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    bob.join("general").await;
    alice
        .ok(json!({"type": "send", "room": "general", "cid": "c-1", "body": "hi", "from": "mallory"}))
        .await;

    let pushed = bob.push("message").await;
    assert_eq!(pushed["from"], "alice", "{pushed}");
    let history = bob.ok(json!({"type": "history", "room": "general"})).await;
    assert_eq!(history["messages"][0]["from"], "alice", "{history}");
    server.stop().await;
}

// ---------------------------------------------------------------- direct rooms

#[tokio::test]
async fn send_to_a_user_goes_to_the_sorted_direct_room() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let from_bob = bob
        .ok(json!({"type": "send", "to": "alice", "cid": "d-1", "body": "hi alice"}))
        .await;
    assert_fields(
        &from_bob,
        &json!({"type": "ok", "room": "dm:alice:bob", "seq": 1, "dup": false}),
    );
    assert!(from_bob["ts"].is_u64());
    let retry = bob
        .ok(json!({"type": "send", "to": "alice", "cid": "d-1", "body": "hi alice"}))
        .await;
    assert_fields(
        &retry,
        &json!({"room": "dm:alice:bob", "seq": 1, "ts": from_bob["ts"], "dup": true}),
    );
    let from_alice = alice
        .ok(json!({"type": "send", "to": "bob", "cid": "d-1", "body": "hi bob"}))
        .await;
    assert_fields(
        &from_alice,
        &json!({"room": "dm:alice:bob", "seq": 2, "dup": false}),
    );
    let pushed = alice
        .messages_until("dm:alice:bob", |m| m["seq"] == 1)
        .await;
    assert_eq!(pushed.last().unwrap()["body"], "hi alice");
    server.stop().await;
}

#[tokio::test]
async fn send_to_a_user_makes_both_members_and_tells_both() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let sent = alice
        .ok(json!({"type": "send", "to": "bob", "cid": "d-1", "body": "hi"}))
        .await;
    assert_eq!(sent["room"], "dm:alice:bob");

    let join_of = |user: &str| json!({"type": "member", "room": "dm:alice:bob", "user": user, "action": "join"});
    let mut alice_saw = vec![alice.push("member").await, alice.push("member").await];
    alice_saw.sort_by_key(|m| m["user"].as_str().unwrap().to_owned());
    assert_eq!(alice_saw, [join_of("alice"), join_of("bob")]);
    assert_eq!(bob.push("member").await, join_of("bob"));
    let pushed = bob.push("message").await;
    assert_fields(
        &pushed,
        &json!({"room": "dm:alice:bob", "seq": 1, "from": "alice", "body": "hi", "ts": sent["ts"]}),
    );

    for client in [&mut alice, &mut bob] {
        let members = client
            .ok(json!({"type": "members", "room": "dm:alice:bob"}))
            .await;
        let mut users: Vec<&str> = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user"].as_str().unwrap())
            .collect();
        users.sort_unstable();
        assert_eq!(users, ["alice", "bob"]);
    }
    server.stop().await;
}

#[tokio::test]
async fn send_to_a_user_who_never_connected_makes_them_a_member() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice
        .ok(json!({"type": "send", "to": "carol", "cid": "d-1", "body": "one"}))
        .await;
    let second = alice
        .ok(json!({"type": "send", "to": "carol", "cid": "d-2", "body": "two"}))
        .await;
    assert_fields(&second, &json!({"room": "dm:alice:carol", "seq": 2}));
    let mut alice_saw = vec![alice.push("member").await, alice.push("member").await];
    alice_saw.sort_by_key(|m| m["user"].as_str().unwrap().to_owned());
    assert_eq!(
        alice_saw,
        [
            json!({"type": "member", "room": "dm:alice:carol", "user": "alice", "action": "join"}),
            json!({"type": "member", "room": "dm:alice:carol", "user": "carol", "action": "join"}),
        ]
    );

    let mut carol = server.client("carol").await;
    let rooms = carol.hello["rooms"].as_array().unwrap().clone();
    assert_eq!(rooms.len(), 1, "{}", carol.hello);
    assert_fields(
        &rooms[0],
        &json!({"room": "dm:alice:carol", "seq": 2, "read": 0, "delivered": 0}),
    );
    assert!(rooms[0]["epoch"].is_string());
    let history = carol
        .ok(json!({"type": "history", "room": "dm:alice:carol"}))
        .await;
    let bodies: Vec<&Value> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["body"])
        .collect();
    assert_eq!(bodies, [&json!("one"), &json!("two")]);
    assert_eq!(history["more"], false);

    alice
        .ok(json!({"type": "send", "to": "carol", "cid": "d-3", "body": "live"}))
        .await;
    let live = carol.push("message").await;
    assert_fields(
        &live,
        &json!({"room": "dm:alice:carol", "seq": 3, "body": "live"}),
    );
    server.stop().await;
}

#[tokio::test]
async fn nobody_joins_another_pairs_direct_room() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut carol = server.client("carol").await;
    carol
        .refused(json!({"type": "join", "room": "dm:alice:bob"}), "forbidden")
        .await;
    alice
        .ok(json!({"type": "send", "to": "bob", "cid": "d-1", "body": "hi"}))
        .await;
    carol
        .refused(json!({"type": "join", "room": "dm:alice:bob"}), "forbidden")
        .await;
    carol
        .refused(
            json!({"type": "history", "room": "dm:alice:bob"}),
            "forbidden",
        )
        .await;
    carol
        .refused(
            json!({"type": "send", "room": "dm:alice:bob", "cid": "c-1", "body": "x"}),
            "forbidden",
        )
        .await;
    let members = alice
        .ok(json!({"type": "members", "room": "dm:alice:bob"}))
        .await;
    assert_eq!(
        members["members"].as_array().unwrap().len(),
        2,
        "carol did not get in: {members}"
    );
    server.stop().await;
}

#[tokio::test]
async fn either_user_may_join_their_direct_room() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let created = alice.join("dm:alice:bob").await;
    assert_fields(
        &created,
        &json!({"room": "dm:alice:bob", "seq": 0, "read": 0, "delivered": 0}),
    );
    let joined = bob.join("dm:alice:bob").await;
    assert_fields(
        &joined,
        &json!({"room": "dm:alice:bob", "epoch": created["epoch"], "seq": 0}),
    );
    let sent = alice.say("dm:alice:bob", "c-1", "by room id").await;
    assert_eq!(sent["seq"], 1);
    let pushed = bob.push("message").await;
    assert_fields(
        &pushed,
        &json!({"room": "dm:alice:bob", "seq": 1, "from": "alice"}),
    );
    let by_to = bob
        .ok(json!({"type": "send", "to": "alice", "cid": "c-1", "body": "by to"}))
        .await;
    assert_fields(
        &by_to,
        &json!({"room": "dm:alice:bob", "seq": 2, "dup": false}),
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_direct_room_ids_are_bad_requests() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let bad = [
        "dm:bob:alice",
        "dm:alice:Bob",
        "dm:",
        "dm:alice",
        "dm:alice:bob:carol",
        "dm::bob",
        "dm:alice:",
    ];
    for room in bad {
        for request in [
            json!({"type": "join", "room": room}),
            json!({"type": "history", "room": room}),
            json!({"type": "members", "room": room}),
            json!({"type": "send", "room": room, "cid": "c-1", "body": "x"}),
        ] {
            let reply = alice.refused(request, "bad_request").await;
            assert!(reply["message"].is_string(), "{reply}");
        }
    }
    alice
        .refused(
            json!({"type": "send", "to": "bad user", "cid": "c-1", "body": "x"}),
            "bad_request",
        )
        .await;
    assert_eq!(
        alice.ok(json!({"type": "ping"})).await["type"],
        "ok",
        "refusals do not close the connection"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_send_with_both_room_and_to_is_a_bad_request() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    alice
        .refused(
            json!({"type": "send", "room": "general", "to": "bob", "cid": "c-1", "body": "x"}),
            "bad_request",
        )
        .await;
    let (got, _) = page(&mut alice, json!({"type": "history", "room": "general"})).await;
    assert_eq!(got, Vec::<u64>::new(), "nothing was stored");
    let bob = server.client("bob").await;
    assert_eq!(bob.hello["rooms"], json!([]), "no direct room was made");
    server.stop().await;
}

// ---------------------------------------------------------------- history

#[tokio::test]
async fn history_without_cursor_returns_the_latest_page() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    let (got, more) = page(&mut alice, json!({"type": "history", "room": "general"})).await;
    assert_eq!((got, more), (vec![], false), "an empty room");
    fill(&mut alice, "general", "m", 60).await;

    let (got, more) = page(
        &mut alice,
        json!({"type": "history", "room": "general", "limit": 10}),
    )
    .await;
    assert_eq!(got, (51..=60).collect::<Vec<_>>());
    assert!(more, "older messages exist");
    let (got, more) = page(
        &mut alice,
        json!({"type": "history", "room": "general", "limit": 60}),
    )
    .await;
    assert_eq!(got, (1..=60).collect::<Vec<_>>());
    assert!(!more, "the page holds the whole room");
    server.stop().await;
}

#[tokio::test]
async fn history_pages_backwards_with_before_through_every_message_once() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    fill(&mut alice, "general", "m", 120).await;

    for limit in [50_u64, 40] {
        let mut collected = Vec::new();
        let mut request = json!({"type": "history", "room": "general", "limit": limit});
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages <= 10, "paging did not end");
            let (got, more) = page(&mut alice, request.clone()).await;
            assert!(!got.is_empty(), "an empty page before the start");
            assert!(got.len() as u64 <= limit);
            let oldest = got[0];
            assert_eq!(
                more,
                oldest > 1,
                "limit {limit}: `more` on the page {got:?}"
            );
            collected.splice(0..0, got);
            if !more {
                break;
            }
            request =
                json!({"type": "history", "room": "general", "before": oldest, "limit": limit});
        }
        assert_eq!(
            collected,
            (1..=120).collect::<Vec<_>>(),
            "limit {limit}: every message exactly once"
        );
    }
    let (got, more) = page(
        &mut alice,
        json!({"type": "history", "room": "general", "before": 71, "limit": 50}),
    )
    .await;
    assert_eq!((got, more), ((21..=70).collect::<Vec<_>>(), true));
    server.stop().await;
}

#[tokio::test]
async fn history_pages_forwards_with_after() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    fill(&mut alice, "general", "m", 120).await;

    for limit in [50_u64, 40] {
        let mut collected: Vec<u64> = Vec::new();
        let mut after = 0;
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages <= 10, "paging did not end");
            let (got, more) = page(
                &mut alice,
                json!({"type": "history", "room": "general", "after": after, "limit": limit}),
            )
            .await;
            assert!(!got.is_empty(), "an empty page before the end");
            assert_eq!(got[0], after + 1, "the page starts right after {after}");
            let newest = *got.last().unwrap();
            assert_eq!(
                more,
                newest < 120,
                "limit {limit}: `more` on the page {got:?}"
            );
            collected.extend(got);
            if !more {
                break;
            }
            after = newest;
        }
        assert_eq!(collected, (1..=120).collect::<Vec<_>>(), "limit {limit}");
    }
    let (got, more) = page(
        &mut alice,
        json!({"type": "history", "room": "general", "after": 120}),
    )
    .await;
    assert_eq!((got, more), (vec![], false), "nothing after the latest");
    server.stop().await;
}

#[tokio::test]
async fn history_limit_defaults_to_50() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    fill(&mut alice, "general", "m", 60).await;

    let (got, more) = page(&mut alice, json!({"type": "history", "room": "general"})).await;
    assert_eq!((got, more), ((11..=60).collect::<Vec<_>>(), true));
    let (got, more) = page(
        &mut alice,
        json!({"type": "history", "room": "general", "before": 60}),
    )
    .await;
    assert_eq!((got, more), ((10..=59).collect::<Vec<_>>(), true));
    let (got, more) = page(
        &mut alice,
        json!({"type": "history", "room": "general", "after": 0}),
    )
    .await;
    assert_eq!((got, more), ((1..=50).collect::<Vec<_>>(), true));
    server.stop().await;
}

#[tokio::test]
async fn a_huge_history_limit_is_clamped_to_the_cap() {
    let server = TestServer::start().await;
    let cap = u64::try_from(server.engine.config().history_cap).unwrap();
    assert!(cap >= 500, "protocol v1 promises a cap of at least 500");
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    fill(&mut alice, "general", "m", 600).await;
    let page_len = cap.min(600);

    let (got, more) = page(
        &mut alice,
        json!({"type": "history", "room": "general", "limit": 100_000}),
    )
    .await;
    assert_eq!(got, (600 - page_len + 1..=600).collect::<Vec<_>>());
    assert_eq!(more, page_len < 600);
    let (got, more) = page(
        &mut alice,
        json!({"type": "history", "room": "general", "after": 0, "limit": 100_000}),
    )
    .await;
    assert_eq!(got, (1..=page_len).collect::<Vec<_>>());
    assert_eq!(more, page_len < 600);
    server.stop().await;
}

#[tokio::test]
async fn history_messages_are_the_same_objects_as_message_pushes() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    bob.join("general").await;
    alice
        .ok(json!({
            "type": "send", "room": "general", "cid": "c-1", "body": "with meta",
            "meta": {"reply_to": 7, "tags": ["a", "b"], "nested": {"x": null, "y": 1.5}},
        }))
        .await;
    alice.say("general", "c-2", "plain").await;
    alice.say("general", "c-3", "ünïcødé ✓ \"quoted\"\n").await;

    let pushes = bob.messages_until("general", |m| m["seq"] == 3).await;
    assert_eq!(pushes.len(), 3);
    assert_eq!(
        pushes[0]["meta"],
        json!({"reply_to": 7, "tags": ["a", "b"], "nested": {"x": null, "y": 1.5}})
    );
    let history = bob.ok(json!({"type": "history", "room": "general"})).await;
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages, &pushes, "history elements equal the pushes");
    for message in messages {
        assert_eq!(message["type"], "message");
    }
    server.stop().await;
}

// ---------------------------------------------------------------- members and presence

#[tokio::test]
async fn members_lists_each_member_with_status_last_seen_and_cursors() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    bob.join("general").await;
    for cid in ["c-1", "c-2", "c-3"] {
        alice.say("general", cid, "hi").await;
    }
    bob.ok(json!({"type": "receipt", "room": "general", "read": 2}))
        .await;
    alice
        .ok(json!({"type": "receipt", "room": "general", "delivered": 3, "read": 1}))
        .await;

    let reply = alice
        .ok(json!({"type": "members", "room": "general"}))
        .await;
    assert_eq!(reply["room"], "general");
    assert_eq!(reply["members"].as_array().unwrap().len(), 2, "{reply}");
    for (user, read, delivered) in [("alice", 1, 3), ("bob", 2, 2)] {
        let entry = member(&reply, user);
        assert_fields(
            entry,
            &json!({"user": user, "status": "online", "read": read, "delivered": delivered}),
        );
        assert!(entry.get("last_seen").is_some(), "{entry}");
    }
    server.stop().await;
}

#[tokio::test]
async fn members_shows_who_is_offline_and_when_they_were_last_seen() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice
        .ok(json!({"type": "send", "to": "carol", "cid": "d-1", "body": "hi"}))
        .await;
    let connected = now_ms();
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    bob.join("general").await;
    disconnect(bob).await;
    offline_push(&mut alice, "bob").await;

    let reply = alice
        .ok(json!({"type": "members", "room": "general"}))
        .await;
    let bob_entry = member(&reply, "bob");
    assert_fields(
        bob_entry,
        &json!({"status": "offline", "read": 0, "delivered": 0}),
    );
    let last_seen = bob_entry["last_seen"].as_u64().unwrap();
    assert!(
        connected.saturating_sub(1_000) <= last_seen && last_seen <= now_ms() + 1_000,
        "last_seen {last_seen} is not when bob left"
    );
    assert_eq!(member(&reply, "alice")["status"], "online");

    let direct = alice
        .ok(json!({"type": "members", "room": "dm:alice:carol"}))
        .await;
    assert_fields(
        member(&direct, "carol"),
        &json!({"user": "carol", "status": "offline", "last_seen": null, "read": 0, "delivered": 0}),
    );
    server.stop().await;
}

#[tokio::test]
async fn presence_reports_online_offline_and_never_connected_users() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let connected = now_ms();
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    bob.join("general").await;
    disconnect(bob).await;
    let push = offline_push(&mut alice, "bob").await;
    let mut dave = server.client("dave").await;

    let reply = alice
        .ok(json!({"type": "presence", "users": ["bob", "carol", "dave", "alice"]}))
        .await;
    assert_eq!(reply["users"].as_array().unwrap().len(), 4, "{reply}");
    assert_fields(
        presence_of(&reply, "carol"),
        &json!({"status": "offline", "last_seen": null}),
    );
    let bob_entry = presence_of(&reply, "bob");
    assert_eq!(bob_entry["status"], "offline");
    let last_seen = bob_entry["last_seen"].as_u64().unwrap();
    assert!(
        connected.saturating_sub(1_000) <= last_seen && last_seen <= now_ms() + 1_000,
        "last_seen {last_seen}"
    );
    assert_eq!(bob_entry["last_seen"], push["last_seen"]);
    assert_eq!(presence_of(&reply, "dave")["status"], "online");
    assert_eq!(presence_of(&reply, "alice")["status"], "online");
    assert!(
        dave.ok(json!({"type": "presence", "users": []})).await["users"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    server.stop().await;
}

// ---------------------------------------------------------------- ping, receipt, typing

#[tokio::test]
async fn ping_is_answered_with_a_bare_ok() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let reply = alice.ok(json!({"type": "ping"})).await;
    assert_eq!(reply, json!({"type": "ok", "id": reply["id"]}));
    assert!(reply["id"].is_u64());
    server.stop().await;
}

#[tokio::test]
async fn receipt_and_typing_with_an_id_get_an_ok_and_without_one_get_nothing() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    alice.say("general", "c-1", "hi").await;

    let receipt = alice
        .ok(json!({"type": "receipt", "room": "general", "delivered": 1}))
        .await;
    assert_eq!(receipt, json!({"type": "ok", "id": receipt["id"]}));
    let typing = alice
        .ok(json!({"type": "typing", "room": "general", "active": true}))
        .await;
    assert_eq!(typing, json!({"type": "ok", "id": typing["id"]}));

    alice
        .send_json(json!({"type": "receipt", "room": "general", "read": 1}))
        .await;
    alice
        .send_json(json!({"type": "typing", "room": "general", "active": false}))
        .await;
    alice.ok(json!({"type": "ping"})).await;
    let replies: Vec<&Value> = alice
        .backlog
        .iter()
        .filter(|f| f["type"] == "ok" || f["type"] == "error")
        .collect();
    assert!(
        replies.is_empty(),
        "frames without an id got replies: {replies:?}"
    );
    server.stop().await;
}

// ---------------------------------------------------------------- pipelining

#[tokio::test]
async fn replies_come_in_request_order_under_pipelining() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;

    let mut sent = Vec::new();
    for i in 0..200_u64 {
        let id = raw_id();
        let request = match i % 5 {
            0 | 3 => {
                json!({"type": "send", "room": "general", "cid": format!("p-{i}"), "body": "x"})
            }
            1 => json!({"type": "ping"}),
            2 => json!({"type": "history", "room": "general", "limit": 5}),
            _ if i % 2 == 0 => json!({"type": "join", "room": "general"}),
            _ => json!({"type": "join", "room": format!("pipe-{i}")}),
        };
        let mut request = request;
        request["id"] = json!(id);
        alice.send_json(request.clone()).await;
        sent.push((id, request));
    }

    let mut replies = Vec::new();
    for _ in 0..5_000 {
        if replies.len() == sent.len() {
            break;
        }
        let frame = alice.recv().await;
        if frame.get("id").is_some() {
            replies.push(frame);
        }
    }
    let got: Vec<u64> = replies.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    let want: Vec<u64> = sent.iter().map(|(id, _)| *id).collect();
    assert_eq!(got, want, "replies out of request order");

    let mut next_seq = 1;
    for ((_, request), reply) in sent.iter().zip(&replies) {
        assert_eq!(reply["type"], "ok", "{request} was refused: {reply}");
        match request["type"].as_str().unwrap() {
            "send" => {
                assert_eq!(reply["seq"], next_seq, "{reply}");
                next_seq += 1;
            }
            "history" => assert!(reply["messages"].is_array(), "{reply}"),
            "join" => assert_eq!(reply["room"], request["room"], "{reply}"),
            _ => assert_eq!(reply, &json!({"type": "ok", "id": request["id"]})),
        }
    }
    assert_eq!(next_seq, 81, "80 sends");
    server.stop().await;
}

// ---------------------------------------------------------------- multi-device

#[tokio::test]
async fn every_connection_of_a_user_receives_its_rooms_messages() {
    let server = TestServer::start().await;
    let mut phone = server.client("alice").await;
    phone.join("general").await;
    let mut laptop = server.client("alice").await;
    let rooms = laptop.hello["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0]["room"], "general");
    let mut bob = server.client("bob").await;
    bob.join("general").await;

    let sent = bob.say("general", "c-1", "to both devices").await;
    for device in [&mut phone, &mut laptop] {
        let pushed = device.push("message").await;
        assert_fields(
            &pushed,
            &json!({"room": "general", "seq": 1, "from": "bob", "cid": "c-1", "ts": sent["ts"]}),
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_join_on_one_device_subscribes_the_users_other_devices() {
    let server = TestServer::start().await;
    let mut phone = server.client("alice").await;
    let mut laptop = server.client("alice").await;
    let mut bob = server.client("bob").await;
    bob.join("general").await;

    phone.join("general").await;
    let mut joined = None;
    for _ in 0..4 {
        let push = laptop.push("member").await;
        if push["user"] == "alice" {
            joined = Some(push);
            break;
        }
    }
    assert_eq!(
        joined,
        Some(json!({"type": "member", "room": "general", "user": "alice", "action": "join"}))
    );
    bob.say("general", "c-1", "hi alice").await;
    let pushed = laptop.push("message").await;
    assert_fields(
        &pushed,
        &json!({"room": "general", "seq": 1, "from": "bob"}),
    );
    let sent = laptop.say("general", "c-2", "from the laptop").await;
    assert_eq!(sent["seq"], 2, "the laptop is a member without joining");
    let got = phone.messages_until("general", |m| m["seq"] == 2).await;
    assert_eq!(seqs(&got), [1, 2]);
    server.stop().await;
}

#[tokio::test]
async fn a_leave_on_one_device_unsubscribes_the_users_other_devices() {
    let server = TestServer::start().await;
    let mut phone = server.client("alice").await;
    let mut laptop = server.client("alice").await;
    let mut bob = server.client("bob").await;
    for room in ["general", "other"] {
        bob.join(room).await;
        phone.join(room).await;
    }
    phone.ok(json!({"type": "leave", "room": "general"})).await;
    bob.say("general", "g-1", "after alice left").await;
    let marker = bob.say("other", "marker", "marker").await;
    let next = laptop.push("message").await;
    assert_eq!(
        (next["room"].clone(), next["seq"].clone()),
        (json!("other"), marker["seq"].clone()),
        "the laptop received a room alice left: {next}"
    );
    laptop
        .refused(json!({"type": "history", "room": "general"}), "forbidden")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn the_sender_receives_its_own_message_on_every_connection() {
    let server = TestServer::start().await;
    let mut phone = server.client("alice").await;
    phone.join("general").await;
    let mut laptop = server.client("alice").await;

    let sent = phone.say("general", "c-1", "mine").await;
    for device in [&mut phone, &mut laptop] {
        let pushed = device.push("message").await;
        assert_fields(
            &pushed,
            &json!({
                "type": "message", "room": "general", "seq": sent["seq"], "from": "alice",
                "cid": "c-1", "body": "mine", "ts": sent["ts"],
            }),
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn send_to_makes_the_other_a_member_even_after_the_sender_joined_the_direct_room() {
    let server = TestServer::start().await;
    let mut eve = server.client("eve").await;
    eve.join("dm:carol:eve").await;
    let sent = eve
        .ok(json!({"type":"send","to":"carol","cid":"c-1","body":"hi carol"}))
        .await;
    assert_eq!(sent["room"], "dm:carol:eve");
    let members = eve
        .ok(json!({"type":"members","room":"dm:carol:eve"}))
        .await;
    let users: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["carol", "eve"]);
    let mut carol = server.client("carol").await;
    let history = carol
        .ok(json!({"type":"history","room":"dm:carol:eve"}))
        .await;
    assert_eq!(history["messages"][0]["body"], "hi carol");
    server.stop().await;
}
