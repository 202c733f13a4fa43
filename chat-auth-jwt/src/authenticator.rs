//! [`JwtAuthenticator`]: an [`Authenticator`] that takes a signed JWT as the `hello` token.

use std::collections::HashSet;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use async_trait::async_trait;
use chat_core::auth::{Authenticator, Identity, Token};
use chat_core::{Timestamp, UserId};
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};
use rsa::RsaPublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_LEN: usize = 32;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The default leeway for `exp` and `nbf`: enough for the clocks of an issuer and a server
/// that both keep time, short enough that a session ends close to its token's `exp`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// The longest leeway [`JwtAuthenticator::leeway`] sets; a longer one is clamped to it.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// The claim the user id is read from unless [`JwtAuthenticator::user_claim`] says otherwise.
pub const DEFAULT_USER_CLAIM: &str = "sub";

/// The longest token looked at, in bytes, unless [`JwtAuthenticator::max_token_len`] says
/// otherwise; a longer one is refused before it is decoded.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 16 * 1024;

const RSA_PUBLIC_KEY: &str = "RSA public key";
const ED25519_PUBLIC_KEY: &str = "Ed25519 public key";

/// Checks JSON Web Tokens signed with the one key the server is configured with.
///
/// Built with the constructor of its key type — [`hs256`](Self::hs256),
/// [`rs256_pem`](Self::rs256_pem) or [`eddsa_pem`](Self::eddsa_pem) — and then the
/// optional checks, each with its default:
///
/// | option | default |
/// |---|---|
/// | [`audience`](Self::audience) | `aud` not checked |
/// | [`issuer`](Self::issuer) | `iss` not checked |
/// | [`user_claim`](Self::user_claim) | [`DEFAULT_USER_CLAIM`] (`sub`) |
/// | [`leeway`](Self::leeway) | [`DEFAULT_LEEWAY`] (5 s) |
/// | [`max_token_len`](Self::max_token_len) | [`DEFAULT_MAX_TOKEN_LEN`] (16 KiB) |
///
/// ```
/// use std::time::Duration;
/// use chat_auth_jwt::JwtAuthenticator;
///
/// let auth = JwtAuthenticator::hs256("a secret of at least thirty-two bytes")?
///     .audience("chat")
///     .issuer("https://id.example.com")
///     .user_claim("preferred_username")
///     .leeway(Duration::from_secs(10));
/// # let _ = auth;
/// # Ok::<(), chat_auth_jwt::Error>(())
/// ```
///
/// A token is accepted when all of these hold, and refused with
/// [`chat_core::Error::Unauthorized`] otherwise:
///
/// - it is a compact JWS (three base64url parts) of at most `max_token_len` bytes;
/// - its header's `alg` is the key's algorithm (`HS256`, `RS256` or `EdDSA`) and nothing
///   else, so `none` and an `HS256` token signed with an RSA public key as the HMAC
///   secret are refused; it has no `crit` header (no extension is understood);
/// - the signature verifies with the key;
/// - `exp` is present, a number, and not more than the leeway in the past; `nbf`, when
///   present, is not more than the leeway in the future;
/// - `aud` and `iss`, when configured, are present and one of the configured values;
/// - the user claim is a string that is a valid [`UserId`].
///
/// The [`Identity`] it yields expires at `exp` plus the leeway: the first instant at which
/// this authenticator would refuse the same token, so the server can close the session
/// then (with 4001) and a session never outlives a token that a new `hello` could not
/// use.
///
/// # Clone
///
/// Cloning copies the key and the settings (a few hundred bytes); share one behind an
/// `Arc` as the engine does.
#[derive(Clone)]
pub struct JwtAuthenticator {
    key: DecodingKey,
    algorithm: Algorithm,
    validation: Validation,
    user_claim: String,
    max_token_len: usize,
}

impl JwtAuthenticator {
    /// Tokens signed with HMAC-SHA256 and the shared `secret` (the bytes themselves, not
    /// base64 of them).
    ///
    /// # Errors
    ///
    /// [`Error::SecretTooShort`] when `secret` is shorter than [`MIN_SECRET_LEN`].
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<JwtAuthenticator> {
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_LEN {
            return Err(Error::SecretTooShort {
                len: secret.len(),
                min: MIN_SECRET_LEN,
            });
        }
        JwtAuthenticator::with_key(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// Tokens signed with RSASSA-PKCS1-v1_5 and SHA-256, checked with the RSA public key in
    /// `pem`: a `PUBLIC KEY` (SubjectPublicKeyInfo, as `openssl rsa -pubout` writes it) or
    /// an `RSA PUBLIC KEY` (PKCS#1).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when `pem` is not an RSA public key (a private key included:
    /// give the server only the public half); [`Error::RsaKeyTooSmall`] when its modulus
    /// is shorter than [`MIN_RSA_BITS`].
    pub fn rs256_pem(pem: impl AsRef<[u8]>) -> Result<JwtAuthenticator> {
        let pem = pem.as_ref();
        refuse_private_key(pem, RSA_PUBLIC_KEY)?;
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| invalid(RSA_PUBLIC_KEY, e))?;
        // jsonwebtoken takes the key apart only when it verifies a token: do it now, so that
        // a bad key fails here and not as a refusal of every token.
        let DecodingKeyKind::SecretOrDer(der) = key.kind() else {
            return Err(invalid(RSA_PUBLIC_KEY, "no PKCS#1 key inside"));
        };
        let public = RsaPublicKey::from_pkcs1_der(der).map_err(|e| invalid(RSA_PUBLIC_KEY, e))?;
        let bits = public.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(Error::RsaKeyTooSmall {
                bits,
                min: MIN_RSA_BITS,
            });
        }
        JwtAuthenticator::with_key(key, Algorithm::RS256)
    }

    /// Tokens signed with Ed25519 (`alg` `EdDSA`), checked with the Ed25519 public key in
    /// `pem` (a `PUBLIC KEY`, as `openssl pkey -pubout` writes it).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when `pem` is not an Ed25519 public key (a private key
    /// included) or its point is not on the curve.
    pub fn eddsa_pem(pem: impl AsRef<[u8]>) -> Result<JwtAuthenticator> {
        let pem = pem.as_ref();
        refuse_private_key(pem, ED25519_PUBLIC_KEY)?;
        let key = DecodingKey::from_ed_pem(pem).map_err(|e| invalid(ED25519_PUBLIC_KEY, e))?;
        // jsonwebtoken slices the first 32 bytes out of the key when it verifies: make sure
        // there are exactly 32 (the point itself is checked by `with_key`).
        match key.kind() {
            DecodingKeyKind::SecretOrDer(raw) if raw.len() == 32 => {}
            _ => return Err(invalid(ED25519_PUBLIC_KEY, "the key is not 32 bytes")),
        }
        JwtAuthenticator::with_key(key, Algorithm::EdDSA)
    }

    fn with_key(key: DecodingKey, algorithm: Algorithm) -> Result<JwtAuthenticator> {
        check_key(&key, algorithm)?;
        let mut validation = Validation::new(algorithm);
        validation.leeway = DEFAULT_LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Without a configured audience `aud` is not looked at (jsonwebtoken would refuse
        // every token that carries one).
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Ok(JwtAuthenticator {
            key,
            algorithm,
            validation,
            user_claim: DEFAULT_USER_CLAIM.to_owned(),
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
        })
    }

    /// Requires `aud` to be `audience` (or an array holding it). May be given more than
    /// once: any of the audiences is then accepted.
    ///
    /// Default: `aud` is not checked. A server that shares its issuer with other services
    /// should set it, so that a token minted for one of them does not open a chat session.
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> JwtAuthenticator {
        self.validation
            .aud
            .get_or_insert_with(HashSet::new)
            .insert(audience.into());
        self.validation.validate_aud = true;
        self.validation
            .required_spec_claims
            .insert("aud".to_owned());
        self
    }

    /// Requires `iss` to be `issuer`. May be given more than once: any of the issuers is
    /// then accepted.
    ///
    /// Default: `iss` is not checked.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> JwtAuthenticator {
        self.validation
            .iss
            .get_or_insert_with(HashSet::new)
            .insert(issuer.into());
        self.validation
            .required_spec_claims
            .insert("iss".to_owned());
        self
    }

    /// Reads the user id from the claim `claim`, which must be a string that is a valid
    /// [`UserId`] (`[A-Za-z0-9._-]{1,64}`).
    ///
    /// Default: [`DEFAULT_USER_CLAIM`] (`sub`).
    #[must_use]
    pub fn user_claim(mut self, claim: impl Into<String>) -> JwtAuthenticator {
        self.user_claim = claim.into();
        self
    }

    /// How far past `exp` a token is still accepted, and how far before `nbf`: the clock
    /// skew allowed between the issuer and this server. Whole seconds, as the claims are;
    /// a fraction is rounded up, and anything over [`MAX_LEEWAY`] is clamped to it.
    ///
    /// Default: [`DEFAULT_LEEWAY`] (5 s). The session of an accepted token expires at
    /// `exp` plus the leeway.
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> JwtAuthenticator {
        let leeway = leeway.min(MAX_LEEWAY);
        self.validation.leeway = leeway.as_secs() + u64::from(leeway.subsec_nanos() > 0);
        self
    }

    /// The longest token looked at, in bytes; a longer one is refused before any decoding.
    ///
    /// Default: [`DEFAULT_MAX_TOKEN_LEN`] (16 KiB).
    #[must_use]
    pub fn max_token_len(mut self, bytes: usize) -> JwtAuthenticator {
        self.max_token_len = bytes;
        self
    }

    /// Checks `token` as [`authenticate`](Authenticator::authenticate) does, without a
    /// runtime: for an HTTP endpoint that takes the same tokens, say.
    ///
    /// # Errors
    ///
    /// [`chat_core::Error::Unauthorized`] with the reason, for every token that is not
    /// accepted. Never anything else: every check is local, with the key that was proven
    /// usable when the authenticator was built.
    pub fn verify(&self, token: &str) -> chat_core::Result<Identity> {
        if token.len() > self.max_token_len {
            return Err(unauthorized(format!(
                "token longer than {} bytes",
                self.max_token_len
            )));
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| refusal(&e, self.algorithm))?;
        if data.header.crit.is_some() {
            return Err(unauthorized("critical header extensions are not supported"));
        }
        let claims = data.claims;
        let user = match claims.get(&self.user_claim) {
            None | Some(Value::Null) => {
                return Err(unauthorized(format!("missing claim {}", self.user_claim)));
            }
            Some(Value::String(user)) => UserId::new(user)
                .map_err(|e| unauthorized(format!("claim {}: {e}", self.user_claim)))?,
            Some(_) => {
                return Err(unauthorized(format!(
                    "claim {} is not a string",
                    self.user_claim
                )));
            }
        };
        // jsonwebtoken has read `exp` by the same rule; this cannot fail after it did.
        let exp = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or_else(|| unauthorized("claim exp is not a NumericDate"))?;
        let expires_at = exp
            .saturating_add(self.validation.leeway)
            .saturating_mul(1_000);
        Ok(Identity {
            user,
            expires_at: Some(Timestamp::from_millis(expires_at)),
        })
    }
}

/// Cancel safe: the check is synchronous and keeps no state.
#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, token: &Token) -> chat_core::Result<Identity> {
        self.verify(token.expose())
    }
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key: an HS256 secret must not reach a log.
        f.debug_struct("JwtAuthenticator")
            .field("algorithm", &self.algorithm)
            .field("audience", &self.validation.aud)
            .field("issuer", &self.validation.iss)
            .field("user_claim", &self.user_claim)
            .field("leeway", &Duration::from_secs(self.validation.leeway))
            .field("max_token_len", &self.max_token_len)
            .finish_non_exhaustive()
    }
}

/// Proves `key` usable for `algorithm` with jsonwebtoken's crypto provider now, so that no
/// token can meet an unusable key (or a provider that panics) later.
fn check_key(key: &DecodingKey, algorithm: Algorithm) -> Result<()> {
    // jsonwebtoken picks its process-wide provider from its cargo features, and has none
    // (it panics) when another crate enabled its second backend too. Offer ours; if one is
    // installed already, that one stays.
    let _ = CryptoProvider::install_default(&jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER);
    let expected = match algorithm {
        Algorithm::RS256 => RSA_PUBLIC_KEY,
        Algorithm::EdDSA => ED25519_PUBLIC_KEY,
        _ => "HMAC secret",
    };
    let trial = panic::catch_unwind(AssertUnwindSafe(|| {
        jsonwebtoken::crypto::verify("", b"", key, algorithm)
    }));
    match trial {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(invalid(expected, e)),
        Err(_) => Err(Error::CryptoProvider(
            "it panicked on a trial verification; enable one crypto backend of jsonwebtoken \
             or install a provider before building the authenticator"
                .to_owned(),
        )),
    }
}

fn refuse_private_key(pem: &[u8], expected: &'static str) -> Result<()> {
    let private = pem
        .windows(b"PRIVATE KEY-----".len())
        .any(|w| w == b"PRIVATE KEY-----");
    if private {
        return Err(invalid(
            expected,
            "this is a private key; give the server the public key only",
        ));
    }
    Ok(())
}

fn invalid(expected: &'static str, reason: impl fmt::Display) -> Error {
    Error::InvalidKey {
        expected,
        reason: reason.to_string(),
    }
}

fn unauthorized(why: impl Into<String>) -> chat_core::Error {
    chat_core::Error::Unauthorized(why.into())
}

/// Why jsonwebtoken refused a token, in a few words a client may be shown.
fn refusal(error: &jsonwebtoken::errors::Error, algorithm: Algorithm) -> chat_core::Error {
    let why = match error.kind() {
        ErrorKind::ExpiredSignature => "token expired".to_owned(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            format!("token algorithm is not {algorithm:?}")
        }
        ErrorKind::InvalidAudience => "wrong audience".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
        ErrorKind::InvalidClaimFormat(claim) => format!("claim {claim} is not a NumericDate"),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "malformed token".to_owned(),
        _ => "invalid token".to_owned(),
    };
    unauthorized(why)
}

/// A NumericDate as jsonwebtoken reads one: a non-negative integer, or a finite
/// non-negative number rounded to the nearest second.
fn numeric_date(value: &Value) -> Option<u64> {
    if let Some(secs) = value.as_u64() {
        return Some(secs);
    }
    let secs = value.as_f64()?;
    (secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64).then(|| secs.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_dates_are_read_as_jsonwebtoken_reads_them() {
        assert_eq!(numeric_date(&Value::from(42_u64)), Some(42));
        assert_eq!(numeric_date(&Value::from(41.6)), Some(42));
        assert_eq!(numeric_date(&Value::from(-1)), None);
        assert_eq!(numeric_date(&Value::from(-0.5)), None);
        assert_eq!(numeric_date(&Value::from("42")), None);
        assert_eq!(numeric_date(&Value::Null), None);
    }

    #[test]
    fn leeway_rounds_up_and_is_clamped() {
        let auth = JwtAuthenticator::hs256([7; 32]).unwrap();
        assert_eq!(auth.validation.leeway, DEFAULT_LEEWAY.as_secs());
        let auth = auth.leeway(Duration::from_millis(1_500));
        assert_eq!(auth.validation.leeway, 2);
        let auth = auth.leeway(Duration::ZERO);
        assert_eq!(auth.validation.leeway, 0);
        let auth = auth.leeway(Duration::MAX);
        assert_eq!(auth.validation.leeway, MAX_LEEWAY.as_secs());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let auth = JwtAuthenticator::hs256("0123456789abcdef0123456789abcdef").unwrap();
        let debug = format!("{auth:?}");
        assert!(debug.contains("HS256"), "{debug}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
    }
}
