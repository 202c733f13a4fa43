//! Resume and slow consumers over a real WebSocket (protocol v1: `hello` with `resume`,
//! "Ordering, the central guarantee", close 4008; architecture guarantees 3 and 4).
//!
//! A `hello` with `resume` replays exactly the messages a connection missed, before any live
//! message of the room, with no gap and no duplicate at the catch-up/live boundary. A
//! connection that cannot keep up is closed with 4008 instead of being skipped past, and
//! resuming from the last message it received loses nothing.
//!
//! Absence is proved with markers: after the expected messages, one more live message is
//! sent and must be the very next `message` push.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chat_core::EngineConfig;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use support::{Client, Event, TestServer, WAIT};
use tokio::sync::oneshot;

/// The most frames a test reads while waiting for one outcome (each read is bounded in time
/// by [`WAIT`]).
const MAX_FRAMES: usize = 200_000;

/// Messages a client misses before it resumes ("≥ 1,000").
const MISSED: usize = 1_200;

/// The body of the bulk messages that fill socket buffers: a few KiB each.
fn bulk_body() -> String {
    "x".repeat(8 * 1024)
}

/// The default limits, with a rate limit no sender here reaches: these tests send thousands
/// of messages from one connection.
fn config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.rate_burst = 1_000_000;
    config.rate_per_sec = 1_000_000;
    config
}

/// Ids of pipelined sends: far above the ones `Client::request` picks.
static PIPELINED_ID: AtomicU64 = AtomicU64::new(1 << 40);

/// Sends `count` messages to `room` (cids `{prefix}-{i}`), with up to `window` requests in
/// flight; returns their seqs in sending order. The sender's own pushes are dropped.
async fn send_many(
    client: &mut Client,
    room: &str,
    prefix: &str,
    count: usize,
    body: &str,
    window: usize,
) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(count);
    let mut in_flight = VecDeque::new();
    for i in 0..count {
        let id = PIPELINED_ID.fetch_add(1, Ordering::Relaxed);
        client
            .send_json(json!({
                "type": "send", "id": id, "room": room, "cid": format!("{prefix}-{i}"), "body": body,
            }))
            .await;
        in_flight.push_back(id);
        if in_flight.len() >= window.max(1) {
            let id = in_flight.pop_front().unwrap();
            seqs.push(sent_seq(client, id).await);
        }
    }
    while let Some(id) = in_flight.pop_front() {
        seqs.push(sent_seq(client, id).await);
    }
    seqs
}

/// The seq of the stored message that send `id` answers.
async fn sent_seq(client: &mut Client, id: u64) -> u64 {
    let reply = client.reply(id).await;
    assert_eq!(reply["type"], "ok", "send {id} was refused: {reply}");
    assert_eq!(reply["dup"], false, "{reply}");
    client.backlog.retain(|frame| frame["type"] != "message");
    reply["seq"].as_u64().unwrap()
}

/// One message from `sender`; returns its seq.
async fn say_one(sender: &mut Client, room: &str, cid: &str) -> u64 {
    let seq = sender.say(room, cid, cid).await["seq"].as_u64().unwrap();
    sender.backlog.retain(|frame| frame["type"] != "message");
    seq
}

/// Reads frames (backlog first) until `done(room, seq)` holds for a `message` push; returns
/// every `message` push read, of any room, as `(room, seq)` in arrival order. Fails on an
/// `error` frame or a close.
async fn read_messages(
    client: &mut Client,
    mut done: impl FnMut(&str, u64) -> bool,
) -> Vec<(String, u64)> {
    let mut got = Vec::new();
    for _ in 0..MAX_FRAMES {
        let frame = client.recv().await;
        assert_ne!(frame["type"], "error", "unexpected error frame: {frame}");
        if frame["type"] == "message" {
            let room = frame["room"].as_str().unwrap().to_owned();
            let seq = frame["seq"].as_u64().unwrap();
            let finished = done(&room, seq);
            got.push((room, seq));
            if finished {
                return got;
            }
        }
    }
    panic!("no end after {MAX_FRAMES} frames");
}

/// The seqs of `room`'s `message` pushes, read until one with a seq of at least `last`.
async fn room_seqs_until(client: &mut Client, room: &str, last: u64) -> Vec<u64> {
    only(
        room,
        &read_messages(client, |r, seq| r == room && seq >= last).await,
    )
}

/// The seqs of `room` among `(room, seq)` pairs.
fn only(room: &str, messages: &[(String, u64)]) -> Vec<u64> {
    messages
        .iter()
        .filter(|(r, _)| r == room)
        .map(|(_, seq)| *seq)
        .collect()
}

/// Asserts that `seqs` is exactly `from + 1 ..= to`, in order: no gap, no duplicate, nothing
/// before or after. Names the first difference instead of printing thousands of numbers.
#[track_caller]
fn assert_gapless(seqs: &[u64], from: u64, to: u64, what: &str) {
    let expected: Vec<u64> = (from + 1..=to).collect();
    if seqs == expected.as_slice() {
        return;
    }
    let at = seqs
        .iter()
        .zip(&expected)
        .position(|(got, want)| got != want)
        .unwrap_or(seqs.len().min(expected.len()));
    let around = &seqs[at.saturating_sub(3)..(at + 4).min(seqs.len())];
    panic!(
        "{what}: expected seqs {}..={to} exactly once, in order; got {} seqs, and at index {at} \
         {:?} where {:?} was due (seqs around it: {around:?})",
        from + 1,
        seqs.len(),
        seqs.get(at),
        expected.get(at),
    );
}

/// Proves that nothing else is on its way to `receiver` in `room`: `sender` sends one more
/// message, which must be the very next `message` push `receiver` gets (of any room), at
/// seq `after + 1`.
async fn assert_next_is_live(
    receiver: &mut Client,
    sender: &mut Client,
    room: &str,
    after: u64,
    what: &str,
) {
    let seq = say_one(sender, room, &format!("marker-{after}")).await;
    assert_eq!(seq, after + 1, "{what}: the marker's seq");
    let got = read_messages(receiver, |r, s| r == room && s >= seq).await;
    assert_eq!(
        got,
        [(room.to_owned(), seq)],
        "{what}: the next message push must be the live marker, nothing replayed or repeated"
    );
}

/// A `resume` object: room → `{epoch, seq}`.
fn resume(points: &[(&str, &str, u64)]) -> Value {
    let mut map = Map::new();
    for (room, epoch, seq) in points {
        map.insert((*room).to_owned(), json!({"epoch": epoch, "seq": seq}));
    }
    Value::Object(map)
}

/// The entry of `room` in a `hello` reply's `rooms`.
fn room_state<'a>(hello: &'a Value, room: &str) -> Option<&'a Value> {
    hello["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|state| state["room"] == room)
}

fn epoch_of(joined: &Value) -> String {
    joined["epoch"].as_str().unwrap().to_owned()
}

/// A client that resumed as `user`; asserts that the `hello` reply was its first frame.
async fn resumed(server: &TestServer, user: &str, points: &[(&str, &str, u64)]) -> Client {
    let mut client = Client::connect(&server.url()).await;
    client.hello(user, resume(points)).await;
    assert!(
        client.backlog.is_empty(),
        "frames came before the hello reply: {:?}",
        client.backlog
    );
    client
}

/// Closes the client's side of the connection and reads until the server let go.
async fn hang_up(mut client: Client) {
    client.ws.close(None).await.unwrap();
    finish_close(&mut client).await;
}

/// Reads on after a close frame, so that the close handshake completes.
async fn finish_close(client: &mut Client) {
    for _ in 0..MAX_FRAMES {
        let next = tokio::time::timeout(WAIT, client.ws.next())
            .await
            .expect("the server did not end the connection after the close");
        match next {
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return,
        }
    }
    panic!("no end after {MAX_FRAMES} frames");
}

/// Reads everything a client that stopped reading still gets (backlog first), up to the
/// server's close: the seqs of `room`'s message pushes and the close code. `last` is the
/// room's latest seq: receiving it means the server never closed the connection.
async fn drain_until_close(client: &mut Client, room: &str, last: u64) -> (Vec<u64>, Option<u16>) {
    let mut frames: VecDeque<Value> = client.backlog.drain(..).collect();
    let mut seqs = Vec::new();
    for _ in 0..MAX_FRAMES {
        let frame = match frames.pop_front() {
            Some(frame) => frame,
            None => match client.read().await {
                Event::Frame(frame) => frame,
                Event::Closed(code) => {
                    finish_close(client).await;
                    return (seqs, code);
                }
            },
        };
        assert_ne!(frame["type"], "error", "unexpected error frame: {frame}");
        if frame["type"] == "message" && frame["room"] == room {
            let seq = frame["seq"].as_u64().unwrap();
            seqs.push(seq);
            assert!(
                seq < last,
                "the stalled client received every message up to {last} and was never closed: \
                 its queue is not bounded (or the test sent too little to fill the socket)"
            );
        }
    }
    panic!("no close after {MAX_FRAMES} frames");
}

/// Reads `client`'s pushes until the `presence` push saying `user` went offline.
async fn offline_push(client: &mut Client, user: &str) {
    for _ in 0..MAX_FRAMES {
        let push = client.push("presence").await;
        if push["user"] == user && push["status"] == "offline" {
            return;
        }
    }
    panic!("no offline push for {user}");
}

/// A room with alice and bob in it, where alice received messages 1..=`n` and hung up.
/// Returns the server, bob and the room's epoch.
async fn alice_left_after(
    config: EngineConfig,
    room: &str,
    n: usize,
) -> (TestServer, Client, String) {
    let server = TestServer::with_config(config).await;
    let mut alice = server.client("alice").await;
    let epoch = epoch_of(&alice.join(room).await);
    let mut bob = server.client("bob").await;
    bob.join(room).await;
    let sent = send_many(&mut bob, room, "before", n, "before", 8).await;
    let last = *sent.last().unwrap();
    assert_eq!(last, n as u64);
    let got = room_seqs_until(&mut alice, room, last).await;
    assert_gapless(&got, 0, last, "alice, before hanging up");
    hang_up(alice).await;
    (server, bob, epoch)
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_replays_exactly_the_missed_messages_then_goes_live() {
    let room = "general";
    let (server, mut bob, epoch) = alice_left_after(config(), room, 5).await;
    let missed = send_many(&mut bob, room, "missed", MISSED, "while away", 32).await;
    let latest = *missed.last().unwrap();
    assert_eq!(latest, 5 + MISSED as u64);

    let mut alice = resumed(&server, "alice", &[(room, &epoch, 5)]).await;
    let state = room_state(&alice.hello, room).unwrap();
    assert_eq!(state["seq"], latest, "{}", alice.hello);
    assert_eq!(state["epoch"], epoch.as_str());
    let replayed = room_seqs_until(&mut alice, room, latest).await;
    assert_gapless(&replayed, 5, latest, "the replay after the hello reply");

    let live = send_many(&mut bob, room, "live", 20, "back again", 4).await;
    let last = *live.last().unwrap();
    let got = room_seqs_until(&mut alice, room, last).await;
    assert_gapless(&got, latest, last, "live messages after the replay");
    assert_next_is_live(&mut alice, &mut bob, room, last, "after the replay").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_while_the_room_is_live_crosses_from_replay_to_live_without_gap_or_duplicate() {
    let room = "busy";
    let mut config = config();
    // Large enough that only the boundary is under test here (overflow has its own test).
    config.catchup_buffer = 1_000_000;
    let (server, mut bob, epoch) = alice_left_after(config, room, 5).await;
    let missed = send_many(&mut bob, room, "missed", MISSED, "while away", 32).await;
    let missed_latest = *missed.last().unwrap();

    // Bob keeps sending from his own task: before alice's hello, during her replay, and
    // after it, until she has seen live messages well past the boundary.
    let stop = Arc::new(AtomicBool::new(false));
    let (started, sending) = oneshot::channel();
    let sender = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut started = Some(started);
            let mut last = 0;
            for i in 0..50_000 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                last = say_one(&mut bob, room, &format!("concurrent-{i}")).await;
                if i == 10 {
                    let _ = started.take().unwrap().send(());
                }
            }
            (bob, last)
        }
    });
    tokio::time::timeout(WAIT, sending).await.unwrap().unwrap();

    let mut alice = resumed(&server, "alice", &[(room, &epoch, 5)]).await;
    let at = room_state(&alice.hello, room).unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert!(
        at > missed_latest,
        "bob's concurrent messages had begun before the hello: {at}"
    );
    let mut got = room_seqs_until(&mut alice, room, at + 100).await;
    stop.store(true, Ordering::Release);
    let (mut bob, last) = tokio::time::timeout(WAIT, sender).await.unwrap().unwrap();
    assert!(last >= at + 100);
    if *got.last().unwrap() < last {
        got.extend(room_seqs_until(&mut alice, room, last).await);
    }
    assert_gapless(
        &got,
        5,
        last,
        "replay (up to the hello's seq) then live, on one connection",
    );
    assert_next_is_live(&mut alice, &mut bob, room, last, "after the boundary").await;
    server.stop().await;
}

#[tokio::test]
async fn resume_with_a_stale_epoch_replays_nothing_and_reports_the_current_epoch() {
    let room = "general";
    let (server, mut bob, epoch) = alice_left_after(config(), room, 3).await;
    let sent = send_many(&mut bob, room, "missed", 10, "while away", 10).await;
    let latest = *sent.last().unwrap();

    let stale = "stale-epoch-0";
    assert_ne!(epoch, stale);
    let mut alice = resumed(&server, "alice", &[(room, stale, 3)]).await;
    let state = room_state(&alice.hello, room).unwrap();
    assert_eq!(
        state["epoch"],
        epoch.as_str(),
        "the reply carries the current epoch"
    );
    assert_eq!(state["seq"], latest);
    assert_next_is_live(
        &mut alice,
        &mut bob,
        room,
        latest,
        "a resume under another epoch",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn resume_ignores_rooms_of_others_and_replays_nothing_when_up_to_date() {
    let (general, secret) = ("general", "secret");
    let (server, mut bob, epoch) = alice_left_after(config(), general, 3).await;
    let secret_epoch = epoch_of(&bob.join(secret).await);
    let sent = send_many(&mut bob, secret, "secret", 4, "not for alice", 4).await;
    assert_eq!(*sent.last().unwrap(), 4);

    let mut alice = resumed(
        &server,
        "alice",
        &[(general, &epoch, 3), (secret, &secret_epoch, 0)],
    )
    .await;
    assert!(
        room_state(&alice.hello, secret).is_none(),
        "a room alice is not in is not reported: {}",
        alice.hello
    );
    assert_eq!(room_state(&alice.hello, general).unwrap()["seq"], 3);
    // Nothing of `secret`, nothing replayed of `general`, and no error (read_messages fails
    // on one) before the live marker.
    assert_next_is_live(&mut alice, &mut bob, general, 3, "resume at the latest seq").await;
    say_one(&mut bob, secret, "still-secret").await;
    assert_next_is_live(&mut alice, &mut bob, general, 4, "after a secret message").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_of_several_rooms_replays_each_gap_in_order() {
    let rooms = ["r-a", "r-b", "r-c"];
    let before = [2_usize, 3, 4];
    let per_round = [40_usize, 25, 60];

    let server = TestServer::with_config(config()).await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let mut epochs = Vec::new();
    for room in rooms {
        epochs.push(epoch_of(&alice.join(room).await));
        bob.join(room).await;
    }
    for (room, n) in rooms.iter().zip(before) {
        send_many(&mut bob, room, "before", n, "before", 4).await;
        let got = room_seqs_until(&mut alice, room, n as u64).await;
        assert_gapless(&got, 0, n as u64, room);
    }
    hang_up(alice).await;

    // Interleaved across the rooms while alice is away.
    let mut latest: HashMap<&str, u64> = HashMap::new();
    for round in 0..10 {
        for (room, count) in rooms.iter().zip(per_round) {
            let prefix = format!("missed-{round}");
            let seqs = send_many(&mut bob, room, &prefix, count, "while away", 16).await;
            latest.insert(room, *seqs.last().unwrap());
        }
    }

    let points: Vec<(&str, &str, u64)> = rooms
        .iter()
        .zip(&epochs)
        .zip(before)
        .map(|((room, epoch), n)| (*room, epoch.as_str(), n as u64))
        .collect();
    let mut alice = resumed(&server, "alice", &points).await;
    for room in rooms {
        assert_eq!(room_state(&alice.hello, room).unwrap()["seq"], latest[room]);
    }
    let mut reached = 0;
    let got = read_messages(&mut alice, |room, seq| {
        if latest.get(room) == Some(&seq) {
            reached += 1;
        }
        reached == rooms.len()
    })
    .await;
    for (room, n) in rooms.iter().zip(before) {
        assert_gapless(&only(room, &got), n as u64, latest[room], room);
    }
    for room in rooms {
        assert_next_is_live(&mut alice, &mut bob, room, latest[room], room).await;
    }
    server.stop().await;
}

/// Bulk messages sent while one member does not read at all. Their bytes (~10 MiB) are
/// about twice what the sockets between server and client hold on a Linux host (~4 MiB of
/// send buffer, then the receiver's window), so the server's queue for that member must
/// overflow. Sent quickly (pipelined): a server may drop a closed connection whose socket
/// does not drain for a while, so the test drains soon after the flood.
const FLOOD: usize = 1_200;

/// What happened around a member (carol) that stopped reading while bob sent [`FLOOD`]
/// messages and dave read along.
struct Flooded {
    server: TestServer,
    bob: Client,
    dave: Client,
    room: &'static str,
    epoch: String,
    /// The room's latest seq.
    last: u64,
    /// The seqs of the message pushes carol got before the close.
    carol_seqs: Vec<u64>,
    carol_close: Option<u16>,
    dave_seqs: Vec<u64>,
}

async fn flood_a_member_that_does_not_read() -> Flooded {
    let room = "flooded";
    let mut config = config();
    config.outbox_frames = 64;
    let server = TestServer::with_config(config).await;
    let mut bob = server.client("bob").await;
    let epoch = epoch_of(&bob.join(room).await);
    let mut dave = server.client("dave").await;
    dave.join(room).await;
    let mut carol = server.client("carol").await;
    assert_eq!(carol.join(room).await["seq"], 0);
    // From here on carol reads nothing until the flood is over.

    // Dave reads along from his own task, until bob's end marker.
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        for _ in 0..MAX_FRAMES {
            let frame = dave.recv().await;
            assert_ne!(frame["type"], "error", "dave got an error: {frame}");
            if frame["type"] == "message" && frame["room"] == room {
                seqs.push(frame["seq"].as_u64().unwrap());
                if frame["cid"] == "end" {
                    return (dave, seqs);
                }
            }
        }
        panic!("dave never got the end marker");
    });
    let body = bulk_body();
    send_many(&mut bob, room, "flood", FLOOD, &body, 16).await;
    let last = say_one(&mut bob, room, "end").await;
    assert_eq!(last, FLOOD as u64 + 1);
    let (dave, dave_seqs) = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();

    let (carol_seqs, carol_close) = drain_until_close(&mut carol, room, last).await;
    Flooded {
        server,
        bob,
        dave,
        room,
        epoch,
        last,
        carol_seqs,
        carol_close,
        dave_seqs,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_that_does_not_read_is_closed_with_4008_and_the_others_miss_nothing() {
    let mut flooded = flood_a_member_that_does_not_read().await;
    assert_eq!(
        flooded.carol_close,
        Some(4008),
        "the slow consumer's close code (after {} messages)",
        flooded.carol_seqs.len()
    );
    let received = flooded.carol_seqs.last().copied().unwrap_or(0);
    assert_gapless(
        &flooded.carol_seqs,
        0,
        received,
        "what the slow consumer got before its close",
    );
    assert_gapless(
        &flooded.dave_seqs,
        0,
        flooded.last,
        "a member that reads, meanwhile",
    );

    // The closed connection is gone from the engine (its queue with it); the others stay.
    offline_push(&mut flooded.dave, "carol").await;
    assert_eq!(flooded.server.engine.connections(), 2);
    let (room, last) = (flooded.room, flooded.last);
    assert_next_is_live(&mut flooded.dave, &mut flooded.bob, room, last, "dave").await;
    flooded.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_after_4008_loses_nothing() {
    let mut flooded = flood_a_member_that_does_not_read().await;
    assert_eq!(flooded.carol_close, Some(4008));
    let received = flooded.carol_seqs.last().copied().unwrap_or(0);
    assert_gapless(&flooded.carol_seqs, 0, received, "before the close");
    let (room, last) = (flooded.room, flooded.last);

    let mut carol = resumed(
        &flooded.server,
        "carol",
        &[(room, &flooded.epoch, received)],
    )
    .await;
    assert_eq!(room_state(&carol.hello, room).unwrap()["seq"], last);
    let got = room_seqs_until(&mut carol, room, last).await;
    assert_gapless(&got, received, last, "the resume after 4008");
    assert_next_is_live(&mut carol, &mut flooded.bob, room, last, "after the resume").await;
    flooded.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn catch_up_buffer_overflow_closes_with_4008_and_a_second_resume_loses_nothing() {
    let room = "backlog";
    let mut config = config();
    config.catchup_buffer = 16;
    config.outbox_frames = 64;
    let (server, mut bob, epoch) = alice_left_after(config, room, 3).await;
    // More than the sockets hold: a replay to a client that does not read must stall.
    let body = bulk_body();
    let missed = send_many(&mut bob, room, "missed", FLOOD, &body, 16).await;
    let missed_latest = *missed.last().unwrap();

    // Alice resumes, then reads nothing while bob goes on: the live messages wait in the
    // catch-up buffer behind the stalled replay until it overflows.
    let mut alice = resumed(&server, "alice", &[(room, &epoch, 3)]).await;
    let live = send_many(&mut bob, room, "live", 64, "live", 1).await;
    let last = *live.last().unwrap();

    let (got, close) = drain_until_close(&mut alice, room, last).await;
    assert_eq!(
        close,
        Some(4008),
        "the close after {} replayed messages",
        got.len()
    );
    let received = got.last().copied().unwrap_or(3);
    assert_gapless(&got, 3, received, "the replay before the close");
    assert!(
        received < missed_latest,
        "the close came during the replay (at {received} of {missed_latest})"
    );

    let mut alice = resumed(&server, "alice", &[(room, &epoch, received)]).await;
    assert_eq!(room_state(&alice.hello, room).unwrap()["seq"], last);
    let rest = room_seqs_until(&mut alice, room, last).await;
    assert_gapless(&rest, received, last, "the second resume");
    assert_next_is_live(&mut alice, &mut bob, room, last, "after the second resume").await;
    server.stop().await;
}
