//! Every error code and close code of protocol v1 (but 4008, slow consumers), over a real
//! WebSocket: what each refusal looks like on the wire, which `id` it carries, that it
//! never changes stored state, and that after `hello` it never closes the connection.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_core::store::{Appended, HistoryPage, HistoryQuery, RoomInfo};
use chat_core::{EngineConfig, Error, MessageStore, NewMessage, Result, RoomId, UserId};
use chat_store_memory::MemoryStore;
use futures_util::SinkExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use support::{Client, Event, TestServer, seqs};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Whether `frame` is a reply (`ok` or `error`) rather than a push.
fn is_reply(frame: &Value) -> bool {
    frame["type"] == "ok" || frame["type"] == "error"
}

/// Sends `text` as it is, then a `ping` as a marker, and returns every reply that came
/// before the marker's. Replies come in request order, so these are the replies to `text`
/// (the marker's `ok` also proves the connection is still open).
async fn replies_to(client: &mut Client, text: &str) -> Vec<Value> {
    client.send_text(text).await;
    client.ok(json!({"type": "ping"})).await;
    let mut replies = Vec::new();
    client.backlog.retain(|frame| {
        if is_reply(frame) {
            replies.push(frame.clone());
            false
        } else {
            true
        }
    });
    replies
}

/// The one reply to `text`, which must be an `error` with `code` and a text `message`.
async fn refusal(client: &mut Client, text: &str, code: &str) -> Value {
    let replies = replies_to(client, text).await;
    assert_eq!(
        replies.len(),
        1,
        "{text}: exactly one reply, got {replies:?}"
    );
    let reply = replies.into_iter().next().unwrap();
    assert_eq!(reply["type"], "error", "{text} should be refused: {reply}");
    assert_eq!(reply["code"], code, "{text}: {reply}");
    assert!(reply["message"].is_string(), "{text}: {reply}");
    reply
}

/// `text` is refused with `bad_request` and an error WITHOUT `id`.
async fn bad_request_without_id(client: &mut Client, text: &str) {
    let reply = refusal(client, text, "bad_request").await;
    assert!(
        reply.get("id").is_none(),
        "{text} has no usable id; its error must carry none: {reply}"
    );
}

/// `text` is refused with `code` and an error carrying `id`.
async fn refused_with_id(client: &mut Client, text: &str, id: u64, code: &str) {
    let reply = refusal(client, text, code).await;
    assert_eq!(
        reply["id"],
        json!(id),
        "{text}: the usable id comes back: {reply}"
    );
}

/// The connection still works: a `send` to `room` is stored, and its push comes back.
async fn still_works(client: &mut Client, room: &str, cid: &str) -> Value {
    let sent = client.say(room, cid, "still here").await;
    let pushed = client.messages_until(room, |m| m["cid"] == cid).await;
    let own = pushed.last().unwrap();
    assert_eq!(own["seq"], sent["seq"], "{own}");
    assert_eq!(own["body"], "still here");
    sent
}

/// The messages of `room`'s latest history page, as `client` reads them.
async fn history(client: &mut Client, room: &str) -> Vec<Value> {
    let page = client.ok(json!({"type": "history", "room": room})).await;
    page["messages"].as_array().unwrap().clone()
}

/// Every frame `client` reads (backlog first) up to and including the `message` push
/// with `cid`.
async fn frames_until_message(client: &mut Client, cid: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    for _ in 0..1_000 {
        let frame = client.recv().await;
        let done = frame["type"] == "message" && frame["cid"] == cid;
        seen.push(frame);
        if done {
            return seen;
        }
    }
    panic!("no message {cid} among {seen:?}");
}

fn cids(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["cid"].as_str().unwrap())
        .collect()
}

/// Reads the error a connection gets before `hello`, then its close; both are checked:
/// `unauthorized`, then close 4001. Returns the error.
async fn unauthorized_then_4001(client: &mut Client) -> Value {
    let error = match client.read().await {
        Event::Frame(frame) => frame,
        Event::Closed(code) => panic!("closed ({code:?}) without the unauthorized error"),
    };
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "unauthorized", "{error}");
    assert!(error["message"].is_string(), "{error}");
    assert_eq!(client.closed().await, Some(4001), "after {error}");
    error
}

/// A `MessageStore` that delegates to the memory store, but whose `append` fails while
/// `failing` is set, and panics for a message whose body is `"panic"`.
#[derive(Debug)]
struct FaultyStore {
    inner: Arc<MemoryStore>,
    failing: Arc<AtomicBool>,
}

// Written out as `#[async_trait]` expands it: this crate does not depend on async-trait.
impl MessageStore for FaultyStore {
    fn ensure_room<'s, 'r, 'f>(
        &'s self,
        room: &'r RoomId,
    ) -> BoxFuture<'f, Result<(RoomInfo, bool)>>
    where
        's: 'f,
        'r: 'f,
        Self: 'f,
    {
        self.inner.ensure_room(room)
    }

    fn room<'s, 'r, 'f>(&'s self, room: &'r RoomId) -> BoxFuture<'f, Result<Option<RoomInfo>>>
    where
        's: 'f,
        'r: 'f,
        Self: 'f,
    {
        self.inner.room(room)
    }

    fn append<'s, 'f>(&'s self, message: NewMessage) -> BoxFuture<'f, Result<Appended>>
    where
        's: 'f,
        Self: 'f,
    {
        if self.failing.load(Ordering::SeqCst) {
            return Box::pin(async { Err(Error::backend("test", "down")) });
        }
        if message.body == "panic" {
            return Box::pin(async { panic!("the store panics on a body of \"panic\"") });
        }
        self.inner.append(message)
    }

    fn history<'s, 'r, 'f>(
        &'s self,
        room: &'r RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> BoxFuture<'f, Result<HistoryPage>>
    where
        's: 'f,
        'r: 'f,
        Self: 'f,
    {
        self.inner.history(room, query, limit)
    }

    fn add_member<'s, 'r, 'u, 'f>(
        &'s self,
        room: &'r RoomId,
        user: &'u UserId,
    ) -> BoxFuture<'f, Result<bool>>
    where
        's: 'f,
        'r: 'f,
        'u: 'f,
        Self: 'f,
    {
        self.inner.add_member(room, user)
    }

    fn remove_member<'s, 'r, 'u, 'f>(
        &'s self,
        room: &'r RoomId,
        user: &'u UserId,
    ) -> BoxFuture<'f, Result<bool>>
    where
        's: 'f,
        'r: 'f,
        'u: 'f,
        Self: 'f,
    {
        self.inner.remove_member(room, user)
    }

    fn is_member<'s, 'r, 'u, 'f>(
        &'s self,
        room: &'r RoomId,
        user: &'u UserId,
    ) -> BoxFuture<'f, Result<bool>>
    where
        's: 'f,
        'r: 'f,
        'u: 'f,
        Self: 'f,
    {
        self.inner.is_member(room, user)
    }

    fn members<'s, 'r, 'f>(&'s self, room: &'r RoomId) -> BoxFuture<'f, Result<Vec<UserId>>>
    where
        's: 'f,
        'r: 'f,
        Self: 'f,
    {
        self.inner.members(room)
    }

    fn member_count<'s, 'r, 'f>(&'s self, room: &'r RoomId) -> BoxFuture<'f, Result<usize>>
    where
        's: 'f,
        'r: 'f,
        Self: 'f,
    {
        self.inner.member_count(room)
    }

    fn rooms_of<'s, 'u, 'f>(&'s self, user: &'u UserId) -> BoxFuture<'f, Result<Vec<RoomInfo>>>
    where
        's: 'f,
        'u: 'f,
        Self: 'f,
    {
        self.inner.rooms_of(user)
    }
}

/// A server whose store fails `append` while the returned flag is set.
async fn faulty_server() -> (TestServer, Arc<AtomicBool>) {
    let failing = Arc::new(AtomicBool::new(false));
    let flag = failing.clone();
    let server = TestServer::with_store(EngineConfig::default(), move |inner| {
        Arc::new(FaultyStore {
            inner,
            failing: flag,
        })
    })
    .await;
    (server, failing)
}

// ---------------------------------------------------------------------------------------
// bad_request
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn text_that_is_not_a_json_object_is_a_bad_request_without_id() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    for text in [
        "not json",
        "{\"type\":\"ping\",\"id\":7",
        "",
        "{} {}",
        "[1,2]",
        "[{\"type\":\"ping\",\"id\":7}]",
        "\"ping\"",
        "42",
        "7.5",
        "true",
        "null",
    ] {
        bad_request_without_id(&mut alice, text).await;
    }
    still_works(&mut alice, "general", "after-malformed").await;
    server.stop().await;
}

#[tokio::test]
async fn a_refused_frame_with_a_usable_id_gets_its_id_back() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    let long_room = "r".repeat(129);
    let long_user = "u".repeat(65);
    let long_cid = "c".repeat(65);
    let cases: Vec<(&str, Value)> = vec![
        ("unknown type", json!({"type": "nope", "id": 11})),
        ("missing type", json!({"id": 12, "room": "general"})),
        ("type of the wrong kind", json!({"type": 5, "id": 13})),
        ("join without room", json!({"type": "join", "id": 14})),
        (
            "room null (required)",
            json!({"type": "join", "id": 15, "room": null}),
        ),
        (
            "send without cid",
            json!({"type": "send", "id": 16, "room": "general", "body": "x"}),
        ),
        (
            "send without body",
            json!({"type": "send", "id": 17, "room": "general", "cid": "c"}),
        ),
        (
            "send without room or to",
            json!({"type": "send", "id": 18, "cid": "c", "body": "x"}),
        ),
        (
            "send with room and to",
            json!({"type": "send", "id": 19, "room": "general", "to": "bob", "cid": "c", "body": "x"}),
        ),
        (
            "typing without active",
            json!({"type": "typing", "id": 20, "room": "general"}),
        ),
        (
            "presence without users",
            json!({"type": "presence", "id": 21}),
        ),
        (
            "room a number",
            json!({"type": "join", "id": 22, "room": 5}),
        ),
        (
            "body a number",
            json!({"type": "send", "id": 23, "room": "general", "cid": "c", "body": 5}),
        ),
        (
            "cid a number",
            json!({"type": "send", "id": 24, "room": "general", "cid": 5, "body": "x"}),
        ),
        (
            "meta an array",
            json!({"type": "send", "id": 25, "room": "general", "cid": "c", "body": "x", "meta": [1]}),
        ),
        (
            "meta a string",
            json!({"type": "send", "id": 26, "room": "general", "cid": "c", "body": "x", "meta": "m"}),
        ),
        (
            "active a string",
            json!({"type": "typing", "id": 27, "room": "general", "active": "yes"}),
        ),
        (
            "limit a string",
            json!({"type": "history", "id": 28, "room": "general", "limit": "10"}),
        ),
        (
            "before negative",
            json!({"type": "history", "id": 29, "room": "general", "before": -1}),
        ),
        (
            "after a float",
            json!({"type": "history", "id": 30, "room": "general", "after": 1.5}),
        ),
        (
            "users not a list",
            json!({"type": "presence", "id": 31, "users": "bob"}),
        ),
        (
            "receipt read a string",
            json!({"type": "receipt", "id": 32, "room": "general", "read": "5"}),
        ),
        (
            "hello token a number",
            json!({"type": "hello", "id": 33, "token": 5}),
        ),
        (
            "room with a space",
            json!({"type": "join", "id": 34, "room": "a b"}),
        ),
        ("empty room", json!({"type": "join", "id": 35, "room": ""})),
        (
            "room of 129 chars",
            json!({"type": "join", "id": 36, "room": long_room}),
        ),
        (
            "room with a slash",
            json!({"type": "join", "id": 37, "room": "a/b"}),
        ),
        (
            "dm room out of byte order",
            json!({"type": "join", "id": 38, "room": "dm:bob:alice"}),
        ),
        (
            "dm room of one user",
            json!({"type": "join", "id": 39, "room": "dm:alice"}),
        ),
        (
            "send to a user with a space",
            json!({"type": "send", "id": 40, "to": "bad user", "cid": "c", "body": "x"}),
        ),
        (
            "send to a user with a colon",
            json!({"type": "send", "id": 41, "to": "a:b", "cid": "c", "body": "x"}),
        ),
        (
            "send to a user of 65 chars",
            json!({"type": "send", "id": 42, "to": long_user, "cid": "c", "body": "x"}),
        ),
        (
            "presence of an invalid user",
            json!({"type": "presence", "id": 43, "users": ["bob", "not ok"]}),
        ),
        (
            "empty cid",
            json!({"type": "send", "id": 44, "room": "general", "cid": "", "body": "x"}),
        ),
        (
            "cid of 65 chars",
            json!({"type": "send", "id": 45, "room": "general", "cid": long_cid, "body": "x"}),
        ),
        (
            "the largest id",
            json!({"type": "nope", "id": 9_007_199_254_740_991_u64}),
        ),
        ("id 0", json!({"type": "nope", "id": 0})),
    ];
    for (what, frame) in cases {
        let id = frame["id"].as_u64().unwrap();
        let reply = refusal(&mut alice, &frame.to_string(), "bad_request").await;
        assert_eq!(reply["id"], json!(id), "{what}: {frame} → {reply}");
    }
    let sent = still_works(&mut alice, "general", "after-bad-fields").await;
    assert_eq!(sent["seq"], 1, "no refused send was stored");
    server.stop().await;
}

#[tokio::test]
async fn an_unusable_id_is_a_bad_request_without_id() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    // Each would be a fine request with a usable id: the id alone makes it a bad_request.
    for id in [
        "\"5\"",
        "-1",
        "1.5",
        "9007199254740992",
        "18446744073709551616",
        "true",
        "[1]",
        "{}",
    ] {
        bad_request_without_id(&mut alice, &format!(r#"{{"type":"ping","id":{id}}}"#)).await;
        bad_request_without_id(
            &mut alice,
            &format!(r#"{{"type":"send","id":{id},"room":"general","cid":"u","body":"x"}}"#),
        )
        .await;
        // And when the frame is wrong besides.
        bad_request_without_id(&mut alice, &format!(r#"{{"type":"nope","id":{id}}}"#)).await;
    }
    let stored = history(&mut alice, "general").await;
    assert!(
        stored.is_empty(),
        "sends with an unusable id are not acted on: {stored:?}"
    );
    still_works(&mut alice, "general", "after-unusable-ids").await;
    server.stop().await;
}

#[tokio::test]
async fn a_null_id_counts_as_no_id() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    // A refused frame with `"id": null`: an error without id.
    bad_request_without_id(&mut alice, r#"{"type":"join","id":null}"#).await;
    bad_request_without_id(&mut alice, r#"{"type":"nope","id":null}"#).await;
    // An accepted fire-and-forget frame with `"id": null`: no reply at all.
    let replies = replies_to(&mut alice, r#"{"type":"ping","id":null}"#).await;
    assert!(
        replies.is_empty(),
        "a ping without id gets no reply: {replies:?}"
    );
    let replies = replies_to(
        &mut alice,
        r#"{"type":"typing","id":null,"room":"general","active":true}"#,
    )
    .await;
    assert!(
        replies.is_empty(),
        "typing without id gets no reply: {replies:?}"
    );
    still_works(&mut alice, "general", "after-null-ids").await;
    server.stop().await;
}

#[tokio::test]
async fn binary_frames_get_bad_request_and_change_nothing() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    for payload in [
        b"\x00\x01\x02binary".to_vec(),
        br#"{"type":"send","room":"general","cid":"bin","body":"x"}"#.to_vec(),
    ] {
        alice
            .ws
            .send(Message::Binary(payload.into()))
            .await
            .unwrap();
        alice.ok(json!({"type": "ping"})).await;
        let errors: Vec<Value> = alice
            .backlog
            .iter()
            .filter(|f| is_reply(f))
            .cloned()
            .collect();
        alice.backlog.retain(|f| !is_reply(f));
        assert_eq!(errors.len(), 1, "one reply per binary frame: {errors:?}");
        assert_eq!(errors[0]["type"], "error", "{}", errors[0]);
        assert_eq!(errors[0]["code"], "bad_request", "{}", errors[0]);
    }
    let stored = history(&mut alice, "general").await;
    assert!(
        stored.is_empty(),
        "a binary send is not acted on: {stored:?}"
    );
    still_works(&mut alice, "general", "after-binary").await;
    server.stop().await;
}

#[tokio::test]
async fn a_second_hello_is_a_bad_request_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    refused_with_id(
        &mut alice,
        r#"{"type":"hello","id":5,"token":"dev:bob"}"#,
        5,
        "bad_request",
    )
    .await;
    refused_with_id(
        &mut alice,
        r#"{"type":"hello","id":6,"token":"dev:alice"}"#,
        6,
        "bad_request",
    )
    .await;
    let sent = still_works(&mut alice, "general", "after-second-hello").await;
    assert_eq!(sent["seq"], 1);
    let stored = history(&mut alice, "general").await;
    assert_eq!(
        stored[0]["from"], "alice",
        "a second hello does not switch the connection's user"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Refused frames change nothing stored
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn refused_sends_store_nothing_and_seqs_stay_gapless() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let mut carol = server.client("carol").await;
    alice.join("general").await;
    bob.join("general").await;
    carol.join("secret").await;
    alice.say("general", "c-1", "first").await;

    let deep_meta = format!("{}1{}", "{\"a\":".repeat(40), "}".repeat(40));
    let bad_sends = [
        // bad cids
        (
            r#"{"type":"send","id":1,"room":"general","cid":"","body":"x"}"#.to_owned(),
            "bad_request",
        ),
        (
            format!(
                r#"{{"type":"send","id":2,"room":"general","cid":"{}","body":"x"}}"#,
                "c".repeat(65)
            ),
            "bad_request",
        ),
        (
            r#"{"type":"send","id":3,"room":"general","cid":2,"body":"x"}"#.to_owned(),
            "bad_request",
        ),
        // too large a body, with the cid the next good send uses
        (
            format!(
                r#"{{"type":"send","id":4,"room":"general","cid":"c-2","body":"{}"}}"#,
                "x".repeat(16_385)
            ),
            "too_large",
        ),
        // bad meta
        (
            r#"{"type":"send","id":5,"room":"general","cid":"c-2","body":"x","meta":[1]}"#
                .to_owned(),
            "bad_request",
        ),
        (
            r#"{"type":"send","id":6,"room":"general","cid":"c-2","body":"x","meta":5}"#.to_owned(),
            "bad_request",
        ),
        (
            format!(
                r#"{{"type":"send","id":7,"room":"general","cid":"c-2","body":"x","meta":{deep_meta}}}"#
            ),
            "bad_request",
        ),
        (
            format!(
                r#"{{"type":"send","id":8,"room":"general","cid":"c-2","body":"x","meta":{{"k":"{}"}}}}"#,
                "m".repeat(4_089)
            ),
            "too_large",
        ),
        // a body of the wrong kind, both room and to
        (
            r#"{"type":"send","id":9,"room":"general","cid":"c-2","body":["x"]}"#.to_owned(),
            "bad_request",
        ),
        (
            r#"{"type":"send","id":10,"room":"general","to":"bob","cid":"c-2","body":"x"}"#
                .to_owned(),
            "bad_request",
        ),
        // rooms alice is not a member of
        (
            r#"{"type":"send","id":11,"room":"secret","cid":"c-2","body":"x"}"#.to_owned(),
            "forbidden",
        ),
        (
            r#"{"type":"send","id":12,"room":"nowhere","cid":"c-2","body":"x"}"#.to_owned(),
            "forbidden",
        ),
        (
            r#"{"type":"send","id":13,"room":"dm:bob:carol","cid":"c-2","body":"x"}"#.to_owned(),
            "forbidden",
        ),
    ];
    for (text, code) in &bad_sends {
        let id = serde_json::from_str::<Value>(text).unwrap()["id"]
            .as_u64()
            .unwrap();
        refused_with_id(&mut alice, text, id, code).await;
    }

    let sent = alice.say("general", "c-2", "second").await;
    assert_eq!(
        (sent["seq"].clone(), sent["dup"].clone()),
        (json!(2), json!(false)),
        "the refused sends stored nothing, not even under cid c-2: {sent}"
    );
    let stored = history(&mut alice, "general").await;
    assert_eq!(seqs(&stored), [1, 2]);
    assert_eq!(cids(&stored), ["c-1", "c-2"]);
    let pushed = bob.messages_until("general", |m| m["cid"] == "c-2").await;
    assert_eq!(seqs(&pushed), [1, 2], "bob saw no refused send: {pushed:?}");

    let secret = carol.ok(json!({"type": "history", "room": "secret"})).await;
    assert_eq!(
        secret["messages"],
        json!([]),
        "nothing reached the room of others"
    );
    let joined = carol.join("secret").await;
    assert_eq!(joined["seq"], 0);
    let direct = bob.join("dm:bob:carol").await;
    assert_eq!(
        direct["seq"], 0,
        "nothing reached the direct room of others"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// unauthorized (4001)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_bad_token_is_unauthorized_with_the_hello_id_then_4001() {
    let server = TestServer::start().await;
    for (id, token) in [(1, "nope"), (2, "dev:"), (3, "dev:not valid"), (4, "")] {
        let mut client = Client::connect(&server.url()).await;
        client
            .send_json(json!({"type": "hello", "id": id, "token": token}))
            .await;
        let error = unauthorized_then_4001(&mut client).await;
        assert_eq!(error["id"], json!(id), "token {token:?}: {error}");
    }
    // A good token still works: the refusals above were about the token.
    let mut alice = server.client("alice").await;
    alice.ok(json!({"type": "ping"})).await;
    server.stop().await;
}

#[tokio::test]
async fn a_first_frame_that_is_not_a_hello_is_unauthorized_then_4001() {
    let server = TestServer::start().await;
    let with_id = [
        (r#"{"type":"join","id":7,"room":"general"}"#, 7),
        (r#"{"type":"ping","id":8}"#, 8),
        (
            r#"{"type":"send","id":9,"room":"general","cid":"c","body":"x"}"#,
            9,
        ),
        // A hello, but not a well-formed one.
        (r#"{"type":"hello","id":10}"#, 10),
        (r#"{"type":"hello","id":11,"token":5}"#, 11),
        (r#"{"type":"nope","id":12}"#, 12),
    ];
    for (text, id) in with_id {
        let mut client = Client::connect(&server.url()).await;
        client.send_text(text).await;
        let error = unauthorized_then_4001(&mut client).await;
        assert_eq!(error["id"], json!(id), "{text}: {error}");
    }
    for text in [
        "not json",
        "[1]",
        r#"{"type":"join","room":"general"}"#,
        r#"{"type":"hello","id":"1","token":"dev:alice"}"#,
    ] {
        let mut client = Client::connect(&server.url()).await;
        client.send_text(text).await;
        let error = unauthorized_then_4001(&mut client).await;
        assert!(error.get("id").is_none(), "{text}: {error}");
    }
    let mut client = Client::connect(&server.url()).await;
    client
        .ws
        .send(Message::Binary(b"hello".to_vec().into()))
        .await
        .unwrap();
    unauthorized_then_4001(&mut client).await;

    // Nothing the refused frames asked for happened.
    let alice = server.client("alice").await;
    assert_eq!(
        alice.hello["rooms"],
        json!([]),
        "no refused join took effect"
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn no_hello_within_10_s_closes_4001() {
    let server = TestServer::start().await;
    let mut silent = Client::connect(&server.url()).await;
    silent.wait = Duration::from_secs(300);
    let opened = tokio::time::Instant::now();
    assert_eq!(silent.closed().await, Some(4001));
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited <= Duration::from_secs(11),
        "closed after {waited:?}, not after 10 s"
    );

    // A hello that comes in time is served, and the connection outlives the 10 s.
    let mut late = Client::connect(&server.url()).await;
    late.wait = Duration::from_secs(300);
    tokio::time::advance(Duration::from_secs(9)).await;
    late.hello("bob", json!({})).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    late.ok(json!({"type": "ping"})).await;
    late.join("general").await;
    still_works(&mut late, "general", "in-time").await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// forbidden
// ---------------------------------------------------------------------------------------

/// Every request that names a room, with `id`.
fn room_requests(room: &str) -> Vec<Value> {
    vec![
        json!({"type": "send", "room": room, "cid": "x-1", "body": "let me in"}),
        json!({"type": "history", "room": room}),
        json!({"type": "members", "room": room}),
        json!({"type": "receipt", "room": room, "read": 1, "delivered": 1}),
        json!({"type": "typing", "room": room, "active": true}),
    ]
}

#[tokio::test]
async fn requests_on_a_room_of_others_are_forbidden() {
    let server = TestServer::start().await;
    let mut bob = server.client("bob").await;
    bob.join("secret").await;
    bob.say("secret", "b-1", "for members only").await;
    let mut alice = server.client("alice").await;
    for request in room_requests("secret") {
        let reply = alice.refused(request.clone(), "forbidden").await;
        assert!(reply["id"].is_u64(), "{request}: {reply}");
        assert!(reply["message"].is_string(), "{reply}");
    }
    // Fire-and-forget, without id: refused as well (an error without id), and without
    // effect. Their errors arrive before the marker's reply, so alice's frames were handled
    // before bob's marker below.
    for text in [
        r#"{"type":"typing","room":"secret","active":true}"#,
        r#"{"type":"receipt","room":"secret","read":1,"delivered":1}"#,
    ] {
        let reply = refusal(&mut alice, text, "forbidden").await;
        assert!(reply.get("id").is_none(), "{text}: {reply}");
    }

    // Nothing of it reached the room: bob sees his own marker, and no typing, receipt or
    // message from alice before it.
    bob.say("secret", "b-2", "marker").await;
    let seen = frames_until_message(&mut bob, "b-2").await;
    let messages: Vec<Value> = seen
        .iter()
        .filter(|f| f["type"] == "message")
        .cloned()
        .collect();
    assert_eq!(seqs(&messages), [1, 2], "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|f| f["type"] == "typing" || f["type"] == "receipt"),
        "alice's refused frames reached bob: {seen:?}"
    );
    let members = bob.ok(json!({"type": "members", "room": "secret"})).await;
    let member = &members["members"][0];
    assert_eq!(members["members"].as_array().unwrap().len(), 1, "{members}");
    assert_eq!(member["user"], "bob");
    let stored = history(&mut bob, "secret").await;
    assert_eq!(cids(&stored), ["b-1", "b-2"]);
    server.stop().await;
}

#[tokio::test]
async fn forbidden_does_not_reveal_whether_the_room_exists() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut before = Vec::new();
    for request in room_requests("ghost") {
        before.push(alice.refused(request, "forbidden").await["message"].clone());
    }
    // Now the room exists, with a message.
    let mut bob = server.client("bob").await;
    bob.join("ghost").await;
    bob.say("ghost", "b-1", "boo").await;
    for (request, said_before) in room_requests("ghost").into_iter().zip(before) {
        let reply = alice.refused(request.clone(), "forbidden").await;
        assert_eq!(
            reply["message"], said_before,
            "{request}: the error tells an existing room from a missing one"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn nobody_joins_the_direct_room_of_another_pair() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let sent = alice
        .ok(json!({"type": "send", "to": "bob", "cid": "d-1", "body": "hi bob"}))
        .await;
    assert_eq!(sent["room"], "dm:alice:bob");
    let mut carol = server.client("carol").await;
    for request in [
        json!({"type": "join", "room": "dm:alice:bob"}),
        json!({"type": "send", "room": "dm:alice:bob", "cid": "x", "body": "hi"}),
        json!({"type": "history", "room": "dm:alice:bob"}),
        json!({"type": "members", "room": "dm:alice:bob"}),
        // A direct room of others that does not exist yet.
        json!({"type": "join", "room": "dm:bob:dave"}),
    ] {
        carol.refused(request, "forbidden").await;
    }
    let missing = RoomId::new("dm:bob:dave").unwrap();
    assert!(
        server.store.room(&missing).await.unwrap().is_none(),
        "a refused join created the room"
    );
    let members = alice
        .ok(json!({"type": "members", "room": "dm:alice:bob"}))
        .await;
    let users: Vec<&Value> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["user"])
        .collect();
    assert_eq!(users, [&json!("alice"), &json!("bob")]);
    // Either of the pair may join it.
    let mut bob = server.client("bob").await;
    bob.join("dm:alice:bob").await;
    let stored = history(&mut bob, "dm:alice:bob").await;
    assert_eq!(cids(&stored), ["d-1"]);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// too_large
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_body_over_16_kib_of_utf8_is_too_large() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    // 16,384 bytes of UTF-8 in 2-, 3- and 4-byte characters, and one byte more.
    let bodies_at_limit = [
        "é".repeat(8_192),
        format!("{}a", "€".repeat(5_461)),
        "😀".repeat(4_096),
    ];
    for (n, body) in bodies_at_limit.iter().enumerate() {
        assert_eq!(body.len(), 16_384);
        let over = format!("{body}x");
        let refused = alice
            .refused(
                json!({"type": "send", "room": "general", "cid": format!("b-{n}"), "body": over}),
                "too_large",
            )
            .await;
        assert!(refused["id"].is_u64(), "{refused}");
        let sent = alice.say("general", &format!("b-{n}"), body).await;
        assert_eq!(sent["dup"], false, "the too-large send stored nothing");
    }
    // The limit counts the UTF-8 bytes of the body, not the bytes of its JSON escapes.
    let escaped = "\\u00e9".repeat(8_192);
    refused_with_id(
        &mut alice,
        &format!(r#"{{"type":"send","id":77,"room":"general","cid":"e-1","body":"{escaped}x"}}"#),
        77,
        "too_large",
    )
    .await;
    let replies = replies_to(
        &mut alice,
        &format!(r#"{{"type":"send","id":78,"room":"general","cid":"e-1","body":"{escaped}"}}"#),
    )
    .await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["type"], "ok", "{}", replies[0]);

    let stored = alice
        .ok(json!({"type": "history", "room": "general"}))
        .await;
    let messages = stored["messages"].as_array().unwrap();
    assert_eq!(
        seqs(messages),
        [1, 2, 3, 4],
        "only the bodies at the limit were stored"
    );
    for (message, body) in messages.iter().zip(&bodies_at_limit) {
        assert_eq!(message["body"], json!(body));
    }
    assert_eq!(messages[3]["body"], json!("é".repeat(8_192)));
    server.stop().await;
}

#[tokio::test]
async fn a_meta_over_4_kib_of_compact_json_is_too_large() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    // `{"k":"…"}` is 8 bytes besides the string. Whitespace outside strings does not count.
    let meta_text = |n: usize| format!(r#"{{ "k" : "{}" }}"#, "m".repeat(n - 8));
    let send = |id: u64, cid: &str, meta: &str| {
        format!(
            r#"{{"type":"send","id":{id},"room":"general","cid":"{cid}","body":"b","meta":{meta}}}"#
        )
    };
    refused_with_id(
        &mut alice,
        &send(1, "m-1", &meta_text(4_097)),
        1,
        "too_large",
    )
    .await;
    // Multi-byte characters count their UTF-8 bytes: 2,045 × "é" is 4,090 bytes.
    let wide = format!(r#"{{"k":"{}"}}"#, "é".repeat(2_045));
    assert_eq!(wide.len(), 4_098);
    refused_with_id(&mut alice, &send(2, "m-1", &wide), 2, "too_large").await;

    let replies = replies_to(&mut alice, &send(3, "m-1", &meta_text(4_096))).await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(
        replies[0]["type"], "ok",
        "4,096 bytes of compact meta pass: {}",
        replies[0]
    );
    assert_eq!(
        replies[0]["dup"], false,
        "the too-large sends stored nothing"
    );
    assert_eq!(replies[0]["seq"], 1);

    let stored = history(&mut alice, "general").await;
    assert_eq!(seqs(&stored), [1]);
    assert_eq!(stored[0]["meta"], json!({"k": "m".repeat(4_088)}));
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// rate_limited (and 4029)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn frames_beyond_the_burst_are_rate_limited_and_not_acted_on() {
    let mut config = EngineConfig::default();
    config.rate_burst = 5;
    config.rate_per_sec = 1;
    let server = TestServer::with_config(config).await;
    let mut bob = server.client("bob").await;
    bob.join("general").await;
    let mut alice = server.client("alice").await;

    // Pipelined: five frames within the burst, then three beyond it.
    let frames = [
        json!({"type": "join", "id": 1, "room": "general"}),
        json!({"type": "send", "id": 2, "room": "general", "cid": "c-1", "body": "one"}),
        json!({"type": "send", "id": 3, "room": "general", "cid": "c-2", "body": "two"}),
        json!({"type": "ping", "id": 4}),
        json!({"type": "ping", "id": 5}),
        json!({"type": "send", "id": 6, "room": "general", "cid": "c-3", "body": "three"}),
        json!({"type": "join", "id": 7, "room": "elsewhere"}),
        json!({"type": "ping", "id": 8}),
    ];
    for frame in &frames {
        alice.send_json(frame.clone()).await;
    }
    let mut replies = Vec::new();
    for _ in 0..100 {
        if replies.len() == frames.len() {
            break;
        }
        let frame = alice.recv().await;
        if is_reply(&frame) {
            replies.push(frame);
        }
    }
    let ids: Vec<u64> = replies.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7, 8], "one reply each, in order");
    for reply in &replies[..5] {
        assert_eq!(reply["type"], "ok", "within the burst: {reply}");
    }
    for reply in &replies[5..] {
        assert_eq!(reply["type"], "error", "beyond the burst: {reply}");
        assert_eq!(reply["code"], "rate_limited", "{reply}");
    }
    // The connection stays open: a further frame is answered (not closed).
    alice.send_json(json!({"type": "ping", "id": 9})).await;
    let ninth = alice.reply(9).await;
    assert!(is_reply(&ninth), "{ninth}");

    // The rate-limited send was not stored nor pushed; the rate-limited join did nothing.
    bob.say("general", "marker", "from bob").await;
    let pushed = bob
        .messages_until("general", |m| m["cid"] == "marker")
        .await;
    assert_eq!(seqs(&pushed), [1, 2, 3]);
    assert_eq!(cids(&pushed), ["c-1", "c-2", "marker"]);
    let stored = history(&mut bob, "general").await;
    assert_eq!(cids(&stored), ["c-1", "c-2", "marker"]);
    let again = server.client("alice").await;
    let rooms: Vec<&Value> = again.hello["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["room"])
        .collect();
    assert_eq!(
        rooms,
        [&json!("general")],
        "the rate-limited join did nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn repeated_rate_limit_violations_close_4029() {
    let mut config = EngineConfig::default();
    config.rate_burst = 2;
    config.rate_per_sec = 1;
    config.rate_violations = 3;
    let server = TestServer::with_config(config).await;
    let mut alice = server.client("alice").await;
    let sent = 30_u64;
    for id in 1..=sent {
        alice.send_json(json!({"type": "ping", "id": id})).await;
    }
    let mut replies = Vec::new();
    let mut close = None;
    for _ in 0..100 {
        match alice.read().await {
            Event::Frame(frame) if is_reply(&frame) => replies.push(frame),
            Event::Frame(_) => {}
            Event::Closed(code) => {
                close = Some(code);
                break;
            }
        }
    }
    assert_eq!(close, Some(Some(4029)), "replies before: {replies:?}");
    let ids: Vec<u64> = replies.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "in order");
    assert!(
        replies[..2].iter().all(|r| r["type"] == "ok"),
        "{replies:?}"
    );
    let limited = &replies[2..];
    assert!(
        limited.iter().all(|r| r["code"] == "rate_limited"),
        "{replies:?}"
    );
    assert!(
        limited.len() >= 3,
        "3 violations are tolerated, each answered: {replies:?}"
    );
    assert!(
        (replies.len() as u64) < sent,
        "closed for the violations, not after answering everything: {replies:?}"
    );
    // Other connections are not affected.
    let mut bob = server.client("bob").await;
    bob.ok(json!({"type": "ping"})).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// unavailable, internal
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_store_is_unavailable_and_a_retry_stores_once() {
    let (server, failing) = faulty_server().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    bob.join("general").await;
    alice.say("general", "c-0", "before").await;

    failing.store(true, Ordering::SeqCst);
    let send = json!({"type": "send", "room": "general", "cid": "c-1", "body": "retry me"});
    for _ in 0..2 {
        let refused = alice.refused(send.clone(), "unavailable").await;
        assert!(refused["id"].is_u64(), "{refused}");
    }
    let stored = history(&mut alice, "general").await;
    assert_eq!(cids(&stored), ["c-0"], "nothing was stored");

    failing.store(false, Ordering::SeqCst);
    let first = alice.ok(send.clone()).await;
    assert_eq!(
        (first["seq"].clone(), first["dup"].clone()),
        (json!(2), json!(false))
    );
    let again = alice.ok(send).await;
    assert_eq!(again["dup"], true);
    assert_eq!(
        (again["seq"].clone(), again["ts"].clone()),
        (first["seq"].clone(), first["ts"].clone())
    );

    bob.say("general", "marker", "from bob").await;
    let pushed = bob
        .messages_until("general", |m| m["cid"] == "marker")
        .await;
    assert_eq!(
        cids(&pushed),
        ["c-0", "c-1", "marker"],
        "pushed exactly once"
    );
    assert_eq!(seqs(&pushed), [1, 2, 3]);
    let stored = history(&mut bob, "general").await;
    assert_eq!(
        cids(&stored),
        ["c-0", "c-1", "marker"],
        "stored exactly once"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_store_is_internal_and_the_server_keeps_serving() {
    let (server, _failing) = faulty_server().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    bob.join("general").await;

    let refused = alice
        .refused(
            json!({"type": "send", "room": "general", "cid": "p-1", "body": "panic"}),
            "internal",
        )
        .await;
    assert!(refused["id"].is_u64(), "{refused}");
    assert!(refused["message"].is_string(), "{refused}");

    // The same connection goes on, and nothing was stored: the next message is seq 1.
    let sent = still_works(&mut alice, "general", "c-1").await;
    assert_eq!(sent["seq"], 1);
    // Other connections go on, and a new one can start.
    bob.say("general", "b-1", "from bob").await;
    let pushed = bob.messages_until("general", |m| m["cid"] == "b-1").await;
    assert_eq!(cids(&pushed), ["c-1", "b-1"]);
    let mut carol = server.client("carol").await;
    carol.join("general").await;
    let stored = history(&mut carol, "general").await;
    assert_eq!(cids(&stored), ["c-1", "b-1"]);
    assert_eq!(seqs(&stored), [1, 2]);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Close 1009, 1001
// ---------------------------------------------------------------------------------------

/// A `send` frame of exactly `len` bytes, with id `id`.
fn send_of_len(id: u64, len: usize) -> String {
    let head = format!(r#"{{"type":"send","id":{id},"room":"general","cid":"big","body":""#);
    let tail = r#""}"#;
    let text = format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()));
    assert_eq!(text.len(), len);
    text
}

#[tokio::test]
async fn a_message_over_64_kib_closes_1009() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    // At the limit: a message like any other (its body is too large, but that is all).
    refused_with_id(&mut alice, &send_of_len(1, 65_536), 1, "too_large").await;
    still_works(&mut alice, "general", "at-the-limit").await;

    alice
        .ws
        .send(Message::Text(send_of_len(2, 65_537).into()))
        .await
        .unwrap();
    assert_eq!(alice.closed().await, Some(1009));
    let mut again = server.client("alice").await;
    let stored = history(&mut again, "general").await;
    assert_eq!(
        cids(&stored),
        ["at-the-limit"],
        "neither big send was stored"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_graceful_stop_closes_every_connection_1001() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join("general").await;
    bob.join("general").await;
    let ((), alice_closed, bob_closed) = tokio::join!(server.stop(), alice.closed(), bob.closed());
    assert_eq!(alice_closed, Some(1001));
    assert_eq!(bob_closed, Some(1001));
}

#[tokio::test]
async fn a_fragmented_message_over_64_kib_closes_1009() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.join("general").await;
    let fragments = |text: &str, at: usize| {
        let (head, tail) = text.split_at(at);
        [
            Message::Frame(Frame::message(
                head.to_owned(),
                OpCode::Data(Data::Text),
                false,
            )),
            Message::Frame(Frame::message(
                tail.to_owned(),
                OpCode::Data(Data::Continue),
                true,
            )),
        ]
    };
    // Fragments of a message within the limit make one frame of the protocol.
    for fragment in fragments(&send_of_len(1, 65_536), 40_000) {
        alice.ws.send(fragment).await.unwrap();
    }
    let reply = alice.reply(1).await;
    assert_eq!(reply["code"], "too_large", "{reply}");
    still_works(&mut alice, "general", "fragmented-at-the-limit").await;

    // Each fragment is under the limit, the message is over it.
    for fragment in fragments(&send_of_len(2, 80_000), 40_000) {
        alice.ws.send(fragment).await.unwrap();
    }
    assert_eq!(alice.closed().await, Some(1009));
    server.stop().await;
}
