//! The engine driven in process through its Stream/Sink interface, without sockets: what
//! only the inside can show.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use chat_core::auth::DevAuthenticator;
use chat_core::{Engine, EngineConfig};
use serde_json::json;
use support::Conn;

fn engine() -> Engine {
    chat_store_memory::engine_builder(Arc::new(DevAuthenticator))
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
        conn.hello(&format!("user{i}")).await;
        conn.join("general").await;
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
    alice.hello("alice").await;
    alice.join("general").await;
    let mut bob = Conn::open(&engine);
    bob.hello("bob").await;
    bob.join("general").await;
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
