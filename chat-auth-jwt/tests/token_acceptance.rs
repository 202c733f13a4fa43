//! Good tokens: accepted for each key type, with the right user and `expires_at`, and the
//! options (audience, issuer, user claim, leeway) doing what they say.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chat_auth_jwt::{DEFAULT_LEEWAY, JwtAuthenticator};
use chat_core::auth::{Authenticator, Token};
use serde_json::json;

use support::*;

async fn accept(auth: &JwtAuthenticator, token: &str) -> chat_core::auth::Identity {
    auth.authenticate(&Token::new(token))
        .await
        .unwrap_or_else(|e| panic!("a good token was refused: {e}"))
}

fn refused(auth: &JwtAuthenticator, token: &str) -> String {
    match auth.verify(token) {
        Err(chat_core::Error::Unauthorized(why)) => why,
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[test]
fn the_default_leeway_is_five_seconds() {
    assert_eq!(DEFAULT_LEEWAY, Duration::from_secs(LEEWAY));
}

#[tokio::test]
async fn hs256_token_is_accepted_with_user_and_expiry() {
    let claims = claims("alice");
    let identity = accept(&hs_auth(), &hs256(&claims)).await;
    assert_eq!(identity, identity_of("alice", exp_of(&claims), LEEWAY));
}

#[tokio::test]
async fn rs256_token_is_accepted_with_user_and_expiry() {
    let claims = claims("bob.b-2_x");
    let identity = accept(&rs_auth(), &rs256(&claims)).await;
    assert_eq!(identity, identity_of("bob.b-2_x", exp_of(&claims), LEEWAY));
}

#[tokio::test]
async fn rs256_server_takes_a_pkcs1_public_key_too() {
    let auth = JwtAuthenticator::rs256_pem(rsa_public_pkcs1_pem()).unwrap();
    let claims = claims("carol");
    assert_eq!(
        accept(&auth, &rs256(&claims)).await,
        identity_of("carol", exp_of(&claims), LEEWAY)
    );
}

#[tokio::test]
async fn eddsa_token_is_accepted_with_user_and_expiry() {
    let claims = claims("dave");
    let identity = accept(&ed_auth(), &eddsa(&claims)).await;
    assert_eq!(identity, identity_of("dave", exp_of(&claims), LEEWAY));
}

#[tokio::test]
async fn the_same_token_yields_the_same_identity_every_time() {
    let auth = hs_auth();
    let token = hs256(&claims("alice"));
    let first = accept(&auth, &token).await;
    for _ in 0..3 {
        assert_eq!(accept(&auth, &token).await, first);
    }
}

#[tokio::test]
async fn a_64_byte_user_id_is_accepted() {
    let user = "u".repeat(64);
    let identity = accept(&hs_auth(), &hs256(&claims(&user))).await;
    assert_eq!(identity.user.as_str(), user);
}

#[tokio::test]
async fn a_fractional_exp_is_rounded_like_jsonwebtoken_does() {
    let exp = now() + 600;
    let token = hs256(&with(claims("alice"), "exp", json!(exp as f64 + 0.4)));
    let identity = accept(&hs_auth(), &token).await;
    assert_eq!(identity, identity_of("alice", exp, LEEWAY));
}

#[tokio::test]
async fn a_far_future_exp_saturates_instead_of_overflowing() {
    let token = hs256(&with(claims("alice"), "exp", json!(u64::MAX)));
    let identity = accept(&hs_auth(), &token).await;
    assert_eq!(
        identity.expires_at,
        Some(chat_core::Timestamp::from_millis(u64::MAX))
    );
}

// Tokens are minted a moment before they are checked, and a loaded machine may stall in
// between: every case below keeps at least 30 s between a claim and the edge of its leeway.

#[tokio::test]
async fn within_the_leeway_expired_and_early_tokens_are_accepted() {
    let auth = hs_auth().leeway(Duration::from_secs(60));
    let exp = now() - 30;
    let identity = accept(&auth, &hs256(&with(claims("alice"), "exp", json!(exp)))).await;
    // The session ends when the authenticator would start refusing the token.
    assert_eq!(identity, identity_of("alice", exp, 60));
    accept(
        &auth,
        &hs256(&with(claims("alice"), "nbf", json!(now() + 30))),
    )
    .await;
    accept(
        &auth,
        &hs256(&with(claims("alice"), "nbf", json!(now() - 60))),
    )
    .await;
}

#[tokio::test]
async fn past_the_leeway_expired_and_early_tokens_are_refused() {
    let expired = hs256(&with(claims("alice"), "exp", json!(now() - 30)));
    let early = hs256(&with(claims("alice"), "nbf", json!(now() + 40)));
    for auth in [hs_auth(), hs_auth().leeway(Duration::ZERO)] {
        assert!(refused(&auth, &expired).contains("expired"));
        assert!(refused(&auth, &early).contains("not valid yet"));
    }
    // Both are good to a server with a minute of leeway: the leeway is what refused them.
    let lenient = hs_auth().leeway(Duration::from_secs(60));
    accept(&lenient, &expired).await;
    accept(&lenient, &early).await;
}

#[tokio::test]
async fn the_leeway_extends_the_session() {
    let claims = claims("alice");
    let exp = exp_of(&claims);
    let token = hs256(&claims);
    for leeway in [0, 1, 30, 300] {
        let auth = hs_auth().leeway(Duration::from_secs(leeway));
        assert_eq!(
            accept(&auth, &token).await,
            identity_of("alice", exp, leeway)
        );
    }
    // Longer than MAX_LEEWAY is clamped to it.
    let auth = hs_auth().leeway(Duration::from_secs(3_600));
    assert_eq!(
        accept(&auth, &token).await,
        identity_of("alice", exp, chat_auth_jwt::MAX_LEEWAY.as_secs())
    );
}

#[tokio::test]
async fn audience_accepts_ours_alone_or_in_an_array() {
    let auth = hs_auth().audience("chat");
    accept(&auth, &hs256(&with(claims("alice"), "aud", json!("chat")))).await;
    accept(
        &auth,
        &hs256(&with(claims("alice"), "aud", json!(["billing", "chat"]))),
    )
    .await;
    assert!(
        refused(&auth, &hs256(&with(claims("alice"), "aud", json!("Chat")))).contains("audience")
    );
}

#[tokio::test]
async fn audience_given_twice_accepts_either() {
    let auth = hs_auth().audience("chat").audience("chat-staging");
    accept(&auth, &hs256(&with(claims("alice"), "aud", json!("chat")))).await;
    accept(
        &auth,
        &hs256(&with(claims("alice"), "aud", json!("chat-staging"))),
    )
    .await;
    assert!(
        refused(
            &auth,
            &hs256(&with(claims("alice"), "aud", json!("billing")))
        )
        .contains("audience")
    );
}

#[tokio::test]
async fn without_a_configured_audience_aud_is_not_looked_at() {
    let auth = hs_auth();
    accept(
        &auth,
        &hs256(&with(claims("alice"), "aud", json!("anything"))),
    )
    .await;
    accept(
        &auth,
        &hs256(&with(claims("alice"), "aud", json!(["a", "b"]))),
    )
    .await;
}

#[tokio::test]
async fn issuer_is_checked_when_configured() {
    let auth = hs_auth()
        .issuer("https://id.test")
        .issuer("https://id2.test");
    accept(
        &auth,
        &hs256(&with(claims("alice"), "iss", json!("https://id.test"))),
    )
    .await;
    accept(
        &auth,
        &hs256(&with(claims("alice"), "iss", json!("https://id2.test"))),
    )
    .await;
    assert!(
        refused(
            &auth,
            &hs256(&with(claims("alice"), "iss", json!("https://id.test/")))
        )
        .contains("issuer")
    );
    // Unconfigured, any issuer goes.
    accept(
        &hs_auth(),
        &hs256(&with(claims("alice"), "iss", json!("https://evil.test"))),
    )
    .await;
}

#[tokio::test]
async fn user_claim_reads_the_user_from_another_claim() {
    let auth = hs_auth().user_claim("preferred_username");
    let token = hs256(&with(
        claims("f81d4fae-7dec-11d0"),
        "preferred_username",
        json!("alice"),
    ));
    assert_eq!(accept(&auth, &token).await.user.as_str(), "alice");
    // `sub` is no longer what counts: it may even be an invalid user id.
    let token = hs256(&with(
        claims("not a user id!"),
        "preferred_username",
        json!("bob"),
    ));
    assert_eq!(accept(&auth, &token).await.user.as_str(), "bob");
}

#[tokio::test]
async fn unknown_claims_and_header_fields_are_ignored() {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("key-1".to_owned());
    header.cty = Some("JWT".to_owned());
    let claims = with(claims("alice"), "roles", json!(["admin"]));
    let token = jsonwebtoken::encode(&header, &claims, &hs_key()).unwrap();
    accept(&hs_auth(), &token).await;
}

#[tokio::test]
async fn max_token_len_bounds_what_is_decoded() {
    let token = hs256(&with(claims("alice"), "pad", json!("x".repeat(20_000))));
    assert!(token.len() > chat_auth_jwt::DEFAULT_MAX_TOKEN_LEN);
    assert!(refused(&hs_auth(), &token).contains("longer than"));
    let auth = hs_auth().max_token_len(64 * 1024);
    assert_eq!(accept(&auth, &token).await.user.as_str(), "alice");
    assert!(
        refused(&hs_auth().max_token_len(10), &hs256(&claims("alice"))).contains("longer than")
    );
}

fn identity_of(user: &str, exp: u64, leeway: u64) -> chat_core::auth::Identity {
    identity(user, exp, leeway)
}
