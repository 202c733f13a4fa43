//! Who is connecting ([`Authenticator`]) and what they may do ([`Authorizer`]).

use std::fmt;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::id::{RoomId, UserId};
use crate::time::Timestamp;

/// The credentials of a `hello`. Opaque to chat-core; its `Debug` never shows the secret,
/// so a token cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Token {
        Token(token.into())
    }

    /// The secret text, for an authenticator to check.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user.
    pub user: UserId,
    /// When the credentials stop being valid; the server closes the session then.
    pub expires_at: Option<Timestamp>,
}

impl Identity {
    /// An identity that does not expire.
    pub fn new(user: UserId) -> Identity {
        Identity {
            user,
            expires_at: None,
        }
    }
}

/// Turns the token of a `hello` into a user.
///
/// # Contract
///
/// - A token the authenticator accepts yields the same [`Identity`] every time it is
///   checked (until it expires); any other yields [`Error::Unauthorized`], which the
///   server answers with `unauthorized` and close 4001.
/// - [`Error::Backend`] means the check could not be made (an identity service is down);
///   the server answers `unavailable` and closes.
/// - Never panics on any input: the token is whatever a client sent.
///
/// Cancel safety: the server may drop the future (the client went away); an implementation
/// must not leave partial state behind when it is.
#[async_trait]
pub trait Authenticator: Send + Sync + fmt::Debug + 'static {
    /// Checks `token`.
    async fn authenticate(&self, token: &Token) -> Result<Identity>;
}

/// Development authentication: the token `dev:<user>` logs in as `<user>`, no secret
/// asked. **For demos and tests only**: anyone can be anyone.
///
/// ```
/// # use chat_core::auth::{Authenticator, DevAuthenticator, Token};
/// # tokio_test_block_on(async {
/// let id = DevAuthenticator.authenticate(&Token::new("dev:alice")).await.unwrap();
/// assert_eq!(id.user.as_str(), "alice");
/// assert!(DevAuthenticator.authenticate(&Token::new("alice")).await.is_err());
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DevAuthenticator;

/// The prefix of development tokens.
pub const DEV_TOKEN_PREFIX: &str = "dev:";

#[async_trait]
impl Authenticator for DevAuthenticator {
    async fn authenticate(&self, token: &Token) -> Result<Identity> {
        let user = token
            .expose()
            .strip_prefix(DEV_TOKEN_PREFIX)
            .ok_or_else(|| Error::Unauthorized("development tokens are dev:<user>".to_owned()))?;
        let user = UserId::new(user).map_err(|e| Error::Unauthorized(e.to_string()))?;
        Ok(Identity::new(user))
    }
}

/// What a user wants to do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Become a member (`join`; for a direct room, also being added through a `to` send).
    Join,
    /// Send a message.
    Send,
    /// Read: history, members, receipts, typing.
    Read,
}

/// Decides whether a user may act in a room.
///
/// The engine asks before acting and checks membership itself: a `send`, `history` or
/// `members` by a non-member is refused whatever the authorizer says, and nobody but its
/// two users ever joins a direct room.
///
/// # Contract
///
/// - `Ok(())` allows; [`Error::Forbidden`] refuses (the client gets `forbidden`);
///   [`Error::Backend`] means no decision could be made (`unavailable`).
/// - Decisions should be fast: `Send` is asked on every message. Cache what you can.
///
/// Cancel safety: as for [`Authenticator`].
#[async_trait]
pub trait Authorizer: Send + Sync + fmt::Debug + 'static {
    /// Whether `user` may do `action` in `room`.
    async fn authorize(&self, user: &UserId, room: &RoomId, action: Action) -> Result<()>;
}

/// The default policy: anyone may join, send to and read a room that is not a direct
/// room; only its two users may do anything in a direct room.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultAuthorizer;

impl DefaultAuthorizer {
    /// The policy: only its two users may do anything in a direct room.
    pub(crate) fn check(user: &UserId, room: &RoomId) -> Result<()> {
        if room.is_direct() && !room.is_direct_participant(user) {
            return Err(Error::Forbidden(format!(
                "{room} is the direct room of two other users"
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Authorizer for DefaultAuthorizer {
    async fn authorize(&self, user: &UserId, room: &RoomId, _action: Action) -> Result<()> {
        DefaultAuthorizer::check(user, room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn dev_tokens() {
        block_on(async {
            let ok = DevAuthenticator
                .authenticate(&Token::new("dev:alice"))
                .await
                .unwrap();
            assert_eq!(ok, Identity::new(UserId::new("alice").unwrap()));
            for bad in [
                "alice",
                "dev:",
                "Dev:alice",
                "dev:al ice",
                "dev:a:b",
                "",
                "dev:é",
            ] {
                let err = DevAuthenticator.authenticate(&Token::new(bad)).await;
                assert!(matches!(err, Err(Error::Unauthorized(_))), "{bad:?}");
            }
        });
    }

    #[test]
    fn tokens_do_not_leak_through_debug() {
        assert_eq!(format!("{:?}", Token::new("secret")), "Token(<redacted>)");
    }

    #[test]
    fn default_policy_keeps_direct_rooms_to_their_users() {
        block_on(async {
            let [alice, bob, carol] = ["alice", "bob", "carol"].map(|u| UserId::new(u).unwrap());
            let dm = RoomId::direct(&alice, &bob);
            let general = RoomId::new("general").unwrap();
            for action in [Action::Join, Action::Send, Action::Read] {
                for user in [&alice, &bob, &carol] {
                    assert!(
                        DefaultAuthorizer
                            .authorize(user, &general, action)
                            .await
                            .is_ok()
                    );
                }
                assert!(
                    DefaultAuthorizer
                        .authorize(&alice, &dm, action)
                        .await
                        .is_ok()
                );
                assert!(DefaultAuthorizer.authorize(&bob, &dm, action).await.is_ok());
                assert!(matches!(
                    DefaultAuthorizer.authorize(&carol, &dm, action).await,
                    Err(Error::Forbidden(_))
                ));
            }
        });
    }
}
