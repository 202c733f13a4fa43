//! Validated identifiers: every id is checked once, at construction, and is then
//! cheap to clone (`Arc<str>` or a plain integer) and always valid.
//!
//! The rules are those of protocol v1:
//!
//! | id | rule |
//! |---|---|
//! | [`UserId`], [`NodeId`] | `[A-Za-z0-9._-]{1,64}` |
//! | [`RoomId`] | `[A-Za-z0-9._:-]{1,128}`; ids starting `dm:` must be a direct room: `dm:` + two user ids in byte order joined by `:` (up to 132 bytes) |
//! | [`ClientMsgId`] | any 1–64 Unicode scalar values |
//! | [`Epoch`] | `[A-Za-z0-9._:-]{1,64}` |
//! | [`Seq`], [`RequestId`] | an integer from 0 to 2^53 − 1 (exact in every JSON implementation) |

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The largest integer every JSON implementation represents exactly: 2^53 − 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The prefix reserved for direct-message rooms.
pub const DIRECT_ROOM_PREFIX: &str = "dm:";

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct InvalidId {
    kind: &'static str,
    reason: String,
}

impl InvalidId {
    fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }

    /// What kind of id was refused (`"user id"`, `"room id"`, …).
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

fn check_chars(
    kind: &'static str,
    s: &str,
    max: usize,
    allowed: impl Fn(u8) -> bool,
) -> Result<(), InvalidId> {
    if s.is_empty() {
        return Err(InvalidId::new(kind, "empty"));
    }
    if s.len() > max {
        return Err(InvalidId::new(
            kind,
            format!("{} bytes, at most {max} allowed", s.len()),
        ));
    }
    if let Some(pos) = s.bytes().position(|b| !allowed(b)) {
        let ch = s[pos..].chars().next().unwrap_or('?');
        return Err(InvalidId::new(
            kind,
            format!("character {ch:?} at byte {pos} is not allowed"),
        ));
    }
    Ok(())
}

fn is_user_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

fn is_room_byte(b: u8) -> bool {
    is_user_byte(b) || b == b':'
}

/// Defines a validated string id: `Arc<str>` inside, `Display`/`FromStr`/`AsRef<str>`,
/// serde as a plain JSON string that is validated when read.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $validate:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` and makes the id.
            pub fn new(s: &str) -> Result<Self, InvalidId> {
                $validate(s)?;
                Ok(Self(Arc::from(s)))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidId;
            fn try_from(s: &str) -> Result<Self, InvalidId> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                $validate(&s)?;
                Ok(Self(Arc::from(s)))
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a valid ", stringify!($name)))
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::new(s).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(V)
            }
        }
    };
}

fn validate_user(s: &str) -> Result<(), InvalidId> {
    check_chars("user id", s, 64, is_user_byte)
}

fn validate_node(s: &str) -> Result<(), InvalidId> {
    check_chars("node id", s, 64, is_user_byte)
}

fn validate_session(s: &str) -> Result<(), InvalidId> {
    check_chars("session id", s, 64, is_user_byte)
}

fn validate_epoch(s: &str) -> Result<(), InvalidId> {
    check_chars("epoch", s, 64, is_room_byte)
}

fn validate_room(s: &str) -> Result<(), InvalidId> {
    match s.strip_prefix(DIRECT_ROOM_PREFIX) {
        Some(pair) => split_direct(pair).map(|_| ()),
        None => check_chars("room id", s, 128, is_room_byte),
    }
}

/// Splits the part after `dm:` into its two user ids, checking both and their order.
fn split_direct(pair: &str) -> Result<(&str, &str), InvalidId> {
    const KIND: &str = "direct room id";
    let Some((a, b)) = pair.split_once(':') else {
        return Err(InvalidId::new(
            KIND,
            "must be dm:<user>:<user> with the two user ids in byte order",
        ));
    };
    for user in [a, b] {
        check_chars(KIND, user, 64, is_user_byte)?;
    }
    if a > b {
        return Err(InvalidId::new(
            KIND,
            format!("user ids must be in byte order: dm:{b}:{a}"),
        ));
    }
    Ok((a, b))
}

fn validate_cid(s: &str) -> Result<(), InvalidId> {
    const KIND: &str = "cid";
    if s.is_empty() {
        return Err(InvalidId::new(KIND, "empty"));
    }
    // At most 64 chars means at most 256 bytes: cheap reject before counting.
    if s.len() > 256 || s.chars().count() > 64 {
        return Err(InvalidId::new(KIND, "more than 64 characters"));
    }
    Ok(())
}

string_id!(
    /// A user id: `[A-Za-z0-9._-]{1,64}`, case-sensitive.
    ///
    /// ```
    /// # use chat_core::UserId;
    /// assert!(UserId::new("alice").is_ok());
    /// assert!(UserId::new("al ice").is_err());
    /// ```
    UserId,
    validate_user
);

string_id!(
    /// A room id: `[A-Za-z0-9._:-]{1,128}`, or a direct room `dm:<a>:<b>` (see [`RoomId::direct`]).
    ///
    /// Ids starting `dm:` are reserved: they must name two valid user ids in byte order.
    ///
    /// ```
    /// # use chat_core::{RoomId, UserId};
    /// assert!(RoomId::new("general").is_ok());
    /// assert!(RoomId::new("dm:bob:alice").is_err()); // not in byte order
    /// let dm = RoomId::direct(&UserId::new("bob")?, &UserId::new("alice")?);
    /// assert_eq!(dm.as_str(), "dm:alice:bob");
    /// # Ok::<(), chat_core::InvalidId>(())
    /// ```
    RoomId,
    validate_room
);

string_id!(
    /// The client's id for a message it sends (`cid`): any 1–64 Unicode scalar values.
    /// A `send` is idempotent on `(room, sender, cid)`.
    ClientMsgId,
    validate_cid
);

string_id!(
    /// The epoch of a room's log: changes when the log is reset (a new in-memory
    /// process, a wiped database), telling clients that their copy is stale.
    /// `[A-Za-z0-9._:-]{1,64}`.
    Epoch,
    validate_epoch
);

string_id!(
    /// A server node's id (for presence leases and broker events): `[A-Za-z0-9._-]{1,64}`.
    NodeId,
    validate_node
);

string_id!(
    /// A connection's session id, as the `hello` reply reports it: `[A-Za-z0-9._-]{1,64}`.
    SessionId,
    validate_session
);

impl SessionId {
    /// A fresh random session id (`s-` + 16 hex digits).
    pub fn random() -> SessionId {
        SessionId(Arc::from(format!("s-{:016x}", random_u64())))
    }
}

impl RoomId {
    /// The direct room of two users: `dm:` + both ids in byte order, joined by `:`.
    pub fn direct(a: &UserId, b: &UserId) -> RoomId {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        RoomId(Arc::from([DIRECT_ROOM_PREFIX, &a.0, ":", &b.0].concat()))
    }

    /// Whether this is a direct-message room (`dm:…`).
    pub fn is_direct(&self) -> bool {
        self.0.starts_with(DIRECT_ROOM_PREFIX)
    }

    /// The two users of a direct room, in byte order; `None` for other rooms.
    pub fn direct_users(&self) -> Option<(&str, &str)> {
        // Checked when the id was made: two user ids (which hold no `:`) in byte order.
        self.0.strip_prefix(DIRECT_ROOM_PREFIX)?.split_once(':')
    }

    /// Whether `user` is one of the two users of this direct room (false for other rooms).
    pub fn is_direct_participant(&self, user: &UserId) -> bool {
        self.direct_users()
            .is_some_and(|(a, b)| a == user.as_str() || b == user.as_str())
    }
}

impl Epoch {
    /// A fresh random epoch (16 hex digits).
    pub fn random() -> Epoch {
        Epoch(Arc::from(format!("{:016x}", random_u64())))
    }
}

impl NodeId {
    /// A fresh random node id (`node-` + 16 hex digits).
    pub fn random() -> NodeId {
        NodeId(Arc::from(format!("node-{:016x}", random_u64())))
    }
}

/// 64 random bits from the operating system; a process-local counter mixed with the
/// address of a stack value where the system source fails (it does not on supported targets).
pub(crate) fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        use std::sync::atomic::{AtomicU64, Ordering};
        static FALLBACK: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
        let n = FALLBACK.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        n ^ t.rotate_left(17)
    })
}

/// Defines an integer id limited to `0..=MAX_SAFE_INTEGER`.
macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Zero.
            pub const ZERO: $name = $name(0);
            /// The largest value: 2^53 − 1.
            pub const MAX: $name = $name(MAX_SAFE_INTEGER);

            /// Checks `n <= 2^53 − 1` and makes the value.
            pub fn new(n: u64) -> Result<Self, InvalidId> {
                if n > MAX_SAFE_INTEGER {
                    return Err(InvalidId::new($kind, "above 2^53 - 1"));
                }
                Ok(Self(n))
            }

            /// The number.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                let n: u64 = s
                    .parse()
                    .map_err(|_| InvalidId::new($kind, "not a non-negative integer"))?;
                Self::new(n)
            }
        }

        impl TryFrom<u64> for $name {
            type Error = InvalidId;
            fn try_from(n: u64) -> Result<Self, InvalidId> {
                Self::new(n)
            }
        }

        impl From<$name> for u64 {
            fn from(v: $name) -> u64 {
                v.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let n = u64::deserialize(deserializer)?;
                Self::try_from(n).map_err(de::Error::custom)
            }
        }
    };
}

int_id!(
    /// A message's position in its room: 1 for the first message, growing by exactly one.
    /// `Seq::ZERO` means "before the first message" (an empty room, a cursor never moved).
    Seq,
    "seq"
);

int_id!(
    /// The `id` a client puts on a request; its reply carries it back.
    RequestId,
    "request id"
);

impl Seq {
    /// The next seq. Saturates at [`Seq::MAX`]; a room never gets there (2^53 messages).
    #[must_use]
    pub const fn next(self) -> Seq {
        if self.0 >= MAX_SAFE_INTEGER {
            self
        } else {
            Seq(self.0 + 1)
        }
    }
}

/// One connection's id, unique within its node. With the [`NodeId`] it names a connection
/// across a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        for ok in ["a", "alice", "A.b_c-9", &"x".repeat(64)] {
            assert!(UserId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "al ice", "a:b", "é", &"x".repeat(65), "a/b", "a\n"] {
            assert!(UserId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn room_ids() {
        for ok in [
            "general",
            "team:eng",
            "a.b_c-d:e",
            &"r".repeat(128),
            "dm:alice:bob",
            "dm:alice:alice",
            "DM:anything",
            "dmx",
            "dm",
        ] {
            assert!(RoomId::new(ok).is_ok(), "{ok}");
        }
        let long_dm = format!("dm:{}:{}", "a".repeat(64), "b".repeat(64));
        assert_eq!(long_dm.len(), 132);
        assert!(RoomId::new(&long_dm).is_ok());
        for bad in [
            "",
            "has space",
            "slash/",
            &"r".repeat(129),
            "dm:",
            "dm:alice",
            "dm:bob:alice",
            "dm:alice:bob:carol",
            "dm::bob",
            "dm:alice:",
            "dm:al ice:bob",
            "dm:Bob:alice:",
        ] {
            assert!(RoomId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn direct_rooms_sort_their_users() {
        let alice = UserId::new("alice").unwrap();
        let bob = UserId::new("bob").unwrap();
        let room = RoomId::direct(&bob, &alice);
        assert_eq!(room, "dm:alice:bob");
        assert_eq!(room, RoomId::direct(&alice, &bob));
        assert!(room.is_direct());
        assert_eq!(room.direct_users(), Some(("alice", "bob")));
        assert!(room.is_direct_participant(&alice));
        assert!(!room.is_direct_participant(&UserId::new("carol").unwrap()));
        // Byte order: uppercase sorts before lowercase.
        let upper = UserId::new("Zed").unwrap();
        assert_eq!(RoomId::direct(&alice, &upper), "dm:Zed:alice");
        assert!(RoomId::new(RoomId::direct(&alice, &upper).as_str()).is_ok());
    }

    #[test]
    fn cids_count_characters_not_bytes() {
        assert!(ClientMsgId::new(&"é".repeat(64)).is_ok());
        assert!(ClientMsgId::new(&"é".repeat(65)).is_err());
        assert!(ClientMsgId::new(&"🙂".repeat(64)).is_ok());
        assert!(ClientMsgId::new("").is_err());
    }

    #[test]
    fn integers_stop_at_2_pow_53() {
        assert!(Seq::new(MAX_SAFE_INTEGER).is_ok());
        assert!(Seq::new(MAX_SAFE_INTEGER + 1).is_err());
        assert!(serde_json::from_str::<Seq>("9007199254740992").is_err());
        assert!(serde_json::from_str::<Seq>("-1").is_err());
        assert!(serde_json::from_str::<Seq>("1.5").is_err());
        assert_eq!(serde_json::from_str::<Seq>("42").unwrap().get(), 42);
        assert_eq!(Seq::MAX.next(), Seq::MAX);
        assert_eq!("7".parse::<RequestId>().unwrap().get(), 7);
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<UserId>("\"bad id\"").is_err());
        assert_eq!(
            serde_json::from_str::<RoomId>("\"dm:a:b\"").unwrap(),
            "dm:a:b"
        );
        assert_eq!(
            serde_json::to_string(&UserId::new("bob").unwrap()).unwrap(),
            "\"bob\""
        );
    }

    #[test]
    fn random_ids_are_valid_and_differ() {
        let a = Epoch::random();
        let b = Epoch::random();
        assert_ne!(a, b);
        assert!(Epoch::new(a.as_str()).is_ok());
        assert!(NodeId::new(NodeId::random().as_str()).is_ok());
    }
}
