//! Property tests: no input makes an authenticator panic or answer with anything but
//! `Unauthorized` (never `Backend`: every check is local), and no one-character change to a
//! good token gets it accepted.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::OnceLock;

use chat_auth_jwt::JwtAuthenticator;
use jsonwebtoken::Algorithm;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use support::*;

fn servers() -> Vec<JwtAuthenticator> {
    vec![
        hs_auth(),
        rs_auth(),
        ed_auth(),
        hs_auth().audience("chat").issuer("https://id.test"),
        hs_auth().user_claim("name").max_token_len(usize::MAX),
    ]
}

fn assert_refused(auth: &JwtAuthenticator, token: &str) {
    match auth.verify(token) {
        Err(chat_core::Error::Unauthorized(_)) => {}
        other => panic!("{auth:?} on {token:?}: expected Unauthorized, got {other:?}"),
    }
}

fn assert_refused_or_accepted(auth: &JwtAuthenticator, token: &str) {
    match auth.verify(token) {
        Ok(_) | Err(chat_core::Error::Unauthorized(_)) => {}
        other => panic!("{auth:?} on {token:?}: expected Ok or Unauthorized, got {other:?}"),
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Claims objects near the ones that matter: the registered names with values of any
/// type, and sometimes sensible ones.
fn claims_object() -> impl Strategy<Value = Value> {
    let claim = |name: &'static str, sensible: Value| {
        prop::option::of(prop_oneof![Just(sensible), json_value()]).prop_map(move |v| (name, v))
    };
    (
        claim("sub", json!("alice")),
        claim("name", json!("alice")),
        claim("exp", json!(now() + 600)),
        claim("nbf", json!(now() - 600)),
        claim("aud", json!("chat")),
        claim("iss", json!("https://id.test")),
        prop::collection::btree_map("[a-z]{1,4}", json_value(), 0..3),
    )
        .prop_map(|(a, b, c, d, e, f, extra)| {
            let mut object: Map<String, Value> = extra.into_iter().collect();
            for (name, value) in [a, b, c, d, e, f] {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
            Value::Object(object)
        })
}

/// A good token for each server, minted once (RSA signing is slow in a debug build).
fn good_tokens() -> &'static [(JwtAuthenticator, String); 3] {
    static TOKENS: OnceLock<[(JwtAuthenticator, String); 3]> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let claims = claims("alice");
        [
            (hs_auth(), hs256(&claims)),
            (rs_auth(), rs256(&claims)),
            (ed_auth(), eddsa(&claims)),
        ]
    })
}

const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_string_is_refused(token in any::<String>()) {
        for auth in servers() {
            assert_refused(&auth, &token);
        }
    }

    #[test]
    fn any_three_base64url_parts_are_refused(
        parts in prop::collection::vec("[A-Za-z0-9_-]{0,80}", 3),
    ) {
        let token = parts.join(".");
        for auth in servers() {
            assert_refused(&auth, &token);
        }
    }

    #[test]
    fn any_json_header_and_payload_is_refused(header in json_value(), payload in json_value()) {
        let token = unsigned_raw(&header.to_string(), &payload.to_string(), "c2ln");
        for auth in servers() {
            assert_refused(&auth, &token);
        }
    }

    /// Well signed tokens with claims of any shape: accepted or refused, never a panic or
    /// another error; and when accepted, the identity is the one the claims name.
    #[test]
    fn signed_tokens_with_any_claims_are_accepted_or_refused(
        claims in claims_object(),
        extra_header in prop::collection::btree_map("[a-z]{1,4}", json_value(), 0..3),
    ) {
        let mut header: Map<String, Value> = extra_header.into_iter().collect();
        header.insert("alg".to_owned(), json!("HS256"));
        let token = signed_raw(
            &Value::Object(header).to_string(),
            &claims.to_string(),
            Algorithm::HS256,
            &hs_key(),
        );
        for auth in [hs_auth(), hs_auth().audience("chat").issuer("https://id.test")] {
            assert_refused_or_accepted(&auth, &token);
            if let Ok(identity) = auth.verify(&token) {
                prop_assert_eq!(Some(identity.user.as_str()), claims["sub"].as_str());
                prop_assert!(identity.expires_at.is_some());
            }
        }
        let auth = hs_auth().user_claim("name");
        assert_refused_or_accepted(&auth, &token);
        if let Ok(identity) = auth.verify(&token) {
            prop_assert_eq!(Some(identity.user.as_str()), claims["name"].as_str());
        }
    }

    #[test]
    fn one_changed_character_makes_a_good_token_refused(
        at in any::<prop::sample::Index>(),
        with in prop::sample::select(format!("{B64URL}.=+/ ").chars().collect::<Vec<_>>()),
        kind in 0..3_usize,
    ) {
        let (auth, token) = good_tokens()[kind].clone();
        let mut chars: Vec<char> = token.chars().collect();
        let at = at.index(chars.len());
        prop_assume!(chars[at] != with);
        chars[at] = with;
        let mutated: String = chars.into_iter().collect();
        assert_refused(&auth, &mutated);
        // The original is good: the mutation is what got it refused.
        prop_assert!(auth.verify(&token).is_ok());
    }
}
