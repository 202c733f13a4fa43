//! The broker after its connections to Redis break. The shared test Redis is never
//! restarted (other tests use it): the brokers reach it through a TCP proxy that a test
//! cuts and restores, or whose connections it silences.
//!
//! Times are printed (`--nocapture`), not asserted: they depend on the machine.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use chat_broker_redis::RedisBroker;
use chat_core::NodeId;
use chat_core::Seq;
use chat_core::broker::{Broker, BrokerEvent, BrokerEvents, EventKind, Topic};
use chat_core::protocol::{ServerFrame, TypingPush};
use chat_core::testkit::{unique, unique_room, unique_user};

use support::Proxy;

/// The longest a broker may take to come back in these tests.
const COME_BACK: Duration = Duration::from_secs(20);

fn node(prefix: &str) -> NodeId {
    NodeId::new(&unique(prefix)).unwrap()
}

fn event(origin: &NodeId, topic: &Topic, seq: u64) -> BrokerEvent {
    BrokerEvent {
        origin: origin.clone(),
        topic: topic.clone(),
        kind: EventKind::Message {
            seq: Seq::new(seq).unwrap(),
        },
        frame: ServerFrame::Typing(TypingPush {
            room: unique_room("frame"),
            user: unique_user("u"),
            active: true,
        })
        .encode(),
    }
}

async fn recv(events: &mut BrokerEvents) -> BrokerEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the stream is open")
}

/// Rings from `a` on `topic` (a new seq each time, each given 100 ms to arrive) until `b`
/// hears one; returns how long that took.
async fn ring_until_heard(
    a: &RedisBroker,
    b_events: &mut BrokerEvents,
    topic: &Topic,
    seq: &mut u64,
) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(COME_BACK, async {
        loop {
            *seq += 1;
            let _ = a.publish(event(a.node(), topic, *seq)).await;
            if let Ok(Some(got)) =
                tokio::time::timeout(Duration::from_millis(100), b_events.recv()).await
            {
                assert_eq!(got.topic, *topic);
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event got through within {COME_BACK:?}"));
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_connections_come_back_after_a_cut_and_resubscribe_everything() {
    let Some(url) = support::url() else {
        return;
    };
    let proxy = Proxy::start(&url).await;
    let prefix = support::unique_prefix();
    let a = support::broker(proxy.url(), &prefix, node("a")).await;
    let b = support::broker(proxy.url(), &prefix, node("b")).await;
    let mut b_events = b.events();
    let room = Topic::Room(unique_room("r"));
    let user = Topic::User(unique_user("u"));
    b.subscribe(&room).await.unwrap();
    b.subscribe(&user).await.unwrap();
    let mut seq = 1;
    let first = event(a.node(), &room, seq);
    a.publish(first.clone()).await.unwrap();
    assert_eq!(recv(&mut b_events).await, first);
    assert_eq!(
        proxy.open_connections(),
        4,
        "each broker: one connection to publish, one to receive"
    );

    proxy.cut();
    let cut_at = Instant::now();
    seq += 1;
    let publish_started = Instant::now();
    let failed = a.publish(event(a.node(), &room, seq)).await;
    let publish_took = publish_started.elapsed();
    assert!(
        failed.is_err(),
        "publishing while Redis is unreachable fails"
    );
    assert!(
        publish_took < Duration::from_secs(2),
        "a publish while cut off is bounded by the command timeout: {publish_took:?}"
    );
    // A topic subscribed while cut off is subscribed by the next connection.
    let late = Topic::Room(unique_room("late"));
    let subscribe_started = Instant::now();
    b.subscribe(&late).await.unwrap();
    let subscribe_took = subscribe_started.elapsed();
    // An unsubscribe while cut off holds too.
    let dropped = Topic::Room(unique_room("dropped"));
    b.subscribe(&dropped).await.unwrap();
    b.unsubscribe(&dropped).await.unwrap();
    let outage = Duration::from_millis(700);
    tokio::time::sleep(outage.saturating_sub(cut_at.elapsed())).await; // the outage itself
    assert!(!b.is_connected(), "b noticed the cut: {:?}", b.stats());

    proxy.restore();
    let restored = Instant::now();
    tokio::time::timeout(COME_BACK, b.wait_connected())
        .await
        .expect("b's subscriptions come back");
    let b_back = restored.elapsed();
    let heard = ring_until_heard(&a, &mut b_events, &room, &mut seq).await;
    let first_event = restored.elapsed();
    assert!(b.stats().reconnects >= 1, "{:?}", b.stats());

    // Every topic wanted is subscribed again, the one added during the outage included,
    // and the one dropped during it is not.
    let marker_user = event(a.node(), &user, 1_000);
    let marker_late = event(a.node(), &late, 1_001);
    let unwanted = event(a.node(), &dropped, 1_002);
    for e in [&unwanted, &marker_user, &marker_late] {
        a.publish(e.clone()).await.unwrap();
    }
    let mut got = Vec::new();
    while !(got.contains(&marker_user) && got.contains(&marker_late)) {
        got.push(recv(&mut b_events).await);
    }
    assert!(!got.contains(&unwanted), "unsubscribed during the outage");

    // And nothing published once both are back is lost.
    let burst: Vec<BrokerEvent> = (2_000..2_200).map(|s| event(a.node(), &room, s)).collect();
    for e in &burst {
        a.publish(e.clone()).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < burst.len() {
        let e = recv(&mut b_events).await;
        if e.topic == room && matches!(e.kind, EventKind::Message { seq } if seq.get() >= 2_000) {
            got.push(e);
        }
    }
    assert_eq!(got, burst, "in order, each once");
    eprintln!(
        "cut {outage:?}: publish while cut failed in {publish_took:?}, subscribe while cut \
         returned in {subscribe_took:?}; after restore: subscriptions back in {b_back:?}, \
         first event through in {first_event:?} (ringing {heard:?}); stats a {:?} b {:?}",
        a.stats(),
        b.stats(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_found_by_the_ping() {
    let Some(url) = support::url() else {
        return;
    };
    let proxy = Proxy::start(&url).await;
    let prefix = support::unique_prefix();
    let a = support::broker(&url, &prefix, node("a")).await;
    let b = support::config(proxy.url(), &prefix, node("b"))
        .ping_interval(Duration::from_millis(100))
        .command_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let mut b_events = b.events();
    let room = Topic::Room(unique_room("r"));
    b.subscribe(&room).await.unwrap();
    let mut seq = 1;
    let first = event(a.node(), &room, seq);
    a.publish(first.clone()).await.unwrap();
    assert_eq!(recv(&mut b_events).await, first);

    // b's connections stay open but carry nothing: without the ping, b would wait forever.
    proxy.silence_existing();
    let took = ring_until_heard(&a, &mut b_events, &room, &mut seq).await;
    assert!(b.stats().reconnects >= 1, "{:?}", b.stats());
    eprintln!(
        "silenced: events reach b again after {took:?} (ping every 100 ms, 300 ms timeout); {:?}",
        b.stats()
    );
}
