//! The stored form of a cached response: a versioned binary envelope.
//!
//! ```text
//! "TRHC" | version (1 byte) | metadata length (u32, little endian) | metadata (postcard) | body
//! ```
//!
//! The body is stored raw after the metadata, so a hit serves a slice of the bytes the store
//! returned, without copying them again. Anything that is not such an envelope of a known
//! version is refused, so the layer treats it as a miss.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 4] = b"TRHC";
const VERSION: u8 = 1;
const PREFIX_LEN: usize = 4 + 1 + 4;

/// A cached response.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) stored_at: SystemTime,
    pub(crate) ttl: Duration,
    /// The request headers the response varies on, as it was stored.
    pub(crate) vary: Vec<HeaderName>,
    /// The hash of the storing request's values for `vary` (see `key::variant_hash`), so a
    /// request is only served an entry whose varied headers match its own.
    pub(crate) variant: String,
}

/// Decoded in place: names and values borrow from the stored bytes, so decoding allocates only
/// the header map itself.
#[derive(Serialize, Deserialize)]
struct Meta<'a> {
    status: u16,
    stored_at_ms: u64,
    ttl_ms: u64,
    #[serde(borrow)]
    vary: Vec<&'a str>,
    variant: &'a str,
    #[serde(borrow)]
    headers: Vec<(&'a str, RawBytes<'a>)>,
}

/// A byte string encoded as bytes (serde encodes a plain `&[u8]` as a sequence).
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawBytes<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = RawBytes<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("borrowed bytes")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                bytes: &'de [u8],
            ) -> Result<Self::Value, E> {
                Ok(RawBytes(bytes))
            }
        }
        deserializer.deserialize_bytes(Visitor(std::marker::PhantomData))
    }
}

/// Why stored bytes are not an entry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EntryError {
    #[error("not a cache entry (bad magic)")]
    Foreign,
    #[error("cache entry format version {0} is not supported")]
    Version(u8),
    #[error("cache entry is truncated")]
    Truncated,
    #[error("cache entry metadata is corrupt")]
    Corrupt(#[source] Option<postcard::Error>),
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Entry {
    pub(crate) fn encode(&self) -> Bytes {
        let meta = Meta {
            status: self.status.as_u16(),
            stored_at_ms: millis(
                self.stored_at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
            ttl_ms: millis(self.ttl),
            vary: self.vary.iter().map(HeaderName::as_str).collect(),
            variant: &self.variant,
            headers: self
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), RawBytes(value.as_bytes())))
                .collect(),
        };
        let meta = postcard::to_allocvec(&meta).expect("entry metadata always serializes");
        let meta_len = u32::try_from(meta.len()).expect("metadata is far below 4 GiB");
        let mut out = BytesMut::with_capacity(PREFIX_LEN + meta.len() + self.body.len());
        out.put_slice(MAGIC);
        out.put_u8(VERSION);
        out.put_u32_le(meta_len);
        out.put_slice(&meta);
        out.put_slice(&self.body);
        out.freeze()
    }

    pub(crate) fn decode(stored: &Bytes) -> Result<Self, EntryError> {
        if stored.len() < PREFIX_LEN {
            return Err(if stored.starts_with(&MAGIC[..stored.len().min(4)]) {
                EntryError::Truncated
            } else {
                EntryError::Foreign
            });
        }
        if &stored[..4] != MAGIC {
            return Err(EntryError::Foreign);
        }
        if stored[4] != VERSION {
            return Err(EntryError::Version(stored[4]));
        }
        let meta_len = u32::from_le_bytes(stored[5..9].try_into().expect("four bytes")) as usize;
        let body_start = PREFIX_LEN
            .checked_add(meta_len)
            .filter(|&end| end <= stored.len())
            .ok_or(EntryError::Truncated)?;
        let meta: Meta<'_> = postcard::from_bytes(&stored[PREFIX_LEN..body_start])
            .map_err(|err| EntryError::Corrupt(Some(err)))?;
        let status = StatusCode::from_u16(meta.status).map_err(|_| EntryError::Corrupt(None))?;
        // room for what a hit adds (Age, Cache-Status, X-Cache) without regrowing
        let mut headers = HeaderMap::with_capacity(meta.headers.len() + 3);
        for (name, RawBytes(value)) in meta.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| EntryError::Corrupt(None))?;
            // Copied: header values are small, and slices of one shared buffer would make every
            // concurrent hit contend on its reference count.
            let value = HeaderValue::from_bytes(value).map_err(|_| EntryError::Corrupt(None))?;
            headers.append(name, value);
        }
        let vary = meta
            .vary
            .iter()
            .map(|name| {
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| EntryError::Corrupt(None))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            status,
            headers,
            body: stored.slice(body_start..),
            stored_at: UNIX_EPOCH + Duration::from_millis(meta.stored_at_ms),
            ttl: Duration::from_millis(meta.ttl_ms),
            vary,
            variant: meta.variant.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        Entry {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"{\"articles\":[]}"),
            stored_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            ttl: Duration::from_secs(30),
            vary: vec![HeaderName::from_static("accept-language")],
            variant: "0123abcd".to_owned(),
        }
    }

    #[test]
    fn entries_round_trip_and_the_body_is_a_slice_of_the_stored_bytes() {
        let stored = entry().encode();
        let decoded = Entry::decode(&stored).unwrap();
        assert_eq!(decoded.status, StatusCode::OK);
        assert_eq!(decoded.headers, entry().headers);
        assert_eq!(decoded.body, entry().body);
        assert_eq!(decoded.stored_at, entry().stored_at);
        assert_eq!(decoded.ttl, entry().ttl);
        assert_eq!(decoded.vary, entry().vary);
        assert_eq!(decoded.variant, entry().variant);
        // zero-copy: the body points into the stored buffer
        let stored_range = stored.as_ptr() as usize..stored.as_ptr() as usize + stored.len();
        assert!(stored_range.contains(&(decoded.body.as_ptr() as usize)));
    }

    #[test]
    fn corrupt_truncated_and_foreign_bytes_are_refused() {
        let stored = entry().encode();
        assert!(matches!(
            Entry::decode(&Bytes::from_static(b"")),
            Err(EntryError::Truncated)
        ));
        assert!(matches!(
            Entry::decode(&Bytes::from_static(b"TRH")),
            Err(EntryError::Truncated)
        ));
        assert!(matches!(
            Entry::decode(&Bytes::from_static(b"<html>hello</html>")),
            Err(EntryError::Foreign)
        ));
        assert!(matches!(
            Entry::decode(&stored.slice(..12)),
            Err(EntryError::Truncated)
        ));
        let mut future = stored.to_vec();
        future[4] = 9;
        assert!(matches!(
            Entry::decode(&Bytes::from(future)),
            Err(EntryError::Version(9))
        ));
        let mut garbled = stored.to_vec();
        for byte in &mut garbled[PREFIX_LEN..PREFIX_LEN + 8] {
            *byte = 0xff;
        }
        assert!(Entry::decode(&Bytes::from(garbled)).is_err());
    }
}
