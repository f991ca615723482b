//! How values are encoded: the layout django-redis uses with its JSON serializer.
//!
//! django-redis sends an `int` raw, as decimal text, so that Redis `INCRBY` works on it, and
//! serializes everything else with its serializer; with
//! `"SERIALIZER": "django_redis.serializers.json.JSONSerializer"` that is JSON text. JSON writes
//! an integer as the same decimal text, so one rule covers both: **values are JSON**. Whatever a
//! Django service wrote with that serializer (and no compressor) decodes here, and the other way
//! round:
//!
//! | Python | stored bytes | Rust |
//! |---|---|---|
//! | `cache.set("n", 42)` | `42` | `i64` |
//! | `cache.set("s", "abc")` | `"abc"` | `String` |
//! | `cache.set("u", {"id": 1})` | `{"id":1}` | any `Deserialize` type |
//! | `cache.set("b", True)` | `true` | `bool` |
//!
//! The default pickle serializer and the compressors are Python-only formats and cannot be read
//! here; a shared database must use the JSON serializer.
//!
//! # Example
//!
//! ```
//! use tower_redis_http::store::value;
//!
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct User { id: u64, username: String }
//!
//! let bytes = value::encode(&User { id: 1, username: "alice".into() }).unwrap();
//! assert_eq!(&bytes[..], br#"{"id":1,"username":"alice"}"#);
//! assert_eq!(value::decode::<User>(&bytes).unwrap().username, "alice");
//!
//! // What django-redis stores for `cache.set("visits", 42)`:
//! assert_eq!(value::decode::<i64>(b"42").unwrap(), 42);
//! assert_eq!(&value::encode(&42).unwrap()[..], b"42");
//! ```

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value could not be encoded or decoded.
///
/// # Example
///
/// ```
/// use tower_redis_http::store::value;
///
/// let err = value::decode::<u64>(b"not json").unwrap_err();
/// assert!(err.to_string().starts_with("stored value is not valid JSON"));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("stored value is not valid JSON for the requested type")]
pub struct ValueError {
    #[source]
    source: serde_json::Error,
}

/// Encodes `value` the way django-redis's JSON serializer does.
///
/// # Errors
///
/// When `value`'s `Serialize` implementation fails (a map with non-string keys, for example).
///
/// # Example
///
/// ```
/// use tower_redis_http::store::value;
///
/// assert_eq!(&value::encode(&"abc").unwrap()[..], br#""abc""#);
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, ValueError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|source| ValueError { source })
}

/// Decodes bytes that [`encode`] or django-redis's JSON serializer wrote.
///
/// # Errors
///
/// When the bytes are not JSON, or not JSON of the shape `T` expects.
///
/// # Example
///
/// ```
/// use tower_redis_http::store::value;
///
/// assert_eq!(value::decode::<bool>(b"true").unwrap(), true);
/// ```
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ValueError> {
    serde_json::from_slice(bytes).map_err(|source| ValueError { source })
}

/// Parses the decimal text of a counter, as Redis `INCRBY` accepts it.
pub(crate) fn parse_integer(bytes: &[u8]) -> Option<i64> {
    // Redis refuses leading '+', spaces and leading zeros in counters; so do we, so that both
    // backends agree on what counts as an integer.
    let text = std::str::from_utf8(bytes).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
        || text == "-0"
    {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn django_json_serializer_outputs_decode() {
        assert_eq!(decode::<i64>(b"42").unwrap(), 42);
        assert_eq!(decode::<i64>(b"-7").unwrap(), -7);
        assert_eq!(decode::<String>(br#""abc""#).unwrap(), "abc");
        assert_eq!(decode::<String>(br#""\u4f60\u597d""#).unwrap(), "你好");
        assert!(decode::<bool>(b"true").unwrap());
        let user: serde_json::Value = decode(br#"{"id": 1, "is_active": true}"#).unwrap();
        assert_eq!(user["id"], 1);
    }

    #[test]
    fn integers_encode_as_plain_decimal() {
        assert_eq!(&encode(&42_i64).unwrap()[..], b"42");
        assert_eq!(&encode(&-1_i32).unwrap()[..], b"-1");
        assert_eq!(&encode(&u64::MAX).unwrap()[..], b"18446744073709551615");
    }

    #[test]
    fn counter_parsing_matches_redis() {
        let cases: &[(&[u8], Option<i64>)] = &[
            (b"0", Some(0)),
            (b"42", Some(42)),
            (b"-42", Some(-42)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"9223372036854775808", None),
            (b"", None),
            (b"-", None),
            (b"-0", None),
            (b"+1", None),
            (b" 1", None),
            (b"01", None),
            (b"1.5", None),
            (b"\"1\"", None),
            (b"\xff", None),
        ];
        for &(input, expected) in cases {
            assert_eq!(parse_integer(input), expected, "{input:?}");
        }
    }
}
