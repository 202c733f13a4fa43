//! Property tests of the protocol codec: every frame round-trips through JSON, and no input
//! makes the decoder panic or answer with anything but a protocol error.

#![allow(clippy::unwrap_used)]

use chat_core::protocol::{
    ClientFrame, DecodeLimits, ErrorCode, ErrorReply, HelloReply, HistoryQuery, HistoryReply,
    MemberAction, MemberInfo, MemberPush, MembersReply, PresenceInfo, PresenceReply,
    PresenceStatus, ReceiptPush, ReplyBody, Request, ResumePoint, RoomState, SendReply, SendTarget,
    ServerFrame, TypingPush,
};
use chat_core::{
    ClientMsgId, Epoch, Message, Meta, RequestId, RoomId, Seq, SessionId, Timestamp, UserId,
    auth::Token,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn user() -> impl Strategy<Value = UserId> {
    "[A-Za-z0-9._-]{1,64}".prop_map(|s| UserId::new(&s).unwrap())
}

fn room() -> impl Strategy<Value = RoomId> {
    prop_oneof![
        "[A-Za-z0-9._:-]{1,128}"
            .prop_filter("dm: is reserved", |s| !s.starts_with("dm:"))
            .prop_map(|s| RoomId::new(&s).unwrap()),
        (user(), user()).prop_map(|(a, b)| RoomId::direct(&a, &b)),
    ]
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(|chars| chars.into_iter().collect())
}

fn cid() -> impl Strategy<Value = ClientMsgId> {
    prop::collection::vec(any::<char>(), 1..=64)
        .prop_map(|chars| ClientMsgId::new(&chars.into_iter().collect::<String>()).unwrap())
}

fn seq() -> impl Strategy<Value = Seq> {
    prop_oneof![0..1_000u64, 0..=Seq::MAX.get()].prop_map(|n| Seq::new(n).unwrap())
}

fn request_id() -> impl Strategy<Value = Option<RequestId>> {
    prop::option::of((0..=RequestId::MAX.get()).prop_map(|n| RequestId::new(n).unwrap()))
}

fn ts() -> impl Strategy<Value = Timestamp> {
    any::<u64>().prop_map(Timestamp::from_millis)
}

fn epoch() -> impl Strategy<Value = Epoch> {
    "[A-Za-z0-9._:-]{1,64}".prop_map(|s| Epoch::new(&s).unwrap())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6..1e6f64).prop_map(Value::from),
        text(12).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(text(8), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn meta() -> impl Strategy<Value = Option<Meta>> {
    prop::option::of(
        prop::collection::btree_map(text(8), json_value(), 0..5).prop_map(|m| {
            let object = Value::Object(m.into_iter().collect());
            Meta::from_json(&serde_json::to_string_pretty(&object).unwrap()).unwrap()
        }),
    )
}

fn message() -> impl Strategy<Value = Message> {
    (room(), seq(), user(), cid(), text(200), ts(), meta()).prop_map(
        |(room, seq, from, cid, body, ts, meta)| Message {
            room,
            seq,
            from,
            cid,
            body,
            ts,
            meta,
        },
    )
}

fn room_state() -> impl Strategy<Value = RoomState> {
    (room(), epoch(), seq(), seq(), seq()).prop_map(|(room, epoch, seq, read, delivered)| {
        RoomState {
            room,
            epoch,
            seq,
            read,
            delivered,
        }
    })
}

fn status() -> impl Strategy<Value = PresenceStatus> {
    prop_oneof![Just(PresenceStatus::Online), Just(PresenceStatus::Offline)]
}

fn presence() -> impl Strategy<Value = PresenceInfo> {
    (user(), status(), prop::option::of(ts())).prop_map(|(user, status, last_seen)| PresenceInfo {
        user,
        status,
        last_seen,
    })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ])
}

fn reply_body() -> impl Strategy<Value = ReplyBody> {
    prop_oneof![
        (
            user(),
            "[A-Za-z0-9._-]{1,64}",
            any::<u64>(),
            prop::collection::vec(room_state(), 0..4)
        )
            .prop_map(|(user, session, heartbeat_ms, rooms)| ReplyBody::Hello(
                HelloReply {
                    user,
                    session: SessionId::new(&session).unwrap(),
                    heartbeat_ms,
                    rooms,
                }
            )),
        room_state().prop_map(ReplyBody::Join),
        room().prop_map(|room| ReplyBody::Leave { room }),
        (room(), seq(), ts(), any::<bool>())
            .prop_map(|(room, seq, ts, dup)| ReplyBody::Send(SendReply { room, seq, ts, dup })),
        (
            room(),
            prop::collection::vec(message(), 0..4),
            any::<bool>()
        )
            .prop_map(|(room, messages, more)| ReplyBody::History(HistoryReply {
                room,
                messages,
                more
            })),
        (
            room(),
            prop::collection::vec(
                (user(), status(), prop::option::of(ts()), seq(), seq()),
                0..4
            )
        )
            .prop_map(|(room, members)| ReplyBody::Members(MembersReply {
                room,
                members: members
                    .into_iter()
                    .map(|(user, status, last_seen, read, delivered)| MemberInfo {
                        user,
                        status,
                        last_seen,
                        read,
                        delivered,
                    })
                    .collect(),
            })),
        prop::collection::vec(presence(), 0..4)
            .prop_map(|users| ReplyBody::Presence(PresenceReply { users })),
        Just(ReplyBody::Empty),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (request_id(), reply_body()).prop_map(|(id, body)| ServerFrame::ok(id, body)),
        (request_id(), error_code(), text(80)).prop_map(|(id, code, message)| {
            ServerFrame::Error(ErrorReply { id, code, message })
        }),
        message().prop_map(ServerFrame::Message),
        (room(), user(), seq(), seq()).prop_map(|(room, user, delivered, read)| {
            ServerFrame::Receipt(ReceiptPush {
                room,
                user,
                delivered,
                read,
            })
        }),
        (room(), user(), any::<bool>()).prop_map(|(room, user, active)| ServerFrame::Typing(
            TypingPush { room, user, active }
        )),
        presence().prop_map(ServerFrame::Presence),
        (room(), user(), any::<bool>()).prop_map(|(room, user, join)| {
            ServerFrame::Member(MemberPush {
                room,
                user,
                action: if join {
                    MemberAction::Join
                } else {
                    MemberAction::Leave
                },
            })
        }),
    ]
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    let query = prop_oneof![
        Just(HistoryQuery::Latest),
        seq().prop_map(HistoryQuery::Before),
        seq().prop_map(HistoryQuery::After),
    ];
    prop_oneof![
        (
            text(100),
            prop::collection::btree_map(room(), (epoch(), seq()), 0..4)
        )
            .prop_map(|(token, resume)| ClientFrame::Hello {
                token: Token::new(token),
                resume: resume
                    .into_iter()
                    .map(|(room, (epoch, seq))| (room, ResumePoint { epoch, seq }))
                    .collect(),
            }),
        room().prop_map(|room| ClientFrame::Join { room }),
        room().prop_map(|room| ClientFrame::Leave { room }),
        (
            prop_oneof![
                room().prop_map(SendTarget::Room),
                user().prop_map(SendTarget::To)
            ],
            cid(),
            text(300),
            meta()
        )
            .prop_map(|(target, cid, body, meta)| ClientFrame::Send {
                target,
                cid,
                body,
                meta
            }),
        (room(), query, prop::option::of(1..=u32::MAX))
            .prop_map(|(room, query, limit)| ClientFrame::History { room, query, limit }),
        room().prop_map(|room| ClientFrame::Members { room }),
        prop::collection::vec(user(), 0..5).prop_map(|users| ClientFrame::Presence { users }),
        Just(ClientFrame::Ping),
        (room(), prop::option::of(seq()), prop::option::of(seq())).prop_map(
            |(room, delivered, read)| ClientFrame::Receipt {
                room,
                delivered,
                read
            }
        ),
        (room(), any::<bool>()).prop_map(|(room, active)| ClientFrame::Typing { room, active }),
    ]
}

/// What the decoder may answer for input that is not a valid request.
fn assert_protocol_error(input: &[u8]) {
    match Request::decode(input, &DecodeLimits::default()) {
        Ok(_) => {}
        Err(rejection) => {
            assert!(
                matches!(rejection.code, ErrorCode::BadRequest | ErrorCode::TooLarge),
                "unexpected code {:?} for {:?}",
                rejection.code,
                String::from_utf8_lossy(input)
            );
            assert!(!rejection.message.is_empty());
            // An id comes back only if the input is a JSON object carrying it.
            if let Some(id) = rejection.id {
                let value: Value = serde_json::from_slice(input).unwrap();
                assert_eq!(value["id"], json!(id.get()));
            }
            // The error frame itself is valid protocol.
            let frame = rejection.to_frame();
            assert_eq!(
                ServerFrame::decode(frame.encode().as_bytes()).unwrap(),
                frame
            );
        }
    }
}

/// A JSON object made of the protocol's field names with values of any kind.
fn hostile_object() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "type",
        "id",
        "token",
        "resume",
        "room",
        "to",
        "cid",
        "body",
        "meta",
        "before",
        "after",
        "limit",
        "users",
        "delivered",
        "read",
        "active",
        "from",
        "seq",
    ]);
    let kind = prop::sample::select(vec![
        "hello", "join", "leave", "send", "history", "members", "presence", "ping", "receipt",
        "typing", "bogus",
    ]);
    let value = prop_oneof![
        json_value(),
        kind.prop_map(Value::from),
        "[A-Za-z0-9:._ -]{0,12}".prop_map(Value::from),
        (0..100u64).prop_map(Value::from),
    ];
    prop::collection::vec((key, value), 0..10).prop_map(|fields| {
        Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_server_frame_round_trips(frame in server_frame()) {
        let encoded = frame.encode();
        let decoded = ServerFrame::decode(encoded.as_bytes()).unwrap();
        prop_assert_eq!(&decoded, &frame);
        // And the text is one JSON object whose "type" comes first.
        let starts_with_type = encoded.as_str().starts_with(r#"{"type":""#);
        prop_assert!(starts_with_type, "type first: {}", encoded.as_str());
    }

    #[test]
    fn every_request_round_trips(id in request_id(), frame in client_frame()) {
        let request = Request::new(id, frame);
        let limits = DecodeLimits { max_body: usize::MAX, max_meta: usize::MAX };
        let decoded = Request::decode(request.encode().as_bytes(), &limits).unwrap();
        prop_assert_eq!(decoded, request);
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..512)) {
        assert_protocol_error(&input);
    }

    #[test]
    fn arbitrary_text_never_panics(input in text(512)) {
        assert_protocol_error(input.as_bytes());
    }

    #[test]
    fn hostile_objects_get_protocol_errors(object in hostile_object()) {
        let text = serde_json::to_vec(&object).unwrap();
        assert_protocol_error(&text);
        // A usable id always comes back, whatever else is wrong.
        let usable = object.get("id").and_then(Value::as_u64).filter(|n| *n <= RequestId::MAX.get());
        if let Err(rejection) = Request::decode(&text, &DecodeLimits::default()) {
            prop_assert_eq!(rejection.id.map(RequestId::get), usable);
        }
    }

    #[test]
    fn truncated_frames_never_panic(frame in client_frame(), cut in any::<prop::sample::Index>()) {
        let text = Request::new(None, frame).encode();
        let at = cut.index(text.len() + 1);
        assert_protocol_error(&text.as_bytes()[..at]);
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let send_with_meta_depth = |depth: usize| {
        format!(
            r#"{{"type":"send","id":1,"room":"r","cid":"c","body":"x","meta":{{"a":{}1{}}}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    // Small enough for the size limit, too deep to store: a poison message for clients.
    let err = Request::decode(
        send_with_meta_depth(1_000).as_bytes(),
        &DecodeLimits::default(),
    )
    .unwrap_err();
    assert_eq!(
        (err.id.map(RequestId::get), err.code),
        (Some(1), ErrorCode::BadRequest)
    );
    // Far beyond any parser's recursion: still an answer, not a crash.
    assert!(
        Request::decode(
            send_with_meta_depth(1_000_000).as_bytes(),
            &DecodeLimits::default()
        )
        .is_err()
    );
    let deep_unknown = format!(
        r#"{{"type":"ping","id":2,"x":{}{}}}"#,
        "[".repeat(1_000_000),
        "]".repeat(1_000_000)
    );
    let ping = Request::decode(deep_unknown.as_bytes(), &DecodeLimits::default());
    assert!(ping.is_ok() || ping.unwrap_err().id.is_some());
    let deep_resume = format!(
        r#"{{"type":"hello","id":3,"token":"t","resume":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_eq!(
        Request::decode(deep_resume.as_bytes(), &DecodeLimits::default())
            .unwrap_err()
            .code,
        ErrorCode::BadRequest
    );
}
