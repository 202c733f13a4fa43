//! The chat route mounted in an axum application beside other routes: plain HTTP still
//! works, and protocol v1 runs over `/ws` as it does on the standalone listener.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use chat_core::auth::DevAuthenticator;
use chat_core::{Clock, Engine};
use serde_json::json;
use support::{Client, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An axum app with `GET /health` and the chat route at `/ws`, served on 127.0.0.1:0.
struct App {
    addr: SocketAddr,
    engine: Engine,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl App {
    async fn start() -> App {
        let engine = chat_store_memory::engine_builder(Arc::new(DevAuthenticator))
            .clock(Clock::tokio())
            .build();
        let app: Router = Router::new()
            .route("/health", get(|| async { "ok" }))
            .merge(chat_transport_ws::axum::router(engine.clone(), "/ws"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        App {
            addr,
            engine,
            stop,
            task,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A WebSocket client through the axum route that said hello as `user`.
    async fn client(&self, user: &str) -> Client {
        let mut client = Client::connect(&self.url()).await;
        client.hello(user, json!({})).await;
        client
    }

    /// A raw HTTP/1.1 GET of `path`: the whole response as text.
    async fn get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .expect("the HTTP response did not end in time")
            .unwrap();
        String::from_utf8(response).unwrap()
    }

    /// Shuts the engine and the HTTP server down.
    async fn stop(self) {
        self.engine.shutdown();
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("axum::serve did not stop in time")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn health_route_answers_beside_the_chat_route() {
    let app = App::start().await;
    let response = app.get("/health").await;
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "GET /health: {response}"
    );
    assert!(response.ends_with("\r\n\r\nok"), "GET /health: {response}");

    let missing = app.get("/nowhere").await;
    assert!(
        missing.starts_with("HTTP/1.1 404"),
        "GET /nowhere: {missing}"
    );
    app.stop().await;
}

#[tokio::test]
async fn two_clients_hello_join_and_exchange_a_message_through_the_axum_route() {
    let app = App::start().await;
    let mut alice = app.client("alice").await;
    assert_eq!(alice.hello["user"], "alice");
    assert_eq!(alice.hello["heartbeat_ms"], 25_000);
    let mut bob = app.client("bob").await;

    assert_eq!(alice.join("general").await["seq"], 0);
    bob.join("general").await;
    let joined = alice.push("member").await;
    assert_eq!(joined["user"], "alice", "{joined}");
    let joined = alice.push("member").await;
    assert_eq!(
        joined,
        json!({"type": "member", "room": "general", "user": "bob", "action": "join"})
    );

    let sent = alice.say("general", "c-1", "hello bob").await;
    assert_eq!(sent["seq"], 1, "{sent}");
    let got = bob.push("message").await;
    assert_eq!(
        (
            got["room"].clone(),
            got["seq"].clone(),
            got["from"].clone(),
            got["cid"].clone(),
            got["body"].clone(),
            got["ts"].clone(),
        ),
        (
            json!("general"),
            json!(1),
            json!("alice"),
            json!("c-1"),
            json!("hello bob"),
            sent["ts"].clone(),
        ),
        "{got}"
    );
    assert_eq!(alice.push("message").await["cid"], "c-1");

    let reply = bob.say("general", "c-1", "hi alice").await;
    assert_eq!(reply["seq"], 2, "{reply}");
    assert_eq!(alice.push("message").await["body"], "hi alice");
    app.stop().await;
}

#[tokio::test]
async fn a_message_over_the_frame_limit_closes_with_1009_through_the_axum_route() {
    let app = App::start().await;
    let mut alice = app.client("alice").await;

    // Exactly at the limit (65,536 bytes): still served.
    let head = r#"{"type":"ping","id":7,"pad":""#;
    let tail = r#""}"#;
    let at_limit = format!(
        "{head}{}{tail}",
        "x".repeat(65_536 - head.len() - tail.len())
    );
    assert_eq!(at_limit.len(), 65_536);
    alice.send_text(at_limit).await;
    let reply = alice.reply(7).await;
    assert_eq!(
        reply["type"], "ok",
        "a message at the limit is served: {reply}"
    );

    // One byte over: closed with 1009.
    let over = format!(
        "{head}{}{tail}",
        "x".repeat(65_537 - head.len() - tail.len())
    );
    assert_eq!(over.len(), 65_537);
    alice.send_text(over).await;
    assert_eq!(alice.closed().await, Some(1009));
    app.stop().await;
}
