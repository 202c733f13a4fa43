//! End to end: an engine on the in-memory backends with a `JwtAuthenticator`, served by
//! `WsServer` on 127.0.0.1:0, and a plain WebSocket client speaking protocol v1. A good
//! token's `hello` is answered `ok` for its user; a bad one gets `error` `unauthorized`
//! and close 4001.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_auth_jwt::JwtAuthenticator;
use chat_transport_ws::WsServer;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use support::*;

/// How long a test waits for a frame that must come.
const WAIT: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(auth: JwtAuthenticator) -> Server {
        let engine = chat_store_memory::engine_builder(Arc::new(auth)).build();
        let server = WsServer::bind("127.0.0.1:0", engine).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        Server { addr, stop, task }
    }

    async fn connect(&self) -> Ws {
        let url = format!("ws://{}/ws", self.addr);
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap()
            .unwrap();
        Ws(ws)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

struct Ws(WebSocketStream<MaybeTlsStream<TcpStream>>);

#[derive(Debug, PartialEq)]
enum Event {
    Frame(Value),
    Closed(Option<u16>),
}

impl Ws {
    async fn send(&mut self, frame: Value) {
        self.0
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    async fn read(&mut self) -> Event {
        loop {
            let next = tokio::time::timeout(WAIT, self.0.next())
                .await
                .expect("nothing arrived in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Event::Frame(serde_json::from_str(&text).unwrap());
                }
                Some(Ok(Message::Close(frame))) => {
                    return Event::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Event::Closed(None),
            }
        }
    }

    async fn frame(&mut self) -> Value {
        match self.read().await {
            Event::Frame(frame) => frame,
            closed => panic!("expected a frame, got {closed:?}"),
        }
    }

    /// Sends `request` and returns the reply with its id (pushes in between are skipped).
    async fn request(&mut self, request: Value) -> Value {
        let id = request["id"].clone();
        self.send(request).await;
        loop {
            let frame = self.frame().await;
            if frame["id"] == id {
                return frame;
            }
        }
    }
}

/// Says hello with `token` and expects `ok` for `user`.
async fn hello_ok(server: &Server, token: &str, user: &str) -> Ws {
    let mut ws = server.connect().await;
    let reply = ws
        .request(json!({"type": "hello", "id": 1, "token": token}))
        .await;
    assert_eq!(reply["type"], "ok", "hello refused: {reply}");
    assert_eq!(reply["user"], user, "{reply}");
    ws
}

/// Says hello with `token` and expects `error` `unauthorized`, then close 4001.
async fn hello_refused(server: &Server, label: &str, token: &str) {
    let mut ws = server.connect().await;
    ws.send(json!({"type": "hello", "id": 1, "token": token}))
        .await;
    let reply = ws.frame().await;
    assert_eq!(reply["type"], "error", "{label}: {reply}");
    assert_eq!(reply["code"], "unauthorized", "{label}: {reply}");
    assert_eq!(reply["id"], 1, "{label}: {reply}");
    assert_eq!(ws.read().await, Event::Closed(Some(4001)), "{label}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_token_says_hello_as_its_user_and_a_bad_one_is_closed_4001() {
    let server = Server::start(hs_auth().audience("chat")).await;
    let good = with(claims("alice"), "aud", json!("chat"));

    let mut alice = hello_ok(&server, &hs256(&good), "alice").await;
    // The session is alice's: what she sends is from alice.
    let joined = alice
        .request(json!({"type": "join", "id": 2, "room": "general"}))
        .await;
    assert_eq!(joined["type"], "ok", "{joined}");
    let sent = alice
        .request(json!({"type": "send", "id": 3, "room": "general", "cid": "c-1", "body": "hi"}))
        .await;
    assert_eq!(sent["type"], "ok", "{sent}");
    let history = alice
        .request(json!({"type": "history", "id": 4, "room": "general"}))
        .await;
    assert_eq!(history["messages"][0]["from"], "alice", "{history}");

    let rs_public_as_secret = EncodingKey::from_secret(rsa().public_pem.as_bytes());
    let bad = [
        (
            "expired",
            hs256(&with(good.clone(), "exp", json!(now() - 3_600))),
        ),
        (
            "wrong secret",
            mint(
                Algorithm::HS256,
                &EncodingKey::from_secret(OTHER_SECRET),
                &good,
            ),
        ),
        (
            "wrong aud",
            hs256(&with(good.clone(), "aud", json!("billing"))),
        ),
        (
            "alg none",
            unsigned_raw(r#"{"alg":"none"}"#, &good.to_string(), ""),
        ),
        ("RS256 token", rs256(&good)),
        (
            "RSA public PEM as HMAC secret",
            mint(Algorithm::HS256, &rs_public_as_secret, &good),
        ),
        (
            "invalid user id",
            hs256(&with(good.clone(), "sub", json!("al ice"))),
        ),
        ("garbage", "not a token".to_owned()),
        ("dev token", "dev:alice".to_owned()),
        ("empty", String::new()),
    ];
    for (label, token) in &bad {
        hello_refused(&server, label, token).await;
    }

    // alice's session is unaffected by all that.
    let pong = alice.request(json!({"type": "ping", "id": 5})).await;
    assert_eq!(pong["type"], "ok", "{pong}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_eddsa_servers_take_their_own_tokens_only() {
    let rs = Server::start(rs_auth()).await;
    hello_ok(&rs, &rs256(&claims("bob")), "bob").await;
    let forged = mint(
        Algorithm::HS256,
        &EncodingKey::from_secret(rsa().public_pem.as_bytes()),
        &claims("bob"),
    );
    hello_refused(&rs, "RS256 to HS256 confusion", &forged).await;
    hello_refused(&rs, "EdDSA token", &eddsa(&claims("bob"))).await;
    rs.stop().await;

    let ed = Server::start(ed_auth()).await;
    hello_ok(&ed, &eddsa(&claims("carol")), "carol").await;
    hello_refused(&ed, "RS256 token", &rs256(&claims("carol"))).await;
    hello_refused(&ed, "HS256 token", &hs256(&claims("carol"))).await;
    ed.stop().await;
}
