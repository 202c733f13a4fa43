//! The table of bad JWTs: each one is refused with `Unauthorized`, and for the reason its
//! label names (so a row cannot pass by being refused for something else).
//!
//! `cargo test -p chat-auth-jwt --test token_rejection -- --nocapture` prints the table.

#![allow(clippy::unwrap_used)]

mod support;

use chat_auth_jwt::JwtAuthenticator;
use chat_core::auth::{Authenticator, Token};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use support::*;

/// Which server a token is shown to.
#[derive(Debug, Clone, Copy)]
enum Server {
    /// HS256 with [`SECRET`].
    Hs,
    /// RS256 with the RSA test key.
    Rs,
    /// EdDSA with the Ed25519 test key.
    Ed,
    /// HS256 that requires `aud` = `chat` and `iss` = `https://id.test`.
    HsAudIss,
    /// HS256 that reads the user from `preferred_username`.
    HsUserClaim,
    /// HS256 with no limit on the token's length.
    HsUnlimited,
}

impl Server {
    fn authenticator(self) -> JwtAuthenticator {
        match self {
            Server::Hs => hs_auth(),
            Server::Rs => rs_auth(),
            Server::Ed => ed_auth(),
            Server::HsAudIss => hs_auth().audience("chat").issuer("https://id.test"),
            Server::HsUserClaim => hs_auth().user_claim("preferred_username"),
            Server::HsUnlimited => hs_auth().max_token_len(usize::MAX),
        }
    }
}

struct Row {
    label: &'static str,
    server: Server,
    token: String,
    /// A piece of the `Unauthorized` reason this row must be refused with.
    reason: &'static str,
}

fn row(label: &'static str, server: Server, token: String, reason: &'static str) -> Row {
    Row {
        label,
        server,
        token,
        reason,
    }
}

fn aud_iss(claims: Value) -> Value {
    with(
        with(claims, "aud", json!("chat")),
        "iss",
        json!("https://id.test"),
    )
}

#[rustfmt::skip]
fn table() -> Vec<Row> {
    use Server::*;
    let alice = claims("alice");
    let good_hs = hs256(&alice);
    let [h, p, _] = parts(&good_hs);
    let [_, _, other_sig] = parts(&hs256(&claims("bob")));
    let header_hs = r#"{"alg":"HS256","typ":"JWT"}"#;
    let payload = alice.to_string();
    let rs_public_as_secret = EncodingKey::from_secret(rsa().public_pem.as_bytes());
    let hs_with = |claims: &Value| hs256(claims);

    vec![
        // --- time
        row("expired (an hour ago)", Hs, hs_with(&with(alice.clone(), "exp", json!(now() - 3_600))), "token expired"),
        row("expired just past the leeway", Hs, hs_with(&with(alice.clone(), "exp", json!(now() - LEEWAY - 5))), "token expired"),
        row("expired, RS256", Rs, rs256(&with(alice.clone(), "exp", json!(now() - 3_600))), "token expired"),
        row("expired, EdDSA", Ed, eddsa(&with(alice.clone(), "exp", json!(now() - 3_600))), "token expired"),
        row("nbf in the future", Hs, hs_with(&with(alice.clone(), "nbf", json!(now() + 3_600))), "not valid yet"),
        row("nbf a minute past the leeway", Hs, hs_with(&with(alice.clone(), "nbf", json!(now() + LEEWAY + 60))), "not valid yet"),
        row("nbf not a number", Hs, hs_with(&with(alice.clone(), "nbf", json!("tomorrow"))), "claim nbf"),
        row("missing exp", Hs, hs_with(&without(alice.clone(), "exp")), "missing claim exp"),
        row("exp null", Hs, hs_with(&with(alice.clone(), "exp", Value::Null)), "missing claim exp"),
        row("exp a string", Hs, hs_with(&with(alice.clone(), "exp", json!((now() + 3_600).to_string()))), "missing claim exp"),
        row("exp negative", Hs, hs_with(&with(alice.clone(), "exp", json!(-1))), "missing claim exp"),
        // --- signature and key
        row("wrong signature (another token's)", Hs, format!("{h}.{p}.{other_sig}"), "bad signature"),
        row("tampered payload (sub changed after signing)", Hs, format!("{h}.{}.{}", b64(with(alice.clone(), "sub", json!("mallory")).to_string()), parts(&good_hs)[2]), "bad signature"),
        row("signature stripped", Hs, format!("{h}.{p}."), "bad signature"),
        row("wrong secret", Hs, mint(Algorithm::HS256, &EncodingKey::from_secret(OTHER_SECRET), &alice), "bad signature"),
        row("wrong RSA key", Rs, mint(Algorithm::RS256, &EncodingKey::from_rsa_pem(rsa_key(2048, 8).private_pem.as_bytes()).unwrap(), &alice), "bad signature"),
        row("wrong Ed25519 key", Ed, mint(Algorithm::EdDSA, &EncodingKey::from_ed_pem(ed_key(2).private_pem.as_bytes()).unwrap(), &alice), "bad signature"),
        // --- algorithm
        row("alg none (unsigned)", Hs, unsigned_raw(r#"{"alg":"none","typ":"JWT"}"#, &payload, ""), "malformed token"),
        row("alg none, RS256 server", Rs, unsigned_raw(r#"{"alg":"none","typ":"JWT"}"#, &payload, ""), "malformed token"),
        row("alg none, EdDSA server", Ed, unsigned_raw(r#"{"alg":"none","typ":"JWT"}"#, &payload, ""), "malformed token"),
        row("alg None (capitalised) with the good signature", Hs, format!("{}.{p}.{}", b64(r#"{"alg":"None"}"#), parts(&good_hs)[2]), "malformed token"),
        row("alg HS256 while RS256 configured (RSA public PEM as HMAC secret)", Rs, mint(Algorithm::HS256, &rs_public_as_secret, &alice), "token algorithm is not RS256"),
        row("alg HS256 while EdDSA configured (Ed25519 public PEM as HMAC secret)", Ed, mint(Algorithm::HS256, &EncodingKey::from_secret(ed().public_pem.as_bytes()), &alice), "token algorithm is not EdDSA"),
        row("RS256 token against an HS256 server", Hs, rs256(&alice), "token algorithm is not HS256"),
        row("EdDSA token against an HS256 server", Hs, eddsa(&alice), "token algorithm is not HS256"),
        row("EdDSA token against an RS256 server", Rs, eddsa(&alice), "token algorithm is not RS256"),
        row("RS256 token against an EdDSA server", Ed, rs256(&alice), "token algorithm is not EdDSA"),
        row("HS512 with the right secret", Hs, mint(Algorithm::HS512, &hs_key(), &alice), "token algorithm is not HS256"),
        row("RS512 with the right RSA key", Rs, mint(Algorithm::RS512, &rs_key(), &alice), "token algorithm is not RS256"),
        row("PS256 with the right RSA key", Rs, mint(Algorithm::PS256, &rs_key(), &alice), "token algorithm is not RS256"),
        row("header without alg", Hs, format!("{}.{p}.{}", b64(r#"{"typ":"JWT"}"#), parts(&good_hs)[2]), "malformed token"),
        row("alg given twice (HS256, then none)", Hs, signed_raw(r#"{"alg":"HS256","alg":"none"}"#, &payload, Algorithm::HS256, &hs_key()), "malformed token"),
        row("crit header extension", Hs, signed_raw(r#"{"alg":"HS256","crit":["urn:x-ext"],"urn:x-ext":"on"}"#, &payload, Algorithm::HS256, &hs_key()), "critical header"),
        row("header field not a string (b64: false)", Hs, signed_raw(r#"{"alg":"HS256","crit":["b64"],"b64":false}"#, &payload, Algorithm::HS256, &hs_key()), "malformed token"),
        // --- audience and issuer
        row("wrong aud", HsAudIss, hs_with(&with(aud_iss(alice.clone()), "aud", json!("billing"))), "wrong audience"),
        row("wrong aud (array without ours)", HsAudIss, hs_with(&with(aud_iss(alice.clone()), "aud", json!(["billing", "admin"]))), "wrong audience"),
        row("aud an empty array", HsAudIss, hs_with(&with(aud_iss(alice.clone()), "aud", json!([]))), "wrong audience"),
        row("missing aud when required", HsAudIss, hs_with(&without(aud_iss(alice.clone()), "aud")), "missing claim aud"),
        row("aud not a string", HsAudIss, hs_with(&with(aud_iss(alice.clone()), "aud", json!(7))), "missing claim aud"),
        row("wrong iss", HsAudIss, hs_with(&with(aud_iss(alice.clone()), "iss", json!("https://evil.test"))), "wrong issuer"),
        row("missing iss when required", HsAudIss, hs_with(&without(aud_iss(alice.clone()), "iss")), "missing claim iss"),
        // --- the user claim
        row("missing user claim (sub)", Hs, hs_with(&without(alice.clone(), "sub")), "missing claim sub"),
        row("user claim null", Hs, hs_with(&with(alice.clone(), "sub", Value::Null)), "missing claim sub"),
        row("missing configured user claim (only sub present)", HsUserClaim, hs_with(&alice), "missing claim preferred_username"),
        row("user claim a number", Hs, hs_with(&with(alice.clone(), "sub", json!(42))), "not a string"),
        row("user claim a bool", Hs, hs_with(&with(alice.clone(), "sub", json!(true))), "not a string"),
        // jsonwebtoken reads `sub` itself, and cannot read an array or an object as one.
        row("user claim an array", Hs, hs_with(&with(alice.clone(), "sub", json!(["alice"]))), "malformed token"),
        row("user claim an object", Hs, hs_with(&with(alice.clone(), "sub", json!({"id": "alice"}))), "malformed token"),
        row("configured user claim a number", HsUserClaim, hs_with(&with(alice.clone(), "preferred_username", json!(7))), "not a string"),
        row("configured user claim an array", HsUserClaim, hs_with(&with(alice.clone(), "preferred_username", json!(["alice"]))), "not a string"),
        row("configured user claim an object", HsUserClaim, hs_with(&with(alice.clone(), "preferred_username", json!({"id": "alice"}))), "not a string"),
        row("configured user claim an invalid user id", HsUserClaim, hs_with(&with(alice.clone(), "preferred_username", json!("Alice Smith"))), "invalid user id"),
        row("invalid user id: empty", Hs, hs_with(&with(alice.clone(), "sub", json!(""))), "invalid user id"),
        row("invalid user id: 65 bytes", Hs, hs_with(&with(alice.clone(), "sub", json!("a".repeat(65)))), "invalid user id"),
        row("invalid user id: space", Hs, hs_with(&with(alice.clone(), "sub", json!("al ice"))), "invalid user id"),
        row("invalid user id: colon (dm: prefix)", Hs, hs_with(&with(alice.clone(), "sub", json!("dm:alice"))), "invalid user id"),
        row("invalid user id: slash (../admin)", Hs, hs_with(&with(alice.clone(), "sub", json!("../admin"))), "invalid user id"),
        row("invalid user id: non-ASCII", Hs, hs_with(&with(alice.clone(), "sub", json!("ålice"))), "invalid user id"),
        row("invalid user id: newline", Hs, hs_with(&with(alice.clone(), "sub", json!("alice\n"))), "invalid user id"),
        row("invalid user id: NUL", Hs, hs_with(&with(alice.clone(), "sub", json!("alice\u{0}"))), "invalid user id"),
        row("user claim given twice (alice, then mallory)", Hs, signed_raw(header_hs, &format!(r#"{{"sub":"alice","sub":"mallory","exp":{}}}"#, now() + 3_600), Algorithm::HS256, &hs_key()), "malformed token"),
        // --- malformed
        row("empty string", Hs, String::new(), "malformed token"),
        row("one part", Hs, "abc".to_owned(), "malformed token"),
        row("two parts", Hs, format!("{h}.{p}"), "malformed token"),
        row("four parts", Hs, format!("{good_hs}.{p}"), "malformed token"),
        row("only dots", Hs, "..".to_owned(), "malformed token"),
        row("bad base64 in the header", Hs, format!("!!!.{p}.{}", parts(&good_hs)[2]), "malformed token"),
        row("bad base64 in the payload (signature checked first)", Hs, format!("{h}.***.{}", parts(&good_hs)[2]), "bad signature"),
        row("bad base64 in the payload (signed)", Hs, sign_message(&format!("{h}.***"), Algorithm::HS256, &hs_key()), "malformed token"),
        row("bad base64 in the signature", Hs, format!("{h}.{p}.@@@"), "malformed token"),
        row("padded base64 (not base64url without padding)", Hs, format!("{good_hs}=="), "malformed token"),
        row("bad JSON header", Hs, format!("{}.{p}.{}", b64("{\"alg\":\"HS256\""), parts(&good_hs)[2]), "malformed token"),
        row("header a JSON array", Hs, format!("{}.{p}.{}", b64("[\"HS256\"]"), parts(&good_hs)[2]), "malformed token"),
        row("header not UTF-8", Hs, format!("{}.{p}.{}", b64([0xff, 0xfe, 0x00]), parts(&good_hs)[2]), "malformed token"),
        row("payload not JSON (signed)", Hs, signed_raw(header_hs, "not json", Algorithm::HS256, &hs_key()), "malformed token"),
        row("payload a JSON array (signed)", Hs, signed_raw(header_hs, "[1,2,3]", Algorithm::HS256, &hs_key()), "malformed token"),
        row("payload nested 3,000 deep (signed)", Hs, signed_raw(header_hs, &format!("{}{}", "[".repeat(3_000), "]".repeat(3_000)), Algorithm::HS256, &hs_key()), "malformed token"),
        row("garbage bytes", Hs, "\u{0}\u{7}\u{1b}[2J\u{fffd}\u{10ffff}.\u{0}.\u{0}".to_owned(), "malformed token"),
        row("Bearer prefix", Hs, format!("Bearer {good_hs}"), "malformed token"),
        row("leading space", Hs, format!(" {good_hs}"), "malformed token"),
        row("dev token", Hs, "dev:alice".to_owned(), "malformed token"),
        row("1 MiB token", Hs, format!("{h}.{}.{}", "A".repeat(1 << 20), parts(&good_hs)[2]), "token longer than"),
        row("1 MiB of dots", Hs, ".".repeat(1 << 20), "token longer than"),
        row("1 MiB token, no length limit", HsUnlimited, format!("{h}.{}.{}", "A".repeat(1 << 20), parts(&good_hs)[2]), "bad signature"),
        row("1 MiB signed payload of zero bytes, no length limit", HsUnlimited, sign_message(&format!("{h}.{}", "A".repeat(1 << 20)), Algorithm::HS256, &hs_key()), "malformed token"),
    ]
}

#[tokio::test]
async fn every_bad_token_is_refused_as_unauthorized_for_its_reason() {
    let rows = table();
    let mut failures = Vec::new();
    println!("| # | bad token | server | refused with |");
    println!("|---|---|---|---|");
    for (i, row) in rows.iter().enumerate() {
        let auth = row.server.authenticator();
        let result = auth.authenticate(&Token::new(row.token.clone())).await;
        let shown = match &result {
            Ok(identity) => format!("ACCEPTED as {identity:?}"),
            Err(e) => e.to_string(),
        };
        println!("| {} | {} | {:?} | {shown} |", i + 1, row.label, row.server);
        match result {
            Err(chat_core::Error::Unauthorized(why)) if why.contains(row.reason) => {}
            other => failures.push(format!(
                "{}: expected Unauthorized(…{}…), got {other:?}",
                row.label, row.reason
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// The RS256→HS256 confusion attack in full: the attacker knows the server's RSA public key
/// (it is public), uses its PEM bytes as an HMAC secret and signs an `HS256` token. An
/// authenticator that let the token's header choose the algorithm would accept it; the
/// proof that the token really is the attack is that an HS256 server holding those same
/// bytes as its secret accepts it.
#[tokio::test]
async fn rs256_to_hs256_confusion_is_refused() {
    let public_pem = rsa().public_pem.as_bytes();
    let forged = mint(
        Algorithm::HS256,
        &EncodingKey::from_secret(public_pem),
        &claims("admin"),
    );

    let naive = JwtAuthenticator::hs256(public_pem).unwrap();
    assert_eq!(
        naive.verify(&forged).unwrap().user.as_str(),
        "admin",
        "the forged token is a valid HS256 token for the PEM bytes"
    );

    let server = rs_auth();
    match server.authenticate(&Token::new(forged)).await {
        Err(chat_core::Error::Unauthorized(why)) => {
            assert!(why.contains("algorithm"), "{why}");
        }
        other => panic!("the RS256 server must refuse the forged token: {other:?}"),
    }
    // The same server takes a real RS256 token for the same claims.
    assert!(server.verify(&rs256(&claims("admin"))).is_ok());
}

/// Every row's token, fixed so that it is good, is accepted: the table's servers and
/// helpers are not refusing everything.
#[tokio::test]
async fn the_table_servers_accept_good_tokens() {
    let cases = [
        (Server::Hs, hs256(&claims("alice"))),
        (Server::Rs, rs256(&claims("alice"))),
        (Server::Ed, eddsa(&claims("alice"))),
        (Server::HsAudIss, hs256(&aud_iss(claims("alice")))),
        (
            Server::HsUserClaim,
            hs256(&with(claims("x"), "preferred_username", json!("alice"))),
        ),
        (
            Server::Hs,
            signed_raw(
                r#"{"alg":"HS256","typ":"JWT"}"#,
                &claims("alice").to_string(),
                Algorithm::HS256,
                &hs_key(),
            ),
        ),
    ];
    for (server, token) in cases {
        let identity = server
            .authenticator()
            .authenticate(&Token::new(token))
            .await
            .unwrap_or_else(|e| panic!("{server:?} refused a good token: {e}"));
        assert_eq!(identity.user.as_str(), "alice");
    }
}
