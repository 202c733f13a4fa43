//! Several engines in one process, sharing one store and presence tracker and joined by a
//! `LocalBus`: every guarantee must hold across nodes, even when the broker loses events.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chat_core::auth::DevAuthenticator;
use chat_core::broker::{Broker, BrokerEvent, BrokerEvents, EventKind, LocalBus, Topic};
use chat_core::{Engine, EngineConfig, EngineStats, NodeId};
use chat_store_memory::{MemoryPresence, MemoryStore};
use serde_json::json;
use support::Conn;

/// Drops every `every`-th message event it is asked to publish (never, for `u64::MAX`),
/// and keeps the set of topics subscribed.
#[derive(Debug)]
struct Lossy {
    inner: Arc<dyn Broker>,
    every: u64,
    seen: AtomicU64,
    dropped: AtomicU64,
    topics: parking_lot::Mutex<HashSet<Topic>>,
}

#[async_trait]
impl Broker for Lossy {
    fn node(&self) -> &NodeId {
        self.inner.node()
    }
    fn events(&self) -> BrokerEvents {
        self.inner.events()
    }
    async fn publish(&self, event: BrokerEvent) -> chat_core::Result<()> {
        if matches!(event.kind, EventKind::Message { .. })
            && self.seen.fetch_add(1, Ordering::Relaxed) % self.every == self.every - 1
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.inner.publish(event).await
    }
    async fn subscribe(&self, topic: &Topic) -> chat_core::Result<()> {
        self.topics.lock().insert(topic.clone());
        self.inner.subscribe(topic).await
    }
    async fn unsubscribe(&self, topic: &Topic) -> chat_core::Result<()> {
        self.topics.lock().remove(topic);
        self.inner.unsubscribe(topic).await
    }
}

struct Cluster {
    engines: Vec<Engine>,
    lossy: Vec<Arc<Lossy>>,
    bus: LocalBus,
}

/// `nodes` engines on one store, one presence tracker and one bus; with `drop_every`, each
/// node's broker loses every such message event.
fn cluster(nodes: usize, drop_every: Option<u64>) -> Cluster {
    let store = Arc::new(MemoryStore::new());
    let presence = Arc::new(MemoryPresence::default());
    let bus = LocalBus::new();
    let mut config = EngineConfig::default();
    config.gap_wait = Duration::from_millis(50);
    config.broker_probe = Duration::from_millis(200);
    config.typing_timeout = Duration::from_millis(500);
    let mut engines = Vec::new();
    let mut lossy = Vec::new();
    for i in 0..nodes {
        let local: Arc<dyn Broker> = Arc::new(bus.broker(NodeId::new(&format!("n{i}")).unwrap()));
        let broker = Arc::new(Lossy {
            inner: local,
            every: drop_every.unwrap_or(u64::MAX),
            seen: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            topics: parking_lot::Mutex::default(),
        });
        lossy.push(broker.clone());
        engines.push(
            Engine::builder(
                store.clone(),
                store.clone(),
                presence.clone(),
                Arc::new(DevAuthenticator),
            )
            .config(config.clone())
            .broker(broker)
            .build(),
        );
    }
    Cluster {
        engines,
        lossy,
        bus,
    }
}

/// Members of one room spread over the nodes, every member sending concurrently; returns
/// the (seq, body) list each member received.
async fn run_room(cluster: &Cluster, members: usize, per_sender: usize) -> Vec<Vec<(u64, String)>> {
    let mut conns = Vec::new();
    for i in 0..members {
        let mut conn = Conn::open(&cluster.engines[i % cluster.engines.len()]);
        conn.hello(&format!("user{i}")).await;
        let joined = conn.join("general").await;
        assert_eq!(joined["type"], "ok", "{joined}");
        conns.push(conn);
    }
    let total = members * per_sender;
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for k in 0..per_sender {
                conn.send(json!({"type":"send","id":100 + k,"room":"general",
                    "cid":format!("c{k}"),"body":format!("m-{i}-{k}")}))
                    .await;
            }
            let mut got = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while got.len() < total && tokio::time::Instant::now() < deadline {
                let v = conn.value_where(|v| v["type"] == "message").await;
                got.push((
                    v["seq"].as_u64().unwrap(),
                    v["body"].as_str().unwrap().to_owned(),
                ));
            }
            (got, conn)
        }));
    }
    let mut views = Vec::new();
    for task in tasks {
        let (got, conn) = task.await.unwrap();
        views.push(got);
        drop(conn);
    }
    views
}

fn assert_same_gapless(views: &[Vec<(u64, String)>], total: usize) {
    for (i, view) in views.iter().enumerate() {
        let seqs: Vec<u64> = view.iter().map(|(s, _)| *s).collect();
        let expected: Vec<u64> = (1..=total as u64).collect();
        assert_eq!(seqs, expected, "member {i}: not gapless in order");
        assert_eq!(view, &views[0], "member {i} saw another order");
    }
}

fn total_stats(cluster: &Cluster) -> EngineStats {
    let mut sum = EngineStats::default();
    for e in &cluster.engines {
        let s = e.stats();
        sum.repair_reads += s.repair_reads;
        sum.repaired += s.repaired;
        sum.published += s.published;
        sum.received += s.received;
        sum.publish_failed += s.publish_failed;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_one_gapless_order_to_every_member() {
    let cluster = cluster(3, None);
    let views = run_room(&cluster, 9, 30).await;
    assert_same_gapless(&views, 9 * 30);
    let stats = total_stats(&cluster);
    eprintln!("{stats:?}");
    assert!(stats.published >= 9 * 30, "{stats:?}");
    assert!(stats.received > 0, "{stats:?}");

    // Everyone gone: no hub and no subscription is left behind on any node.
    let emptied = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let rooms: usize = cluster.engines.iter().map(|e| e.stats().rooms).sum();
            let topics: usize = cluster.lossy.iter().map(|l| l.topics.lock().len()).sum();
            if rooms == 0 && topics == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let left: Vec<_> = cluster
        .lossy
        .iter()
        .map(|l| l.topics.lock().clone())
        .collect();
    assert!(emptied.is_ok(), "subscriptions left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_broker_delays_but_never_loses() {
    let cluster = cluster(3, Some(5));
    let views = run_room(&cluster, 6, 40).await;
    assert_same_gapless(&views, 6 * 40);
    let dropped: u64 = cluster
        .lossy
        .iter()
        .map(|l| l.dropped.load(Ordering::Relaxed))
        .sum();
    let stats = total_stats(&cluster);
    eprintln!("lossy: dropped {dropped} events, {stats:?}");
    assert!(dropped >= 40, "the broker dropped only {dropped}");
    assert!(stats.repaired > 0, "no repair counted: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_typing_receipt_and_presence_pushes_cross_nodes() {
    let cluster = cluster(3, None);
    let [a, b, c] = &cluster.engines[..] else {
        unreachable!()
    };
    let mut alice_a = Conn::open(a);
    alice_a.hello("alice").await;
    let mut alice_c = Conn::open(c);
    alice_c.hello("alice").await;
    let mut bob = Conn::open(b);
    bob.hello("bob").await;

    // Alice joins on A: her device on C hears it and starts receiving the room.
    let joined = alice_a.join("r").await;
    assert_eq!(joined["type"], "ok", "{joined}");
    let v = alice_c
        .value_where(|v| v["type"] == "member" && v["user"] == "alice")
        .await;
    assert_eq!(v["action"], "join");

    // Bob joins on B: both of Alice's devices hear it.
    let joined = bob.join("r").await;
    assert_eq!(joined["type"], "ok", "{joined}");
    for alice in [&mut alice_a, &mut alice_c] {
        let v = alice
            .value_where(|v| v["type"] == "member" && v["user"] == "bob")
            .await;
        assert_eq!(v["action"], "join");
    }

    // Typing and a message from B reach A and C.
    bob.send(json!({"type":"typing","id":3,"room":"r","active":true}))
        .await;
    bob.send(json!({"type":"send","id":4,"room":"r","cid":"x","body":"hi"}))
        .await;
    for alice in [&mut alice_a, &mut alice_c] {
        let v = alice.value_where(|v| v["type"] == "typing").await;
        assert_eq!(
            (v["user"].as_str(), v["active"].as_bool()),
            (Some("bob"), Some(true))
        );
        let v = alice.value_where(|v| v["type"] == "message").await;
        assert_eq!(
            (v["seq"].as_u64(), v["body"].as_str()),
            (Some(1), Some("hi"))
        );
    }

    // Alice reads on A: Bob (B) and her other device (C) get the receipt once.
    alice_a
        .send(json!({"type":"receipt","id":5,"room":"r","read":1}))
        .await;
    for conn in [&mut bob, &mut alice_c] {
        let v = conn
            .value_where(|v| v["type"] == "receipt" && v["user"] == "alice")
            .await;
        assert_eq!(v["read"], 1);
    }

    // Bob disconnects on B: Alice's devices on A and C see him offline.
    bob.task.abort();
    drop(bob);
    for alice in [&mut alice_a, &mut alice_c] {
        alice
            .value_where(|v| {
                v["type"] == "presence" && v["user"] == "bob" && v["status"] == "offline"
            })
            .await;
    }

    // Alice leaves on A: her device on C hears it and stops receiving the room.
    alice_a
        .send(json!({"type":"leave","id":6,"room":"r"}))
        .await;
    let v = alice_c
        .value_where(|v| v["type"] == "member" && v["user"] == "alice")
        .await;
    assert_eq!(v["action"], "leave");
    let mut carol = Conn::open(b);
    carol.hello("carol").await;
    let joined = carol.join("r").await;
    assert_eq!(joined["type"], "ok", "{joined}");
    carol
        .send(json!({"type":"send","id":7,"room":"r","cid":"y","body":"after"}))
        .await;
    carol.value_where(|v| v["id"] == 7).await;
    // Nothing of room r reaches C any more (a message would be seq 2).
    let quiet = tokio::time::timeout(Duration::from_millis(500), async {
        alice_c
            .value_where(|v| v["type"] == "message" || v["type"] == "member")
            .await
    })
    .await;
    assert!(quiet.is_err(), "C still receives room r: {quiet:?}");

    // Every hub of room r is gone where nobody is left; no subscription leaks.
    let mut rooms: HashMap<&str, usize> = HashMap::new();
    for (name, e) in [("a", a), ("b", b), ("c", c)] {
        rooms.insert(name, e.stats().rooms);
    }
    assert_eq!(rooms["c"], 0, "{rooms:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_reaches_a_user_on_another_node() {
    let cluster = cluster(2, None);
    let mut alice = Conn::open(&cluster.engines[0]);
    alice.hello("alice").await;
    let mut bob = Conn::open(&cluster.engines[1]);
    bob.hello("bob").await;
    for k in 0..3 {
        alice
            .send(json!({"type":"send","id":10 + k,"to":"bob","cid":format!("d{k}"),"body":format!("psst {k}")}))
            .await;
        let reply = alice.value_where(|v| v["id"] == 10 + k).await;
        assert_eq!(reply["type"], "ok", "{reply}");
    }
    // Bob's node learns of the new room on his user topic, subscribes it, and delivers
    // all three in order (the first may come from the store: it can precede the
    // subscription).
    for k in 0..3u64 {
        let v = bob.value_where(|v| v["type"] == "message").await;
        assert_eq!(v["seq"], k + 1, "{v}");
        assert_eq!(v["body"], format!("psst {k}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_from_a_node_that_died_stops_anyway() {
    let cluster = cluster(1, None);
    let mut alice = Conn::open(&cluster.engines[0]);
    alice.hello("alice").await;
    let joined = alice.join("r").await;
    assert_eq!(joined["type"], "ok", "{joined}");
    // A node with no engine behind it (it died) says Bob is typing, and never more.
    let dead = cluster.bus.broker(NodeId::new("dead").unwrap());
    let frame = chat_core::protocol::ServerFrame::Typing(chat_core::protocol::TypingPush {
        room: chat_core::RoomId::new("r").unwrap(),
        user: chat_core::UserId::new("bob").unwrap(),
        active: true,
    })
    .encode();
    dead.publish(BrokerEvent {
        origin: NodeId::new("dead").unwrap(),
        topic: Topic::Room(chat_core::RoomId::new("r").unwrap()),
        kind: EventKind::Typing,
        frame,
    })
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    let v = alice.value_where(|v| v["type"] == "typing").await;
    assert_eq!(
        (v["user"].as_str(), v["active"].as_bool()),
        (Some("bob"), Some(true))
    );
    let v = alice.value_where(|v| v["type"] == "typing").await;
    assert_eq!(
        (v["user"].as_str(), v["active"].as_bool()),
        (Some("bob"), Some(false))
    );
    // typing_timeout (500 ms) plus a second's grace for the typer's own node.
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "{:?}",
        started.elapsed()
    );
}
