//! Building an authenticator from a bad key is a typed error, never a panic, and a good
//! key of each kind builds.

#![allow(clippy::unwrap_used)]

mod support;

use chat_auth_jwt::{Error, JwtAuthenticator, MIN_RSA_BITS, MIN_SECRET_LEN};
use ed25519_dalek::VerifyingKey;

use support::*;

fn pem(tag: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {tag}-----\n{}\n-----END {tag}-----\n",
        lines.join("\n")
    )
}

/// An Ed25519 SubjectPublicKeyInfo around `raw` (normally the 32 bytes of a point).
fn ed_spki(raw: &[u8]) -> String {
    let mut der = vec![0x30, 0x2a - 32 + raw.len() as u8];
    der.extend([0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70]); // AlgorithmIdentifier: Ed25519
    der.extend([0x03, raw.len() as u8 + 1, 0x00]); // BIT STRING, no unused bits
    der.extend(raw);
    pem("PUBLIC KEY", &der)
}

#[test]
fn good_keys_of_each_kind_build() {
    JwtAuthenticator::hs256(SECRET).unwrap();
    JwtAuthenticator::hs256([0_u8; MIN_SECRET_LEN]).unwrap();
    JwtAuthenticator::rs256_pem(&rsa().public_pem).unwrap();
    JwtAuthenticator::rs256_pem(rsa_public_pkcs1_pem()).unwrap();
    JwtAuthenticator::eddsa_pem(&ed().public_pem).unwrap();
    // `ed_spki` wraps a point as ed25519-dalek does, so the refusals below are about the
    // bytes inside, not the wrapping.
    let point = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
    assert_eq!(ed_spki(point.as_bytes()), ed().public_pem);
    JwtAuthenticator::eddsa_pem(ed_spki(point.as_bytes())).unwrap();
}

#[test]
fn a_short_secret_is_refused() {
    for len in [0, 1, 16, MIN_SECRET_LEN - 1] {
        match JwtAuthenticator::hs256(vec![b'k'; len]) {
            Err(Error::SecretTooShort { len: got, min }) => {
                assert_eq!((got, min), (len, MIN_SECRET_LEN));
            }
            other => panic!("{len}-byte secret: {other:?}"),
        }
    }
    let message = JwtAuthenticator::hs256("secret").unwrap_err().to_string();
    assert_eq!(
        message,
        "the HS256 secret is 6 bytes, at least 32 are required"
    );
}

fn invalid_key(result: chat_auth_jwt::Result<JwtAuthenticator>) -> String {
    match result {
        Err(e @ Error::InvalidKey { .. }) => e.to_string(),
        other => panic!("expected InvalidKey, got {other:?}"),
    }
}

#[test]
fn not_an_rsa_public_key_is_refused() {
    let garbage: [(&str, Vec<u8>); 7] = [
        ("empty", Vec::new()),
        ("not PEM", b"hello".to_vec()),
        ("binary", vec![0xff, 0x00, 0x30, 0x82]),
        ("truncated PEM", rsa().public_pem.as_bytes()[..100].to_vec()),
        (
            "PEM of garbage DER",
            pem("PUBLIC KEY", b"not DER").into_bytes(),
        ),
        (
            "an Ed25519 public key",
            ed().public_pem.clone().into_bytes(),
        ),
        (
            "an unknown PEM tag",
            pem("CERTIFICATE REQUEST", b"x").into_bytes(),
        ),
    ];
    for (label, input) in garbage {
        let message = invalid_key(JwtAuthenticator::rs256_pem(&input));
        assert!(
            message.starts_with("not a valid RSA public key PEM"),
            "{label}: {message}"
        );
    }
}

#[test]
fn an_rsa_private_key_is_refused_with_a_hint() {
    let message = invalid_key(JwtAuthenticator::rs256_pem(&rsa().private_pem));
    assert!(message.contains("private key"), "{message}");
    let pkcs8 = {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::EncodePrivateKey;
        rsa::RsaPrivateKey::from_pkcs1_pem(&rsa().private_pem)
            .unwrap()
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string()
    };
    assert!(invalid_key(JwtAuthenticator::rs256_pem(pkcs8)).contains("private key"));
}

#[test]
fn a_small_rsa_key_is_refused() {
    let small = rsa_key(1024, 3);
    match JwtAuthenticator::rs256_pem(&small.public_pem) {
        Err(Error::RsaKeyTooSmall { bits, min }) => {
            assert_eq!((bits, min), (1024, MIN_RSA_BITS));
        }
        other => panic!("a 1024-bit key: {other:?}"),
    }
}

#[test]
fn not_an_ed25519_public_key_is_refused() {
    let garbage: [(&str, Vec<u8>); 6] = [
        ("empty", Vec::new()),
        (
            "not PEM",
            b"-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n".to_vec(),
        ),
        ("an RSA public key", rsa().public_pem.clone().into_bytes()),
        ("31 bytes", ed_spki(&[9; 31]).into_bytes()),
        ("33 bytes", ed_spki(&[9; 33]).into_bytes()),
        ("0 bytes", ed_spki(&[]).into_bytes()),
    ];
    for (label, input) in garbage {
        let message = invalid_key(JwtAuthenticator::eddsa_pem(&input));
        assert!(
            message.starts_with("not a valid Ed25519 public key PEM"),
            "{label}: {message}"
        );
    }
    let message = invalid_key(JwtAuthenticator::eddsa_pem(&ed().private_pem));
    assert!(message.contains("private key"), "{message}");
}

#[test]
fn an_ed25519_key_off_the_curve_is_refused() {
    // 32 bytes that do not decompress to a point.
    let off_curve = (0..=255_u8)
        .map(|b| {
            let mut raw = [b; 32];
            raw[31] &= 0x7f;
            raw
        })
        .find(|raw| VerifyingKey::from_bytes(raw).is_err())
        .expect("some byte pattern is off the curve");
    let message = invalid_key(JwtAuthenticator::eddsa_pem(ed_spki(&off_curve)));
    assert!(
        message.starts_with("not a valid Ed25519 public key PEM"),
        "{message}"
    );
}

#[test]
fn public_types_are_send_sync_and_static() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<JwtAuthenticator>();
    assert_send_sync::<Error>();
    let _: std::sync::Arc<dyn chat_core::Authenticator> = std::sync::Arc::new(hs_auth());
}
