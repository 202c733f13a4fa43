//! Two demo server processes on one PostgreSQL database, senders on both, one room: the
//! database is the sequencer, so the room's log is gapless and every member — whichever
//! server it is connected to — sees the same messages at the same seqs, in the same order.
//!
//! The two servers share no broker: each pushes its own senders' messages live and reads
//! the others' from the store when it sees a gap (the engine's gap repair). What each member
//! received live must be gapless from seq 1; the rest it reads with `history`. Runs against
//! `CHAT_TEST_POSTGRES_URL` in a fresh schema; skipped with a reason when it is not set.

mod support;

#[path = "../../chat-store-sqlite/tests/support/server.rs"]
mod server;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use server::{Server, Ws};
use support::SchemaGuard;

const ROOM: &str = "two-servers";
const SENDERS_PER_SERVER: usize = 4;
const MESSAGES: u64 = 60;
const WINDOW: usize = 4;

/// (seq, from, cid) of a `message` frame.
fn entry(m: &Value) -> (u64, String, String) {
    (
        m["seq"].as_u64().unwrap_or(0),
        m["from"].as_str().unwrap_or_default().to_owned(),
        m["cid"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Sends `MESSAGES` messages with up to `WINDOW` in flight; returns cid → acked seq.
async fn send_all(ws: &mut Ws, user: &str) -> HashMap<String, u64> {
    let mut acked = HashMap::new();
    let mut in_flight = HashMap::new();
    let mut next = 0;
    while acked.len() < MESSAGES as usize {
        while in_flight.len() < WINDOW && next < MESSAGES {
            next += 1;
            let cid = format!("{user}-{next}");
            let id = ws
                .send(json!({"type": "send", "room": ROOM, "cid": cid, "body": cid}))
                .await
                .expect("send");
            in_flight.insert(id, cid);
        }
        let reply = ws.reply().await.expect("a reply");
        assert_eq!(reply["type"], "ok", "{user}: a send was refused: {reply}");
        let cid = in_flight
            .remove(&reply["id"].as_u64().expect("an id"))
            .expect("a reply to a send in flight");
        acked.insert(cid, reply["seq"].as_u64().expect("a seq"));
    }
    acked
}

/// Reads pushes until `total` arrived or none came for a second.
async fn drain(ws: &mut Ws, total: u64) {
    while ws
        .pushes
        .last()
        .map_or(0, |m| m["seq"].as_u64().unwrap_or(0))
        < total
    {
        match tokio::time::timeout(Duration::from_secs(1), ws.frame()).await {
            Ok(Ok(frame)) if frame["type"] == "message" => ws.pushes.push(frame),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("a member's connection ended: {e}"),
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_one_room_one_order() {
    let Some(url) = support::url() else {
        return;
    };
    let Some(binary) = server::server_binary() else {
        return;
    };
    let schema = SchemaGuard::create(&url).await;
    let args = vec!["--postgres".to_owned(), schema.url_with_search_path()];
    let mut servers = [
        Server::start(&binary, &args).await,
        Server::start(&binary, &args).await,
    ];

    // Everyone joins before anyone sends: each member's pushes start at seq 1.
    let mut members = Vec::new();
    for (s, server) in servers.iter().enumerate() {
        for i in 0..=SENDERS_PER_SERVER {
            // The last one on each server only listens.
            let user = if i < SENDERS_PER_SERVER {
                format!("s{s}-sender{i}")
            } else {
                format!("s{s}-listener")
            };
            let mut ws = Ws::connect(&server.url, &user).await.expect("connect");
            ws.request(json!({"type": "join", "room": ROOM}))
                .await
                .expect("join");
            members.push((s, user, ws, i < SENDERS_PER_SERVER));
        }
    }

    let mut tasks = Vec::new();
    for (s, user, mut ws, sends) in members {
        tasks.push(tokio::spawn(async move {
            let acked = if sends {
                send_all(&mut ws, &user).await
            } else {
                HashMap::new()
            };
            (s, user, ws, acked)
        }));
    }
    let mut members = Vec::new();
    let mut acks: HashMap<(String, String), u64> = HashMap::new();
    for task in tasks {
        let (s, user, ws, acked) = task.await.expect("a member panicked");
        for (cid, seq) in acked {
            acks.insert((user.clone(), cid), seq);
        }
        members.push((s, user, ws));
    }
    let total = (2 * SENDERS_PER_SERVER) as u64 * MESSAGES;
    assert_eq!(acks.len() as u64, total, "every send was acked");
    let mut seqs: Vec<u64> = acks.values().copied().collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "the acks of both servers' senders are one gapless sequence"
    );

    let mut views = Vec::new();
    let mut live_counts = Vec::new();
    for (s, user, ws) in &mut members {
        drain(ws, total).await;
        let live: Vec<_> = ws.pushes.iter().map(entry).collect();
        let live_seqs: Vec<u64> = live.iter().map(|e| e.0).collect();
        assert_eq!(
            live_seqs,
            (1..=live.len() as u64).collect::<Vec<_>>(),
            "{user} on server {s}: live pushes must be gapless from 1"
        );
        let after = live.len() as u64;
        let mut view = live.clone();
        let mut more = true;
        let mut from = after;
        while more {
            let page = ws
                .request(json!({"type": "history", "room": ROOM, "after": from, "limit": 500}))
                .await
                .expect("history");
            let messages = page["messages"].as_array().cloned().unwrap_or_default();
            from = messages.last().map_or(from, |m| entry(m).0);
            view.extend(messages.iter().map(entry));
            more = page["more"] == json!(true);
        }
        live_counts.push(format!("{user}@{s}: {} live", live.len()));
        views.push((user.clone(), view));
    }
    let (first_user, first) = &views[0];
    assert_eq!(first.len() as u64, total, "{first_user} sees every message");
    for (user, view) in &views {
        assert_eq!(view, first, "{user} sees another order than {first_user}");
    }
    for (seq, from, cid) in first {
        assert_eq!(
            acks.get(&(from.clone(), cid.clone())),
            Some(seq),
            "{from}/{cid} is at seq {seq}, not where its ack said"
        );
    }
    // The senders of both servers interleave in the one order.
    let switches = first
        .windows(2)
        .filter(|w| w[0].1.starts_with("s0-") != w[1].1.starts_with("s0-"))
        .count();
    assert!(
        switches > 2,
        "the two servers' messages did not interleave ({switches} switches)"
    );
    println!(
        "two servers: {switches} switches between the servers' senders; {total} messages from {} senders on 2 servers, {} members agree; {}",
        2 * SENDERS_PER_SERVER,
        views.len(),
        live_counts.join(", ")
    );
    for server in &mut servers {
        server.kill().await;
    }
}
