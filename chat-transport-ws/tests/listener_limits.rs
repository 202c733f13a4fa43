//! The standalone listener's own limits: the connection cap is refused before the upgrade,
//! and a TCP connection that never completes the handshake is dropped at its deadline.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chat_core::EngineConfig;
use support::{Client, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error;

#[tokio::test]
async fn connections_beyond_the_cap_get_503_before_the_upgrade() {
    let mut config = EngineConfig::default();
    config.max_connections = 2;
    let server = TestServer::with_config(config).await;
    let mut alice = server.client("alice").await;
    let _bob = server.client("bob").await;
    match tokio_tungstenite::connect_async(server.url()).await {
        Err(Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("a third connection must be refused with 503, got {other:?}"),
    }
    // The two admitted keep working, and a place frees up when one leaves.
    alice.ok(serde_json::json!({"type": "ping"})).await;
    drop(alice);
    let mut carol = None;
    for _ in 0..1_000 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(server.url()).await {
            carol = Some(ws);
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        carol.is_some(),
        "the place of a closed connection is given back"
    );
    server.stop().await;
}

#[tokio::test]
async fn other_paths_get_404() {
    let server = TestServer::start().await;
    match tokio_tungstenite::connect_async(format!("ws://{}/elsewhere", server.addr)).await {
        Err(Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
    let mut ok = Client::connect(&server.url()).await;
    ok.hello("alice", serde_json::json!({})).await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_handshake_that_never_completes_is_dropped_after_10_s() {
    let server = TestServer::start().await;
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    // Half a request line, then nothing.
    stalled
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(60), stalled.read(&mut buf)).await;
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the server should hang up: {read:?}"
    );
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
        "dropped after {waited:?}, not at the 10 s handshake deadline"
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_also_closes_connections_that_have_not_said_hello() {
    let server = TestServer::start().await;
    let mut quiet = Client::connect(&server.url()).await;
    let mut chatting = server.client("alice").await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(quiet.closed().await, Some(1001));
    assert_eq!(chatting.closed().await, Some(1001));
    tokio::time::timeout(Duration::from_secs(3), stopping)
        .await
        .expect("the server stops without waiting out its grace period")
        .unwrap();
}
