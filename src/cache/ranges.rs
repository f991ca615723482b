//! Range requests (RFC 9110 §14): `Range` and `If-Range` read, `206` and `416` answered from
//! a stored complete response or its pieces, and which pieces (RFC 9111 §3.3-3.4) combine.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::entry::{Entry, MAX_PIECES, Pieces};
use super::policy;
use super::validators::EntityTag;

/// More ranges than this in one request are not worth answering piecewise (RFC 9110 §14.2
/// lets a server ignore `Range`): the full response is the answer, and a request for
/// thousands of tiny ranges cannot make a small entry a large answer.
const MAX_RANGES: usize = 16;

/// How many random multipart boundaries are tried before giving up on a multipart answer
/// (the full response is then the answer). A collision with a 128-bit random boundary is as
/// likely as guessing a 128-bit key, so a second try is already never needed.
const BOUNDARY_TRIES: usize = 3;

/// One `range-spec` of a `bytes` range set, before the representation's length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-last`, or `first-` (`last` is `None`).
    From { first: u64, last: Option<u64> },
    /// `-length`: the last `length` bytes.
    Suffix(u64),
}

/// A request's `Range` of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ByteRanges(Vec<Spec>);

/// What a `Range` asks of a representation of a known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// The satisfiable ranges, sorted and coalesced: at least one.
    Ranges(Vec<Range<u64>>),
    /// None of them is satisfiable: `416`.
    Unsatisfiable,
}

impl ByteRanges {
    /// The request's `Range`, when it is one `bytes` range set that parses: a field with
    /// another unit, more than one line, an invalid spec or too many ranges is ignored (RFC
    /// 9110 §14.2), as if absent.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut lines = headers.get_all(header::RANGE).iter();
        let line = lines.next()?.to_str().ok()?;
        if lines.next().is_some() {
            return None;
        }
        let (unit, set) = line.trim().split_once('=')?;
        if !unit.trim().eq_ignore_ascii_case("bytes") {
            return None;
        }
        let number = |text: &str| digits(text.trim());
        let mut specs = Vec::new();
        for spec in set.split(',') {
            let spec = spec.trim();
            if spec.is_empty() {
                continue;
            }
            let (first, last) = spec.split_once('-')?;
            let parsed = match (first.trim().is_empty(), last.trim().is_empty()) {
                (true, false) => Spec::Suffix(number(last)?),
                (false, true) => Spec::From {
                    first: number(first)?,
                    last: None,
                },
                (false, false) => {
                    let (first, last) = (number(first)?, number(last)?);
                    if last < first {
                        return None;
                    }
                    Spec::From {
                        first,
                        last: Some(last),
                    }
                }
                (true, true) => return None,
            };
            specs.push(parsed);
        }
        (!specs.is_empty() && specs.len() <= MAX_RANGES).then_some(Self(specs))
    }

    /// The ranges of a representation `len` bytes long that this asks for (RFC 9110
    /// §14.1.2): each clipped to the representation, overlapping and adjacent ones merged.
    pub(crate) fn of(&self, len: u64) -> Wanted {
        let mut ranges: Vec<Range<u64>> = self
            .0
            .iter()
            .filter_map(|spec| match *spec {
                Spec::From { first, .. } if first >= len => None,
                Spec::From { first, last } => {
                    Some(first..last.map_or(len, |last| last.saturating_add(1).min(len)))
                }
                Spec::Suffix(0) => None,
                Spec::Suffix(length) => Some(len.saturating_sub(length)..len),
            })
            .filter(|range| !range.is_empty())
            .collect();
        if ranges.is_empty() {
            return Wanted::Unsatisfiable;
        }
        ranges.sort_by_key(|range| range.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => merged.push(range),
            }
        }
        Wanted::Ranges(merged)
    }
}

/// Whether `If-Range` lets the ranges be served from a stored response with `stored`
/// headers (RFC 9110 §13.1.5): absent, or a strong entity tag equal to the stored `ETag`, or
/// a date equal to a strong `Last-Modified` (one at least a minute before the response's
/// `Date`, RFC 9110 §8.8.2.2). Otherwise the full response is the answer.
pub(crate) fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(condition) = request.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(condition) = condition.to_str() else {
        return false;
    };
    if let Some(tag) = EntityTag::parse(condition) {
        return EntityTag::of(stored).is_some_and(|etag| etag.strong_eq(tag));
    }
    policy::parse_http_date(condition)
        .is_some_and(|date| strong_last_modified(stored) == Some(date))
}

/// The answer to `ranges` from a representation `len` bytes long whose bytes `slice` gives:
/// `206` with the one range and its `Content-Range`, or `multipart/byteranges` for several,
/// or `416` with `Content-Range: bytes */<length>`; `None` when `slice` lacks a range.
/// `headers` are the stored response's; its `Content-Length` is dropped (the server sets the
/// answer's).
pub(crate) fn answer(
    ranges: &ByteRanges,
    mut headers: HeaderMap,
    len: u64,
    slice: impl Fn(&Range<u64>) -> Option<Bytes>,
) -> Option<Response<Bytes>> {
    headers.remove(header::CONTENT_LENGTH);
    let mut response = Response::new(Bytes::new());
    let ranges = match ranges.of(len) {
        Wanted::Unsatisfiable => {
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            headers.remove(header::CONTENT_TYPE);
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("digits"),
            );
            *response.headers_mut() = headers;
            return Some(response);
        }
        Wanted::Ranges(ranges) => ranges,
    };
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    let parts: Vec<Bytes> = ranges.iter().map(&slice).collect::<Option<_>>()?;
    if let ([range], [part]) = (ranges.as_slice(), parts.as_slice()) {
        headers.insert(header::CONTENT_RANGE, content_range(range, len));
        *response.headers_mut() = headers;
        *response.body_mut() = part.clone();
        return Some(response);
    }
    let boundary = boundary(&parts)?;
    let content_type = headers.remove(header::CONTENT_TYPE);
    let mut out = BytesMut::new();
    for (range, part) in ranges.iter().zip(&parts) {
        out.put_slice(b"--");
        out.put_slice(boundary.as_bytes());
        out.put_slice(b"\r\n");
        if let Some(content_type) = &content_type {
            out.put_slice(b"content-type: ");
            out.put_slice(content_type.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"content-range: ");
        out.put_slice(content_range(range, len).as_bytes());
        out.put_slice(b"\r\n\r\n");
        out.put_slice(part);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"--");
    out.put_slice(boundary.as_bytes());
    out.put_slice(b"--\r\n");
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
            .expect("a token boundary"),
    );
    *response.headers_mut() = headers;
    *response.body_mut() = out.freeze();
    Some(response)
}

/// `bytes <first>-<last>/<length>`.
pub(crate) fn content_range(range: &Range<u64>, len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes {}-{}/{len}", range.start, range.end - 1))
        .expect("digits")
}

/// A multipart boundary that occurs in none of the `parts`: random, so no stored body can
/// be built to hold it (a predictable sequence of candidates let a crafted body make every
/// try fail, each costing a scan of the whole body), each try one linear scan, at most
/// [`BOUNDARY_TRIES`] of them. `None` when every try collided or no randomness was to be
/// had.
fn boundary(parts: &[Bytes]) -> Option<String> {
    for _ in 0..BOUNDARY_TRIES {
        let mut random = [0_u8; 16];
        getrandom::fill(&mut random).ok()?;
        let mut candidate = String::with_capacity(36);
        candidate.push_str("trhc");
        crate::hex::hex_into(&random, &mut candidate);
        if !parts
            .iter()
            .any(|part| contains(part, candidate.as_bytes()))
        {
            return Some(candidate);
        }
    }
    None
}

/// Whether `needle` occurs in `haystack`: one pass, each start compared until its first
/// differing byte (the needle is a few dozen bytes, so at most that many times the
/// haystack's length).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    haystack.len() >= needle.len()
        && haystack[..=haystack.len() - needle.len()]
            .iter()
            .enumerate()
            .any(|(at, &byte)| byte == first && haystack[at + 1..].starts_with(rest))
}

/// A partial response's `Content-Range`: the range it holds and the complete length, when
/// both are known (`bytes 0-99/1000`; not `bytes 0-99/*`).
pub(crate) fn parse_content_range(headers: &HeaderMap) -> Option<(Range<u64>, u64)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?.trim();
    let (unit, rest) = value.split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, complete) = rest.trim().split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last, complete) = (digits(first)?, digits(last)?, digits(complete)?);
    (first <= last && last < complete).then_some((first..last + 1, complete))
}

/// Whether two responses come from one representation, so that their pieces combine (RFC
/// 9111 §3.4): the same strong `ETag`, or without one on either side the same strong
/// `Last-Modified` (a minute or more before its `Date`).
pub(crate) fn same_strong_validator(stored: &HeaderMap, new: &HeaderMap) -> bool {
    match (EntityTag::of(stored), EntityTag::of(new)) {
        (Some(stored), Some(new)) => stored.strong_eq(new),
        (None, None) => strong_last_modified(stored)
            .is_some_and(|stored| strong_last_modified(new) == Some(stored)),
        _ => false,
    }
}

/// A `Last-Modified` that is a strong validator: a minute or more before the response's
/// `Date` (RFC 9110 §8.8.2.2), so no second change could share it.
fn strong_last_modified(headers: &HeaderMap) -> Option<std::time::SystemTime> {
    let modified = policy::header_date(headers, &header::LAST_MODIFIED)?;
    let sent = policy::header_date(headers, &header::DATE)?;
    sent.duration_since(modified)
        .is_ok_and(|age| age.as_secs() >= 60)
        .then_some(modified)
}

/// A non-negative decimal number, digits only (no sign, no space inside).
fn digits(text: &str) -> Option<u64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// Every range reader over `headers`, answered from a body `len` bytes long and from pieces
/// of it, checking what each answer promises (for the fuzz targets and property tests).
#[cfg(any(fuzzing, test))]
pub(crate) fn answer_ranges(headers: &HeaderMap, len: usize) {
    let body = Bytes::from(vec![b'x'; len]);
    if let Some(ranges) = ByteRanges::from_headers(headers) {
        if let Wanted::Ranges(ranges) = ranges.of(len as u64) {
            assert!(
                ranges.windows(2).all(|pair| pair[0].end < pair[1].start)
                    && ranges
                        .iter()
                        .all(|range| range.start < range.end && range.end <= len as u64),
                "{ranges:?} of {len}"
            );
        }
        let whole = |range: &Range<u64>| Some(body.slice(range.start as usize..range.end as usize));
        assert!(answer(&ranges, headers.clone(), len as u64, whole).is_some());
        let pieces = Pieces {
            complete_len: len as u64,
            held: Vec::new(),
        }
        .with(0, body.slice(..len / 2))
        .with((len as u64 * 3) / 4, body.slice((len * 3) / 4..));
        let _ = answer(&ranges, headers.clone(), len as u64, |range| {
            pieces.covering(range)
        });
    }
    // pieces made from the input, one per byte: the merge keeps its invariants and its cap
    if len > 0 {
        let mut pieces = Pieces {
            complete_len: len as u64,
            held: Vec::new(),
        };
        let seeds = headers
            .get(header::RANGE)
            .map_or(&[][..], HeaderValue::as_bytes);
        for (at, seed) in seeds.iter().enumerate() {
            let start = usize::from(*seed) % len;
            let end = (start + 1 + at % 7).min(len);
            pieces = pieces.with(start as u64, body.slice(start..end));
            assert!(pieces.held.len() <= MAX_PIECES);
            assert!(
                pieces
                    .held
                    .windows(2)
                    .all(|pair| pair[0].0 + (pair[0].1.len() as u64) < pair[1].0)
            );
            assert!(pieces.held.iter().all(
                |(start, bytes)| !bytes.is_empty() && start + bytes.len() as u64 <= len as u64
            ));
        }
    }
    let _ = if_range_holds(headers, headers);
    let _ = same_strong_validator(headers, headers);
    if let Some((range, complete)) = parse_content_range(headers) {
        assert!(range.start < range.end && range.end <= complete);
    }
    if let Some(condition) = super::validators::IfNoneMatch::from_headers(headers) {
        let _ = condition.matches(super::validators::EntityTag::of(headers));
    }
}

/// What the store holds and what this process last wrote of one variant's pieces, as one:
/// the union when both are of one representation (this process's bytes and fields win, as
/// the newer), else the more recently stored.
pub(crate) fn newest_pieces(
    stored: Option<(Entry, Pieces)>,
    recent: Option<(Entry, Pieces)>,
) -> Option<(Entry, Pieces)> {
    match (stored, recent) {
        (Some((stored, stored_pieces)), Some((recent, recent_pieces))) => {
            let one_representation = stored_pieces.complete_len == recent_pieces.complete_len
                && stored.vary == recent.vary
                && stored.variant == recent.variant
                && same_strong_validator(&stored.headers, &recent.headers);
            if one_representation {
                let merged = stored_pieces.overlaid(recent_pieces.held.clone());
                // past the cap, this process's own pieces stand alone, as its writes do
                if merged.held.len() > MAX_PIECES {
                    return Some((recent, recent_pieces));
                }
                Some((recent, merged))
            } else if recent.stored_at >= stored.stored_at {
                Some((recent, recent_pieces))
            } else {
                Some((stored, stored_pieces))
            }
        }
        (stored, recent) => recent.or(stored),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str) -> Option<ByteRanges> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, value.parse().unwrap());
        ByteRanges::from_headers(&headers)
    }

    #[test]
    // a list of one range is what `of` answers, not a range to collect
    #[allow(clippy::single_range_in_vec_init)]
    fn byte_ranges_follow_rfc_9110_section_14_1_2() {
        let of = |value: &str, len| range(value).unwrap().of(len);
        assert_eq!(of("bytes=0-499", 1000), Wanted::Ranges(vec![0..500]));
        assert_eq!(of("bytes=500-", 1000), Wanted::Ranges(vec![500..1000]));
        assert_eq!(of("bytes=-200", 1000), Wanted::Ranges(vec![800..1000]));
        assert_eq!(of("bytes=-2000", 1000), Wanted::Ranges(vec![0..1000]));
        assert_eq!(of("bytes=900-1999", 1000), Wanted::Ranges(vec![900..1000]));
        assert_eq!(of("BYTES = 1-1", 10), Wanted::Ranges(vec![1..2]));
        // overlapping and adjacent ranges merge; order does not matter
        assert_eq!(
            of("bytes=500-599, 0-99, 50-149, 150-199", 1000),
            Wanted::Ranges(vec![0..200, 500..600])
        );
        assert_eq!(of("bytes=1000-", 1000), Wanted::Unsatisfiable);
        assert_eq!(of("bytes=-0", 1000), Wanted::Unsatisfiable);
        assert_eq!(of("bytes=5-, 2000-", 1000), Wanted::Ranges(vec![5..1000]));
        for ignored in [
            "items=0-5",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=",
            "bytes=1-2-3",
            "0-5",
        ] {
            assert_eq!(range(ignored), None, "{ignored}");
        }
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(range(&many), None);
    }

    fn stored(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let modified = "Wed, 21 Oct 2015 07:28:00 GMT";
        let entry = stored(&[
            ("etag", "\"v1\""),
            ("last-modified", modified),
            ("date", "Wed, 21 Oct 2015 08:28:00 GMT"),
        ]);
        let holds = |condition: &str, entry: &HeaderMap| {
            if_range_holds(&stored(&[("if-range", condition)]), entry)
        };
        assert!(if_range_holds(&HeaderMap::new(), &entry));
        assert!(holds("\"v1\"", &entry));
        assert!(!holds("W/\"v1\"", &entry));
        assert!(!holds("\"v2\"", &entry));
        assert!(holds(modified, &entry));
        assert!(!holds("Wed, 21 Oct 2015 07:28:01 GMT", &entry));
        // a Last-Modified within a minute of Date is weak
        let recent = stored(&[
            ("last-modified", modified),
            ("date", "Wed, 21 Oct 2015 07:28:30 GMT"),
        ]);
        assert!(!holds(modified, &recent));
        let weak = stored(&[("etag", "W/\"v1\"")]);
        assert!(!holds("\"v1\"", &weak));
        assert!(!holds("garbage", &entry));
    }

    #[test]
    fn answers_are_206_multipart_or_416() {
        let body = Bytes::from_static(b"0123456789");
        let headers = stored(&[("content-type", "text/plain"), ("content-length", "10")]);
        let whole = |range: &Range<u64>| Some(body.slice(range.start as usize..range.end as usize));
        let answer = |value: &str, headers: HeaderMap| {
            answer(&range(value).unwrap(), headers, 10, whole).unwrap()
        };
        let one = answer("bytes=2-4", headers.clone());
        assert_eq!(one.status(), 206);
        assert_eq!(one.headers()["content-range"], "bytes 2-4/10");
        assert!(!one.headers().contains_key("content-length"));
        assert_eq!(one.body(), "234");
        let two = answer("bytes=0-0,-1", headers.clone());
        let content_type = two.headers()["content-type"].to_str().unwrap().to_owned();
        let boundary = content_type.split("boundary=").nth(1).unwrap();
        let expected = format!(
            "--{boundary}\r\ncontent-type: text/plain\r\ncontent-range: bytes 0-0/10\r\n\r\n0\r\n\
             --{boundary}\r\ncontent-type: text/plain\r\ncontent-range: bytes 9-9/10\r\n\r\n9\r\n\
             --{boundary}--\r\n"
        );
        assert_eq!(two.body(), expected.as_bytes());
        let none = answer("bytes=10-", headers);
        assert_eq!(none.status(), 416);
        assert_eq!(none.headers()["content-range"], "bytes */10");
        assert!(none.body().is_empty());
    }

    #[test]
    fn content_range_needs_a_known_length() {
        let read = |value: &str| parse_content_range(&stored(&[("content-range", value)]));
        assert_eq!(read("bytes 0-99/1000"), Some((0..100, 1000)));
        assert_eq!(read("bytes 0-99/*"), None);
        assert_eq!(read("bytes 5-1/10"), None);
        assert_eq!(read("bytes 0-10/10"), None);
        assert_eq!(read("items 0-1/2"), None);
    }

    fn stored_entry(etag: &str, stored_at: u64) -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: stored(&[("etag", etag)]),
            body: Bytes::new(),
            stored_at: std::time::UNIX_EPOCH + std::time::Duration::from_secs(stored_at),
            initial_age: std::time::Duration::ZERO,
            freshness: std::time::Duration::from_secs(60),
            keep: std::time::Duration::from_secs(60),
            reuse: policy::Reuse::default(),
            vary: Vec::new(),
            variant: "-".to_owned(),
        }
    }

    #[test]
    fn a_process_sees_its_own_pieces_with_what_the_store_holds() {
        let pieces = |start: u64, bytes: &'static [u8]| Pieces {
            complete_len: 10,
            held: vec![(start, Bytes::from_static(bytes))],
        };
        // one representation: the union, this process's bytes winning
        let (_, union) = newest_pieces(
            Some((stored_entry("\"a\"", 1), pieces(0, b"0123"))),
            Some((stored_entry("\"a\"", 2), pieces(3, b"XY"))),
        )
        .unwrap();
        assert_eq!(union.held, vec![(0, Bytes::from_static(b"012XY"))]);
        // two representations: the more recently stored
        let (entry, newer) = newest_pieces(
            Some((stored_entry("\"b\"", 5), pieces(0, b"0123"))),
            Some((stored_entry("\"a\"", 2), pieces(3, b"XY"))),
        )
        .unwrap();
        assert_eq!(
            (entry.headers["etag"].as_bytes(), newer.held.len()),
            (&b"\"b\""[..], 1)
        );
        assert_eq!(newer.held[0].0, 0);
        assert!(newest_pieces(None, None).is_none());
        assert_eq!(
            newest_pieces(None, Some((stored_entry("\"a\"", 2), pieces(3, b"XY"))))
                .unwrap()
                .1
                .held[0]
                .0,
            3
        );
    }

    #[test]
    fn pieces_join_and_newer_bytes_win() {
        let pieces = Pieces {
            complete_len: 10,
            held: Vec::new(),
        };
        let pieces = pieces.with(0, Bytes::from_static(b"0123"));
        assert_eq!(pieces.whole(), None);
        assert_eq!(pieces.covering(&(1..3)), Some(Bytes::from_static(b"12")));
        assert_eq!(pieces.covering(&(3..5)), None);
        let pieces = pieces.with(6, Bytes::from_static(b"6789"));
        assert_eq!(pieces.held.len(), 2);
        // the middle piece, overlapping both sides with newer bytes
        let pieces = pieces.with(3, Bytes::from_static(b"XYZAB"));
        assert_eq!(pieces.whole(), Some(Bytes::from_static(b"012XYZAB89")));
        assert_eq!(pieces.len(), 10);
        // an older piece inside a newer one changes nothing
        let inside = Pieces {
            complete_len: 10,
            held: vec![(0, Bytes::from_static(b"abcdef"))],
        }
        .with(8, Bytes::from_static(b"ij"))
        .with(6, Bytes::from_static(b"gh"));
        assert_eq!(inside.whole(), Some(Bytes::from_static(b"abcdefghij")));
    }

    /// What a sequence of pieces leaves, byte by byte: each later piece's bytes win.
    fn model(len: usize, writes: &[(usize, Vec<u8>)]) -> Vec<Option<u8>> {
        let mut bytes = vec![None; len];
        for (start, piece) in writes {
            for (offset, byte) in piece.iter().enumerate() {
                bytes[start + offset] = Some(*byte);
            }
        }
        bytes
    }

    fn as_bytes(pieces: &Pieces) -> Vec<Option<u8>> {
        let mut bytes = vec![None; pieces.complete_len as usize];
        for (start, piece) in &pieces.held {
            for (offset, byte) in piece.iter().enumerate() {
                bytes[*start as usize + offset] = Some(*byte);
            }
        }
        bytes
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Issue 28, finding 5: the one-pass overlay is the byte-by-byte model, and its
        /// pieces stay sorted, disjoint, apart and non-empty.
        #[test]
        fn overlaying_pieces_is_writing_their_bytes_in_order(
            writes in proptest::collection::vec((0_usize..60, 0_usize..20), 0..20)
        ) {
            let len = 80;
            let writes: Vec<(usize, Vec<u8>)> = writes
                .into_iter()
                .enumerate()
                .map(|(n, (start, piece_len))| (start, vec![n as u8; piece_len]))
                .collect();
            let mut pieces = Pieces { complete_len: len as u64, held: Vec::new() };
            for (start, piece) in &writes {
                pieces = pieces.with(*start as u64, Bytes::from(piece.clone()));
            }
            proptest::prop_assert_eq!(as_bytes(&pieces), model(len, &writes));
            proptest::prop_assert!(pieces.held.iter().all(|(_, bytes)| !bytes.is_empty()));
            proptest::prop_assert!(pieces
                .held
                .windows(2)
                .all(|pair| pair[0].0 + (pair[0].1.len() as u64) < pair[1].0));
        }
    }

    /// Issue 28, finding 5: a flood of disjoint one-byte pieces never holds more than the
    /// cap; past it the newest piece starts the pieces anew.
    #[test]
    fn the_pieces_of_one_representation_are_capped() {
        let mut pieces = Pieces {
            complete_len: 4000,
            held: Vec::new(),
        };
        for n in 0..2000_u64 {
            pieces = pieces.with(n * 2, Bytes::from_static(b"x"));
            assert!(
                pieces.held.len() <= MAX_PIECES,
                "{} pieces",
                pieces.held.len()
            );
            assert_eq!(
                pieces.covering(&(n * 2..n * 2 + 1)).as_deref(),
                Some(&b"x"[..])
            );
        }
        // stored and recent pieces past the cap together: the recent ones stand alone
        let spread = |offset: u64| Pieces {
            complete_len: 4000,
            held: (0..MAX_PIECES as u64)
                .map(|n| (n * 4 + offset, Bytes::from_static(b"y")))
                .collect(),
        };
        let (_, newest) = newest_pieces(
            Some((stored_entry("\"a\"", 1), spread(0))),
            Some((stored_entry("\"a\"", 2), spread(2))),
        )
        .unwrap();
        assert_eq!(newest, spread(2));
    }

    /// Issue 28, finding 6: the boundary is random and absent from the parts, even from a
    /// body made of the boundary's fixed prefix over and over.
    #[test]
    fn multipart_boundaries_are_random_and_absent_from_the_body() {
        let hostile = Bytes::from("trhc".repeat(10_000));
        let first = boundary(std::slice::from_ref(&hostile)).unwrap();
        let second = boundary(std::slice::from_ref(&hostile)).unwrap();
        assert_ne!(first, second);
        assert!(!contains(&hostile, first.as_bytes()));
        assert_eq!(first.len(), 36);
        for (haystack, needle, found) in [
            (&b"abcabd"[..], &b"abd"[..], true),
            (b"abcab", b"abd", false),
            (b"ab", b"abd", false),
            (b"", b"", true),
            (b"xx", b"", true),
        ] {
            assert_eq!(contains(haystack, needle), found, "{haystack:?} {needle:?}");
        }
        let answer = answer(
            &range("bytes=0-1, 5-6").unwrap(),
            HeaderMap::new(),
            hostile.len() as u64,
            |range| Some(hostile.slice(range.start as usize..range.end as usize)),
        )
        .unwrap();
        assert_eq!(answer.status(), StatusCode::PARTIAL_CONTENT);
    }
}
