//! A chat server on 127.0.0.1:0 with the in-memory backends, and a plain WebSocket client
//! (tokio-tungstenite + serde_json, not the project's SDK) speaking raw protocol v1.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_core::auth::{Authenticator, DevAuthenticator};
use chat_core::{Clock, Engine, EngineConfig, MessageStore};
use chat_store_memory::{MemoryPresence, MemoryStore};
use chat_transport_ws::{WsConfig, WsServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame that must come.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Engine,
    pub store: Arc<MemoryStore>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with_config(EngineConfig::default()).await
    }

    pub async fn with_config(config: EngineConfig) -> TestServer {
        TestServer::with_store(config, |store| store).await
    }

    /// A server whose `MessageStore` is `wrap(memory store)` (to inject failures); delivery
    /// cursors stay on the memory store.
    pub async fn with_store(
        config: EngineConfig,
        wrap: impl FnOnce(Arc<MemoryStore>) -> Arc<dyn MessageStore>,
    ) -> TestServer {
        let auth = Arc::new(DevAuthenticator);
        TestServer::build(config, WsConfig::default(), wrap, auth, Clock::tokio()).await
    }

    /// A server with these listener settings.
    pub async fn with_ws_config(ws: WsConfig) -> TestServer {
        let auth = Arc::new(DevAuthenticator);
        let config = EngineConfig::default();
        TestServer::build(config, ws, |store| store, auth, Clock::tokio()).await
    }

    /// A server with its own authenticator, and the clock it shares with the engine.
    pub async fn with_authenticator(
        authenticator: Arc<dyn Authenticator>,
        clock: Clock,
    ) -> TestServer {
        let (config, ws) = (EngineConfig::default(), WsConfig::default());
        TestServer::build(config, ws, |store| store, authenticator, clock).await
    }

    async fn build(
        config: EngineConfig,
        ws: WsConfig,
        wrap: impl FnOnce(Arc<MemoryStore>) -> Arc<dyn MessageStore>,
        authenticator: Arc<dyn Authenticator>,
        clock: Clock,
    ) -> TestServer {
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::builder(
            wrap(store.clone()),
            store.clone(),
            Arc::new(MemoryPresence::default()),
            authenticator,
        )
        .config(config)
        .clock(clock)
        .build();
        let server = WsServer::bind("127.0.0.1:0", engine.clone())
            .await
            .unwrap()
            .with_config(ws);
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            engine,
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A client that said hello as `user`.
    pub async fn client(&self, user: &str) -> Client {
        let mut client = Client::connect(&self.url()).await;
        client.hello(user, json!({})).await;
        client
    }

    /// Graceful shutdown; returns when the server stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }
}

/// What a client read.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Frame(Value),
    Closed(Option<u16>),
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Frames read while waiting for something else, oldest first.
    pub backlog: VecDeque<Value>,
    /// The `hello` reply.
    pub hello: Value,
    /// How long a read waits (tests under paused time wait longer than heartbeats).
    pub wait: Duration,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Client::from_stream(ws)
    }

    /// A client on a WebSocket the test opened itself.
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client {
            ws,
            next_id: 1_000,
            backlog: VecDeque::new(),
            hello: Value::Null,
            wait: WAIT,
        }
    }

    /// Says hello as `user` with `resume`; panics unless it is accepted.
    pub async fn hello(&mut self, user: &str, resume: Value) -> Value {
        let reply = self
            .request(json!({"type": "hello", "token": format!("dev:{user}"), "resume": resume}))
            .await;
        assert_eq!(reply["type"], "ok", "hello refused: {reply}");
        self.hello = reply.clone();
        reply
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::Text(text.into().into()))
            .await
            .unwrap();
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next frame or the close, straight from the socket.
    pub async fn read(&mut self) -> Event {
        loop {
            let next = tokio::time::timeout(self.wait, self.ws.next())
                .await
                .expect("nothing arrived in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Event::Frame(serde_json::from_str(&text).unwrap());
                }
                Some(Ok(Message::Close(frame))) => {
                    return Event::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(Message::Binary(_))) => panic!("the server sent a binary frame"),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Event::Closed(None),
            }
        }
    }

    /// The next frame (backlog first); panics on a close.
    pub async fn recv(&mut self) -> Value {
        if let Some(frame) = self.backlog.pop_front() {
            return frame;
        }
        match self.read().await {
            Event::Frame(frame) => frame,
            Event::Closed(code) => panic!("closed ({code:?}) while waiting for a frame"),
        }
    }

    /// Sends `request` with a fresh id and returns its reply; pushes read meanwhile go to
    /// the backlog.
    pub async fn request(&mut self, mut request: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        request["id"] = json!(id);
        self.send_json(request).await;
        self.reply(id).await
    }

    /// The reply with `id`; other frames read meanwhile go to the backlog.
    pub async fn reply(&mut self, id: u64) -> Value {
        if let Some(at) = self.backlog.iter().position(|f| f["id"] == json!(id)) {
            return self.backlog.remove(at).unwrap();
        }
        loop {
            match self.read().await {
                Event::Frame(frame) if frame["id"] == json!(id) => return frame,
                Event::Frame(frame) => self.backlog.push_back(frame),
                Event::Closed(code) => panic!("closed ({code:?}) while waiting for reply {id}"),
            }
        }
    }

    /// The request's reply, which must be `ok`.
    pub async fn ok(&mut self, request: Value) -> Value {
        let reply = self.request(request.clone()).await;
        assert_eq!(reply["type"], "ok", "{request} was refused: {reply}");
        reply
    }

    /// The request's reply, which must be an error with `code`.
    pub async fn refused(&mut self, request: Value, code: &str) -> Value {
        let reply = self.request(request.clone()).await;
        assert_eq!(
            reply["type"], "error",
            "{request} should be refused: {reply}"
        );
        assert_eq!(reply["code"], code, "{request}: {reply}");
        reply
    }

    /// The next push of `kind` (backlog first); other pushes stay in the backlog.
    pub async fn push(&mut self, kind: &str) -> Value {
        if let Some(at) = self
            .backlog
            .iter()
            .position(|f| f["type"] == kind && f.get("id").is_none())
        {
            return self.backlog.remove(at).unwrap();
        }
        loop {
            match self.read().await {
                Event::Frame(frame) if frame["type"] == kind && frame.get("id").is_none() => {
                    return frame;
                }
                Event::Frame(frame) => self.backlog.push_back(frame),
                Event::Closed(code) => panic!("closed ({code:?}) while waiting for a {kind} push"),
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Event::Closed(code) = self.read().await {
                return code;
            }
        }
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.ok(json!({"type": "join", "room": room})).await
    }

    /// Sends `body` to `room` with `cid`; returns the `ok`.
    pub async fn say(&mut self, room: &str, cid: &str, body: &str) -> Value {
        self.ok(json!({"type": "send", "room": room, "cid": cid, "body": body}))
            .await
    }

    /// Every `message` push of `room` among the frames read until `until` returns true.
    pub async fn messages_until(
        &mut self,
        room: &str,
        until: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let mut got = Vec::new();
        loop {
            let frame = self.recv().await;
            if frame["type"] == "message" && frame["room"] == room {
                let done = until(&frame);
                got.push(frame);
                if done {
                    return got;
                }
            }
        }
    }
}

pub fn seqs(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}
