//! Frames the server sends: replies and pushes, encoded once into shared bytes.

use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

use super::code::ErrorCode;
use super::raw::{NotObject, RawObject, raw_str};
use crate::id::{Epoch, RequestId, RoomId, Seq, SessionId, UserId};
use crate::message::Message;
use crate::time::Timestamp;

/// A frame from the server: a reply (`ok`, `error`) or a push.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerFrame {
    /// `ok`: the reply to a request that succeeded.
    Ok(Reply),
    /// `error`: the reply to a refused frame.
    Error(ErrorReply),
    /// `message` push.
    Message(Message),
    /// `receipt` push: a user's cursors moved.
    Receipt(ReceiptPush),
    /// `typing` push.
    Typing(TypingPush),
    /// `presence` push: a user came online or went offline.
    Presence(PresenceInfo),
    /// `member` push: a user joined or left a room.
    Member(MemberPush),
}

/// An `ok` reply: the request's `id` and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The request's `id`.
    pub id: Option<RequestId>,
    /// The result fields.
    pub body: ReplyBody,
}

/// The result fields of an `ok`, one variant per request kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyBody {
    /// To `hello`.
    Hello(HelloReply),
    /// To `join`: the room's state for this user.
    Join(RoomState),
    /// To `leave`.
    Leave {
        /// The room left.
        room: RoomId,
    },
    /// To `send`.
    Send(SendReply),
    /// To `history`.
    History(HistoryReply),
    /// To `members`.
    Members(MembersReply),
    /// To `presence`.
    Presence(PresenceReply),
    /// No result fields: `ping`, and `receipt`/`typing` sent with an `id`.
    Empty,
}

/// The result of `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The authenticated user.
    pub user: UserId,
    /// This connection's session id.
    pub session: SessionId,
    /// The interval of the server's WebSocket pings.
    pub heartbeat_ms: u64,
    /// Every room the user is a member of.
    pub rooms: Vec<RoomState>,
}

/// A room as one member sees it (in `hello` and the reply to `join`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomState {
    /// The room.
    pub room: RoomId,
    /// The epoch of its log.
    pub epoch: Epoch,
    /// The latest `seq` (0 for an empty room).
    pub seq: Seq,
    /// The user's read cursor.
    pub read: Seq,
    /// The user's delivered cursor.
    pub delivered: Seq,
}

/// The result of `send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReply {
    /// The room the message is in (the direct room for a `to` send).
    pub room: RoomId,
    /// Its `seq`.
    pub seq: Seq,
    /// Its `ts`.
    pub ts: Timestamp,
    /// Whether this `cid` was already stored (the message was not stored again).
    pub dup: bool,
}

/// The result of `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReply {
    /// The room.
    pub room: RoomId,
    /// Ascending by `seq`; each serialized exactly like a `message` push.
    #[serde(serialize_with = "tagged_messages")]
    pub messages: Vec<Message>,
    /// Whether further messages exist beyond this page in its direction.
    pub more: bool,
}

/// The result of `members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersReply {
    /// The room.
    pub room: RoomId,
    /// Its members.
    pub members: Vec<MemberInfo>,
}

/// One member in a `members` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member.
    pub user: UserId,
    /// Online or offline.
    pub status: PresenceStatus,
    /// When last seen; `null` for a user who never connected.
    pub last_seen: Option<Timestamp>,
    /// Read cursor.
    pub read: Seq,
    /// Delivered cursor.
    pub delivered: Seq,
}

/// The result of `presence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceReply {
    /// One entry per user asked about.
    pub users: Vec<PresenceInfo>,
}

/// A user's presence: an entry of the `presence` reply, and the `presence` push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceInfo {
    /// The user.
    pub user: UserId,
    /// Online or offline.
    pub status: PresenceStatus,
    /// When last seen; `null` for a user who never connected.
    pub last_seen: Option<Timestamp>,
}

/// Online or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// At least one connection of the user is open.
    Online,
    /// None is.
    Offline,
}

/// An `error` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The refused frame's `id`, when it had a usable one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// The error code.
    pub code: ErrorCode,
    /// Human-readable text.
    pub message: String,
}

/// The `receipt` push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptPush {
    /// The room.
    pub room: RoomId,
    /// Whose cursors moved.
    pub user: UserId,
    /// The delivered cursor.
    pub delivered: Seq,
    /// The read cursor.
    pub read: Seq,
}

/// The `typing` push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingPush {
    /// The room.
    pub room: RoomId,
    /// Who is typing.
    pub user: UserId,
    /// Typing, or stopped.
    pub active: bool,
}

/// The `member` push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPush {
    /// The room.
    pub room: RoomId,
    /// Who joined or left.
    pub user: UserId,
    /// Which.
    pub action: MemberAction,
}

/// Joined or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberAction {
    /// Became a member.
    Join,
    /// Stopped being one.
    Leave,
}

/// A frame serialized once: cheap to clone (one shared buffer), sent as a text frame.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Encoded(Bytes);

impl Encoded {
    /// Wraps text known to be valid UTF-8 (checked by the caller).
    pub(crate) fn from_json(bytes: Bytes) -> Encoded {
        Encoded(bytes)
    }

    /// The JSON text as bytes (always valid UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        // Only `ServerFrame::encode` makes these, from serde_json's UTF-8 output.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty (never, for an encoded frame).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Encoded").field(&self.as_str()).finish()
    }
}

/// A server frame that is not valid protocol v1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid server frame: {0}")]
pub struct InvalidFrame(String);

/// Serializes `body`'s fields after `"type"` (and `"id"`, when given).
#[derive(Serialize)]
struct Tagged<'a, T> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<RequestId>,
    #[serde(flatten)]
    body: &'a T,
}

fn tagged<'a, T>(kind: &'static str, id: Option<RequestId>, body: &'a T) -> Tagged<'a, T> {
    Tagged { kind, id, body }
}

#[derive(Serialize, Deserialize)]
struct LeaveBody {
    room: RoomId,
}

#[derive(Serialize)]
struct EmptyBody {}

fn tagged_messages<S: Serializer>(messages: &[Message], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(messages.iter().map(|m| tagged("message", None, m)))
}

impl Serialize for ServerFrame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServerFrame::Ok(Reply { id, body }) => {
                let id = *id;
                match body {
                    ReplyBody::Hello(b) => tagged("ok", id, b).serialize(s),
                    ReplyBody::Join(b) => tagged("ok", id, b).serialize(s),
                    ReplyBody::Leave { room } => {
                        tagged("ok", id, &LeaveBody { room: room.clone() }).serialize(s)
                    }
                    ReplyBody::Send(b) => tagged("ok", id, b).serialize(s),
                    ReplyBody::History(b) => tagged("ok", id, b).serialize(s),
                    ReplyBody::Members(b) => tagged("ok", id, b).serialize(s),
                    ReplyBody::Presence(b) => tagged("ok", id, b).serialize(s),
                    ReplyBody::Empty => tagged("ok", id, &EmptyBody {}).serialize(s),
                }
            }
            ServerFrame::Error(b) => tagged("error", None, b).serialize(s),
            ServerFrame::Message(b) => tagged("message", None, b).serialize(s),
            ServerFrame::Receipt(b) => tagged("receipt", None, b).serialize(s),
            ServerFrame::Typing(b) => tagged("typing", None, b).serialize(s),
            ServerFrame::Presence(b) => tagged("presence", None, b).serialize(s),
            ServerFrame::Member(b) => tagged("member", None, b).serialize(s),
        }
    }
}

impl ServerFrame {
    /// An `ok` reply.
    pub fn ok(id: Option<RequestId>, body: ReplyBody) -> ServerFrame {
        ServerFrame::Ok(Reply { id, body })
    }

    /// An `error` reply.
    pub fn error(
        id: Option<RequestId>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> ServerFrame {
        ServerFrame::Error(ErrorReply {
            id,
            code,
            message: message.into(),
        })
    }

    /// The frame's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Ok(_) => "ok",
            ServerFrame::Error(_) => "error",
            ServerFrame::Message(_) => "message",
            ServerFrame::Receipt(_) => "receipt",
            ServerFrame::Typing(_) => "typing",
            ServerFrame::Presence(_) => "presence",
            ServerFrame::Member(_) => "member",
        }
    }

    /// Serializes the frame once. Every recipient's queue gets a clone of the result,
    /// which shares the buffer.
    ///
    /// ```
    /// use chat_core::protocol::{ServerFrame, TypingPush};
    /// use chat_core::{RoomId, UserId};
    ///
    /// let frame = ServerFrame::Typing(TypingPush {
    ///     room: RoomId::new("general")?,
    ///     user: UserId::new("alice")?,
    ///     active: true,
    /// });
    /// let encoded = frame.encode();
    /// assert_eq!(encoded.as_str(), r#"{"type":"typing","room":"general","user":"alice","active":true}"#);
    /// assert_eq!(ServerFrame::decode(encoded.as_bytes()).unwrap(), frame);
    /// # Ok::<(), chat_core::InvalidId>(())
    /// ```
    pub fn encode(&self) -> Encoded {
        if let ServerFrame::Message(message) = self {
            return Encoded(Bytes::from(super::json::message_push(message)));
        }
        // Room for most frames: a growing buffer would reallocate several times.
        let mut json = Vec::with_capacity(256);
        match serde_json::to_writer(&mut json, self) {
            Ok(()) => Encoded(Bytes::from(json)),
            // Unreachable: every map key is a string and every value serializable.
            Err(_) => Encoded(Bytes::from_static(
                br#"{"type":"error","code":"internal","message":"encoding failed"}"#,
            )),
        }
    }

    /// Decodes a frame the server sent (for clients). Unknown fields are ignored; an
    /// unknown `type` is an error the client may skip.
    ///
    /// The fields of an `ok` tell which request it answers: `session` (hello), `messages`
    /// (history), `members`, `users` (presence), `dup` (send), `epoch` (join), `room` alone
    /// (leave), none (ping, receipt, typing).
    pub fn decode(text: &[u8]) -> Result<ServerFrame, InvalidFrame> {
        let obj = RawObject::parse(text).map_err(|e| match e {
            NotObject::NotJson(e) => InvalidFrame(format!("not JSON: {e}")),
            NotObject::NotAnObject => InvalidFrame("not a JSON object".to_owned()),
        })?;
        let kind = obj
            .get("type")
            .and_then(raw_str)
            .ok_or_else(|| InvalidFrame("no string `type`".to_owned()))?;
        Ok(match &*kind {
            "ok" => {
                let id = match obj.get_present("id") {
                    Some(raw) => Some(parse::<RequestId>(raw.as_bytes())?),
                    None => None,
                };
                let body = if obj.has("session") {
                    ReplyBody::Hello(parse(text)?)
                } else if obj.has("messages") {
                    ReplyBody::History(parse(text)?)
                } else if obj.has("members") {
                    ReplyBody::Members(parse(text)?)
                } else if obj.has("users") {
                    ReplyBody::Presence(parse(text)?)
                } else if obj.has("dup") {
                    ReplyBody::Send(parse(text)?)
                } else if obj.has("epoch") {
                    ReplyBody::Join(parse(text)?)
                } else if obj.has("room") {
                    ReplyBody::Leave {
                        room: parse::<LeaveBody>(text)?.room,
                    }
                } else {
                    ReplyBody::Empty
                };
                ServerFrame::Ok(Reply { id, body })
            }
            "error" => ServerFrame::Error(parse(text)?),
            "message" => ServerFrame::Message(parse(text)?),
            "receipt" => ServerFrame::Receipt(parse(text)?),
            "typing" => ServerFrame::Typing(parse(text)?),
            "presence" => ServerFrame::Presence(parse(text)?),
            "member" => ServerFrame::Member(parse(text)?),
            other => return Err(InvalidFrame(format!("unknown type {other:?}"))),
        })
    }
}

fn parse<T: DeserializeOwned>(text: &[u8]) -> Result<T, InvalidFrame> {
    serde_json::from_slice(text).map_err(|e| InvalidFrame(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ClientMsgId;
    use crate::message::Meta;

    fn room() -> RoomId {
        RoomId::new("general").unwrap()
    }

    fn message(seq: u64) -> Message {
        Message {
            room: room(),
            seq: Seq::new(seq).unwrap(),
            from: UserId::new("alice").unwrap(),
            cid: ClientMsgId::new("c-1").unwrap(),
            body: "hello".into(),
            ts: Timestamp::from_millis(1_764_412_345_678),
            meta: Some(Meta::from_json(r#"{"k":1}"#).unwrap()),
        }
    }

    #[test]
    fn pushes_match_the_protocol_text() {
        let cases = [
            (
                ServerFrame::Message(message(58)),
                r#"{"type":"message","room":"general","seq":58,"from":"alice","cid":"c-1","body":"hello","ts":1764412345678,"meta":{"k":1}}"#,
            ),
            (
                ServerFrame::Receipt(ReceiptPush {
                    room: room(),
                    user: UserId::new("bob").unwrap(),
                    delivered: Seq::new(58).unwrap(),
                    read: Seq::new(55).unwrap(),
                }),
                r#"{"type":"receipt","room":"general","user":"bob","delivered":58,"read":55}"#,
            ),
            (
                ServerFrame::Presence(PresenceInfo {
                    user: UserId::new("bob").unwrap(),
                    status: PresenceStatus::Offline,
                    last_seen: Some(Timestamp::from_millis(1_764_412_345_678)),
                }),
                r#"{"type":"presence","user":"bob","status":"offline","last_seen":1764412345678}"#,
            ),
            (
                ServerFrame::Member(MemberPush {
                    room: room(),
                    user: UserId::new("carol").unwrap(),
                    action: MemberAction::Join,
                }),
                r#"{"type":"member","room":"general","user":"carol","action":"join"}"#,
            ),
            (
                ServerFrame::error(Some(RequestId::new(4).unwrap()), ErrorCode::Forbidden, "no"),
                r#"{"type":"error","id":4,"code":"forbidden","message":"no"}"#,
            ),
            (
                ServerFrame::error(None, ErrorCode::BadRequest, "x"),
                r#"{"type":"error","code":"bad_request","message":"x"}"#,
            ),
            (
                ServerFrame::ok(Some(RequestId::new(10).unwrap()), ReplyBody::Empty),
                r#"{"type":"ok","id":10}"#,
            ),
            (
                ServerFrame::ok(
                    Some(RequestId::new(3).unwrap()),
                    ReplyBody::Leave { room: room() },
                ),
                r#"{"type":"ok","id":3,"room":"general"}"#,
            ),
        ];
        for (frame, text) in cases {
            assert_eq!(frame.encode().as_str(), text);
            assert_eq!(ServerFrame::decode(text.as_bytes()).unwrap(), frame);
        }
    }

    #[test]
    fn history_messages_carry_their_type() {
        let frame = ServerFrame::ok(
            Some(RequestId::new(6).unwrap()),
            ReplyBody::History(HistoryReply {
                room: room(),
                messages: vec![message(1), message(2)],
                more: true,
            }),
        );
        let text = frame.encode();
        let value: serde_json::Value = serde_json::from_slice(text.as_bytes()).unwrap();
        assert_eq!(value["messages"][1]["type"], "message");
        assert_eq!(value["messages"][1]["seq"], 2);
        assert_eq!(ServerFrame::decode(text.as_bytes()).unwrap(), frame);
    }

    #[test]
    fn presence_keeps_null_last_seen() {
        let frame = ServerFrame::ok(
            None,
            ReplyBody::Presence(PresenceReply {
                users: vec![PresenceInfo {
                    user: UserId::new("bob").unwrap(),
                    status: PresenceStatus::Offline,
                    last_seen: None,
                }],
            }),
        );
        assert_eq!(
            frame.encode().as_str(),
            r#"{"type":"ok","users":[{"user":"bob","status":"offline","last_seen":null}]}"#
        );
    }

    #[test]
    fn clones_share_the_buffer() {
        let a = ServerFrame::Message(message(1)).encode();
        let b = a.clone();
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
    }

    #[test]
    fn decode_refuses_what_is_not_a_frame() {
        for text in [
            "",
            "[]",
            "{}",
            r#"{"type":"nope"}"#,
            r#"{"type":"message","room":"r"}"#,
        ] {
            assert!(ServerFrame::decode(text.as_bytes()).is_err(), "{text}");
        }
    }
}
