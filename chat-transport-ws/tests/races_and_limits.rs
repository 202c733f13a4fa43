//! Races between devices and the limits that keep one client from costing others: large
//! history pages, room quotas, join/leave from two devices at once, leave and rejoin during
//! a replay, presence that converges after a burst of reconnects, and heartbeats that count
//! from the last thing heard.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chat_core::store::{Appended, HistoryPage, HistoryQuery, RoomInfo};
use chat_core::{EngineConfig, MessageStore, NewMessage, Result, RoomId, UserId};
use chat_store_memory::MemoryStore;
use serde_json::json;
use support::{Client, TestServer};
use tokio::sync::{Notify, Semaphore};

/// Which store call a [`GatedStore`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    AddMember,
    History,
}

/// The memory store, but once armed, the chosen call stops *after* doing its work until
/// the test opens the gate: a window in which other requests can run, made on purpose.
#[derive(Debug)]
struct GatedStore {
    inner: Arc<MemoryStore>,
    hold: Hold,
    armed: AtomicBool,
    entered: Notify,
    gate: Semaphore,
}

impl GatedStore {
    fn new(inner: Arc<MemoryStore>, hold: Hold) -> Arc<GatedStore> {
        Arc::new(GatedStore {
            inner,
            hold,
            armed: AtomicBool::new(false),
            entered: Notify::new(),
            gate: Semaphore::new(0),
        })
    }

    async fn held(&self, call: Hold) {
        if call == self.hold && self.armed.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.gate.acquire().await.unwrap().forget();
        }
    }

    fn open(&self) {
        self.gate.add_permits(1);
    }
}

#[async_trait]
impl MessageStore for GatedStore {
    async fn ensure_room(&self, room: &RoomId) -> Result<(RoomInfo, bool)> {
        self.inner.ensure_room(room).await
    }
    async fn room(&self, room: &RoomId) -> Result<Option<RoomInfo>> {
        self.inner.room(room).await
    }
    async fn append(&self, message: NewMessage) -> Result<Appended> {
        self.inner.append(message).await
    }
    async fn history(
        &self,
        room: &RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage> {
        let page = self.inner.history(room, query, limit).await;
        self.held(Hold::History).await;
        page
    }
    async fn add_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        let added = self.inner.add_member(room, user).await;
        self.held(Hold::AddMember).await;
        added
    }
    async fn remove_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        self.inner.remove_member(room, user).await
    }
    async fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        self.inner.is_member(room, user).await
    }
    async fn members(&self, room: &RoomId) -> Result<Vec<UserId>> {
        self.inner.members(room).await
    }
    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomInfo>> {
        self.inner.rooms_of(user).await
    }
}

async fn gated_server(config: EngineConfig, hold: Hold) -> (TestServer, Arc<GatedStore>) {
    let mut gated = None;
    let server = TestServer::with_store(config, |memory| {
        let store = GatedStore::new(memory, hold);
        gated = Some(store.clone());
        store
    })
    .await;
    (server, gated.unwrap())
}

/// Lets other tasks run for a while (no clock involved).
async fn let_others_run() {
    for _ in 0..2_000 {
        tokio::task::yield_now().await;
    }
}

/// Sends `count` messages of `body` to `room` without waiting for each reply, then
/// collects every reply; returns the last seq.
async fn send_many(client: &mut Client, room: &str, prefix: &str, count: usize, body: &str) -> u64 {
    let mut ids = Vec::new();
    for i in 0..count {
        let id = 500_000 + i as u64;
        client
            .send_json(json!({"type":"send","id":id,"room":room,"cid":format!("{prefix}-{i}"),"body":body}))
            .await;
        ids.push(id);
    }
    let mut last = 0;
    for id in ids {
        let reply = client.reply(id).await;
        assert_eq!(reply["type"], "ok", "{reply}");
        last = reply["seq"].as_u64().unwrap();
    }
    client.backlog.clear();
    last
}

#[tokio::test]
async fn a_history_page_of_large_messages_is_cut_to_size_not_refused() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("big").await;
    let body = "x".repeat(16 * 1024);
    let last = send_many(&mut alice, "big", "m", 300, &body).await;
    assert_eq!(last, 300);

    let page = alice
        .ok(json!({"type":"history","room":"big","limit":500}))
        .await;
    let got: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert!(
        !got.is_empty() && got.len() < 300,
        "cut to the byte cap: {} messages",
        got.len()
    );
    assert_eq!(
        *got.last().unwrap(),
        300,
        "the newest messages are the ones kept"
    );
    assert_eq!(page["more"], true, "a cut page says more");
    let bytes = serde_json::to_vec(&page).unwrap().len();
    assert!(bytes <= 2 * 1024 * 1024 + 64 * 1024, "{bytes} bytes");

    // Paging on reaches every message exactly once, and the connection never closed.
    let mut all = got.clone();
    let mut before = got[0];
    for _ in 0..100 {
        if before == 1 {
            break;
        }
        let page = alice
            .ok(json!({"type":"history","room":"big","before":before,"limit":500}))
            .await;
        let seqs: Vec<u64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        before = seqs[0];
        all.splice(0..0, seqs);
        assert_eq!(page["more"], before > 1);
    }
    assert_eq!(all, (1..=300).collect::<Vec<_>>());
    let forward = alice
        .ok(json!({"type":"history","room":"big","after":0,"limit":500}))
        .await;
    let first = &forward["messages"].as_array().unwrap()[0];
    assert_eq!(first["seq"], 1, "after keeps the oldest of the page");
    assert_eq!(forward["more"], true);
    server.stop().await;
}

#[tokio::test]
async fn memberships_beyond_the_quota_are_forbidden() {
    let mut config = EngineConfig::default();
    config.max_rooms_per_user = 3;
    let server = TestServer::with_config(config).await;
    let mut alice = server.client("alice").await;
    alice.join("a").await;
    alice.join("b").await;
    alice.say("b", "c-1", "x").await;
    alice
        .ok(json!({"type":"send","to":"bob","cid":"d-1","body":"hi"}))
        .await;
    alice
        .refused(json!({"type":"join","room":"d"}), "forbidden")
        .await;
    alice
        .refused(
            json!({"type":"send","to":"carol","cid":"d-2","body":"hi"}),
            "forbidden",
        )
        .await;
    // Rooms already joined still work, and leaving makes room.
    alice.join("a").await;
    alice
        .ok(json!({"type":"send","to":"bob","cid":"d-3","body":"again"}))
        .await;
    alice.ok(json!({"type":"leave","room":"a"})).await;
    alice.join("d").await;
    let mut again = server.client("alice").await;
    let rooms: Vec<&str> = again.hello["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap())
        .collect();
    assert_eq!(rooms, ["b", "d", "dm:alice:bob"]);
    again
        .refused(json!({"type":"join","room":"e"}), "forbidden")
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leave_inside_a_join_on_another_device_never_leaves_a_non_member_attached() {
    let (server, store) = gated_server(EngineConfig::default(), Hold::AddMember).await;
    let mut phone = server.client("alice").await;
    let mut laptop = server.client("alice").await;
    let mut bob = server.client("bob").await;
    bob.join("contested").await;

    // The phone's join stops right after the store made alice a member; the laptop's leave
    // comes in then, and the join finishes after it.
    store.armed.store(true, Ordering::SeqCst);
    phone
        .send_json(json!({"type":"join","id":1,"room":"contested"}))
        .await;
    store.entered.notified().await;
    laptop
        .send_json(json!({"type":"leave","id":2,"room":"contested"}))
        .await;
    let_others_run().await;
    store.open();
    let (joined, left) = tokio::join!(phone.reply(1), laptop.reply(2));
    assert_eq!(
        (joined["type"].clone(), left["type"].clone()),
        (json!("ok"), json!("ok"))
    );

    // Whichever won, the store and what the devices may do agree.
    let members = bob.ok(json!({"type":"members","room":"contested"})).await;
    let is_member = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["user"] == "alice");
    for (i, device) in [&mut phone, &mut laptop].into_iter().enumerate() {
        let sent = device
            .request(json!({"type":"send","room":"contested","cid":format!("d{i}"),"body":"x"}))
            .await;
        let expected = if is_member { "ok" } else { "error" };
        assert_eq!(sent["type"], expected, "member={is_member}: {sent}");
    }
    if !is_member {
        // And nothing of the room reaches a non-member.
        bob.say("contested", "b-1", "after").await;
        phone.join("elsewhere").await;
        bob.join("elsewhere").await;
        bob.say("elsewhere", "marker", "marker").await;
        let got = phone
            .messages_until("elsewhere", |m| m["cid"] == "marker")
            .await;
        assert_eq!(got.len(), 1);
        assert!(
            !phone
                .backlog
                .iter()
                .any(|f| f["room"] == "contested" && f["type"] == "message")
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaving_and_rejoining_during_a_replay_never_pushes_backwards() {
    let mut config = EngineConfig::default();
    config.rate_burst = 10_000;
    let (server, store) = gated_server(config, Hold::History).await;
    let mut alice = server.client("alice").await;
    let epoch = alice.join("room").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(alice);
    let mut bob = server.client("bob").await;
    bob.join("room").await;
    send_many(&mut bob, "room", "m", 1_000, "backlog").await;

    // The replay's first page is read; the second read stops until the gate opens.
    store.armed.store(true, Ordering::SeqCst);
    let mut resumed = Client::connect(&server.url()).await;
    resumed
        .hello("alice", json!({"room": {"epoch": epoch, "seq": 0}}))
        .await;
    store.entered.notified().await;
    // Meanwhile alice leaves and rejoins from another device, and a live message follows.
    let mut other_device = server.client("alice").await;
    other_device.ok(json!({"type":"leave","room":"room"})).await;
    other_device.join("room").await;
    bob.say("room", "after", "live").await;
    store.open();

    // Every message push on the resuming connection is strictly increasing, and the live
    // message after the rejoin arrives.
    let mut last = 0;
    for _ in 0..10_000 {
        let frame = resumed.recv().await;
        if frame["type"] != "message" {
            continue;
        }
        let seq = frame["seq"].as_u64().unwrap();
        assert!(seq > last, "went backwards: {seq} after {last}");
        last = seq;
        if frame["cid"] == "after" {
            break;
        }
    }
    assert_eq!(last, 1_001, "the live message after the rejoin arrived");
    // Nothing of the stale replay follows it.
    bob.say("room", "marker", "marker").await;
    let next = resumed.push("message").await;
    assert_eq!(
        next["cid"], "marker",
        "a stale replayed message came after the live one: {next}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_converges_after_a_burst_of_reconnects() {
    let server = TestServer::start().await;
    let mut bob = server.client("bob").await;
    bob.ok(json!({"type":"send","to":"alice","cid":"c-1","body":"hi"}))
        .await;
    for _ in 0..30 {
        let alice = server.client("alice").await;
        drop(alice);
    }
    let last = server.client("alice").await;
    // However the changes raced, the last presence push bob gets says online, as the truth.
    let mut pushed = None;
    for _ in 0..200 {
        bob.ok(json!({"type":"ping"})).await;
        while let Some(at) = bob.backlog.iter().position(|f| f["type"] == "presence") {
            pushed = Some(bob.backlog.remove(at).unwrap()["status"].clone());
        }
        let truth = bob.ok(json!({"type":"presence","users":["alice"]})).await;
        assert_eq!(truth["users"][0]["status"], "online");
        if pushed == Some(json!("online")) {
            break;
        }
        // A stale "offline" must be followed by another push; wait for it.
        pushed = Some(bob.push("presence").await["status"].clone());
    }
    assert_eq!(pushed, Some(json!("online")));
    drop(last);
    let offline = bob.push("presence").await;
    assert_eq!(offline["status"], "offline");
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn silence_is_counted_from_the_last_frame_heard() {
    let server = TestServer::start().await;
    let mut bob = server.client("bob").await;
    bob.wait = Duration::from_secs(600);
    bob.ok(json!({"type":"send","to":"alice","cid":"c-1","body":"hi"}))
        .await;
    let mut alice = server.client("alice").await;
    // Alice is heard from at 30 s (mid-interval), then falls silent.
    tokio::time::sleep(Duration::from_secs(30)).await;
    alice.ok(json!({"type":"ping"})).await;
    let spoke = tokio::time::Instant::now();
    let offline = bob.push("presence").await;
    let offline = if offline["status"] == "online" {
        bob.push("presence").await
    } else {
        offline
    };
    assert_eq!(offline["status"], "offline");
    let silent = spoke.elapsed();
    assert!(
        silent >= Duration::from_secs(50) && silent < Duration::from_secs(51),
        "closed after {silent:?} of silence, not two 25 s heartbeats"
    );
    drop(alice);
    server.stop().await;
}
