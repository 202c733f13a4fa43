//! The error of chat-auth-jwt: why a key was refused when the authenticator was built.
//!
//! Tokens are never refused with this type: [`JwtAuthenticator`](crate::JwtAuthenticator)
//! answers a bad token with [`chat_core::Error::Unauthorized`], as the
//! [`Authenticator`](chat_core::Authenticator) contract asks.

/// The result type of chat-auth-jwt.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a [`JwtAuthenticator`](crate::JwtAuthenticator) could not be built from a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An HS256 secret shorter than [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN) bytes
    /// (RFC 7518 §3.2: the key must be at least as long as the hash, 256 bits).
    #[error("the HS256 secret is {len} bytes, at least {min} are required")]
    SecretTooShort {
        /// The length of the secret given.
        len: usize,
        /// The minimum, [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN).
        min: usize,
    },
    /// The PEM is not a public key of the kind the constructor takes (an RSA public key
    /// for `rs256_pem`, an Ed25519 public key for `eddsa_pem`), or it does not parse.
    #[error("not a valid {expected} PEM: {reason}")]
    InvalidKey {
        /// What was expected: `"RSA public key"` or `"Ed25519 public key"`.
        expected: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An RSA key with a modulus shorter than [`MIN_RSA_BITS`](crate::MIN_RSA_BITS).
    #[error("the RSA key has {bits} bits, at least {min} are required")]
    RsaKeyTooSmall {
        /// The size of the key's modulus.
        bits: usize,
        /// The minimum, [`MIN_RSA_BITS`](crate::MIN_RSA_BITS).
        min: usize,
    },
    /// jsonwebtoken's cryptography cannot be used in this process: another crate enabled
    /// a second crypto backend of `jsonwebtoken` and a process-wide default that does not
    /// work was chosen before this authenticator was built.
    #[error("jsonwebtoken has no usable crypto provider: {0}")]
    CryptoProvider(String),
}
