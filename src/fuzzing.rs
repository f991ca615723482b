//! One entry point per parser of what clients and origins send, for the fuzz targets in
//! `fuzz/` (built with `--cfg fuzzing`, where this module is public) and for the property
//! tests below: whatever the bytes, each answers without panicking.

// public for the fuzz crate only; in the tests the module is private
#![cfg_attr(not(fuzzing), allow(unreachable_pub))]

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Uri, header};

use crate::auth::TokenSource;

/// The token sources: `Authorization: Bearer`, DRF's `Token` keyword, a query parameter and
/// a cookie, reading `data` as each.
pub fn token_header(data: &[u8]) {
    let sources = [
        TokenSource::bearer(),
        TokenSource::keyword("Token"),
        TokenSource::query("token"),
        TokenSource::cookie("token"),
    ];
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(data) {
        headers.append(header::AUTHORIZATION, value.clone());
        headers.append(header::COOKIE, value);
    }
    let uri = Uri::try_from(data).unwrap_or_default();
    let _ = crate::auth::extract_token(&sources, &headers, &uri, 256);
}

/// The path normaliser the allow-lists rely on.
pub fn path(data: &[u8]) {
    if let Ok(path) = std::str::from_utf8(data) {
        let _ = crate::path::check_normalized(path);
    }
    if let Ok(uri) = Uri::try_from(data) {
        let _ = crate::path::check_normalized(uri.path());
    }
}

/// Rates as configuration writes them (`"5/m"`, `"100/15s"`).
pub fn rate(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<crate::ratelimit::Rate>();
    }
}

/// `Cache-Control`, as an origin or a client sends it.
pub fn cache_control(data: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, value);
        let _ = crate::cache::cache_control(&headers);
    }
}

/// The forwarding chain (`Forwarded`, else `X-Forwarded-For`) behind trusted proxies: the
/// first half of `data` as one, the rest as the other.
pub fn forwarded(data: &[u8]) {
    let (left, right) = data.split_at(data.len() / 2);
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (HeaderName::from_static("forwarded"), left),
        (HeaderName::from_static("x-forwarded-for"), right),
    ] {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let trusted: Vec<crate::peer::Network> = ["127.0.0.0/8", "10.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|network| network.parse().ok())
        .collect();
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for from in [
        crate::ratelimit::ClientAddressHeader::XForwardedFor,
        crate::ratelimit::ClientAddressHeader::Forwarded,
        crate::ratelimit::ClientAddressHeader::Named(HeaderName::from_static("forwarded")),
    ] {
        let client = crate::ratelimit::resolve(peer, &headers, &trusted, &from);
        let _ = crate::ratelimit::client_key_text(client);
    }
}

/// A stored cache entry, as Redis hands it back (written by any version, or corrupted): as a
/// complete entry and as the pieces of a partial one.
pub fn cache_entry(data: &[u8]) {
    let stored = Bytes::copy_from_slice(data);
    let _ = crate::cache::Entry::decode(&stored);
    let _ = crate::cache::Entry::decode_partial(&stored);
}

/// What a range request and a partial response send (`Range`, `If-Range`, `If-None-Match`,
/// `Content-Range`), all read from the bytes after the first, which sets the length of the
/// stored body they are answered from.
pub fn range(data: &[u8]) {
    let Some((&len, value)) = data.split_first() else {
        return;
    };
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for name in [
        header::RANGE,
        header::IF_RANGE,
        header::IF_NONE_MATCH,
        header::CONTENT_RANGE,
        header::ETAG,
    ] {
        headers.insert(name, value.clone());
    }
    crate::cache::answer_ranges(&headers, usize::from(len));
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn token_sources_answer_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            super::token_header(&data);
        }

        #[test]
        fn token_sources_answer_near_valid_headers(
            scheme in "(Bearer|bearer|Token|BEARER)?",
            gap in "[ \t]{0,3}",
            token in "[A-Za-z0-9._~+/=\\- \"]{0,80}",
        ) {
            super::token_header(format!("{scheme}{gap}{token}").as_bytes());
        }

        #[test]
        fn the_path_normaliser_answers_any_path(path in "(/|[a-z]|\\.|%2[fF5eE]|%|/\\.\\./|//|\\\\)*") {
            super::path(path.as_bytes());
        }

        #[test]
        fn the_path_normaliser_answers_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            super::path(&data);
        }

        #[test]
        fn rates_parse_or_are_refused(text in "[0-9]{0,25}/?[0-9]{0,25}[smhd]?[a-z]{0,6}") {
            super::rate(text.as_bytes());
        }

        #[test]
        fn cache_control_answers_any_value(
            value in "([a-zA-Z-]{0,12}(=(\"[^\"]{0,10}\"?|[0-9.+-]{0,25}))?[ ,;]{0,2}){0,6}",
        ) {
            super::cache_control(value.as_bytes());
        }

        #[test]
        fn the_forwarding_chain_answers_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            super::forwarded(&data);
        }

        #[test]
        fn the_forwarding_chain_answers_near_valid_chains(
            chain in "((for=)?\"?\\[?[0-9a-f.:]{0,40}\\]?(:[0-9]{0,6})?\"?(;by=x)?, ?){0,6}",
        ) {
            let chain = chain.as_bytes();
            let mut data = chain.to_vec();
            data.extend_from_slice(chain);
            super::forwarded(&data);
        }

        #[test]
        fn range_requests_are_answered_within_the_body(
            len in any::<u8>(),
            value in "(bytes|BYTES|items)?=?( ?[0-9]{0,4}-?[0-9]{0,4},?){0,5}|W?/?\"[a-z,]{0,5}\"?(, ?\"[a-z]{0,3}\")*|bytes [0-9]{0,3}-[0-9]{0,3}/[0-9*]{0,3}",
        ) {
            let mut data = vec![len];
            data.extend_from_slice(value.as_bytes());
            super::range(&data);
        }

        #[test]
        fn range_requests_answer_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            super::range(&data);
        }

        #[test]
        fn a_partial_entry_decodes_or_is_refused(rest in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut data = b"TRHC\x04".to_vec();
            data.extend(rest);
            super::cache_entry(&data);
        }

        #[test]
        fn a_cache_entry_decodes_or_is_refused(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            super::cache_entry(&data);
        }

        #[test]
        fn a_cache_entry_with_the_magic_decodes_or_is_refused(rest in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut data = b"TRHC\x03".to_vec();
            data.extend(rest);
            super::cache_entry(&data);
        }
    }
}
