//! Channels and streams: the latest stream gets the events, foreign payloads on a channel
//! are dropped and counted, and clusters with different prefixes do not hear each other.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chat_core::broker::{Broker, BrokerEvent, EventKind, Topic};
use chat_core::protocol::{ServerFrame, TypingPush};
use chat_core::testkit::{unique, unique_room, unique_user};
use chat_core::{NodeId, Seq};
use redis::AsyncCommands;

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

async fn recv(events: &mut chat_core::broker::BrokerEvents) -> Option<BrokerEvent> {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("no hang within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_to_the_stream_opened_last() {
    let Some(url) = support::url() else {
        return;
    };
    let prefix = support::unique_prefix();
    let a = support::broker(&url, &prefix, node("a")).await;
    let b = support::broker(&url, &prefix, node("b")).await;
    let room = Topic::Room(unique_room("r"));
    b.subscribe(&room).await.unwrap();
    let mut old = b.events();
    let first = event(a.node(), &room, 1);
    a.publish(first.clone()).await.unwrap();
    assert_eq!(recv(&mut old).await, Some(first));
    let mut new = b.events();
    assert_eq!(recv(&mut old).await, None, "the earlier stream ends");
    let second = event(a.node(), &room, 2);
    a.publish(second.clone()).await.unwrap();
    assert_eq!(recv(&mut new).await, Some(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_payloads_are_dropped_and_counted() {
    let Some(url) = support::url() else {
        return;
    };
    let prefix = support::unique_prefix();
    let a = support::broker(&url, &prefix, node("a")).await;
    let b = support::broker(&url, &prefix, node("b")).await;
    let mut b_events = b.events();
    let room = Topic::Room(unique_room("r"));
    b.subscribe(&room).await.unwrap();
    let channel = b.channel(&room);
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Another version, garbage, chat-core's unversioned form, and a v1 envelope whose
    // event names another topic than its channel.
    let other_topic = event(a.node(), &Topic::Room(unique_room("elsewhere")), 9);
    let mut misrouted = vec![1u8, 3, b'z', b'z', b'z'];
    misrouted.extend_from_slice(&other_topic.to_bytes());
    let mut v2 = misrouted.clone();
    v2[0] = 2;
    let payloads: Vec<Vec<u8>> = vec![
        v2,
        b"hello".to_vec(),
        event(a.node(), &room, 7).to_bytes().to_vec(),
        misrouted,
    ];
    for p in &payloads {
        let _: i64 = raw.publish(&channel, p.as_slice()).await.unwrap();
    }
    let good = event(a.node(), &room, 1);
    a.publish(good.clone()).await.unwrap();
    assert_eq!(
        recv(&mut b_events).await,
        Some(good),
        "only the real event arrives, and the stream lives on"
    );
    assert_eq!(b.stats().malformed, 3, "{:?}", b.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_with_other_prefixes_do_not_hear_each_other() {
    let Some(url) = support::url() else {
        return;
    };
    let (p1, p2) = (support::unique_prefix(), support::unique_prefix());
    let a1 = support::broker(&url, &p1, node("a")).await;
    let b1 = support::broker(&url, &p1, node("b")).await;
    let b2 = support::broker(&url, &p2, node("b")).await;
    let room = Topic::Room(unique_room("shared-name"));
    let (mut b1_events, mut b2_events) = (b1.events(), b2.events());
    b1.subscribe(&room).await.unwrap();
    b2.subscribe(&room).await.unwrap();
    let e = event(a1.node(), &room, 1);
    a1.publish(e.clone()).await.unwrap();
    assert_eq!(recv(&mut b1_events).await, Some(e));
    // A marker in b2's own cluster, published after: b2 hears it and nothing before it.
    let a2 = support::broker(&url, &p2, node("a")).await;
    let marker = event(a2.node(), &room, 2);
    a2.publish(marker.clone()).await.unwrap();
    assert_eq!(recv(&mut b2_events).await, Some(marker));
    assert_ne!(b1.channel(&room), b2.channel(&room));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_room_topics_of_the_same_name_are_apart() {
    let Some(url) = support::url() else {
        return;
    };
    let prefix = support::unique_prefix();
    let a = support::broker(&url, &prefix, node("a")).await;
    let b = support::broker(&url, &prefix, node("b")).await;
    let mut b_events = b.events();
    let name = unique("same");
    let room = Topic::Room(chat_core::RoomId::new(&name).unwrap());
    let user = Topic::User(chat_core::UserId::new(&name).unwrap());
    b.subscribe(&user).await.unwrap();
    let to_room = event(a.node(), &room, 1);
    let to_user = event(a.node(), &user, 2);
    a.publish(to_room).await.unwrap();
    a.publish(to_user.clone()).await.unwrap();
    assert_eq!(recv(&mut b_events).await, Some(to_user));
}
