//! The `message` push written directly: the frame every send produces, encoded once per
//! message for however many recipients, and the one whose text (the body) is longest.
//! The bytes are exactly what `serde_json` writes for the same frame (a test holds the two
//! to each other); the string escaping looks at eight bytes at a time.

use crate::message::Message;

/// `{"type":"message","room":…,"seq":…,"from":…,"cid":…,"body":…,"ts":…[,"meta":…]}`.
pub(super) fn message_push(m: &Message) -> Vec<u8> {
    let meta = m.meta.as_ref().map(|meta| meta.as_str());
    let strings = m.room.as_str().len() + m.from.as_str().len() + m.cid.as_str().len();
    // Fixed text and numbers take under 100 bytes; escapes are rare.
    let mut out =
        Vec::with_capacity(100 + strings + m.body.len() + meta.map_or(0, |meta| meta.len() + 8));
    out.extend_from_slice(br#"{"type":"message","room":"#);
    string(&mut out, m.room.as_str());
    out.extend_from_slice(br#","seq":"#);
    out.extend_from_slice(itoa::Buffer::new().format(m.seq.get()).as_bytes());
    out.extend_from_slice(br#","from":"#);
    string(&mut out, m.from.as_str());
    out.extend_from_slice(br#","cid":"#);
    string(&mut out, m.cid.as_str());
    out.extend_from_slice(br#","body":"#);
    string(&mut out, &m.body);
    out.extend_from_slice(br#","ts":"#);
    out.extend_from_slice(itoa::Buffer::new().format(m.ts.as_millis()).as_bytes());
    if let Some(meta) = meta {
        out.extend_from_slice(br#","meta":"#);
        out.extend_from_slice(meta.as_bytes());
    }
    out.push(b'}');
    out
}

/// A JSON string, escaped as `serde_json` escapes: `"` and `\`, and the control characters
/// (`\b`, `\t`, `\n`, `\f`, `\r`, the others as `\u00xx`); everything else as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.push(b'"');
    // `bytes[start..at]` needs no escape and is not written yet.
    let (mut start, mut at) = (0, 0);
    while at < bytes.len() {
        at += plain_prefix(&bytes[at..]);
        let Some(&byte) = bytes.get(at) else {
            break;
        };
        // A byte that needs an escape: its short form, or 0 for `\u00xx`.
        let short = match byte {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0A => b'n',
            0x0C => b'f',
            0x0D => b'r',
            _ => 0,
        };
        out.extend_from_slice(&bytes[start..at]);
        if short == 0 {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xF)]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
        at += 1;
        start = at;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// How many bytes from the start of `bytes` need no escape in a JSON string (none is
/// below 0x20, `"` or `\`): the length of `bytes` when none does.
pub(super) fn plain_prefix(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(word) = bytes.get(at..at + 8) {
        if needs_escape(u64::from_le_bytes(word.try_into().unwrap_or_default())) {
            break;
        }
        at += 8;
    }
    at + bytes[at..]
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .unwrap_or(bytes.len() - at)
}

/// Whether any of the eight bytes is below 0x20, `"` or `\` (it may say so of a word
/// that holds none only never: each test is exact for "any byte").
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    (control | quote | backslash) & HIGH != 0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::id::{ClientMsgId, RoomId, Seq, UserId};
    use crate::message::Meta;
    use crate::protocol::ServerFrame;
    use crate::time::Timestamp;

    fn via_serde(m: &Message) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Push<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(flatten)]
            message: &'a Message,
        }
        serde_json::to_vec(&Push {
            kind: "message",
            message: m,
        })
        .unwrap()
    }

    fn message(body: String, meta: Option<Meta>, seq: u64, ts: u64) -> Message {
        Message {
            room: RoomId::new("dm:alice:bob").unwrap(),
            seq: Seq::new(seq).unwrap(),
            from: UserId::new("alice").unwrap(),
            cid: ClientMsgId::new("c-1").unwrap(),
            body,
            ts: Timestamp::from_millis(ts),
            meta,
        }
    }

    #[test]
    fn escapes_as_serde_json_does() {
        let mut every_byte: String = (0u8..0x80).map(char::from).collect();
        every_byte.push_str("é€😀\u{7f}\u{2028}");
        for body in [
            String::new(),
            every_byte.clone(),
            every_byte.repeat(3),
            "\"\\\"\\".into(),
            "12345678\n".into(),
        ] {
            let m = message(body, Meta::from_json(r#"{"a":[1,"\n"]}"#).ok(), 7, 1);
            assert_eq!(
                String::from_utf8(message_push(&m)).unwrap(),
                String::from_utf8(via_serde(&m)).unwrap()
            );
            assert_eq!(
                ServerFrame::Message(m.clone()).encode().as_bytes(),
                via_serde(&m)
            );
        }
    }

    proptest! {
        #[test]
        fn any_message_encodes_as_serde_json_does(
            body in any::<String>(),
            ascii in "[\\x00-\\x7f]{0,40}",
            with_meta in any::<bool>(),
            seq in 1u64..(1 << 53),
            ts in any::<u64>(),
        ) {
            let meta = with_meta.then(|| Meta::from_json(r#"{"k":"v"}"#).unwrap());
            for body in [body.clone(), ascii.clone(), format!("{ascii}{body}{ascii}")] {
                let m = message(body, meta.clone(), seq, ts);
                prop_assert_eq!(message_push(&m), via_serde(&m));
            }
        }
    }
}
