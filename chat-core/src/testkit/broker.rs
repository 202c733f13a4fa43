//! [`Broker`] clauses. Each takes a closure that builds the broker of one node; all the
//! brokers it builds must be joined (one bus, one server, one cluster).
//!
//! A broker may reorder events, so "this did not arrive" is checked by publishing a
//! marker afterwards and looking at everything received until the marker.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::{Broker, BrokerEvent, BrokerEvents, EventKind, Topic};
use crate::id::{NodeId, Seq};
use crate::protocol::{MemberAction, PresenceInfo, PresenceStatus, ServerFrame, TypingPush};
use crate::testkit::{unique, unique_room, unique_user};

/// How long an event may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(10);

fn node(prefix: &str) -> NodeId {
    NodeId::new(&unique(prefix)).expect("a valid node id")
}

fn message_event(origin: &NodeId, topic: &Topic, seq: u64) -> BrokerEvent {
    let frame = ServerFrame::Typing(TypingPush {
        room: unique_room("frame"),
        user: unique_user("u"),
        active: seq % 2 == 0,
    })
    .encode();
    BrokerEvent {
        origin: origin.clone(),
        topic: topic.clone(),
        kind: EventKind::Message {
            seq: Seq::new(seq).expect("seq"),
        },
        frame,
    }
}

/// Receives until every event in `expected` has arrived; returns all that arrived.
async fn receive_all(events: &mut BrokerEvents, expected: &[&BrokerEvent]) -> Vec<BrokerEvent> {
    let mut got: Vec<BrokerEvent> = Vec::new();
    let all_in = |got: &[BrokerEvent]| expected.iter().all(|e| got.contains(e));
    while !all_in(&got) {
        match tokio::time::timeout(ARRIVAL, events.recv()).await {
            Ok(Some(event)) => got.push(event),
            Ok(None) => panic!("the event stream ended while waiting for {expected:?}"),
            Err(_) => panic!(
                "events did not arrive within {ARRIVAL:?}: expected {expected:?}, got {got:?}"
            ),
        }
    }
    got
}

async fn publish(broker: &impl Broker, event: &BrokerEvent) {
    broker.publish(event.clone()).await.expect("publish");
}

async fn subscribe(broker: &impl Broker, topic: &Topic) {
    broker.subscribe(topic).await.expect("subscribe");
}

/// An event reaches the nodes subscribed to its topic, once each (also after subscribing
/// twice), and no other node.
pub async fn events_reach_subscribed_nodes_only<F, Fut, B>(make: F)
where
    F: Fn(NodeId) -> Fut,
    Fut: Future<Output = Arc<B>>,
    B: Broker,
{
    let (a, b, c) = (
        make(node("a")).await,
        make(node("b")).await,
        make(node("c")).await,
    );
    let (mut b_events, mut c_events) = (b.events(), c.events());
    let r = Topic::Room(unique_room("r"));
    let s = Topic::Room(unique_room("s"));
    subscribe(&*b, &r).await;
    subscribe(&*b, &r).await;
    subscribe(&*c, &s).await;
    let to_r = message_event(a.node(), &r, 1);
    let to_s = message_event(a.node(), &s, 2);
    publish(&*a, &to_r).await;
    publish(&*a, &to_s).await;
    let marker_r = message_event(a.node(), &r, 3);
    let marker_s = message_event(a.node(), &s, 4);
    publish(&*a, &marker_r).await;
    publish(&*a, &marker_s).await;
    let got_b = receive_all(&mut b_events, &[&to_r, &marker_r]).await;
    assert_eq!(
        got_b.len(),
        2,
        "b hears each event of room r once, nothing of s: {got_b:?}"
    );
    let got_c = receive_all(&mut c_events, &[&to_s, &marker_s]).await;
    assert_eq!(got_c.len(), 2, "c hears only room s: {got_c:?}");
}

/// A node never receives its own events, even on a topic it subscribes to.
pub async fn publisher_does_not_hear_itself<F, Fut, B>(make: F)
where
    F: Fn(NodeId) -> Fut,
    Fut: Future<Output = Arc<B>>,
    B: Broker,
{
    let (a, b) = (make(node("a")).await, make(node("b")).await);
    let (mut a_events, mut b_events) = (a.events(), b.events());
    let r = Topic::Room(unique_room("r"));
    subscribe(&*a, &r).await;
    subscribe(&*b, &r).await;
    let from_a = message_event(a.node(), &r, 1);
    publish(&*a, &from_a).await;
    receive_all(&mut b_events, &[&from_a]).await;
    let from_b = message_event(b.node(), &r, 2);
    publish(&*b, &from_b).await;
    let got_a = receive_all(&mut a_events, &[&from_b]).await;
    assert_eq!(got_a, [from_b], "a hears b's event and not its own");
}

/// After `unsubscribe`, a topic's events stop arriving; other topics still arrive.
pub async fn unsubscribe_stops_delivery<F, Fut, B>(make: F)
where
    F: Fn(NodeId) -> Fut,
    Fut: Future<Output = Arc<B>>,
    B: Broker,
{
    let (a, b) = (make(node("a")).await, make(node("b")).await);
    let mut b_events = b.events();
    let r = Topic::Room(unique_room("r"));
    let user = Topic::User(unique_user("u"));
    subscribe(&*b, &r).await;
    subscribe(&*b, &user).await;
    let first = message_event(a.node(), &r, 1);
    publish(&*a, &first).await;
    receive_all(&mut b_events, &[&first]).await;
    b.unsubscribe(&r).await.expect("unsubscribe");
    let unwanted = message_event(a.node(), &r, 2);
    publish(&*a, &unwanted).await;
    let marker = message_event(a.node(), &user, 3);
    publish(&*a, &marker).await;
    let got = receive_all(&mut b_events, &[&marker]).await;
    assert_eq!(got, [marker], "nothing of the unsubscribed topic arrives");
}

/// Every kind of event, on room and user topics, with small and large frames, arrives with
/// its fields and bytes unchanged.
pub async fn events_arrive_unchanged<F, Fut, B>(make: F)
where
    F: Fn(NodeId) -> Fut,
    Fut: Future<Output = Arc<B>>,
    B: Broker,
{
    let (a, b) = (make(node("a")).await, make(node("b")).await);
    let mut b_events = b.events();
    let room = unique_room("r");
    let user = unique_user("u");
    let (r, u) = (Topic::Room(room.clone()), Topic::User(user.clone()));
    subscribe(&*b, &r).await;
    subscribe(&*b, &u).await;
    let presence = ServerFrame::Presence(PresenceInfo {
        user: user.clone(),
        status: PresenceStatus::Online,
        last_seen: None,
    })
    .encode();
    let big = ServerFrame::Typing(TypingPush {
        room: room.clone(),
        user: user.clone(),
        active: true,
    });
    let mut events = vec![
        message_event(a.node(), &r, 1),
        BrokerEvent {
            origin: a.node().clone(),
            topic: r.clone(),
            kind: EventKind::Member {
                user: user.clone(),
                action: MemberAction::Join,
                at: Some(Seq::new(3).expect("a seq")),
            },
            frame: presence.clone(),
        },
        BrokerEvent {
            origin: a.node().clone(),
            topic: u.clone(),
            kind: EventKind::Presence,
            frame: presence.clone(),
        },
    ];
    for kind in [EventKind::Receipt, EventKind::Typing] {
        events.push(BrokerEvent {
            origin: a.node().clone(),
            topic: r.clone(),
            kind,
            frame: big.encode(),
        });
    }
    // A frame near the protocol's largest: a history page is never published, but a
    // message with a 16 KiB body and 4 KiB meta is.
    let large = ServerFrame::error(
        None,
        crate::protocol::ErrorCode::Internal,
        "x".repeat(60_000),
    )
    .encode();
    events.push(BrokerEvent {
        origin: a.node().clone(),
        topic: r.clone(),
        kind: EventKind::Message {
            seq: Seq::new(2).expect("seq"),
        },
        frame: large,
    });
    for event in &events {
        publish(&*a, event).await;
    }
    let expected: Vec<&BrokerEvent> = events.iter().collect();
    let got = receive_all(&mut b_events, &expected).await;
    assert_eq!(got.len(), events.len(), "each event arrives once: {got:?}");
}

/// A burst of 1,000 events from one node arrives whole at another, each once.
pub async fn a_burst_arrives_whole<F, Fut, B>(make: F)
where
    F: Fn(NodeId) -> Fut,
    Fut: Future<Output = Arc<B>>,
    B: Broker,
{
    const BURST: u64 = 1_000;
    let (a, b) = (make(node("a")).await, make(node("b")).await);
    let mut b_events = b.events();
    let r = Topic::Room(unique_room("burst"));
    subscribe(&*b, &r).await;
    let events: Vec<BrokerEvent> = (1..=BURST)
        .map(|i| message_event(a.node(), &r, i))
        .collect();
    for event in &events {
        publish(&*a, event).await;
    }
    let mut seen = vec![false; BURST as usize + 1];
    for _ in 0..BURST {
        let event = tokio::time::timeout(ARRIVAL, b_events.recv())
            .await
            .unwrap_or_else(|_| panic!("the burst did not arrive whole within {ARRIVAL:?}"))
            .expect("the event stream ended");
        let EventKind::Message { seq } = event.kind else {
            panic!("an event nobody sent: {event:?}")
        };
        let i = seq.get() as usize;
        assert_eq!(event, events[i - 1], "event {i} arrived changed");
        assert!(!seen[i], "event {i} arrived twice");
        seen[i] = true;
    }
}
