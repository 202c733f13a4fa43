//! A JSON object read one level deep: each top-level field kept as its raw JSON text, so
//! that the `id` can be recovered from a frame whose other fields are wrong.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The top-level fields of a JSON object, in order. A repeated key: the last one wins, as
/// in JavaScript's `JSON.parse`.
pub(crate) struct RawObject<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
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
        serde_json::from_slice(text).map_err(|e| {
            if e.is_data() {
                NotObject::NotAnObject
            } else {
                NotObject::NotJson(e)
            }
        })
    }

    /// The raw value of `key`; `None` when absent. A JSON `null` is returned as is.
    pub(crate) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }

    /// The raw value of `key`, with `null` counted as absent.
    pub(crate) fn get_present(&self, key: &str) -> Option<&'a RawValue> {
        self.get(key).filter(|v| v.get() != "null")
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

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

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8).min(32));
                while let Some(Key(key)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((key, value));
                }
                Ok(RawObject { fields })
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// Reads a string field without copying it when it has no escapes.
pub(crate) fn raw_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    if let Ok(s) = serde_json::from_str::<&str>(raw.get()) {
        return Some(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(raw.get())
        .ok()
        .map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_key_wins_and_escaped_keys_match() {
        let text = br#"{"id":1,"t\u0079pe":"ping","id":2}"#;
        let obj = RawObject::parse(text).ok().unwrap();
        assert_eq!(obj.get("id").unwrap().get(), "2");
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

    #[test]
    fn null_counts_as_absent_only_when_asked() {
        let obj = RawObject::parse(br#"{"meta":null}"#).ok().unwrap();
        assert!(obj.has("meta"));
        assert!(obj.get_present("meta").is_none());
    }
}
