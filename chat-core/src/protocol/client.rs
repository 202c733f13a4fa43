//! Frames a client sends, and their decoder.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::code::ErrorCode;
use super::raw::{NotObject, RawObject, raw_str};
use super::server::{ErrorReply, ServerFrame};
use crate::auth::Token;
use crate::id::{ClientMsgId, Epoch, InvalidId, MAX_SAFE_INTEGER, RequestId, RoomId, Seq, UserId};
use crate::message::{InvalidMeta, Meta};

/// One client frame: the request and the `id` its reply must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client's id for this request: its reply carries it back. `None` when the frame
    /// had no `id` (or `"id": null`).
    pub id: Option<RequestId>,
    /// What the client asks for.
    pub frame: ClientFrame,
}

/// What a client asks for: one variant per `type` of protocol v1.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientFrame {
    /// `hello`: authenticate, list rooms, optionally resume rooms.
    Hello {
        /// The credentials, checked by the server's authenticator.
        token: Token,
        /// Room → the last `seq` this client holds, and the epoch it holds it under.
        resume: BTreeMap<RoomId, ResumePoint>,
    },
    /// `join`: become a member (creating the room if needed).
    Join {
        /// The room.
        room: RoomId,
    },
    /// `leave`: stop being a member.
    Leave {
        /// The room.
        room: RoomId,
    },
    /// `send`: store a message and push it to the room.
    Send {
        /// A room, or a user for the direct room.
        target: SendTarget,
        /// The client's message id (idempotency key).
        cid: ClientMsgId,
        /// The text.
        body: String,
        /// Optional metadata, a JSON object forwarded untouched.
        meta: Option<Meta>,
    },
    /// `history`: a page of stored messages.
    History {
        /// The room.
        room: RoomId,
        /// Which end to page from.
        query: HistoryQuery,
        /// How many messages at most; `None` for the default (50). Never 0.
        limit: Option<u32>,
    },
    /// `members`: the room's members with presence and cursors.
    Members {
        /// The room.
        room: RoomId,
    },
    /// `presence`: the status of some users.
    Presence {
        /// The users to ask about.
        users: Vec<UserId>,
    },
    /// `ping`: an application-level round trip.
    Ping,
    /// `receipt`: move the user's cumulative cursors forward.
    Receipt {
        /// The room.
        room: RoomId,
        /// The new delivered cursor, if any.
        delivered: Option<Seq>,
        /// The new read cursor, if any (it also moves `delivered` up to it).
        read: Option<Seq>,
    },
    /// `typing`: tell the room's other members.
    Typing {
        /// The room.
        room: RoomId,
        /// Typing or stopped.
        active: bool,
    },
}

impl ClientFrame {
    /// The frame's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Hello { .. } => "hello",
            ClientFrame::Join { .. } => "join",
            ClientFrame::Leave { .. } => "leave",
            ClientFrame::Send { .. } => "send",
            ClientFrame::History { .. } => "history",
            ClientFrame::Members { .. } => "members",
            ClientFrame::Presence { .. } => "presence",
            ClientFrame::Ping => "ping",
            ClientFrame::Receipt { .. } => "receipt",
            ClientFrame::Typing { .. } => "typing",
        }
    }
}

/// Where a `send` goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SendTarget {
    /// `"room"`: a room the sender is a member of.
    Room(RoomId),
    /// `"to"`: the direct room of the sender and this user.
    To(UserId),
}

/// Which page of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HistoryQuery {
    /// The latest messages (neither `before` nor `after`).
    #[default]
    Latest,
    /// Messages with a lower `seq`, the newest of them first in line (`"before"`).
    Before(Seq),
    /// Messages with a higher `seq`, the oldest of them first in line (`"after"`).
    After(Seq),
}

/// Where a client resumes a room from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResumePoint {
    /// The epoch the client's copy belongs to.
    pub epoch: Epoch,
    /// The last `seq` the client holds.
    pub seq: Seq,
}

/// Limits the decoder enforces with `too_large`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most bytes of UTF-8 in a `body`. Default 16,384.
    pub max_body: usize,
    /// Most bytes in the compact JSON encoding of a `meta`. Default 4,096.
    pub max_meta: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_body: 16 * 1024,
            max_meta: 4 * 1024,
        }
    }
}

/// A refused frame: the error to send back, with the frame's `id` when it had a usable one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// The frame's `id`, if it had a usable one.
    pub id: Option<RequestId>,
    /// The protocol error code.
    pub code: ErrorCode,
    /// Human-readable text.
    pub message: String,
}

impl Rejection {
    /// A rejection.
    pub fn new(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Rejection {
        Rejection {
            id,
            code,
            message: message.into(),
        }
    }

    /// The rejection of a binary WebSocket frame (protocol v1 is text only).
    pub fn binary_frame() -> Rejection {
        Rejection::new(
            None,
            ErrorCode::BadRequest,
            "binary frames are not accepted; send JSON text frames",
        )
    }

    /// The `error` frame to send.
    pub fn to_frame(&self) -> ServerFrame {
        ServerFrame::Error(ErrorReply {
            id: self.id,
            code: self.code,
            message: self.message.clone(),
        })
    }
}

/// Shows at most 48 characters of client text inside an error message.
struct Excerpt<'a>(&'a str);

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(48) {
            Some((end, _)) => write!(f, "{:?}…", &self.0[..end]),
            None => write!(f, "{:?}", self.0),
        }
    }
}

/// The fields of one frame, with the request id for every rejection.
struct Fields<'a> {
    obj: RawObject<'a>,
    id: Option<RequestId>,
}

impl<'a> Fields<'a> {
    fn reject(&self, code: ErrorCode, message: impl Into<String>) -> Rejection {
        Rejection::new(self.id, code, message)
    }

    fn bad(&self, message: impl Into<String>) -> Rejection {
        self.reject(ErrorCode::BadRequest, message)
    }

    /// An optional field (`null` counts as absent) read by `parse`, whose error text is
    /// prefixed with the field's name.
    fn optional<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&'a str) -> Result<T, String>,
    ) -> Result<Option<T>, Rejection> {
        match self.obj.get_present(name) {
            None => Ok(None),
            Some(raw) => parse(raw)
                .map(Some)
                .map_err(|e| self.bad(format!("`{name}`: {e}"))),
        }
    }

    fn required<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&'a str) -> Result<T, String>,
    ) -> Result<T, Rejection> {
        self.optional(name, parse)?
            .ok_or_else(|| self.bad(format!("`{name}` is required")))
    }

    fn room(&self) -> Result<RoomId, Rejection> {
        self.required("room", id_field)
    }

    fn body(&self, limits: &DecodeLimits) -> Result<String, Rejection> {
        let body = self.required("body", string_field)?;
        if body.len() > limits.max_body {
            return Err(self.reject(
                ErrorCode::TooLarge,
                format!(
                    "`body` is {} bytes; the limit is {}",
                    body.len(),
                    limits.max_body
                ),
            ));
        }
        Ok(body.into_owned())
    }

    fn meta(&self, limits: &DecodeLimits) -> Result<Option<Meta>, Rejection> {
        let Some(meta) = self.optional("meta", |raw| {
            Meta::from_raw(raw).map_err(|e| match e {
                InvalidMeta::NotObject => "must be a JSON object".to_owned(),
                e => e.to_string(),
            })
        })?
        else {
            return Ok(None);
        };
        if meta.len() > limits.max_meta {
            return Err(self.reject(
                ErrorCode::TooLarge,
                format!(
                    "`meta` is {} bytes (compact JSON); the limit is {}",
                    meta.len(),
                    limits.max_meta
                ),
            ));
        }
        Ok(Some(meta))
    }
}

fn string_field(raw: &str) -> Result<Cow<'_, str>, String> {
    raw_str(raw).ok_or_else(|| "must be a string".to_owned())
}

fn id_field<T>(raw: &str) -> Result<T, String>
where
    T: for<'s> TryFrom<&'s str, Error = InvalidId>,
{
    let s = string_field(raw)?;
    T::try_from(&s).map_err(|e| format!("{e} (got {})", Excerpt(&s)))
}

fn u64_field(raw: &str) -> Result<u64, String> {
    // JSON text already read: only plain digits are an integer (no sign, fraction or
    // exponent), as serde_json would read a u64.
    raw.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| raw.parse::<u64>().ok())
        .flatten()
        .filter(|n| *n <= MAX_SAFE_INTEGER)
        .ok_or_else(|| "must be an integer from 0 to 2^53-1".to_owned())
}

fn int_field<T>(raw: &str) -> Result<T, String>
where
    T: TryFrom<u64, Error = InvalidId>,
{
    T::try_from(u64_field(raw)?).map_err(|e| e.to_string())
}

fn bool_field(raw: &str) -> Result<bool, String> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be true or false".to_owned()),
    }
}

/// Reads a nested value with serde; the error text without serde_json's position suffix.
fn serde_field<T: DeserializeOwned>(raw: &str) -> Result<T, String> {
    serde_json::from_str(raw).map_err(|e| {
        let text = e.to_string();
        match text.rfind(" at line ") {
            Some(cut) => text[..cut].to_owned(),
            None => text,
        }
    })
}

impl Request {
    /// A request.
    pub fn new(id: Option<RequestId>, frame: ClientFrame) -> Request {
        Request { id, frame }
    }

    /// Decodes one text frame.
    ///
    /// Every failure is a [`Rejection`] with the protocol error code to send back:
    /// `bad_request` for text that is not a JSON object, an unknown `type`, a missing or
    /// ill-typed field or an invalid id; `too_large` for a `body` or `meta` over `limits`.
    /// The rejection carries the frame's `id` whenever the frame is a JSON object with a
    /// valid `id`. Unknown fields are ignored; `null` counts as absent for optional fields.
    ///
    /// ```
    /// use chat_core::protocol::{ClientFrame, DecodeLimits, ErrorCode, Request};
    ///
    /// let ok = Request::decode(br#"{"type":"join","id":2,"room":"general"}"#, &DecodeLimits::default())?;
    /// assert!(matches!(ok.frame, ClientFrame::Join { .. }));
    ///
    /// let err = Request::decode(br#"{"type":"join","id":3,"room":"no spaces"}"#, &DecodeLimits::default())
    ///     .unwrap_err();
    /// assert_eq!((err.id.map(|id| id.get()), err.code), (Some(3), ErrorCode::BadRequest));
    /// # Ok::<(), chat_core::protocol::Rejection>(())
    /// ```
    pub fn decode(text: &[u8], limits: &DecodeLimits) -> Result<Request, Rejection> {
        let obj = RawObject::parse(text).map_err(|e| {
            let message = match e {
                NotObject::NotJson(e) => format!("not JSON: {e}"),
                NotObject::NotAnObject => "a frame must be a JSON object".to_owned(),
            };
            Rejection::new(None, ErrorCode::BadRequest, message)
        })?;
        let id = match obj.get_present("id") {
            None => None,
            Some(raw) => Some(int_field::<RequestId>(raw).map_err(|_| {
                Rejection::new(
                    None,
                    ErrorCode::BadRequest,
                    "`id` must be an integer from 0 to 2^53-1",
                )
            })?),
        };
        let f = Fields { obj, id };
        let kind = f.required("type", string_field)?;
        let frame = match &*kind {
            "hello" => ClientFrame::Hello {
                token: Token::new(f.required("token", string_field)?.into_owned()),
                resume: f.optional("resume", serde_field)?.unwrap_or_default(),
            },
            "join" => ClientFrame::Join { room: f.room()? },
            "leave" => ClientFrame::Leave { room: f.room()? },
            "send" => {
                let room = f.optional("room", id_field::<RoomId>)?;
                let to = f.optional("to", id_field::<UserId>)?;
                let target = match (room, to) {
                    (Some(room), None) => SendTarget::Room(room),
                    (None, Some(to)) => SendTarget::To(to),
                    (Some(_), Some(_)) => {
                        return Err(f.bad("a send takes `room` or `to`, not both"));
                    }
                    (None, None) => return Err(f.bad("a send needs `room` or `to`")),
                };
                ClientFrame::Send {
                    target,
                    cid: f.required("cid", id_field)?,
                    body: f.body(limits)?,
                    meta: f.meta(limits)?,
                }
            }
            "history" => {
                let before = f.optional("before", int_field::<Seq>)?;
                let after = f.optional("after", int_field::<Seq>)?;
                let query = match (before, after) {
                    (None, None) => HistoryQuery::Latest,
                    (Some(seq), None) => HistoryQuery::Before(seq),
                    (None, Some(seq)) => HistoryQuery::After(seq),
                    (Some(_), Some(_)) => {
                        return Err(f.bad("history takes `before` or `after`, not both"));
                    }
                };
                let limit = f.optional("limit", |raw| {
                    let n = u64_field(raw)?;
                    if n == 0 {
                        return Err("must be at least 1".to_owned());
                    }
                    Ok(u32::try_from(n).unwrap_or(u32::MAX))
                })?;
                ClientFrame::History {
                    room: f.room()?,
                    query,
                    limit,
                }
            }
            "members" => ClientFrame::Members { room: f.room()? },
            "presence" => ClientFrame::Presence {
                users: f.required("users", serde_field)?,
            },
            "ping" => ClientFrame::Ping,
            "receipt" => ClientFrame::Receipt {
                room: f.room()?,
                delivered: f.optional("delivered", int_field)?,
                read: f.optional("read", int_field)?,
            },
            "typing" => ClientFrame::Typing {
                room: f.room()?,
                active: f.required("active", bool_field)?,
            },
            other => return Err(f.bad(format!("unknown type {}", Excerpt(other)))),
        };
        Ok(Request { id, frame })
    }

    /// Encodes the request as one JSON text frame (what a client sends).
    pub fn encode(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Serialize for Request {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", self.frame.kind())?;
        if let Some(id) = self.id {
            map.serialize_entry("id", &id)?;
        }
        match &self.frame {
            ClientFrame::Hello { token, resume } => {
                map.serialize_entry("token", token.expose())?;
                if !resume.is_empty() {
                    map.serialize_entry("resume", resume)?;
                }
            }
            ClientFrame::Join { room }
            | ClientFrame::Leave { room }
            | ClientFrame::Members { room } => map.serialize_entry("room", room)?,
            ClientFrame::Send {
                target,
                cid,
                body,
                meta,
            } => {
                match target {
                    SendTarget::Room(room) => map.serialize_entry("room", room)?,
                    SendTarget::To(user) => map.serialize_entry("to", user)?,
                }
                map.serialize_entry("cid", cid)?;
                map.serialize_entry("body", body)?;
                if let Some(meta) = meta {
                    map.serialize_entry("meta", meta)?;
                }
            }
            ClientFrame::History { room, query, limit } => {
                map.serialize_entry("room", room)?;
                match query {
                    HistoryQuery::Latest => {}
                    HistoryQuery::Before(seq) => map.serialize_entry("before", seq)?,
                    HistoryQuery::After(seq) => map.serialize_entry("after", seq)?,
                }
                if let Some(limit) = limit {
                    map.serialize_entry("limit", limit)?;
                }
            }
            ClientFrame::Presence { users } => map.serialize_entry("users", users)?,
            ClientFrame::Ping => {}
            ClientFrame::Receipt {
                room,
                delivered,
                read,
            } => {
                map.serialize_entry("room", room)?;
                if let Some(delivered) = delivered {
                    map.serialize_entry("delivered", delivered)?;
                }
                if let Some(read) = read {
                    map.serialize_entry("read", read)?;
                }
            }
            ClientFrame::Typing { room, active } => {
                map.serialize_entry("room", room)?;
                map.serialize_entry("active", active)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<Request, Rejection> {
        Request::decode(text.as_bytes(), &DecodeLimits::default())
    }

    fn rejected(text: &str) -> (Option<u64>, ErrorCode) {
        let r = decode(text).expect_err(text);
        (r.id.map(RequestId::get), r.code)
    }

    #[test]
    fn decodes_every_request_of_the_protocol() {
        let cases = [
            r#"{"type":"hello","id":1,"token":"dev:alice","resume":{"general":{"epoch":"3f9a","seq":42}}}"#,
            r#"{"type":"join","id":2,"room":"general"}"#,
            r#"{"type":"leave","id":3,"room":"general"}"#,
            r#"{"type":"send","id":4,"room":"general","cid":"c-1","body":"hello","meta":{"k":[1,2]}}"#,
            r#"{"type":"send","id":5,"to":"bob","cid":"c-2","body":"hi"}"#,
            r#"{"type":"history","id":6,"room":"general","before":58,"limit":50}"#,
            r#"{"type":"history","id":7,"room":"general","after":42,"limit":50}"#,
            r#"{"type":"members","id":8,"room":"general"}"#,
            r#"{"type":"presence","id":9,"users":["bob","carol"]}"#,
            r#"{"type":"ping","id":10}"#,
            r#"{"type":"receipt","room":"general","delivered":58,"read":55}"#,
            r#"{"type":"typing","room":"general","active":true}"#,
        ];
        for text in cases {
            let req = decode(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            // What we encode decodes to the same request.
            assert_eq!(decode(&req.encode()).unwrap(), req, "{text}");
        }
        let hello = decode(cases[0]).unwrap();
        let ClientFrame::Hello { token, resume } = hello.frame else {
            panic!("not a hello")
        };
        assert_eq!(token.expose(), "dev:alice");
        let point = &resume[&RoomId::new("general").unwrap()];
        assert_eq!((point.epoch.as_str(), point.seq.get()), ("3f9a", 42));
    }

    #[test]
    fn ids_come_back_on_refusals() {
        assert_eq!(
            rejected(r#"{"type":"nope","id":7}"#),
            (Some(7), ErrorCode::BadRequest)
        );
        assert_eq!(rejected(r#"{"id":7}"#), (Some(7), ErrorCode::BadRequest));
        assert_eq!(
            rejected(r#"{"type":5,"id":7}"#),
            (Some(7), ErrorCode::BadRequest)
        );
        assert_eq!(
            rejected(r#"{"type":"join","id":7}"#),
            (Some(7), ErrorCode::BadRequest)
        );
        assert_eq!(
            rejected(r#"{"type":"join","id":7,"room":"a b"}"#),
            (Some(7), ErrorCode::BadRequest)
        );
        assert_eq!(
            decode(r#"{"type":"ping","id":9007199254740991,"x":{}}"#)
                .unwrap()
                .id,
            Some(RequestId::MAX)
        );
    }

    #[test]
    fn unusable_ids_are_refused_without_id() {
        for text in [
            r#"{"type":"ping","id":"1"}"#,
            r#"{"type":"ping","id":-1}"#,
            r#"{"type":"ping","id":1.5}"#,
            r#"{"type":"ping","id":9007199254740992}"#,
            r#"{"type":"ping","id":[1]}"#,
        ] {
            assert_eq!(rejected(text), (None, ErrorCode::BadRequest), "{text}");
        }
        // `"id": null` is no id: a fine ping without one.
        assert_eq!(decode(r#"{"type":"ping","id":null}"#).unwrap().id, None);
    }

    #[test]
    fn malformed_text_is_a_bad_request_without_id() {
        for text in [
            "",
            "not json",
            "[1,2]",
            "\"str\"",
            "42",
            "null",
            "{\"id\":1",
            "{} {}",
        ] {
            assert_eq!(rejected(text), (None, ErrorCode::BadRequest), "{text:?}");
        }
    }

    #[test]
    fn send_rules() {
        assert_eq!(
            rejected(r#"{"type":"send","id":1,"room":"a","to":"b","cid":"c","body":"x"}"#),
            (Some(1), ErrorCode::BadRequest)
        );
        assert_eq!(
            rejected(r#"{"type":"send","id":1,"cid":"c","body":"x"}"#),
            (Some(1), ErrorCode::BadRequest)
        );
        assert_eq!(
            rejected(r#"{"type":"send","id":1,"room":"a","cid":"","body":"x"}"#),
            (Some(1), ErrorCode::BadRequest)
        );
        assert_eq!(
            rejected(r#"{"type":"send","id":1,"room":"a","cid":"c","body":5}"#),
            (Some(1), ErrorCode::BadRequest)
        );
        assert_eq!(
            rejected(r#"{"type":"send","id":1,"room":"a","cid":"c","body":"x","meta":[1]}"#),
            (Some(1), ErrorCode::BadRequest)
        );
        assert_eq!(
            rejected(r#"{"type":"send","id":1,"room":"dm:b:a","cid":"c","body":"x"}"#),
            (Some(1), ErrorCode::BadRequest)
        );
        // `from` is not a client field: it is ignored like any unknown field.
        let req = decode(r#"{"type":"send","room":"a","cid":"c","body":"x","from":"mallory"}"#);
        assert!(req.is_ok());
    }

    #[test]
    fn size_limits_are_too_large() {
        let limits = DecodeLimits::default();
        let body_at = |n: usize| {
            format!(
                r#"{{"type":"send","id":1,"room":"a","cid":"c","body":"{}"}}"#,
                "é".repeat(n / 2)
            )
        };
        assert!(decode(&body_at(limits.max_body)).is_ok());
        assert_eq!(
            rejected(&body_at(limits.max_body + 2)),
            (Some(1), ErrorCode::TooLarge)
        );
        let meta = |n: usize| {
            // {"k":"…"} is 8 bytes plus the string.
            format!(
                r#"{{"type":"send","id":1,"room":"a","cid":"c","body":"","meta":{{ "k" : "{}" }}}}"#,
                "x".repeat(n - 8)
            )
        };
        assert!(
            decode(&meta(limits.max_meta)).is_ok(),
            "whitespace does not count"
        );
        assert_eq!(
            rejected(&meta(limits.max_meta + 1)),
            (Some(1), ErrorCode::TooLarge)
        );
    }

    #[test]
    fn history_rules() {
        let req = decode(r#"{"type":"history","room":"r"}"#).unwrap();
        assert_eq!(
            req.frame,
            ClientFrame::History {
                room: RoomId::new("r").unwrap(),
                query: HistoryQuery::Latest,
                limit: None
            }
        );
        assert_eq!(
            rejected(r#"{"type":"history","id":2,"room":"r","before":5,"after":1}"#),
            (Some(2), ErrorCode::BadRequest)
        );
        assert_eq!(
            rejected(r#"{"type":"history","id":2,"room":"r","limit":0}"#),
            (Some(2), ErrorCode::BadRequest)
        );
        let big = decode(r#"{"type":"history","room":"r","limit":9007199254740991}"#).unwrap();
        assert!(matches!(
            big.frame,
            ClientFrame::History {
                limit: Some(u32::MAX),
                ..
            }
        ));
    }

    #[test]
    fn nested_errors_are_bad_requests() {
        assert_eq!(
            rejected(
                r#"{"type":"hello","id":1,"token":"t","resume":{"bad room":{"epoch":"e","seq":1}}}"#
            ),
            (Some(1), ErrorCode::BadRequest)
        );
        assert_eq!(
            rejected(
                r#"{"type":"hello","id":1,"token":"t","resume":{"r":{"epoch":"e","seq":-1}}}"#
            ),
            (Some(1), ErrorCode::BadRequest)
        );
        assert_eq!(
            rejected(r#"{"type":"presence","id":1,"users":["ok","not ok"]}"#),
            (Some(1), ErrorCode::BadRequest)
        );
        assert_eq!(
            rejected(r#"{"type":"typing","id":1,"room":"r","active":"yes"}"#),
            (Some(1), ErrorCode::BadRequest)
        );
        let msg = decode(r#"{"type":"presence","id":1,"users":["ok","not ok"]}"#)
            .unwrap_err()
            .message;
        assert!(!msg.contains(" at line "), "{msg}");
    }

    #[test]
    fn messages_quote_at_most_a_short_excerpt() {
        let long = "x".repeat(10_000);
        let err = decode(&format!(r#"{{"type":"{long}","id":1}}"#)).unwrap_err();
        assert!(err.message.len() < 100, "{}", err.message);
    }
}
