//! The Rust client against a real server: chatting, and what happens when the connection
//! or the server goes away.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chat_client::{ClientBuilder, ClientError, ConnectionState, Event, Events, HistoryQuery};
use chat_core::protocol::{ErrorCode, PresenceStatus};
use chat_core::{EngineConfig, RoomId, Seq, UserId};
use support::proxy::FaultProxy;
use support::{Server, WAIT};

fn room(name: &str) -> RoomId {
    RoomId::new(name).unwrap()
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

/// The next event that `pick` accepts (others are skipped).
async fn event_where(events: &mut Events, pick: impl Fn(&Event) -> bool) -> Event {
    loop {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("no event in time")
            .expect("the client stopped");
        if pick(&event) {
            return event;
        }
    }
}

/// The bodies of the next `n` messages of `room`.
async fn messages(events: &mut Events, room: &RoomId, n: usize) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        if let Event::Message(m) = event_where(
            events,
            |e| matches!(e, Event::Message(m) if m.room == *room),
        )
        .await
        {
            got.push((m.seq.get(), m.body));
        }
    }
    got
}

fn fast(url: String, token: &str) -> ClientBuilder {
    ClientBuilder::new(url, token).backoff(Duration::from_millis(10), Duration::from_millis(200))
}

#[tokio::test]
async fn two_clients_chat() {
    let server = Server::start(EngineConfig::default()).await;
    let (alice, mut alice_events) = chat_client::connect(server.url(), "dev:alice")
        .await
        .unwrap();
    let (bob, mut bob_events) = chat_client::connect(server.url(), "dev:bob").await.unwrap();
    assert_eq!(alice.user(), Some(user("alice")));
    let general = room("general");
    let state = alice.join(&general).await.unwrap();
    assert_eq!(state.seq, Seq::ZERO);
    bob.join(&general).await.unwrap();

    let ack = alice.send(&general, "hello bob").await.unwrap();
    assert_eq!((ack.seq.get(), ack.dup), (1, false));
    assert_eq!(
        messages(&mut bob_events, &general, 1).await,
        [(1, "hello bob".to_owned())]
    );
    assert_eq!(
        messages(&mut alice_events, &general, 1).await,
        [(1, "hello bob".to_owned())]
    );

    let dm = bob.send_to(&user("alice"), "psst").await.unwrap();
    assert_eq!(dm.room.as_str(), "dm:alice:bob");
    assert_eq!(
        messages(&mut alice_events, &dm.room, 1).await,
        [(1, "psst".to_owned())]
    );

    let page = alice
        .history(&general, HistoryQuery::Latest, None)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert!(!page.more);
    let members = alice.members(&general).await.unwrap();
    assert_eq!(members.len(), 2);
    let presence = alice
        .presence(&[user("bob"), user("nobody")])
        .await
        .unwrap();
    assert_eq!(presence[0].status, PresenceStatus::Online);
    assert_eq!(presence[1].last_seen, None);

    bob.mark_read(&general, Seq::new(1).unwrap()).await.unwrap();
    let receipt = event_where(&mut alice_events, |e| matches!(e, Event::Receipt(_))).await;
    let Event::Receipt(receipt) = receipt else {
        unreachable!()
    };
    assert_eq!((receipt.user.as_str(), receipt.read.get()), ("bob", 1));
    bob.typing(&general, true).await.unwrap();
    let typing = event_where(&mut alice_events, |e| matches!(e, Event::Typing(_))).await;
    assert!(matches!(typing, Event::Typing(t) if t.user == user("bob") && t.active));

    let refused = alice.send(&room("not-joined"), "x").await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden));
    alice.close().await;
    assert!(matches!(
        event_where(&mut alice_events, |e| matches!(
            e,
            Event::State(ConnectionState::Closed { .. })
        ))
        .await,
        Event::State(_)
    ));
    assert_eq!(
        alice.send(&general, "after close").await.unwrap_err(),
        ClientError::Closed
    );
    server.stop().await;
}

#[tokio::test]
async fn a_refused_token_fails_connect() {
    let server = Server::start(EngineConfig::default()).await;
    let error = chat_client::connect(server.url(), "not-a-token")
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Unauthorized(_)), "{error:?}");
    server.stop().await;
}

#[tokio::test]
async fn cut_connections_resume_without_gap_or_duplicate() {
    let server = Server::start(EngineConfig::default()).await;
    let proxy = FaultProxy::start(server.addr).await;
    let (alice, mut alice_events) = fast(proxy.url(), "dev:alice").connect().await.unwrap();
    let (bob, _bob_events) = chat_client::connect(server.url(), "dev:bob").await.unwrap();
    let general = room("general");
    alice.join(&general).await.unwrap();
    bob.join(&general).await.unwrap();
    let mut seqs = Vec::new();
    let mut disconnects = 0;
    for round in 0..3u64 {
        for i in 1..=20u64 {
            bob.send(&general, format!("m{}", round * 20 + i))
                .await
                .unwrap();
        }
        // Cut alice in the middle of reading them, then read on: the client reconnects,
        // resumes, and the application sees each message once.
        proxy.cut_all();
        while seqs.len() < (round as usize + 1) * 20 {
            match event_where(&mut alice_events, |_| true).await {
                Event::Message(m) if m.room == general => seqs.push(m.seq.get()),
                Event::State(ConnectionState::Disconnected { .. }) => disconnects += 1,
                _ => {}
            }
        }
    }
    assert_eq!(
        seqs,
        (1..=60).collect::<Vec<_>>(),
        "each message once, in order"
    );
    assert!(disconnects >= 1, "the cuts were noticed");
    server.stop().await;
}

#[tokio::test]
async fn a_send_whose_ack_was_lost_is_retried_and_stored_once() {
    let server = Server::start(EngineConfig::default()).await;
    let proxy = FaultProxy::start(server.addr).await;
    let (alice, mut alice_events) = fast(proxy.url(), "dev:alice").connect().await.unwrap();
    let (bob, mut bob_events) = chat_client::connect(server.url(), "dev:bob").await.unwrap();
    let general = room("general");
    alice.join(&general).await.unwrap();
    bob.join(&general).await.unwrap();

    // The send reaches the server; its ack does not reach alice before the cut.
    proxy.stall_down_all();
    let sending = {
        let alice = alice.clone();
        let general = general.clone();
        tokio::spawn(async move { alice.send(&general, "once").await })
    };
    assert_eq!(
        messages(&mut bob_events, &general, 1).await,
        [(1, "once".to_owned())]
    );
    proxy.cut_all();
    let ack = tokio::time::timeout(WAIT, sending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (ack.seq.get(), ack.dup),
        (1, true),
        "the retry found the stored message"
    );
    assert_eq!(
        messages(&mut alice_events, &general, 1).await,
        [(1, "once".to_owned())]
    );
    let page = bob
        .history(&general, HistoryQuery::Latest, None)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1, "stored once");
    // And no second copy reaches anyone: the next message is seq 2.
    bob.send(&general, "next").await.unwrap();
    assert_eq!(
        messages(&mut alice_events, &general, 1).await,
        [(2, "next".to_owned())]
    );
    server.stop().await;
}

#[tokio::test]
async fn sends_made_offline_wait_and_the_queue_is_bounded() {
    let server = Server::start(EngineConfig::default()).await;
    let proxy = FaultProxy::start(server.addr).await;
    let (alice, mut alice_events) = fast(proxy.url(), "dev:alice")
        .queue_limit(2)
        .connect()
        .await
        .unwrap();
    let general = room("general");
    alice.join(&general).await.unwrap();
    proxy.set_refusing(true);
    proxy.cut_all();
    event_where(&mut alice_events, |e| {
        matches!(e, Event::State(ConnectionState::Disconnected { .. }))
    })
    .await;
    let first = {
        let (alice, general) = (alice.clone(), general.clone());
        tokio::spawn(async move { alice.send(&general, "offline 1").await })
    };
    let second = {
        let (alice, general) = (alice.clone(), general.clone());
        tokio::spawn(async move { alice.send(&general, "offline 2").await })
    };
    // Let both reach the client's queue before the third.
    for _ in 0..1_000 {
        tokio::task::yield_now().await;
    }
    assert!(
        !first.is_finished() && !second.is_finished(),
        "no connection: they wait"
    );
    let third = alice.send(&general, "offline 3").await.unwrap_err();
    assert_eq!(third, ClientError::QueueFull);
    proxy.set_refusing(false);
    let (a, b) = (
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    );
    assert_eq!(
        (a.seq.get(), b.seq.get()),
        (1, 2),
        "sent in order once connected"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_server_restart_is_signalled_as_a_reset() {
    let first = Server::start(EngineConfig::default()).await;
    let proxy = FaultProxy::start(first.addr).await;
    let (alice, mut alice_events) = fast(proxy.url(), "dev:alice").connect().await.unwrap();
    let general = room("general");
    alice.join(&general).await.unwrap();
    alice.send(&general, "before").await.unwrap();
    messages(&mut alice_events, &general, 1).await;

    // The in-memory server dies and comes back empty.
    first.kill();
    proxy.cut_all();
    let second = Server::start(EngineConfig::default()).await;
    proxy.set_upstream(second.addr);
    let reset = event_where(&mut alice_events, |e| matches!(e, Event::Reset(_))).await;
    let Event::Reset(reset) = reset else {
        unreachable!()
    };
    assert_eq!(reset.room, general);
    assert_eq!(
        reset.epoch, None,
        "not a member of anything on the new server"
    );
    // Rejoining starts the room afresh.
    let state = alice.join(&general).await.unwrap();
    assert_eq!(state.seq, Seq::ZERO);
    alice.send(&general, "after").await.unwrap();
    assert_eq!(
        messages(&mut alice_events, &general, 1).await,
        [(1, "after".to_owned())]
    );
    second.stop().await;
}

/// An application may await a request inside its event loop, even with a tiny event
/// buffer: the client keeps reading while a reply is awaited.
#[tokio::test]
async fn awaiting_a_request_inside_the_event_loop_does_not_stall_the_client() {
    let server = Server::start(EngineConfig::default()).await;
    let (alice, mut alice_events) = ClientBuilder::new(server.url(), "dev:alice")
        .event_buffer(2)
        .connect()
        .await
        .unwrap();
    let (bob, _bob_events) = chat_client::connect(server.url(), "dev:bob").await.unwrap();
    let general = room("general");
    alice.join(&general).await.unwrap();
    bob.join(&general).await.unwrap();
    for i in 0..100 {
        bob.send(&general, format!("m{i}")).await.unwrap();
    }
    let mut read = 0;
    while read < 100 {
        let event = tokio::time::timeout(WAIT, alice_events.next())
            .await
            .expect("the client stalled")
            .unwrap();
        if let Event::Message(m) = event {
            // A request awaited right here, with events still arriving behind it.
            alice.mark_read(&general, m.seq).await.unwrap();
            read += 1;
        }
    }
    server.stop().await;
}

/// A room the client follows only because someone else made it a member (a `to` send)
/// must not lose messages when the server comes back with a new log for it: the client
/// either delivers them or says the room was reset.
#[tokio::test]
async fn a_room_joined_elsewhere_is_reset_not_silently_skipped_after_a_restart() {
    let first = Server::start(EngineConfig::default()).await;
    let proxy = FaultProxy::start(first.addr).await;
    let (alice, mut alice_events) = fast(proxy.url(), "dev:alice").connect().await.unwrap();
    let dm = RoomId::direct(&user("alice"), &user("bob"));
    let (bob, _bob_events) = fast(first.url(), "dev:bob").connect().await.unwrap();
    for body in ["one", "two", "three"] {
        bob.send_to(&user("alice"), body).await.unwrap();
    }
    assert_eq!(messages(&mut alice_events, &dm, 3).await.len(), 3);
    drop(bob);

    // The in-memory server dies; alice stays away while bob writes to her on the new one,
    // whose log for the room starts again at seq 1.
    first.kill();
    proxy.set_refusing(true);
    proxy.cut_all();
    let second = Server::start(EngineConfig::default()).await;
    proxy.set_upstream(second.addr);
    let (bob, _bob_events) = fast(second.url(), "dev:bob").connect().await.unwrap();
    bob.send_to(&user("alice"), "after the restart")
        .await
        .unwrap();
    proxy.set_refusing(false);

    let news = event_where(&mut alice_events, |e| match e {
        Event::Message(m) => m.room == dm,
        Event::Reset(r) => r.room == dm,
        _ => false,
    })
    .await;
    match news {
        Event::Message(m) => assert_eq!(m.body, "after the restart"),
        Event::Reset(reset) => assert!(reset.epoch.is_some(), "{reset:?}"),
        _ => unreachable!(),
    }
    drop(alice);
    second.stop().await;
}

/// A request whose frame is over the server's limit (here a body of control characters,
/// six times longer once escaped) fails at once instead of closing the connection on every
/// reconnect; the client goes on.
#[tokio::test]
async fn a_request_over_the_frame_limit_fails_at_once_and_the_client_goes_on() {
    let server = Server::start(EngineConfig::default()).await;
    let (alice, mut alice_events) = fast(server.url(), "dev:alice").connect().await.unwrap();
    let general = room("general");
    alice.join(&general).await.unwrap();
    let escaped = "\u{1}".repeat(16_000);
    match alice.send(&general, escaped).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::TooLarge),
        other => panic!("expected too_large, got {other:?}"),
    }
    alice.send(&general, "still here").await.unwrap();
    assert_eq!(
        messages(&mut alice_events, &general, 1).await,
        [(1, "still here".to_owned())]
    );
    server.stop().await;
}
