//! The standalone listener's own limits: the connection caps (total and per IP address)
//! and the origin allowlist are enforced before the upgrade, and a TCP connection that
//! never completes the handshake is dropped at its deadline.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chat_core::EngineConfig;
use chat_transport_ws::WsConfig;
use support::{Client, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

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

/// A WebSocket handshake from `source` (a loopback address), with an optional `Origin`.
async fn handshake_from(
    server: &TestServer,
    source: &str,
    origin: Option<&str>,
) -> Result<Client, u16> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let mut request = server.url().into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await {
        Ok((ws, _)) => Ok(Client::from_stream(ws)),
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("handshake failed otherwise: {e}"),
    }
}

#[tokio::test]
async fn connections_per_ip_address_are_capped_before_the_request_is_read() {
    let mut ws = WsConfig::default();
    ws.max_connections_per_ip = 3;
    let server = TestServer::with_ws_config(ws).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(handshake_from(&server, "127.0.0.3", None).await.unwrap());
    }
    // The fourth from the same address is refused; another address is not.
    let refused = TcpSocket::new_v4().unwrap();
    refused.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut refused = refused.connect(server.addr).await.unwrap();
    let mut answer = String::new();
    refused.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        answer.ends_with("too many connections from this address"),
        "{answer}"
    );
    let mut other = handshake_from(&server, "127.0.0.4", None).await.unwrap();
    other.hello("dave", serde_json::json!({})).await;
    // Those held keep working, and a place frees up when one leaves.
    let mut first = held.remove(0);
    first.hello("alice", serde_json::json!({})).await;
    drop(first);
    let mut again = None;
    for _ in 0..1_000 {
        if let Ok(client) = handshake_from(&server, "127.0.0.3", None).await {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    again
        .expect("the place of a closed connection is given back")
        .hello("erin", serde_json::json!({}))
        .await;
    server.stop().await;
}

#[tokio::test]
async fn only_allowed_origins_may_open_the_websocket() {
    let mut ws = WsConfig::default();
    ws.allowed_origins = vec!["https://chat.example.com".to_owned()];
    let server = TestServer::with_ws_config(ws).await;
    let evil = handshake_from(&server, "127.0.0.1", Some("https://evil.example.net")).await;
    assert_eq!(evil.err(), Some(403));
    let lookalike = handshake_from(
        &server,
        "127.0.0.1",
        Some("https://chat.example.com.evil.net"),
    )
    .await;
    assert_eq!(lookalike.err(), Some(403));
    let mut allowed = handshake_from(&server, "127.0.0.1", Some("HTTPS://Chat.Example.com"))
        .await
        .unwrap();
    allowed.hello("alice", serde_json::json!({})).await;
    // Not from a browser: no Origin, not concerned.
    let mut tool = handshake_from(&server, "127.0.0.1", None).await.unwrap();
    tool.hello("bob", serde_json::json!({})).await;
    server.stop().await;
}
