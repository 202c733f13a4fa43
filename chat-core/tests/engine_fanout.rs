//! The engine driven in process through its Stream/Sink interface, without sockets: what
//! only the inside can show.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_core::auth::DevAuthenticator;
use chat_core::engine::{Inbound, Outbound, Peer};
use chat_core::protocol::Encoded;
use chat_core::{Engine, EngineConfig};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};

/// A connection as the engine sees it: frames in, frames out.
struct Conn {
    to_engine: mpsc::Sender<Inbound>,
    from_engine: mpsc::Receiver<Outbound>,
    task: tokio::task::JoinHandle<()>,
}

impl Conn {
    fn open(engine: &Engine) -> Conn {
        let (to_engine, inbound) = mpsc::channel(64);
        let (outbound, from_engine) = mpsc::channel(1024);
        let admission = engine.admit().unwrap();
        let engine = engine.clone();
        let task = tokio::spawn(async move {
            engine
                .serve(admission, Peer::default(), inbound, outbound)
                .await;
        });
        Conn {
            to_engine,
            from_engine,
            task,
        }
    }

    async fn send(&mut self, frame: Value) {
        self.to_engine
            .send(Inbound::Text(Bytes::from(frame.to_string())))
            .await
            .unwrap();
    }

    async fn next_frame(&mut self) -> Encoded {
        loop {
            let item = tokio::time::timeout(Duration::from_secs(10), self.from_engine.next())
                .await
                .unwrap()
                .expect("the engine closed the sink");
            if let Outbound::Frame(frame) = item {
                return frame;
            }
        }
    }

    /// The next frame whose JSON satisfies `pick`.
    async fn frame_where(&mut self, pick: impl Fn(&Value) -> bool) -> (Encoded, Value) {
        loop {
            let frame = self.next_frame().await;
            let value: Value = serde_json::from_slice(frame.as_bytes()).unwrap();
            if pick(&value) {
                return (frame, value);
            }
        }
    }

    async fn hello_and_join(&mut self, user: &str, room: &str) {
        self.send(json!({"type":"hello","id":1,"token":format!("dev:{user}")}))
            .await;
        self.frame_where(|v| v["id"] == 1).await;
        self.send(json!({"type":"join","id":2,"room":room})).await;
        self.frame_where(|v| v["id"] == 2).await;
    }
}

fn engine() -> Engine {
    let store = Arc::new(chat_store_memory::MemoryStore::new());
    Engine::builder(
        store.clone(),
        store,
        Arc::new(chat_store_memory::MemoryPresence::default()),
        Arc::new(DevAuthenticator),
    )
    .config(EngineConfig::default())
    .build()
}

/// One message, many recipients, one serialization: every recipient's frame is the same
/// buffer, not a copy.
#[tokio::test]
async fn a_message_is_encoded_once_for_every_recipient() {
    let engine = engine();
    let mut members = Vec::new();
    for i in 0..5 {
        let mut conn = Conn::open(&engine);
        conn.hello_and_join(&format!("user{i}"), "general").await;
        members.push(conn);
    }
    members[0]
        .send(json!({"type":"send","id":3,"room":"general","cid":"c-1","body":"hello all"}))
        .await;
    let mut pointers = Vec::new();
    for member in &mut members {
        let (frame, value) = member.frame_where(|v| v["type"] == "message").await;
        assert_eq!(value["body"], "hello all");
        pointers.push(frame.as_bytes().as_ptr());
    }
    assert!(
        pointers.windows(2).all(|w| w[0] == w[1]),
        "each recipient got its own serialization: {pointers:?}"
    );
}

/// A transport may drop a connection's future (an aborted task, a server shutting down
/// past its grace): the session still ends — unregistered, out of its rooms, offline.
#[tokio::test]
async fn a_dropped_serve_future_still_ends_the_session() {
    let engine = engine();
    let mut alice = Conn::open(&engine);
    alice.hello_and_join("alice", "general").await;
    let mut bob = Conn::open(&engine);
    bob.hello_and_join("bob", "general").await;
    assert_eq!(engine.connections(), 2);
    alice.task.abort();
    let (_, offline) = bob
        .frame_where(|v| {
            v["type"] == "presence" && v["user"] == "alice" && v["status"] == "offline"
        })
        .await;
    assert!(offline["last_seen"].is_u64());
    assert_eq!(
        engine.connections(),
        1,
        "the aborted session is unregistered"
    );
    bob.send(json!({"type":"members","id":9,"room":"general"}))
        .await;
    let (_, members) = bob.frame_where(|v| v["id"] == 9).await;
    let alice_entry = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "alice")
        .unwrap()
        .clone();
    assert_eq!(alice_entry["status"], "offline");
}
