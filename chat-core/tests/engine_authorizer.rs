//! A custom [`Authorizer`] set on the builder: the engine asks it, and the direct-room rule
//! holds whatever it answers.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use chat_core::auth::{Action, Authorizer, DevAuthenticator};
use chat_core::{Engine, Error, Result, RoomId, UserId};
use serde_json::json;
use support::Conn;

/// Nobody sends in `#announcements`; everything else is allowed, direct rooms included.
#[derive(Debug)]
struct ReadOnlyAnnouncements;

#[async_trait]
impl Authorizer for ReadOnlyAnnouncements {
    async fn authorize(&self, _user: &UserId, room: &RoomId, action: Action) -> Result<()> {
        if room.as_str() == "announcements" && action == Action::Send {
            return Err(Error::Forbidden("announcements are read-only".to_owned()));
        }
        Ok(())
    }
}

fn engine() -> Engine {
    chat_store_memory::engine_builder(Arc::new(DevAuthenticator))
        .authorizer(Arc::new(ReadOnlyAnnouncements))
        .build()
}

#[tokio::test]
async fn the_engine_asks_the_authorizer_it_was_given() {
    let engine = engine();
    let mut alice = Conn::open(&engine);
    alice.hello("alice").await;
    assert_eq!(alice.join("announcements").await["type"], "ok");
    alice
        .send(json!({"type":"send","id":3,"room":"announcements","cid":"c-1","body":"hi"}))
        .await;
    let refused = alice.value_where(|v| v["id"] == 3).await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "forbidden");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("announcements are read-only"),
        "{refused}"
    );
    alice
        .send(json!({"type":"history","id":4,"room":"announcements"}))
        .await;
    let history = alice.value_where(|v| v["id"] == 4).await;
    assert_eq!(history["messages"], json!([]), "nothing stored");
    // Elsewhere the authorizer allows it.
    alice.join("general").await;
    alice
        .send(json!({"type":"send","id":5,"room":"general","cid":"c-2","body":"hi"}))
        .await;
    assert_eq!(alice.value_where(|v| v["id"] == 5).await["type"], "ok");
}

#[tokio::test]
async fn another_pairs_direct_room_stays_closed_whatever_the_authorizer_says() {
    let engine = engine();
    let mut mallory = Conn::open(&engine);
    mallory.hello("mallory").await;
    let refused = mallory.join("dm:alice:bob").await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "forbidden");
    assert_eq!(mallory.join("dm:alice:mallory").await["type"], "ok");
}
