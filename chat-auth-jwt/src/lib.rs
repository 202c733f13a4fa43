//! JWT authentication for chat-engine: [`JwtAuthenticator`], an
//! [`Authenticator`](chat_core::Authenticator) that takes a signed JSON Web Token as the
//! token of a `hello`.
//!
//! # Overview
//!
//! The server is configured with one key, and the key fixes the algorithm:
//!
//! | constructor | key | `alg` accepted |
//! |---|---|---|
//! | [`JwtAuthenticator::hs256`] | a shared secret of at least [`MIN_SECRET_LEN`] bytes | `HS256` |
//! | [`JwtAuthenticator::rs256_pem`] | an RSA public key (PEM) of at least [`MIN_RSA_BITS`] bits | `RS256` |
//! | [`JwtAuthenticator::eddsa_pem`] | an Ed25519 public key (PEM) | `EdDSA` |
//!
//! A token whose header names any other algorithm is refused, whatever it is signed with:
//! no `none`, and no `HS256` token "signed" with the server's RSA public key as an HMAC
//! secret. `exp` is required and checked, `nbf` is checked when present, `aud` and `iss`
//! when configured; the user is read from a claim (`sub` unless configured) and must be a
//! valid [`UserId`](chat_core::UserId). The [`Identity`](chat_core::auth::Identity) of an
//! accepted token expires at its `exp` plus the leeway, so the server closes the session
//! (close 4001) when the token stops being valid.
//!
//! Every refused token is [`chat_core::Error::Unauthorized`] with a short reason (`token
//! expired`, `bad signature`, `wrong audience`, …): the client gets `unauthorized` and close
//! 4001. A bad key is refused when the authenticator is built, with an [`Error`].
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use chat_auth_jwt::JwtAuthenticator;
//! use jsonwebtoken::{EncodingKey, Header, encode};
//!
//! let secret = b"a secret of at least thirty-two bytes";
//! let auth = JwtAuthenticator::hs256(secret)?.audience("chat");
//!
//! // What an identity service hands a user:
//! let exp = jsonwebtoken::get_current_timestamp() + 3_600;
//! let claims = serde_json::json!({ "sub": "alice", "aud": "chat", "exp": exp });
//! let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(secret))?;
//!
//! let identity = auth.verify(&token)?;
//! assert_eq!(identity.user.as_str(), "alice");
//! assert_eq!(identity.expires_at.unwrap().as_millis(), (exp + 5) * 1_000);
//!
//! // In a server: `chat_store_memory::engine_builder(Arc::new(auth)).build()`.
//! # let _: Arc<dyn chat_core::Authenticator> = Arc::new(auth);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Choices
//!
//! - **Leeway** for `exp` and `nbf`: [`DEFAULT_LEEWAY`], 5 s, enough for two clocks that keep
//!   time, and short, since a session lasts until `exp` plus the leeway.
//! - **`aud` unset** means not checked, also in tokens that carry one. A server whose issuer
//!   also serves other applications should set [`JwtAuthenticator::audience`].
//! - **`crit`**: no header extension is understood, so a token with a `crit` header is
//!   refused (RFC 7515 §4.1.11).
//! - **Size**: a token longer than [`DEFAULT_MAX_TOKEN_LEN`] (16 KiB) is refused unread.
//! - **Crypto**: jsonwebtoken's pure-Rust backend (`rust_crypto`), which builds without a C
//!   toolchain; only public-key and HMAC verification run in the server. If an application
//!   also enables jsonwebtoken's `aws_lc_rs` backend, building an authenticator installs the
//!   pure-Rust one as jsonwebtoken's process default unless one is installed already.
//!
//! # Features
//!
//! This crate has no cargo features. It is `chat_engine::jwt` with the facade's feature
//! `jwt`.

mod authenticator;
mod error;

pub use authenticator::{
    DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_LEN, DEFAULT_USER_CLAIM, JwtAuthenticator, MAX_LEEWAY,
    MIN_RSA_BITS, MIN_SECRET_LEN,
};
pub use error::{Error, Result};
