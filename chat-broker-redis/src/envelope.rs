//! The bytes of one event on a Redis channel: a version, the publishing node, the event.
//!
//! ```text
//! +------+-----+------------------+------------------------------------------+
//! | 0x01 | len | publisher (len)  | BrokerEvent::to_bytes(): JSON header, \n, |
//! |      | u8  | node id, ASCII   | the encoded frame                        |
//! +------+-----+------------------+------------------------------------------+
//! ```
//!
//! The publisher comes first and apart from the event so that a node drops its own echoes
//! (Redis delivers a publish to every subscriber, the publisher's own connection included)
//! after comparing a few bytes, before parsing or copying anything. The event itself is
//! chat-core's own network form ([`BrokerEvent::to_bytes`]): its header is a line of JSON
//! (origin, topic, kind), the frame follows unchanged.
//!
//! A receiver drops (and counts) a payload whose version it does not know, so nodes of a
//! newer version can publish a new layout while older ones still run: those events are
//! lost to the older nodes, which a doorbell allows.

use bytes::{BufMut, Bytes, BytesMut};
use chat_core::NodeId;
use chat_core::broker::BrokerEvent;

/// The layout version this build writes and reads.
pub(crate) const VERSION: u8 = 1;

/// Why a payload was not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Empty, or not this layout's version.
    Version(Option<u8>),
    /// The publisher field is cut short or not a node id.
    Publisher,
    /// The event after the publisher did not parse.
    Event(String),
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::Version(None) => f.write_str("an empty payload"),
            Malformed::Version(Some(v)) => write!(f, "unknown envelope version {v}"),
            Malformed::Publisher => f.write_str("a bad publisher field"),
            Malformed::Event(why) => write!(f, "a bad event: {why}"),
        }
    }
}

/// The payload for `event` published by `publisher`.
pub(crate) fn encode(publisher: &NodeId, event: &BrokerEvent) -> Bytes {
    let id = publisher.as_str().as_bytes();
    let body = event.to_bytes();
    let mut buf = BytesMut::with_capacity(2 + id.len() + body.len());
    buf.put_u8(VERSION);
    // A node id is at most 64 bytes (chat-core validates it), so its length fits a byte.
    buf.put_u8(u8::try_from(id.len()).unwrap_or(u8::MAX));
    buf.put_slice(id);
    buf.put_slice(&body);
    buf.freeze()
}

/// The publisher's node id, as bytes, and the rest of the payload (the event).
pub(crate) fn split(payload: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    match payload.first() {
        Some(&VERSION) => {}
        other => return Err(Malformed::Version(other.copied())),
    }
    let len = usize::from(*payload.get(1).ok_or(Malformed::Publisher)?);
    let publisher = payload.get(2..2 + len).ok_or(Malformed::Publisher)?;
    if publisher.is_empty() {
        return Err(Malformed::Publisher);
    }
    Ok((publisher, &payload[2 + len..]))
}

/// Reads a whole payload: the publisher and the event.
pub(crate) fn decode(payload: &[u8]) -> Result<(NodeId, BrokerEvent), Malformed> {
    let (publisher, event) = split(payload)?;
    let publisher = std::str::from_utf8(publisher)
        .ok()
        .and_then(|s| NodeId::new(s).ok())
        .ok_or(Malformed::Publisher)?;
    let event = BrokerEvent::from_bytes(event).map_err(|e| Malformed::Event(e.to_string()))?;
    Ok((publisher, event))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chat_core::broker::{EventKind, Topic};
    use chat_core::protocol::{MemberAction, ServerFrame, TypingPush};
    use chat_core::{RoomId, Seq, UserId};
    use proptest::prelude::*;

    use super::*;

    fn event(origin: &str, topic: Topic, kind: EventKind) -> BrokerEvent {
        BrokerEvent {
            origin: NodeId::new(origin).unwrap(),
            topic,
            kind,
            frame: ServerFrame::Typing(TypingPush {
                room: RoomId::new("r").unwrap(),
                user: UserId::new("u").unwrap(),
                active: true,
            })
            .encode(),
        }
    }

    fn samples() -> Vec<BrokerEvent> {
        vec![
            event(
                "n1",
                Topic::Room(RoomId::new("dm:a:b").unwrap()),
                EventKind::Message {
                    seq: Seq::new(42).unwrap(),
                },
            ),
            event(
                "n1",
                Topic::Room(RoomId::new("general").unwrap()),
                EventKind::Member {
                    user: UserId::new("bob").unwrap(),
                    action: MemberAction::Join,
                    at: Some(Seq::new(7).unwrap()),
                },
            ),
            // Relayed: the origin is not the publisher.
            event(
                "elsewhere",
                Topic::User(UserId::new("carol").unwrap()),
                EventKind::Presence,
            ),
        ]
    }

    #[test]
    fn events_round_trip_with_their_publisher() {
        let publisher = NodeId::new("node-a").unwrap();
        for e in samples() {
            let bytes = encode(&publisher, &e);
            assert_eq!(bytes[0], VERSION);
            let (p, rest) = split(&bytes).unwrap();
            assert_eq!(p, b"node-a");
            assert_eq!(rest, &e.to_bytes()[..]);
            assert_eq!(decode(&bytes).unwrap(), (publisher.clone(), e));
        }
    }

    #[test]
    fn the_longest_node_id_fits() {
        let publisher = NodeId::new(&"n".repeat(64)).unwrap();
        let e = samples().remove(0);
        assert_eq!(
            decode(&encode(&publisher, &e)).unwrap(),
            (publisher.clone(), e)
        );
    }

    #[test]
    fn other_versions_and_cut_payloads_are_refused() {
        let good = encode(&NodeId::new("n").unwrap(), &samples()[0]);
        assert_eq!(decode(b""), Err(Malformed::Version(None)));
        let mut v2 = good.to_vec();
        v2[0] = 2;
        assert_eq!(decode(&v2), Err(Malformed::Version(Some(2))));
        assert_eq!(decode(&[VERSION]), Err(Malformed::Publisher));
        assert_eq!(decode(&[VERSION, 0]), Err(Malformed::Publisher));
        assert_eq!(decode(&[VERSION, 5, b'a']), Err(Malformed::Publisher));
        assert_eq!(decode(&[VERSION, 1, b' ']), Err(Malformed::Publisher));
        assert!(matches!(decode(&good[..4]), Err(Malformed::Event(_))));
        // The old (unversioned) form of chat-core is not mistaken for an envelope.
        assert!(decode(&samples()[0].to_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_a_good_prefix_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            let mut bytes = vec![VERSION, 2, b'n', b'1'];
            bytes.extend_from_slice(&tail);
            let _ = decode(&bytes);
        }
    }
}
