//! Protocol v1: every frame as a Rust type, and the JSON codec.
//!
//! - [`Request`] / [`ClientFrame`]: what clients send. [`Request::decode`] turns one text
//!   frame into a request or a [`Rejection`] carrying the protocol error code and, when
//!   the frame had a usable `id`, that id — so that every refused request still gets
//!   exactly one reply. It never panics, whatever the input.
//! - [`ServerFrame`]: replies (`ok`, `error`) and pushes (`message`, `receipt`, `typing`,
//!   `presence`, `member`). [`ServerFrame::encode`] serializes once into an [`Encoded`]
//!   frame whose clones share one buffer, so a push costs one serialization however many
//!   connections receive it. [`ServerFrame::decode`] reads them back (for clients).
//! - [`ErrorCode`] and [`CloseCode`]: the protocol's error and close codes.

mod client;
mod code;
mod json;
mod raw;
mod server;

pub use client::{
    ClientFrame, DecodeLimits, HistoryQuery, Rejection, Request, ResumePoint, SendTarget,
};
pub use code::{CloseCode, ErrorCode};
pub use server::{
    Encoded, ErrorReply, HelloReply, HistoryReply, InvalidFrame, MemberAction, MemberInfo,
    MemberPush, MembersReply, PresenceInfo, PresenceReply, PresenceStatus, ReceiptPush, Reply,
    ReplyBody, RoomState, SendReply, ServerFrame, TypingPush,
};
