//! A JSON object read one level deep: each top-level field kept as its raw JSON text, so
//! that the `id` can be recovered from a frame whose other fields are wrong.
//!
//! Most frames are flat objects of plain strings, numbers and literals. A scanner reads
//! those in one pass; anything else (an escape, a nested value, anything that is not
//! JSON) goes to `serde_json`, which gives the same fields or the error.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The top-level fields of a JSON object, in order, each value as its JSON text. A
/// repeated key: the last one wins, as in JavaScript's `JSON.parse`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RawObject<'a> {
    fields: Vec<(Cow<'a, str>, &'a str)>,
}

/// Why text did not parse as a JSON object.
pub(crate) enum NotObject {
    /// Not JSON at all (or trailing garbage, or nesting too deep).
    NotJson(serde_json::Error),
    /// JSON, but an array, string, number, `true`/`false` or `null`.
    NotAnObject,
}

impl<'a> RawObject<'a> {
    pub(crate) fn parse(text: &'a [u8]) -> Result<RawObject<'a>, NotObject> {
        if let Some(flat) = std::str::from_utf8(text).ok().and_then(scan_flat) {
            return Ok(flat);
        }
        parse_with_serde(text)
    }

    /// The raw value of `key`; `None` when absent. A JSON `null` is returned as is.
    pub(crate) fn get(&self, key: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }

    /// The raw value of `key`, with `null` counted as absent.
    pub(crate) fn get_present(&self, key: &str) -> Option<&'a str> {
        self.get(key).filter(|v| *v != "null")
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

fn parse_with_serde(text: &[u8]) -> Result<RawObject<'_>, NotObject> {
    let fields: SerdeFields<'_> = serde_json::from_slice(text).map_err(|e| {
        if e.is_data() {
            NotObject::NotAnObject
        } else {
            NotObject::NotJson(e)
        }
    })?;
    Ok(RawObject {
        fields: fields
            .0
            .into_iter()
            .map(|(key, value)| (key, value.get()))
            .collect(),
    })
}

/// Reads an object whose values are all strings without escapes, numbers, `true`,
/// `false` or `null`, and whose keys have no escapes; `None` for anything else, valid
/// JSON or not (then `serde_json` decides). What it accepts is JSON, read as
/// `serde_json` reads it.
fn scan_flat(text: &str) -> Option<RawObject<'_>> {
    let bytes = text.as_bytes();
    let mut at = skip_space(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_space(bytes, at + 1);
    let mut fields = Vec::with_capacity(8);
    if bytes.get(at) == Some(&b'}') {
        at += 1;
    } else {
        loop {
            let key = plain_string(bytes, at)?;
            at = skip_space(bytes, key.end);
            if bytes.get(at) != Some(&b':') {
                return None;
            }
            at = skip_space(bytes, at + 1);
            let end = scalar(bytes, at)?;
            fields.push((Cow::Borrowed(&text[key.start..key.end - 1]), &text[at..end]));
            at = skip_space(bytes, end);
            match bytes.get(at) {
                Some(b',') => at = skip_space(bytes, at + 1),
                Some(b'}') => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_space(bytes, at) == bytes.len()).then_some(RawObject { fields })
}

/// JSON's insignificant whitespace.
fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// A string without escapes starting at `at`: the range of its content and closing quote
/// (`start` after the opening quote, `end` after the closing one).
fn plain_string(bytes: &[u8], at: usize) -> Option<std::ops::Range<usize>> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let len = super::json::plain_prefix(&bytes[start..]);
    (bytes.get(start + len) == Some(&b'"')).then_some(start..start + len + 1)
}

/// The end of a plain string, a number or a literal starting at `at`.
fn scalar(bytes: &[u8], at: usize) -> Option<usize> {
    let literal = |word: &[u8]| bytes[at..].starts_with(word).then_some(at + word.len());
    match *bytes.get(at)? {
        b'"' => plain_string(bytes, at).map(|r| r.end),
        b't' => literal(b"true"),
        b'f' => literal(b"false"),
        b'n' => literal(b"null"),
        b'-' | b'0'..=b'9' => number(bytes, at),
        _ => None,
    }
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` from `at`: where it ends.
fn number(bytes: &[u8], mut at: usize) -> Option<usize> {
    let digits = |at: usize| {
        let n = bytes[at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        (n > 0).then_some(at + n)
    };
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    at = match bytes.get(at)? {
        b'0' => at + 1,
        b'1'..=b'9' => digits(at)?,
        _ => return None,
    };
    if bytes.get(at) == Some(&b'.') {
        at = digits(at + 1)?;
    }
    if let Some(b'e' | b'E') = bytes.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = bytes.get(at) {
            at += 1;
        }
        at = digits(at)?;
    }
    Some(at)
}

/// The fields as `serde_json` reads them.
struct SerdeFields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for SerdeFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SerdeFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SerdeFields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8).min(32));
                while let Some(Key(key)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((key, value));
                }
                Ok(SerdeFields(fields))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// Reads a string value (the JSON text of a field) without copying it when it has no
/// escapes.
pub(crate) fn raw_str(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    // The text is a JSON value already read: with no backslash, it is the string itself.
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn last_key_wins_and_escaped_keys_match() {
        let text = br#"{"id":1,"t\u0079pe":"ping","id":2}"#;
        let obj = RawObject::parse(text).ok().unwrap();
        assert_eq!(obj.get("id").unwrap(), "2");
        assert_eq!(raw_str(obj.get("type").unwrap()).unwrap(), "ping");
    }

    #[test]
    fn classifies_failures() {
        assert!(matches!(
            RawObject::parse(b"[1]"),
            Err(NotObject::NotAnObject)
        ));
        assert!(matches!(
            RawObject::parse(b"null"),
            Err(NotObject::NotAnObject)
        ));
        assert!(matches!(RawObject::parse(b"{"), Err(NotObject::NotJson(_))));
        assert!(matches!(
            RawObject::parse(b"{} {}"),
            Err(NotObject::NotJson(_))
        ));
        assert!(matches!(
            RawObject::parse(b"\xff"),
            Err(NotObject::NotJson(_))
        ));
    }

    /// JSON-like text: objects of mixed values, with JSON and non-JSON whitespace, numbers
    /// and literals valid and not, escapes, nesting and trailing bytes.
    fn object_text() -> impl Strategy<Value = String> {
        let space = prop::sample::select(vec!["", "", " ", "\n\t\r ", "\u{b}", "\u{a0}"]);
        let key = prop::sample::select(vec!["id", "type", "a", "", "ké", "t\\u0079pe", "a\\\"b"]);
        let value = prop_oneof![
            "[ -~é€\u{0}-\u{1f}]{0,12}".prop_map(|s| {
                // Quote it, escaping some of what needs it and leaving the rest bare.
                let mut out = String::from("\"");
                for (i, c) in s.chars().enumerate() {
                    match c {
                        '"' | '\\' if i % 3 != 0 => out.extend(['\\', c]),
                        '\n' if i % 2 == 0 => out.push_str("\\n"),
                        c => out.push(c),
                    }
                }
                out.push('"');
                out
            }),
            prop::sample::select(vec![
                "0",
                "-0",
                "01",
                "12",
                "-7",
                "1.5",
                "1.",
                ".5",
                "-",
                "1e5",
                "1E+2",
                "2e-",
                "1.5e-3",
                "123456789012345678901234567890",
                "true",
                "false",
                "null",
                "tru",
                "nulls",
                "{}",
                "[1, 2]",
                "{\"a\":{\"b\":[]}}",
                "\"\\u00e9\"",
            ])
            .prop_map(str::to_owned),
        ];
        let member = (space.clone(), key, space.clone(), value, space.clone())
            .prop_map(|(s1, k, s2, v, s3)| format!("{s1}\"{k}\"{s2}:{s2}{v}{s3}"));
        (
            space.clone(),
            prop::collection::vec(member, 0..6),
            space,
            prop::sample::select(vec!["", "", "", "x", "}", ",", " {}"]),
        )
            .prop_map(|(before, members, after, trailing)| {
                format!("{before}{{{}}}{after}{trailing}", members.join(","))
            })
    }

    proptest::proptest! {
        /// Whatever the scanner reads, serde_json reads the same way.
        #[test]
        fn the_scanner_reads_what_serde_json_reads(
            text in object_text(),
            cut in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            mutate in any::<bool>(),
        ) {
            let mut bytes = text.into_bytes();
            if mutate && !bytes.is_empty() {
                let at = cut.index(bytes.len());
                bytes[at] = byte;
            }
            if let Some(fast) = std::str::from_utf8(&bytes).ok().and_then(scan_flat) {
                let slow = parse_with_serde(&bytes).ok();
                proptest::prop_assert_eq!(Some(fast), slow, "{:?}", String::from_utf8_lossy(&bytes));
            }
        }
    }

    #[test]
    fn flat_frames_take_the_scanner_and_others_serde() {
        let flat =
            r#" {"type":"send", "id":7,"to":"bob","cid":"c-1","body":"hé","x":-1.5e3,"y":null} "#;
        assert_eq!(scan_flat(flat), parse_with_serde(flat.as_bytes()).ok());
        assert_eq!(scan_flat(flat).unwrap().get("body"), Some("\"hé\""));
        for other in [
            &br#"{"type":"send","body":"a\nb"}"#[..],
            br#"{"meta":{"a":1}}"#,
            br#"{"id":01}"#,
            br#"{"id":1}x"#,
            br#"[1]"#,
        ] {
            assert!(scan_flat(std::str::from_utf8(other).unwrap()).is_none());
        }
    }

    #[test]
    fn null_counts_as_absent_only_when_asked() {
        let obj = RawObject::parse(br#"{"meta":null}"#).ok().unwrap();
        assert!(obj.has("meta"));
        assert!(obj.get_present("meta").is_none());
    }
}
