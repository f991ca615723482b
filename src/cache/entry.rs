//! The stored form of a cached response: a versioned binary envelope.
//!
//! ```text
//! "TRHC" | version (1 byte) | metadata length (u32, little endian) | metadata (postcard) | body
//! ```
//!
//! A partial response (the pieces of one representation, RFC 9111 §3.3) is version 4: the
//! same, with `pieces length (u32) | pieces (postcard)` after the metadata, and the pieces'
//! bytes one after the other as the body. It is stored under a key of its own, so a reader
//! of complete entries never meets one.
//!
//! The body follows the metadata as is, or LZ4-compressed (block format) when the layer
//! compresses bodies and that saves space; the metadata records which, so entries stay
//! readable whatever the layer's current setting. An uncompressed body is served as a slice of
//! the bytes the store returned, without copying them again. Anything that is not such an
//! envelope of a known version is refused, so the layer treats it as a miss.

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::policy::Reuse;
use crate::decoded::DecodedMemo;

const MAGIC: &[u8; 4] = b"TRHC";
const VERSION: u8 = 3;
const PARTIAL_VERSION: u8 = 4;
/// The largest body a compressed entry may claim: a corrupt length must not make a hit
/// allocate gigabytes.
const MAX_DECOMPRESSED: u64 = 64 * 1024 * 1024;
const PREFIX_LEN: usize = 4 + 1 + 4;

/// A cached response.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// When the response arrived (`response_time` of RFC 9111 §4.2.3).
    pub(crate) stored_at: SystemTime,
    /// The age it had on arrival (`corrected_initial_age`).
    pub(crate) initial_age: Duration,
    /// Its freshness lifetime; past it, the entry is stale.
    pub(crate) freshness: Duration,
    /// How long the store keeps it (freshness plus stale and revalidation windows).
    pub(crate) keep: Duration,
    pub(crate) reuse: Reuse,
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
    codec: Codec,
    /// The body's length before compression.
    body_len: u64,
    stored_at_ms: u64,
    initial_age_ms: u64,
    freshness_ms: u64,
    keep_ms: u64,
    /// `Reuse` flags: 1 always revalidate, 2 never stale, 4 refuse `max-stale`.
    reuse_flags: u8,
    stale_while_revalidate_ms: u64,
    stale_if_error_ms: u64,
    #[serde(borrow)]
    vary: Vec<&'a str>,
    variant: &'a str,
    #[serde(borrow)]
    headers: Vec<(&'a str, RawBytes<'a>)>,
}

/// Where a partial entry's pieces lie: `(start, length)` of each, in the body's order.
#[derive(Serialize, Deserialize)]
struct PieceMeta {
    complete_len: u64,
    pieces: Vec<(u64, u64)>,
}

/// How the body is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Codec {
    Identity,
    Lz4,
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
    #[error("cache entry body does not decompress")]
    Decompress(#[source] Option<lz4_flex::block::DecompressError>),
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Entry {
    /// `current_age` (RFC 9111 §4.2.3): its age on arrival plus the time it has been stored.
    pub(crate) fn age(&self, now: SystemTime) -> Duration {
        self.initial_age + now.duration_since(self.stored_at).unwrap_or_default()
    }

    /// The stored form; the body is LZ4-compressed when `compress_above` is set, the body is
    /// at least that long, and compressing saves space.
    pub(crate) fn encode(&self, compress_above: Option<usize>) -> Bytes {
        self.encode_as(VERSION, None, compress_above)
    }

    /// The stored form of a partial entry: this entry's fields (its own body unused: the
    /// pieces' bytes, one after the other, stand for it) with where each piece lies.
    pub(crate) fn encode_partial(&self, pieces: &Pieces) -> Bytes {
        let meta = PieceMeta {
            complete_len: pieces.complete_len,
            pieces: pieces
                .held
                .iter()
                .map(|(start, bytes)| (*start, bytes.len() as u64))
                .collect(),
        };
        let meta = postcard::to_allocvec(&meta).expect("piece metadata always serializes");
        self.encode_as(PARTIAL_VERSION, Some((&meta, pieces)), None)
    }

    /// The stored form, of the entry's body, or (for a partial entry) of the pieces' bytes
    /// one after the other, which are then written straight from the pieces: an entry kept
    /// with its pieces holds no second, joined copy of them.
    fn encode_as(
        &self,
        version: u8,
        pieces: Option<(&[u8], &Pieces)>,
        compress_above: Option<usize>,
    ) -> Bytes {
        let compressed = compress_above
            .filter(|_| pieces.is_none())
            .filter(|&threshold| self.body.len() >= threshold)
            .map(|_| lz4_flex::block::compress(&self.body))
            .filter(|compressed| compressed.len() < self.body.len());
        let (codec, body): (Codec, &[u8]) = match &compressed {
            Some(compressed) => (Codec::Lz4, compressed),
            None => (Codec::Identity, &self.body),
        };
        let body_len = pieces.map_or(self.body.len(), |(_, pieces)| pieces.len());
        let meta = Meta {
            status: self.status.as_u16(),
            codec,
            body_len: body_len as u64,
            stored_at_ms: millis(
                self.stored_at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
            initial_age_ms: millis(self.initial_age),
            freshness_ms: millis(self.freshness),
            keep_ms: millis(self.keep),
            reuse_flags: u8::from(self.reuse.always_revalidate)
                | u8::from(self.reuse.never_stale) << 1
                | u8::from(self.reuse.refuse_max_stale) << 2,
            stale_while_revalidate_ms: millis(self.reuse.stale_while_revalidate),
            stale_if_error_ms: millis(self.reuse.stale_if_error),
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
        let extra = pieces.map_or(0, |(piece_meta, _)| 4 + piece_meta.len());
        let body_len = if pieces.is_some() {
            body_len
        } else {
            body.len()
        };
        let mut out = BytesMut::with_capacity(PREFIX_LEN + meta.len() + extra + body_len);
        out.put_slice(MAGIC);
        out.put_u8(version);
        out.put_u32_le(meta_len);
        out.put_slice(&meta);
        match pieces {
            Some((piece_meta, pieces)) => {
                out.put_u32_le(u32::try_from(piece_meta.len()).expect("piece metadata is small"));
                out.put_slice(piece_meta);
                for (_, bytes) in &pieces.held {
                    out.put_slice(bytes);
                }
            }
            None => out.put_slice(body),
        }
        out.freeze()
    }

    pub(crate) fn decode(stored: &Bytes) -> Result<Self, EntryError> {
        Self::decode_as(stored, VERSION).map(|(entry, _)| entry)
    }

    /// A partial entry and its pieces, from their stored form.
    pub(crate) fn decode_partial(stored: &Bytes) -> Result<(Self, Pieces), EntryError> {
        let (entry, meta) = Self::decode_as(stored, PARTIAL_VERSION)?;
        let meta = meta.ok_or(EntryError::Corrupt(None))?;
        let mut held = Vec::with_capacity(meta.pieces.len());
        let mut offset = 0_usize;
        for (start, len) in meta.pieces {
            let len = usize::try_from(len).map_err(|_| EntryError::Corrupt(None))?;
            let end = offset
                .checked_add(len)
                .filter(|&end| end <= entry.body.len())
                .ok_or(EntryError::Truncated)?;
            held.push((start, entry.body.slice(offset..end)));
            offset = end;
        }
        if offset != entry.body.len()
            || held
                .iter()
                .any(|(start, bytes)| start.saturating_add(bytes.len() as u64) > meta.complete_len)
        {
            return Err(EntryError::Corrupt(None));
        }
        let pieces = Pieces {
            complete_len: meta.complete_len,
            held,
        };
        Ok((entry, pieces))
    }

    fn decode_as(stored: &Bytes, version: u8) -> Result<(Self, Option<PieceMeta>), EntryError> {
        let (mut entry, pieces, body) = Self::decode_head(stored, version)?;
        entry.body = body.of(stored)?;
        Ok((entry, pieces))
    }

    /// A complete entry, its head (everything but the body) decoded once per distinct head
    /// and kept in `memo` by the head's bytes: a hit then copies the decoded status, headers
    /// and times instead of parsing them. An entry stored anew is other bytes (its time of
    /// storing at least), so it is decoded anew.
    pub(crate) fn decode_kept(
        stored: &Bytes,
        memo: &DecodedMemo<Head>,
    ) -> Result<Self, EntryError> {
        let Some(head_len) = Self::head_len(stored) else {
            // not a well-formed complete entry: the full decoding says what is wrong
            return Self::decode(stored);
        };
        // an entry's head holds nothing a request changes: shared by every key that stores it
        let head = memo.get_or_decode("", &stored[..head_len], |head| {
            let (entry, _, body) = Self::decode_head(head, VERSION)?;
            Ok::<_, EntryError>(Head { entry, body })
        })?;
        let mut entry = head.entry;
        // a clone has no room to spare: make it for what a hit adds, as decoding does
        entry.headers.reserve(3);
        entry.body = head.body.of(stored)?;
        Ok(entry)
    }

    /// The length of a complete entry's head (prefix and metadata), when `stored` holds one.
    fn head_len(stored: &[u8]) -> Option<usize> {
        if stored.len() < PREFIX_LEN || &stored[..4] != MAGIC || stored[4] != VERSION {
            return None;
        }
        let meta_len = u32::from_le_bytes(stored[5..9].try_into().expect("four bytes")) as usize;
        PREFIX_LEN
            .checked_add(meta_len)
            .filter(|&end| end <= stored.len())
    }

    /// The entry without its body, its pieces' metadata for a partial one, and where and
    /// how its body is stored.
    fn decode_head(
        stored: &[u8],
        version: u8,
    ) -> Result<(Self, Option<PieceMeta>, BodyForm), EntryError> {
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
        if stored[4] != version {
            return Err(EntryError::Version(stored[4]));
        }
        let meta_len = u32::from_le_bytes(stored[5..9].try_into().expect("four bytes")) as usize;
        let meta_end = PREFIX_LEN
            .checked_add(meta_len)
            .filter(|&end| end <= stored.len())
            .ok_or(EntryError::Truncated)?;
        let meta: Meta<'_> = postcard::from_bytes(&stored[PREFIX_LEN..meta_end])
            .map_err(|err| EntryError::Corrupt(Some(err)))?;
        let (pieces, body_start) = if version == PARTIAL_VERSION {
            let len_end = meta_end.checked_add(4).filter(|&end| end <= stored.len());
            let len_end = len_end.ok_or(EntryError::Truncated)?;
            let pieces_len =
                u32::from_le_bytes(stored[meta_end..len_end].try_into().expect("four bytes"));
            let pieces_end = len_end
                .checked_add(pieces_len as usize)
                .filter(|&end| end <= stored.len())
                .ok_or(EntryError::Truncated)?;
            let pieces: PieceMeta = postcard::from_bytes(&stored[len_end..pieces_end])
                .map_err(|err| EntryError::Corrupt(Some(err)))?;
            (Some(pieces), pieces_end)
        } else {
            (None, meta_end)
        };
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
        let body = BodyForm {
            start: body_start,
            codec: meta.codec,
            len: meta.body_len,
        };
        let entry = Self {
            status,
            headers,
            body: Bytes::new(),
            stored_at: UNIX_EPOCH + Duration::from_millis(meta.stored_at_ms),
            initial_age: Duration::from_millis(meta.initial_age_ms),
            freshness: Duration::from_millis(meta.freshness_ms),
            keep: Duration::from_millis(meta.keep_ms),
            reuse: Reuse {
                always_revalidate: meta.reuse_flags & 1 != 0,
                never_stale: meta.reuse_flags & 2 != 0,
                refuse_max_stale: meta.reuse_flags & 4 != 0,
                stale_while_revalidate: Duration::from_millis(meta.stale_while_revalidate_ms),
                stale_if_error: Duration::from_millis(meta.stale_if_error_ms),
            },
            vary,
            variant: meta.variant.to_owned(),
        };
        Ok((entry, pieces, body))
    }
}

/// Where an entry's body starts in its stored form, and how it is stored there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyForm {
    start: usize,
    codec: Codec,
    /// The body's length before compression.
    len: u64,
}

impl BodyForm {
    /// The body, from the entry's stored form: a slice of it, or decompressed.
    fn of(self, stored: &Bytes) -> Result<Bytes, EntryError> {
        let start = self.start.min(stored.len());
        match self.codec {
            Codec::Identity => Ok(stored.slice(start..)),
            Codec::Lz4 => {
                if self.len > MAX_DECOMPRESSED {
                    return Err(EntryError::Decompress(None));
                }
                let body = lz4_flex::block::decompress(&stored[start..], self.len as usize)
                    .map_err(|err| EntryError::Decompress(Some(err)))?;
                if body.len() as u64 != self.len {
                    return Err(EntryError::Decompress(None));
                }
                Ok(Bytes::from(body))
            }
        }
    }
}

/// A complete entry's head, decoded: the entry without its body, and how the body is stored.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    entry: Entry,
    body: BodyForm,
}

/// The most pieces one representation keeps (RFC 9111 §3.4 sets no bound). A partial
/// response that would make more starts the pieces anew, alone: a client asking for
/// thousands of disjoint one-byte ranges cannot make each merge, lookup and store write
/// grow with them.
pub(crate) const MAX_PIECES: usize = 32;

/// The stored pieces of one representation: byte ranges of a response `complete_len` long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pieces {
    pub(crate) complete_len: u64,
    /// Sorted, disjoint and not adjacent, each with its bytes.
    pub(crate) held: Vec<(u64, Bytes)>,
}

/// Pieces in order, touching ones gathered into runs that are joined once each.
#[derive(Default)]
struct Runs(Vec<(u64, u64, Vec<Bytes>)>);

impl Runs {
    fn push(&mut self, start: u64, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let end = start + bytes.len() as u64;
        match self.0.last_mut() {
            Some((_, run_end, parts)) if *run_end == start => {
                parts.push(bytes);
                *run_end = end;
            }
            _ => self.0.push((start, end, vec![bytes])),
        }
    }

    fn joined(self) -> Vec<(u64, Bytes)> {
        self.0
            .into_iter()
            .map(|(start, end, mut parts)| {
                if parts.len() == 1 {
                    return (start, parts.pop().expect("one part"));
                }
                let mut joined = BytesMut::with_capacity((end - start) as usize);
                for part in &parts {
                    joined.put_slice(part);
                }
                (start, joined.freeze())
            })
            .collect()
    }
}

impl Pieces {
    /// The pieces with `bytes` at `start` added: newer bytes win where they overlap, and
    /// touching pieces are joined. When that would make more than [`MAX_PIECES`] pieces,
    /// the new piece alone.
    pub(crate) fn with(self, start: u64, bytes: Bytes) -> Self {
        let complete_len = self.complete_len;
        let merged = self.overlaid(vec![(start, bytes.clone())]);
        if merged.held.len() > MAX_PIECES {
            return Self {
                complete_len,
                held: vec![(start, bytes)],
            };
        }
        merged
    }

    /// These pieces with `newer` (sorted and disjoint, as `held` is) laid over them: newer
    /// bytes win where both hold some, and touching pieces are joined. One pass over both
    /// lists, and each byte copied at most once (touching pieces are joined run by run).
    pub(crate) fn overlaid(self, newer: Vec<(u64, Bytes)>) -> Self {
        let mut runs = Runs::default();
        let mut older = self.held.into_iter();
        let mut newer = newer.into_iter().peekable();
        let mut old = older.next();
        loop {
            let Some((old_start, old_bytes)) = old.take() else {
                newer.for_each(|(start, bytes)| runs.push(start, bytes));
                break;
            };
            let Some((new_start, new_bytes)) = newer.peek() else {
                runs.push(old_start, old_bytes);
                older.for_each(|(start, bytes)| runs.push(start, bytes));
                break;
            };
            let (new_start, new_end) = (*new_start, *new_start + new_bytes.len() as u64);
            let old_end = old_start + old_bytes.len() as u64;
            if old_end <= new_start {
                runs.push(old_start, old_bytes);
                old = older.next();
            } else if new_end <= old_start {
                let (start, bytes) = newer.next().expect("peeked");
                runs.push(start, bytes);
                old = Some((old_start, old_bytes));
            } else {
                // they overlap: the older piece keeps what lies outside the newer one
                if old_start < new_start {
                    runs.push(
                        old_start,
                        old_bytes.slice(..(new_start - old_start) as usize),
                    );
                }
                old = if new_end < old_end {
                    Some((new_end, old_bytes.slice((new_end - old_start) as usize..)))
                } else {
                    older.next()
                };
            }
        }
        Self {
            complete_len: self.complete_len,
            held: runs.joined(),
        }
    }

    /// The whole representation, once the pieces make it up.
    pub(crate) fn whole(&self) -> Option<Bytes> {
        match self.held.as_slice() {
            [(0, bytes)] if bytes.len() as u64 == self.complete_len => Some(bytes.clone()),
            _ => None,
        }
    }

    /// The bytes of `range`, when one piece holds all of it.
    pub(crate) fn covering(&self, range: &Range<u64>) -> Option<Bytes> {
        self.held.iter().find_map(|(start, bytes)| {
            let end = start + bytes.len() as u64;
            (*start <= range.start && range.end <= end)
                .then(|| bytes.slice((range.start - start) as usize..(range.end - start) as usize))
        })
    }

    /// How many bytes are held.
    pub(crate) fn len(&self) -> usize {
        self.held.iter().map(|(_, bytes)| bytes.len()).sum()
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
            initial_age: Duration::from_millis(1_500),
            freshness: Duration::from_secs(30),
            keep: Duration::from_secs(90),
            reuse: Reuse {
                always_revalidate: false,
                never_stale: true,
                refuse_max_stale: true,
                stale_while_revalidate: Duration::from_secs(5),
                stale_if_error: Duration::from_secs(60),
            },
            vary: vec![HeaderName::from_static("accept-language")],
            variant: "0123abcd".to_owned(),
        }
    }

    #[test]
    fn entries_round_trip_and_the_body_is_a_slice_of_the_stored_bytes() {
        let stored = entry().encode(None);
        let decoded = Entry::decode(&stored).unwrap();
        assert_eq!(decoded.status, StatusCode::OK);
        assert_eq!(decoded.headers, entry().headers);
        assert_eq!(decoded.body, entry().body);
        assert_eq!(decoded.stored_at, entry().stored_at);
        assert_eq!(decoded.initial_age, entry().initial_age);
        assert_eq!(decoded.freshness, entry().freshness);
        assert_eq!(decoded.keep, entry().keep);
        assert_eq!(decoded.reuse, entry().reuse);
        assert_eq!(decoded.vary, entry().vary);
        assert_eq!(decoded.variant, entry().variant);
        // zero-copy: the body points into the stored buffer
        let stored_range = stored.as_ptr() as usize..stored.as_ptr() as usize + stored.len();
        assert!(stored_range.contains(&(decoded.body.as_ptr() as usize)));
    }

    /// Every field of `entry`, as a comparable text.
    fn fields(entry: &Entry) -> String {
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            entry.status,
            entry.headers,
            entry.body,
            entry.stored_at,
            entry.initial_age,
            entry.freshness,
            entry.keep,
            entry.reuse,
            entry.vary,
            entry.variant
        )
    }

    #[test]
    fn a_kept_head_decodes_as_the_entry_does_and_takes_each_entry_s_own_body() {
        let memo = DecodedMemo::new();
        let compressible = Entry {
            body: Bytes::from(vec![b'a'; 4096]),
            ..entry()
        };
        let stored = [
            entry().encode(None),
            compressible.encode(Some(100)),
            Entry {
                status: StatusCode::NOT_FOUND,
                ..entry()
            }
            .encode(None),
        ];
        for _ in 0..2 {
            for stored in &stored {
                let kept = Entry::decode_kept(stored, &memo).unwrap();
                assert_eq!(fields(&kept), fields(&Entry::decode(stored).unwrap()));
            }
        }
        // the same head over another body: the body is each entry's own
        let mut other_body = entry().encode(None).to_vec();
        let last = other_body.len() - 1;
        other_body[last] = b'!';
        let other_body = Bytes::from(other_body);
        assert_eq!(
            Entry::decode_kept(&other_body, &memo).unwrap().body,
            Entry::decode(&other_body).unwrap().body
        );
        // what is not a complete entry is refused as the full decoding refuses it
        let mut future = stored[0].to_vec();
        future[4] = 9;
        let garbled = {
            let mut garbled = stored[0].to_vec();
            for byte in &mut garbled[PREFIX_LEN..PREFIX_LEN + 8] {
                *byte = 0xff;
            }
            garbled
        };
        let pieces = Pieces {
            complete_len: 10,
            held: vec![(0, Bytes::from_static(b"abc"))],
        };
        for wrong in [
            Bytes::new(),
            Bytes::from_static(b"TRH"),
            Bytes::from_static(b"<html>"),
            stored[0].slice(..12),
            Bytes::from(future),
            Bytes::from(garbled),
            entry().encode_partial(&pieces),
        ] {
            let kept = Entry::decode_kept(&wrong, &memo).map(|e| fields(&e));
            let full = Entry::decode(&wrong).map(|e| fields(&e));
            assert_eq!(format!("{kept:?}"), format!("{full:?}"));
            assert!(kept.is_err());
        }
    }

    #[test]
    fn corrupt_truncated_and_foreign_bytes_are_refused() {
        let stored = entry().encode(None);
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

    #[test]
    fn partial_entries_round_trip_and_never_pass_for_complete_ones() {
        let pieces = Pieces {
            complete_len: 100,
            held: vec![
                (0, Bytes::from_static(b"abc")),
                (50, Bytes::from_static(b"xyz!")),
            ],
        };
        // the entry's own body is not written: the pieces' bytes stand for it
        let partial = Entry {
            body: Bytes::new(),
            ..entry()
        };
        let stored = partial.encode_partial(&pieces);
        let (decoded, decoded_pieces) = Entry::decode_partial(&stored).unwrap();
        assert_eq!(decoded_pieces, pieces);
        assert_eq!(decoded.headers, entry().headers);
        assert_eq!(decoded.variant, entry().variant);
        // each kind is refused where the other is read
        assert!(matches!(
            Entry::decode(&stored),
            Err(EntryError::Version(PARTIAL_VERSION))
        ));
        assert!(matches!(
            Entry::decode_partial(&entry().encode(None)),
            Err(EntryError::Version(VERSION))
        ));
        // pieces that claim more bytes than the body holds, or lie past the whole
        assert!(Entry::decode_partial(&stored.slice(..stored.len() - 1)).is_err());
        let past = Pieces {
            complete_len: 10,
            ..pieces
        };
        assert!(Entry::decode_partial(&partial.encode_partial(&past)).is_err());
    }

    fn big(body: Bytes) -> Entry {
        Entry { body, ..entry() }
    }

    #[test]
    fn bodies_over_the_threshold_are_compressed_when_that_saves_space() {
        let text = Bytes::from("<p>hello, cache</p>".repeat(500));
        let plain = big(text.clone()).encode(None);
        let compressed = big(text.clone()).encode(Some(1024));
        assert!(
            compressed.len() * 4 < plain.len(),
            "{} vs {}",
            compressed.len(),
            plain.len()
        );
        // read back whatever the current setting: the codec is in the entry
        assert_eq!(Entry::decode(&compressed).unwrap().body, text);
        assert_eq!(Entry::decode(&plain).unwrap().body, text);
        // under the threshold: stored as is
        assert_eq!(big(text.clone()).encode(Some(text.len() + 1)), plain);
        // incompressible bytes are stored as is too
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                // xorshift64: bytes LZ4 finds nothing to share in
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let noise = Bytes::from(noise);
        assert_eq!(big(noise.clone()).encode(Some(16)), big(noise).encode(None));
    }

    #[test]
    fn a_corrupt_compressed_body_or_length_is_refused() {
        let text = Bytes::from("abcdefgh".repeat(1000));
        let stored = big(text).encode(Some(1));
        let mut garbled = stored.to_vec();
        let len = garbled.len();
        for byte in &mut garbled[len - 40..] {
            *byte = 0xff;
        }
        assert!(matches!(
            Entry::decode(&Bytes::from(garbled)),
            Err(EntryError::Decompress(_)) | Err(EntryError::Corrupt(_))
        ));
        // a length over the bound is refused before any allocation
        let meta_len = u32::from_le_bytes(stored[5..9].try_into().unwrap()) as usize;
        let mut meta: Meta<'_> =
            postcard::from_bytes(&stored[PREFIX_LEN..PREFIX_LEN + meta_len]).unwrap();
        meta.body_len = MAX_DECOMPRESSED + 1;
        let meta = postcard::to_allocvec(&meta).unwrap();
        let mut forged = Vec::new();
        forged.extend_from_slice(MAGIC);
        forged.push(VERSION);
        forged.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        forged.extend_from_slice(&meta);
        forged.extend_from_slice(&stored[PREFIX_LEN + meta_len..]);
        assert!(matches!(
            Entry::decode(&Bytes::from(forged)),
            Err(EntryError::Decompress(None))
        ));
    }
}
