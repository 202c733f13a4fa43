//! The pushes protocol v1 promises besides messages: `presence` (on every change and only
//! then, never into large rooms, only to users who share a room), `receipt` (cursors that
//! only move forward, to the other members and the user's other connections), `typing`
//! (forwarded, expiring once) and `member` (to every member's connections).
//!
//! Absence is proven with markers: a message sent after the event under test, so that a
//! push the server should not have sent would have been queued before the marker.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chat_core::EngineConfig;
use serde_json::{Value, json};
use support::{Client, TestServer};
use tokio::time::Instant;

/// Read timeout for tests under paused time: tokio auto-advances the clock while the
/// runtime idles, so a short timeout would fire before the heartbeats and expiries under
/// test.
const LONG: Duration = Duration::from_secs(300);

/// Most frames a marker may take to arrive behind.
const MAX_FRAMES: usize = 200;

/// A client that said hello as `user` and waits `LONG` for each read.
async fn patient(server: &TestServer, user: &str) -> Client {
    let mut client = server.client(user).await;
    client.wait = LONG;
    client
}

/// Every frame `client` reads (backlog first) before the `message` push with `cid`.
async fn frames_before(client: &mut Client, cid: &str) -> Vec<Value> {
    let mut before = Vec::new();
    for _ in 0..MAX_FRAMES {
        let frame = client.recv().await;
        if frame["type"] == "message" && frame["cid"] == cid {
            return before;
        }
        before.push(frame);
    }
    panic!("the marker {cid} did not come within {MAX_FRAMES} frames: {before:?}");
}

/// The pushes (frames without `id`) of `kind` among `frames`.
fn pushes<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames
        .iter()
        .filter(|f| f["type"] == kind && f.get("id").is_none())
        .collect()
}

/// Asserts that `client` gets no push of `kind` before the marker `cid`.
async fn no_push_before_marker(client: &mut Client, who: &str, kind: &str, cid: &str) {
    let frames = frames_before(client, cid).await;
    let got = pushes(&frames, kind);
    assert!(
        got.is_empty(),
        "{who} got {kind} pushes it should not have: {got:?}"
    );
}

/// Closes `client` cleanly and reads until the server is gone.
async fn close(mut client: Client) {
    let _ = client.ws.close(None).await;
    let _ = client.closed().await;
}

/// Waits (bounded, without sleeping) until the server holds `n` sessions: a closed
/// connection's presence change is decided when its session ends.
async fn until_sessions(server: &TestServer, n: usize) {
    for _ in 0..100_000 {
        if server.engine.connections() == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!(
        "the server holds {} sessions, not {n}",
        server.engine.connections()
    );
}

/// `(room, user, delivered, read)` of a `receipt` push.
fn receipt(frame: &Value) -> (String, String, u64, u64) {
    assert_eq!(frame["type"], "receipt", "not a receipt: {frame}");
    assert!(frame.get("id").is_none(), "a push carries no id: {frame}");
    (
        frame["room"].as_str().unwrap().to_owned(),
        frame["user"].as_str().unwrap().to_owned(),
        frame["delivered"].as_u64().unwrap(),
        frame["read"].as_u64().unwrap(),
    )
}

/// `(read, delivered)` of `user` in a `members` reply.
fn cursors_in(members: &Value, user: &str) -> (u64, u64) {
    let entry = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == user)
        .unwrap_or_else(|| panic!("{user} is not in {members}"));
    (
        entry["read"].as_u64().unwrap(),
        entry["delivered"].as_u64().unwrap(),
    )
}

/// `n` messages from `client` into `room`, cids `fill-1` …; returns the last `seq`.
async fn fill(client: &mut Client, room: &str, n: u64) -> u64 {
    let mut seq = 0;
    for i in 1..=n {
        seq = client.say(room, &format!("fill-{i}"), "x").await["seq"]
            .as_u64()
            .unwrap();
    }
    seq
}

fn typing(room: &str, user: &str, active: bool) -> Value {
    json!({"type": "typing", "room": room, "user": user, "active": active})
}

// ---------------------------------------------------------------------------------------
// presence
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn presence_online_then_offline_on_clean_close_and_only_on_change() {
    let server = TestServer::start().await;
    let mut bob = server.client("bob").await;
    // A direct message makes alice a member of dm:alice:bob before she ever connects.
    bob.ok(json!({"type": "send", "to": "alice", "cid": "b-1", "body": "hi"}))
        .await;

    let mut phone = server.client("alice").await;
    let online = bob.push("presence").await;
    assert_eq!(online["user"], "alice", "{online}");
    assert_eq!(online["status"], "online", "{online}");

    // A second device while the first stays: alice was online already.
    let laptop = server.client("alice").await;
    phone
        .ok(json!({"type": "send", "to": "bob", "cid": "m-1", "body": "marker"}))
        .await;
    no_push_before_marker(&mut bob, "bob", "presence", "m-1").await;

    // The second device goes away while the first stays: alice is still online.
    close(laptop).await;
    until_sessions(&server, 2).await;
    phone
        .ok(json!({"type": "send", "to": "bob", "cid": "m-2", "body": "marker"}))
        .await;
    no_push_before_marker(&mut bob, "bob", "presence", "m-2").await;

    // The last connection closes: offline, with the time alice was last seen.
    close(phone).await;
    let offline = bob.push("presence").await;
    assert_eq!(offline["user"], "alice", "{offline}");
    assert_eq!(offline["status"], "offline", "{offline}");
    assert!(
        offline["last_seen"].is_u64(),
        "an offline push carries a numeric last_seen: {offline}"
    );
    let asked = bob
        .ok(json!({"type": "presence", "users": ["alice"]}))
        .await;
    assert_eq!(asked["users"][0]["status"], "offline", "{asked}");
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn presence_goes_offline_after_two_silent_heartbeat_intervals() {
    let server = TestServer::start().await;
    let mut bob = patient(&server, "bob").await;
    bob.ok(json!({"type": "send", "to": "alice", "cid": "b-1", "body": "hi"}))
        .await;

    // alice says hello, then never reads again: she answers no WebSocket ping.
    let alice = patient(&server, "alice").await;
    let silent_since = Instant::now();
    let online = bob.push("presence").await;
    assert_eq!(
        (online["user"].clone(), online["status"].clone()),
        (json!("alice"), json!("online")),
        "{online}"
    );

    let offline = bob.push("presence").await;
    let after = silent_since.elapsed();
    assert_eq!(
        (offline["user"].clone(), offline["status"].clone()),
        (json!("alice"), json!("offline")),
        "{offline}"
    );
    assert!(offline["last_seen"].is_u64(), "{offline}");
    assert!(
        after >= Duration::from_secs(50) && after <= Duration::from_secs(51),
        "a connection silent for two heartbeat intervals (2 × 25 s) goes offline then, \
         not after {after:?}"
    );
    drop(alice);
    server.stop().await;
}

#[tokio::test]
async fn presence_is_not_pushed_into_large_rooms() {
    let mut config = EngineConfig::default();
    config.large_room = 3;
    let server = TestServer::with_config(config).await;

    // "big" gets 4 members (large: more than 3), "small" 2.
    let mut bob = server.client("bob").await;
    let mut carol = server.client("carol").await;
    let mut dave = server.client("dave").await;
    let mut erin = server.client("erin").await;
    for client in [&mut bob, &mut carol, &mut dave] {
        client.join("big").await;
    }
    erin.join("small").await;
    let mut alice = server.client("alice").await;
    alice.join("big").await;
    alice.join("small").await;

    // Offline: erin, who shares the small room, hears of it; the others do not.
    close(alice).await;
    let offline = erin.push("presence").await;
    assert_eq!(
        (offline["user"].clone(), offline["status"].clone()),
        (json!("alice"), json!("offline")),
        "{offline}"
    );
    dave.say("big", "m-1", "marker").await;
    for (who, client) in [
        ("bob", &mut bob),
        ("carol", &mut carol),
        ("dave", &mut dave),
    ] {
        no_push_before_marker(client, who, "presence", "m-1").await;
    }

    // Online again: the same.
    let mut alice = server.client("alice").await;
    let online = erin.push("presence").await;
    assert_eq!(
        (online["user"].clone(), online["status"].clone()),
        (json!("alice"), json!("online")),
        "{online}"
    );
    alice.say("big", "m-2", "marker").await;
    for (who, client) in [
        ("bob", &mut bob),
        ("carol", &mut carol),
        ("dave", &mut dave),
    ] {
        no_push_before_marker(client, who, "presence", "m-2").await;
    }

    // Members of the large room ask instead.
    let members = bob.ok(json!({"type": "members", "room": "big"})).await;
    let listed = members["members"].as_array().unwrap();
    assert_eq!(listed.len(), 4, "{members}");
    let alice_entry = listed.iter().find(|m| m["user"] == "alice").unwrap();
    assert_eq!(alice_entry["status"], "online", "{members}");
    let asked = carol
        .ok(json!({"type": "presence", "users": ["alice", "nobody"]}))
        .await;
    assert_eq!(asked["users"][0]["user"], "alice", "{asked}");
    assert_eq!(asked["users"][0]["status"], "online", "{asked}");
    assert_eq!(asked["users"][1]["status"], "offline", "{asked}");
    assert_eq!(asked["users"][1]["last_seen"], Value::Null, "{asked}");
    server.stop().await;
}

#[tokio::test]
async fn presence_goes_only_to_users_who_share_a_room() {
    let server = TestServer::start().await;
    let mut bob = server.client("bob").await;
    bob.ok(json!({"type": "send", "to": "alice", "cid": "b-1", "body": "hi"}))
        .await;
    bob.join("side").await;
    // zed never shared a room with alice; carol did, and left it.
    let mut zed = server.client("zed").await;
    zed.join("side").await;
    let mut carol = server.client("carol").await;
    carol
        .ok(json!({"type": "send", "to": "alice", "cid": "c-1", "body": "hi"}))
        .await;
    carol
        .ok(json!({"type": "leave", "room": "dm:alice:carol"}))
        .await;
    carol.join("side").await;

    let alice = server.client("alice").await;
    let online = bob.push("presence").await;
    assert_eq!(
        (online["user"].clone(), online["status"].clone()),
        (json!("alice"), json!("online")),
        "{online}"
    );
    bob.say("side", "m-1", "marker").await;
    no_push_before_marker(&mut zed, "zed", "presence", "m-1").await;
    no_push_before_marker(&mut carol, "carol", "presence", "m-1").await;

    close(alice).await;
    let offline = bob.push("presence").await;
    assert_eq!(
        (offline["user"].clone(), offline["status"].clone()),
        (json!("alice"), json!("offline")),
        "{offline}"
    );
    bob.say("side", "m-2", "marker").await;
    no_push_before_marker(&mut zed, "zed", "presence", "m-2").await;
    no_push_before_marker(&mut carol, "carol", "presence", "m-2").await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// receipts
// ---------------------------------------------------------------------------------------

/// alice on two connections, bob and carol, all in `room`, with `n` messages from bob.
async fn receipt_room(server: &TestServer, room: &str, n: u64) -> [Client; 4] {
    let mut bob = server.client("bob").await;
    bob.join(room).await;
    let mut carol = server.client("carol").await;
    carol.join(room).await;
    let mut phone = server.client("alice").await;
    phone.join(room).await;
    // Already a member: the hello attaches the second device to the room.
    let laptop = server.client("alice").await;
    assert_eq!(laptop.hello["rooms"][0]["room"], room, "{}", laptop.hello);
    fill(&mut bob, room, n).await;
    [phone, laptop, bob, carol]
}

#[tokio::test]
async fn receipt_moves_cursors_and_goes_to_others_and_own_other_connections() {
    let server = TestServer::start().await;
    let [mut phone, mut laptop, mut bob, mut carol] = receipt_room(&server, "general", 5).await;

    // Fire and forget: no id, no reply.
    phone
        .send_json(json!({"type": "receipt", "room": "general", "delivered": 3, "read": 2}))
        .await;
    let want = ("general".to_owned(), "alice".to_owned(), 3, 2);
    assert_eq!(receipt(&bob.push("receipt").await), want);
    assert_eq!(receipt(&carol.push("receipt").await), want);
    assert_eq!(
        receipt(&laptop.push("receipt").await),
        want,
        "the user's other connections get its receipts"
    );

    bob.say("general", "m-1", "marker").await;
    no_push_before_marker(&mut phone, "the sending connection", "receipt", "m-1").await;

    let members = carol
        .ok(json!({"type": "members", "room": "general"}))
        .await;
    assert_eq!(cursors_in(&members, "alice"), (2, 3), "{members}");
    server.stop().await;
}

#[tokio::test]
async fn receipt_with_lower_values_is_ignored_and_not_pushed() {
    let server = TestServer::start().await;
    let [mut phone, mut laptop, mut bob, _carol] = receipt_room(&server, "general", 5).await;
    phone
        .ok(json!({"type": "receipt", "room": "general", "delivered": 4, "read": 3}))
        .await;
    assert_eq!(
        receipt(&bob.push("receipt").await),
        ("general".to_owned(), "alice".to_owned(), 4, 3)
    );

    // Both lower: nothing moves, nothing is pushed.
    phone
        .ok(json!({"type": "receipt", "room": "general", "delivered": 2, "read": 1}))
        .await;
    phone.say("general", "m-1", "marker").await;
    no_push_before_marker(&mut bob, "bob", "receipt", "m-1").await;
    let members = bob.ok(json!({"type": "members", "room": "general"})).await;
    assert_eq!(
        cursors_in(&members, "alice"),
        (3, 4),
        "lower values are ignored: {members}"
    );

    // A lower `delivered` beside a higher `read`: only `read` moves.
    phone
        .ok(json!({"type": "receipt", "room": "general", "delivered": 1, "read": 4}))
        .await;
    let want = ("general".to_owned(), "alice".to_owned(), 4, 4);
    assert_eq!(receipt(&bob.push("receipt").await), want);
    let on_laptop: Vec<_> = [laptop.push("receipt").await, laptop.push("receipt").await]
        .iter()
        .map(receipt)
        .collect();
    assert_eq!(
        on_laptop,
        vec![("general".to_owned(), "alice".to_owned(), 4, 3), want],
        "one push per move, none for the ignored receipt"
    );
    server.stop().await;
}

#[tokio::test]
async fn receipt_beyond_the_latest_seq_is_clamped() {
    let server = TestServer::start().await;
    let [mut phone, _laptop, mut bob, _carol] = receipt_room(&server, "general", 3).await;
    phone
        .ok(json!({"type": "receipt", "room": "general", "delivered": 10, "read": 7}))
        .await;
    assert_eq!(
        receipt(&bob.push("receipt").await),
        ("general".to_owned(), "alice".to_owned(), 3, 3),
        "cursors are clamped to the room's latest seq"
    );
    let members = bob.ok(json!({"type": "members", "room": "general"})).await;
    assert_eq!(cursors_in(&members, "alice"), (3, 3), "{members}");

    // Clamped to where they are already: no move, no push.
    phone
        .ok(json!({"type": "receipt", "room": "general", "read": 50}))
        .await;
    phone.say("general", "m-1", "marker").await;
    no_push_before_marker(&mut bob, "bob", "receipt", "m-1").await;

    // The marker is seq 4: the clamp follows the latest seq.
    phone
        .ok(json!({"type": "receipt", "room": "general", "delivered": 100}))
        .await;
    assert_eq!(
        receipt(&bob.push("receipt").await),
        ("general".to_owned(), "alice".to_owned(), 4, 3)
    );
    server.stop().await;
}

#[tokio::test]
async fn receipt_read_raises_delivered() {
    let server = TestServer::start().await;
    let [mut phone, _laptop, mut bob, _carol] = receipt_room(&server, "general", 5).await;
    phone
        .ok(json!({"type": "receipt", "room": "general", "delivered": 1}))
        .await;
    assert_eq!(
        receipt(&bob.push("receipt").await),
        ("general".to_owned(), "alice".to_owned(), 1, 0)
    );
    phone
        .ok(json!({"type": "receipt", "room": "general", "read": 4}))
        .await;
    assert_eq!(
        receipt(&bob.push("receipt").await),
        ("general".to_owned(), "alice".to_owned(), 4, 4),
        "read also moves delivered up to it"
    );
    let members = bob.ok(json!({"type": "members", "room": "general"})).await;
    assert_eq!(cursors_in(&members, "alice"), (4, 4), "{members}");
    // A new connection's hello lists the same cursors.
    let tablet = server.client("alice").await;
    let room = &tablet.hello["rooms"][0];
    assert_eq!(
        (
            room["room"].clone(),
            room["read"].clone(),
            room["delivered"].clone()
        ),
        (json!("general"), json!(4), json!(4)),
        "{}",
        tablet.hello
    );
    server.stop().await;
}

#[tokio::test]
async fn receipt_pushes_never_go_backwards() {
    let server = TestServer::start().await;
    let [mut phone, mut laptop, mut bob, _carol] = receipt_room(&server, "general", 10).await;

    // A decreasing `delivered` beside an increasing `read` from one device, and stale
    // receipts from the other, all fire and forget.
    for i in 1..=9u64 {
        phone
            .send_json(
                json!({"type": "receipt", "room": "general", "delivered": 10 - i, "read": i}),
            )
            .await;
        laptop
            .send_json(json!({"type": "receipt", "room": "general", "delivered": 2, "read": 1}))
            .await;
    }
    phone
        .send_json(json!({"type": "receipt", "room": "general", "delivered": 10}))
        .await;

    let mut seen = Vec::new();
    let (mut delivered, mut read) = (0, 0);
    for _ in 0..40 {
        let (room, user, d, r) = receipt(&bob.push("receipt").await);
        assert_eq!((room.as_str(), user.as_str()), ("general", "alice"));
        seen.push((d, r));
        assert!(
            d >= delivered && r >= read,
            "a pushed cursor went backwards: {seen:?}"
        );
        assert!(r <= d, "read beyond delivered: {seen:?}");
        (delivered, read) = (d, r);
        if (d, r) == (10, 9) {
            break;
        }
    }
    assert_eq!((delivered, read), (10, 9), "pushes: {seen:?}");
    let members = bob.ok(json!({"type": "members", "room": "general"})).await;
    assert_eq!(cursors_in(&members, "alice"), (9, 10), "{members}");
    server.stop().await;
}

#[tokio::test]
async fn receipt_in_a_large_room_goes_only_to_own_other_connections() {
    let mut config = EngineConfig::default();
    config.large_room = 3;
    let server = TestServer::with_config(config).await;
    // alice, bob, carol and dave: 4 members, more than 3.
    let [mut phone, mut laptop, mut bob, mut carol] = receipt_room(&server, "big", 5).await;
    let mut dave = server.client("dave").await;
    dave.join("big").await;

    phone
        .ok(json!({"type": "receipt", "room": "big", "delivered": 5, "read": 2}))
        .await;
    assert_eq!(
        receipt(&laptop.push("receipt").await),
        ("big".to_owned(), "alice".to_owned(), 5, 2),
        "the user's other connections still get its receipts"
    );
    phone.say("big", "m-1", "marker").await;
    for (who, client) in [
        ("bob", &mut bob),
        ("carol", &mut carol),
        ("dave", &mut dave),
        ("the sending connection", &mut phone),
    ] {
        no_push_before_marker(client, who, "receipt", "m-1").await;
    }
    let members = dave.ok(json!({"type": "members", "room": "big"})).await;
    assert_eq!(cursors_in(&members, "alice"), (2, 5), "{members}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// typing
// ---------------------------------------------------------------------------------------

/// alice on two connections and bob in `room`, every client reading with `LONG`.
async fn typing_room(server: &TestServer, room: &str) -> [Client; 3] {
    let mut bob = patient(server, "bob").await;
    bob.join(room).await;
    let mut phone = patient(server, "alice").await;
    phone.join(room).await;
    let laptop = patient(server, "alice").await;
    [phone, laptop, bob]
}

#[tokio::test]
async fn typing_is_forwarded_to_the_other_members_only() {
    let server = TestServer::start().await;
    let [mut phone, mut laptop, mut bob] = typing_room(&server, "general").await;
    phone
        .ok(json!({"type": "typing", "room": "general", "active": true}))
        .await;
    assert_eq!(bob.push("typing").await, typing("general", "alice", true));

    bob.say("general", "m-1", "marker").await;
    no_push_before_marker(&mut phone, "the typing connection", "typing", "m-1").await;
    no_push_before_marker(&mut laptop, "the typer's other connection", "typing", "m-1").await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn typing_expires_once_after_the_timeout() {
    let server = TestServer::start().await;
    let [mut phone, _laptop, mut bob] = typing_room(&server, "general").await;
    phone
        .ok(json!({"type": "typing", "room": "general", "active": true}))
        .await;
    let typed = Instant::now();
    assert_eq!(bob.push("typing").await, typing("general", "alice", true));

    assert_eq!(bob.push("typing").await, typing("general", "alice", false));
    let after = typed.elapsed();
    assert!(
        after >= Duration::from_secs(10) && after < Duration::from_secs(11),
        "active:false comes 10 s after the last active:true, not after {after:?}"
    );

    // Well past a second timeout: no other `typing` push.
    tokio::time::sleep(Duration::from_secs(20)).await;
    phone.say("general", "m-1", "marker").await;
    no_push_before_marker(&mut bob, "bob", "typing", "m-1").await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn typing_renewed_before_the_timeout_extends_it() {
    let server = TestServer::start().await;
    let [mut phone, _laptop, mut bob] = typing_room(&server, "general").await;
    phone
        .ok(json!({"type": "typing", "room": "general", "active": true}))
        .await;
    assert_eq!(bob.push("typing").await, typing("general", "alice", true));

    tokio::time::sleep(Duration::from_secs(6)).await;
    phone
        .ok(json!({"type": "typing", "room": "general", "active": true}))
        .await;
    let renewed = Instant::now();
    assert_eq!(bob.push("typing").await, typing("general", "alice", true));

    assert_eq!(bob.push("typing").await, typing("general", "alice", false));
    let after = renewed.elapsed();
    assert!(
        after >= Duration::from_secs(10) && after < Duration::from_secs(11),
        "active:false comes 10 s after the last active:true (not the first), \
         not {after:?} after it"
    );

    tokio::time::sleep(Duration::from_secs(20)).await;
    phone.say("general", "m-1", "marker").await;
    no_push_before_marker(&mut bob, "bob", "typing", "m-1").await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn typing_explicit_stop_is_forwarded_once_and_not_repeated_on_timeout() {
    let server = TestServer::start().await;
    let [mut phone, _laptop, mut bob] = typing_room(&server, "general").await;
    phone
        .ok(json!({"type": "typing", "room": "general", "active": true}))
        .await;
    assert_eq!(bob.push("typing").await, typing("general", "alice", true));
    phone
        .ok(json!({"type": "typing", "room": "general", "active": false}))
        .await;
    assert_eq!(bob.push("typing").await, typing("general", "alice", false));

    // Past the timeout of the active:true: no automatic active:false follows.
    tokio::time::sleep(Duration::from_secs(15)).await;
    phone.say("general", "m-1", "marker").await;
    no_push_before_marker(&mut bob, "bob", "typing", "m-1").await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// members
// ---------------------------------------------------------------------------------------

fn member(room: &str, user: &str, action: &str) -> Value {
    json!({"type": "member", "room": room, "user": user, "action": action})
}

#[tokio::test]
async fn member_join_and_leave_go_to_every_members_connections() {
    let server = TestServer::start().await;
    let mut bob_phone = server.client("bob").await;
    bob_phone.join("club").await;
    assert_eq!(
        bob_phone.push("member").await,
        member("club", "bob", "join")
    );
    let mut bob_laptop = server.client("bob").await;
    let mut alice_phone = server.client("alice").await;
    let mut alice_laptop = server.client("alice").await;

    alice_phone.join("club").await;
    for (who, client) in [
        ("the joining connection", &mut alice_phone),
        ("the joiner's other connection", &mut alice_laptop),
        ("bob's phone", &mut bob_phone),
        ("bob's laptop", &mut bob_laptop),
    ] {
        assert_eq!(
            client.push("member").await,
            member("club", "alice", "join"),
            "{who}"
        );
    }

    alice_phone
        .ok(json!({"type": "leave", "room": "club"}))
        .await;
    for (who, client) in [
        ("the leaving connection", &mut alice_phone),
        ("the leaver's other connection", &mut alice_laptop),
        ("bob's phone", &mut bob_phone),
        ("bob's laptop", &mut bob_laptop),
    ] {
        assert_eq!(
            client.push("member").await,
            member("club", "alice", "leave"),
            "{who}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn member_pushes_only_when_membership_changes() {
    let server = TestServer::start().await;
    let mut bob = server.client("bob").await;
    bob.join("club").await;
    assert_eq!(bob.push("member").await, member("club", "bob", "join"));
    let mut alice = server.client("alice").await;
    alice.join("club").await;
    assert_eq!(bob.push("member").await, member("club", "alice", "join"));
    assert_eq!(alice.push("member").await, member("club", "alice", "join"));
    let mut carol = server.client("carol").await;
    carol.join("side").await;
    bob.join("side").await;

    // Joining again as a member, and leaving a room one is not in, are `ok` and change
    // nothing.
    alice.join("club").await;
    carol.ok(json!({"type": "leave", "room": "club"})).await;
    bob.say("club", "m-1", "marker").await;
    no_push_before_marker(&mut alice, "alice", "member", "m-1").await;
    let frames = frames_before(&mut bob, "m-1").await;
    let got: Vec<_> = pushes(&frames, "member")
        .into_iter()
        .filter(|m| m["room"] == "club")
        .collect();
    assert!(got.is_empty(), "bob got member pushes for club: {got:?}");
    server.stop().await;
}

#[tokio::test]
async fn member_join_is_pushed_when_a_direct_message_makes_members() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let sent = bob
        .ok(json!({"type": "send", "to": "alice", "cid": "b-1", "body": "hi"}))
        .await;
    assert_eq!(sent["room"], "dm:alice:bob");
    assert_eq!(
        alice.push("member").await,
        member("dm:alice:bob", "alice", "join"),
        "becoming a member of a direct room through `to` counts as joining"
    );
    let mut joined: Vec<Value> = vec![bob.push("member").await, bob.push("member").await];
    joined.sort_by_key(|m| m["user"].as_str().unwrap().to_owned());
    assert_eq!(
        joined,
        vec![
            member("dm:alice:bob", "alice", "join"),
            member("dm:alice:bob", "bob", "join"),
        ]
    );
    assert_eq!(alice.push("message").await["cid"], "b-1");
    server.stop().await;
}
