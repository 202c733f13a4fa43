//! A consumer that does not keep up makes the broker drop events; publishers never wait
//! for it, and the stream works again once it reads.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chat_core::NodeId;
use chat_core::Seq;
use chat_core::broker::{Broker, BrokerEvent, EventKind, Topic};
use chat_core::protocol::{ServerFrame, TypingPush};
use chat_core::testkit::{unique, unique_room, unique_user};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_events_and_never_blocks_publishers() {
    const CAPACITY: usize = 4;
    const SENT: u64 = 300;
    let Some(url) = support::url() else {
        return;
    };
    let prefix = support::unique_prefix();
    let a = support::broker(&url, &prefix, NodeId::new(&unique("a")).unwrap()).await;
    let b = support::config(&url, &prefix, NodeId::new(&unique("b")).unwrap())
        .capacity(CAPACITY)
        .connect()
        .await
        .unwrap();
    let mut b_events = b.events();
    let room = Topic::Room(unique_room("r"));
    b.subscribe(&room).await.unwrap();

    // b reads nothing meanwhile; every publish still completes.
    tokio::time::timeout(Duration::from_secs(20), async {
        for seq in 1..=SENT {
            a.publish(event(a.node(), &room, seq)).await.unwrap();
        }
    })
    .await
    .expect("publishers are not held up by a consumer that does not read");

    // Read until a marker published after the burst: it comes after every event of the
    // burst was handed on or dropped.
    let mut got = Vec::new();
    let mut marker = None;
    let mut markers = 0;
    while marker.is_none() {
        markers += 1;
        let m = event(a.node(), &room, SENT + markers);
        a.publish(m.clone()).await.unwrap();
        loop {
            match tokio::time::timeout(Duration::from_millis(200), b_events.recv()).await {
                Ok(Some(e)) if e == m => {
                    marker = Some(e);
                    break;
                }
                Ok(Some(e)) => got.push(e),
                Ok(None) => panic!("the stream ended"),
                Err(_) => break,
            }
        }
    }
    let stats = b.stats();
    let burst_received = got
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Message { seq } if seq.get() <= SENT))
        .count();
    assert!(
        burst_received < SENT as usize && stats.dropped > 0,
        "a buffer of {CAPACITY} cannot hold a burst of {SENT} nobody reads: got {burst_received}, {stats:?}"
    );
    assert_eq!(
        stats.received,
        got.len() as u64 + 1,
        "every event handed on was read"
    );
    assert_eq!(
        stats.received + stats.dropped,
        SENT + markers,
        "every event published was handed on or counted as dropped"
    );
    let mut seqs: Vec<u64> = got
        .iter()
        .map(|e| match e.kind {
            EventKind::Message { seq } => seq.get(),
            _ => unreachable!(),
        })
        .collect();
    let before = seqs.clone();
    seqs.dedup();
    assert_eq!(seqs, before, "no event twice");
    eprintln!(
        "capacity {CAPACITY}, {SENT} sent while not reading: {burst_received} arrived, {stats:?}"
    );
}
