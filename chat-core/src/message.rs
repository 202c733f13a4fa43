//! Messages as the store keeps them and clients see them.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::id::{ClientMsgId, RoomId, Seq, UserId};
use crate::time::Timestamp;

/// A stored message: what a `message` push and a `history` page carry.
///
/// Serializes to the fields of the `message` push (`room`, `seq`, `from`, `cid`, `body`,
/// `ts`, and `meta` when present); the frame's `"type"` is added by
/// [`ServerFrame`](crate::protocol::ServerFrame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The room.
    pub room: RoomId,
    /// The message's position in the room, from 1.
    pub seq: Seq,
    /// The sender, as authenticated by the server (never taken from the client's frame).
    pub from: UserId,
    /// The sender's client message id.
    pub cid: ClientMsgId,
    /// The text.
    pub body: String,
    /// When the server accepted the message.
    pub ts: Timestamp,
    /// The client's metadata, forwarded untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
}

/// A message to append: everything but the `seq`, which the store assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The room; it must exist.
    pub room: RoomId,
    /// The authenticated sender.
    pub from: UserId,
    /// The sender's client message id: the idempotency key with `room` and `from`.
    pub cid: ClientMsgId,
    /// The text.
    pub body: String,
    /// The client's metadata.
    pub meta: Option<Meta>,
    /// The server's time of acceptance; kept as the message's `ts`.
    pub ts: Timestamp,
}

impl NewMessage {
    /// The stored message this becomes at `seq`.
    pub fn into_message(self, seq: Seq) -> Message {
        Message {
            room: self.room,
            seq,
            from: self.from,
            cid: self.cid,
            body: self.body,
            ts: self.ts,
            meta: self.meta,
        }
    }
}

/// Why a `meta` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMeta {
    /// Not valid JSON.
    #[error("meta is not valid JSON: {0}")]
    NotJson(String),
    /// Valid JSON, but not an object.
    #[error("meta must be a JSON object")]
    NotObject,
    /// Nested deeper than [`Meta::MAX_DEPTH`] arrays and objects.
    #[error("meta is nested deeper than {} levels", Meta::MAX_DEPTH)]
    TooDeep,
}

/// A message's `meta`: a JSON object the server stores and forwards untouched, kept in its
/// compact encoding (insignificant whitespace removed; key order, numbers and escapes
/// exactly as the client wrote them).
#[derive(Clone)]
pub struct Meta(Box<RawValue>);

impl PartialEq for Meta {
    fn eq(&self, other: &Meta) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Meta {}

impl std::hash::Hash for Meta {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Meta {
    /// How deeply arrays and objects may nest in a `meta` (the object itself is level 1).
    /// Well under what JSON parsers accept (serde_json: 128), so that a stored `meta`
    /// never makes a client fail to read a message.
    pub const MAX_DEPTH: usize = 32;

    /// Checks that `json` is a JSON object and keeps its compact encoding.
    ///
    /// ```
    /// # use chat_core::Meta;
    /// let meta = Meta::from_json(r#"{ "reply_to": 41, "tags": ["a", "b c"] }"#)?;
    /// assert_eq!(meta.as_str(), r#"{"reply_to":41,"tags":["a","b c"]}"#);
    /// assert!(Meta::from_json("[1, 2]").is_err());
    /// # Ok::<(), chat_core::InvalidMeta>(())
    /// ```
    pub fn from_json(json: &str) -> Result<Meta, InvalidMeta> {
        let raw: &RawValue =
            serde_json::from_str(json).map_err(|e| InvalidMeta::NotJson(e.to_string()))?;
        Self::from_raw(raw.get())
    }

    /// Keeps the compact encoding of the text of an already-parsed JSON value, which must
    /// be an object.
    pub(crate) fn from_raw(text: &str) -> Result<Meta, InvalidMeta> {
        if !text.starts_with('{') {
            return Err(InvalidMeta::NotObject);
        }
        let compact = compact_json(text).ok_or(InvalidMeta::TooDeep)?;
        RawValue::from_string(compact)
            .map(Meta)
            .map_err(|e| InvalidMeta::NotJson(e.to_string()))
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The size in bytes of the compact encoding (what the `meta` limit counts).
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Whether the encoding is empty (never: the smallest object is `{}`).
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }
}

/// Removes the whitespace outside strings from valid JSON text; `None` when arrays and
/// objects nest deeper than [`Meta::MAX_DEPTH`].
fn compact_json(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut depth = 0usize;
    for ch in text.chars() {
        if in_string {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
        } else if !matches!(ch, ' ' | '\t' | '\n' | '\r') {
            match ch {
                '"' => in_string = true,
                '{' | '[' => {
                    depth += 1;
                    if depth > Meta::MAX_DEPTH {
                        return None;
                    }
                }
                '}' | ']' => depth = depth.saturating_sub(1),
                _ => {}
            }
            out.push(ch);
        }
    }
    Some(out)
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Meta {
    type Err = InvalidMeta;
    fn from_str(s: &str) -> Result<Meta, InvalidMeta> {
        Meta::from_json(s)
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Meta::from_raw(raw.get()).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_is_compacted_but_otherwise_untouched() {
        let meta =
            Meta::from_json(" {\n \"b\" : 1.0e5 , \"a\": \"x  y\\\" z\" ,\"c\":{ } }\t").unwrap();
        assert_eq!(meta.as_str(), r#"{"b":1.0e5,"a":"x  y\" z","c":{}}"#);
        assert_eq!(meta.len(), meta.as_str().len());
        let back: Meta = serde_json::from_str(&serde_json::to_string(&meta).unwrap()).unwrap();
        assert_eq!(back, meta);
    }

    #[test]
    fn meta_depth_is_limited() {
        let nest = |n: usize| format!("{}{}", "{\"a\":".repeat(n - 1) + "{", "}".repeat(n));
        assert!(Meta::from_json(&nest(Meta::MAX_DEPTH)).is_ok());
        assert_eq!(
            Meta::from_json(&nest(Meta::MAX_DEPTH + 1)),
            Err(InvalidMeta::TooDeep)
        );
        let arrays = format!("{{\"a\":{}1{}}}", "[".repeat(40), "]".repeat(40));
        assert_eq!(Meta::from_json(&arrays), Err(InvalidMeta::TooDeep));
    }

    #[test]
    fn meta_must_be_an_object() {
        assert_eq!(Meta::from_json("[]"), Err(InvalidMeta::NotObject));
        assert_eq!(Meta::from_json("\"{}\""), Err(InvalidMeta::NotObject));
        assert!(matches!(Meta::from_json("{"), Err(InvalidMeta::NotJson(_))));
        assert!(Meta::from_json("{} x").is_err());
    }

    #[test]
    fn message_serializes_without_meta_when_absent() {
        let m = Message {
            room: RoomId::new("general").unwrap(),
            seq: Seq::new(3).unwrap(),
            from: UserId::new("alice").unwrap(),
            cid: ClientMsgId::new("c-1").unwrap(),
            body: "hi".into(),
            ts: Timestamp::from_millis(5),
            meta: None,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"room":"general","seq":3,"from":"alice","cid":"c-1","body":"hi","ts":5}"#
        );
    }
}
