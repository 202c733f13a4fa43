//! Credentials that expire: a session ends at the identity's `expires_at` with the error
//! `unauthorized` and close 4001, and a token already expired is refused at `hello`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_core::Clock;
use chat_core::auth::{Authenticator, Identity, Token};
use chat_core::id::UserId;
use chat_core::{Error, Result};
use serde_json::{Value, json};
use support::{Client, TestServer};

/// Accepts `<user>:<seconds>`: `<user>`, whose credentials expire `<seconds>` after the
/// check (negative: already expired); and `dev:<user>`, which never expire.
#[derive(Debug)]
struct Expiring {
    clock: Clock,
}

#[async_trait]
impl Authenticator for Expiring {
    async fn authenticate(&self, token: &Token) -> Result<Identity> {
        let unauthorized = || Error::Unauthorized("bad test token".into());
        if let Some(user) = token.expose().strip_prefix("dev:") {
            return Ok(Identity::new(
                UserId::new(user).map_err(|_| unauthorized())?,
            ));
        }
        let (user, seconds) = token.expose().split_once(':').ok_or_else(unauthorized)?;
        let seconds: i64 = seconds.parse().map_err(|_| unauthorized())?;
        let now = self.clock.now();
        let expires_at = if seconds >= 0 {
            now.saturating_add(Duration::from_secs(seconds.unsigned_abs()))
        } else {
            chat_core::Timestamp::from_millis(
                now.as_millis()
                    .saturating_sub(seconds.unsigned_abs() * 1000),
            )
        };
        Ok(Identity {
            user: UserId::new(user).map_err(|_| unauthorized())?,
            expires_at: Some(expires_at),
        })
    }
}

async fn server() -> TestServer {
    let clock = Clock::tokio();
    TestServer::with_authenticator(Arc::new(Expiring { clock }), clock).await
}

async fn hello(client: &mut Client, token: &str) -> Value {
    client
        .request(json!({"type": "hello", "token": token}))
        .await
}

#[tokio::test(start_paused = true)]
async fn a_session_ends_with_4001_when_its_credentials_expire() {
    let server = server().await;
    let mut alice = Client::connect(&server.url()).await;
    let reply = hello(&mut alice, "alice:60").await;
    assert_eq!(
        (&reply["type"], &reply["user"]),
        (&json!("ok"), &json!("alice")),
        "{reply}"
    );
    let mut bob = server.client("bob").await;
    bob.join("general").await;
    alice.join("general").await;

    // Before expiry the session works, across heartbeats (every 25 s: she speaks every
    // 20 s so that she is never silent for two of them).
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(19)).await;
        alice.ok(json!({"type": "ping"})).await;
        bob.ok(json!({"type": "ping"})).await;
    }

    // At expiry: the error, then close 4001; the others are told she left.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let error = alice.push("error").await;
    assert_eq!(error["code"], "unauthorized", "{error}");
    assert_eq!(alice.closed().await, Some(4001));
    let presence = bob.push("presence").await;
    assert_eq!(presence["user"], "alice", "{presence}");
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_refused_at_hello() {
    let server = server().await;
    let mut alice = Client::connect(&server.url()).await;
    let reply = hello(&mut alice, "alice:-5").await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    assert_eq!(alice.closed().await, Some(4001));
}

#[tokio::test(start_paused = true)]
async fn credentials_valid_for_two_hours_keep_the_session_for_the_first() {
    // An hour of paused time, many heartbeats: the deadline is the credentials', not a
    // timer that fires early.
    let server = server().await;
    let mut alice = Client::connect(&server.url()).await;
    let reply = hello(&mut alice, "alice:7200").await;
    assert_eq!(
        (&reply["type"], &reply["user"]),
        (&json!("ok"), &json!("alice")),
        "{reply}"
    );
    for _ in 0..180 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        alice.ok(json!({"type": "ping"})).await;
    }
}
