//! Keys made at test time, and tokens minted with them: good ones and every kind of bad.
//!
//! **Test keys only.** The RSA key comes from a generator with a fixed seed and the Ed25519
//! keys from fixed seeds: every run has the same keys, and none of them is a secret.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_auth_jwt::JwtAuthenticator;
use chat_core::auth::Identity;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use rsa::RsaPrivateKey;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::LineEnding;
use serde_json::{Value, json};

/// The HS256 secret of the authenticators under test.
pub const SECRET: &[u8] = b"test-only HS256 secret, at least 32 bytes";

/// Another secret, as long, that the server does not know.
pub const OTHER_SECRET: &[u8] = b"another test-only HS256 secret, 32+ bytes";

/// The leeway the authenticators use unless a test sets one: the crate's default.
pub const LEEWAY: u64 = 5;

/// A key pair in the PEM forms the tests use.
pub struct KeyPair {
    /// The private key, for minting tokens.
    pub private_pem: String,
    /// The public key (SubjectPublicKeyInfo, `-----BEGIN PUBLIC KEY-----`), for the server.
    pub public_pem: String,
}

/// A 2048-bit RSA test key, made once per test binary (about a second in a debug build).
pub fn rsa() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| rsa_key(2048, 7))
}

/// An RSA key of `bits` bits from the generator seeded with `seed`.
pub fn rsa_key(bits: usize, seed: u64) -> KeyPair {
    let private = RsaPrivateKey::new(&mut ChaCha8Rng::seed_from_u64(seed), bits).unwrap();
    KeyPair {
        private_pem: private.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    }
}

/// The same RSA public key as [`rsa`], as PKCS#1 (`-----BEGIN RSA PUBLIC KEY-----`).
pub fn rsa_public_pkcs1_pem() -> String {
    let private =
        <RsaPrivateKey as rsa::pkcs1::DecodeRsaPrivateKey>::from_pkcs1_pem(&rsa().private_pem)
            .unwrap();
    private
        .to_public_key()
        .to_pkcs1_pem(LineEnding::LF)
        .unwrap()
}

/// The Ed25519 test key of the server.
pub fn ed() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| ed_key(1))
}

/// An Ed25519 key pair from the seed `[seed; 32]`.
pub fn ed_key(seed: u8) -> KeyPair {
    let signing = SigningKey::from_bytes(&[seed; 32]);
    KeyPair {
        private_pem: signing.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    }
}

/// The server's authenticators, with default options.
pub fn hs_auth() -> JwtAuthenticator {
    JwtAuthenticator::hs256(SECRET).unwrap()
}

pub fn rs_auth() -> JwtAuthenticator {
    JwtAuthenticator::rs256_pem(&rsa().public_pem).unwrap()
}

pub fn ed_auth() -> JwtAuthenticator {
    JwtAuthenticator::eddsa_pem(&ed().public_pem).unwrap()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a good token for `user`, valid for an hour.
pub fn claims(user: &str) -> Value {
    json!({ "sub": user, "exp": now() + 3_600, "iat": now() })
}

/// `claims` with `key` set to `value` (or removed, for `Value::Null` when `remove`).
pub fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// `claims` without `key`.
pub fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

/// The server's HS256 key, the RSA and the Ed25519 private keys, for minting.
pub fn hs_key() -> EncodingKey {
    EncodingKey::from_secret(SECRET)
}

pub fn rs_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(rsa().private_pem.as_bytes()).unwrap()
}

pub fn ed_signing_key() -> EncodingKey {
    EncodingKey::from_ed_pem(ed().private_pem.as_bytes()).unwrap()
}

/// A token of `claims` signed by `key` with `alg`.
pub fn mint(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

pub fn hs256(claims: &Value) -> String {
    mint(Algorithm::HS256, &hs_key(), claims)
}

pub fn rs256(claims: &Value) -> String {
    mint(Algorithm::RS256, &rs_key(), claims)
}

pub fn eddsa(claims: &Value) -> String {
    mint(Algorithm::EdDSA, &ed_signing_key(), claims)
}

/// base64url without padding, as JWTs use it.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload` of the given JSON texts (kept as written: duplicate keys and all),
/// signed with `key` and `alg`.
pub fn signed_raw(header: &str, payload: &str, alg: Algorithm, key: &EncodingKey) -> String {
    sign_message(&format!("{}.{}", b64(header), b64(payload)), alg, key)
}

/// `message` (`header.payload`, already encoded, valid or not) signed with `key` and `alg`.
pub fn sign_message(message: &str, alg: Algorithm, key: &EncodingKey) -> String {
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

/// `header.payload.signature` of the given texts, with no signing at all.
pub fn unsigned_raw(header: &str, payload: &str, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header), b64(payload))
}

/// The three parts of a token.
pub fn parts(token: &str) -> [String; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    [
        parts[0].to_owned(),
        parts[1].to_owned(),
        parts[2].to_owned(),
    ]
}

/// The identity an accepted token of `user` and `exp` yields under leeway `leeway`.
pub fn identity(user: &str, exp: u64, leeway: u64) -> Identity {
    Identity {
        user: chat_core::UserId::new(user).unwrap(),
        expires_at: Some(chat_core::Timestamp::from_millis((exp + leeway) * 1_000)),
    }
}

/// The `exp` of `claims`.
pub fn exp_of(claims: &Value) -> u64 {
    claims["exp"].as_u64().unwrap()
}
