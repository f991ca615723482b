//! The fields that belong to one connection (RFC 9110 §7.6.1), and the one upgrade the proxy
//! tunnels (WebSocket, RFC 6455).

use http::{HeaderMap, HeaderName, Method, Request, Version, header};

/// Removes the fields that belong to one connection: those `Connection` names, and the
/// hop-by-hop fields themselves, so neither the client's nor the origin's reach the other side
/// (a `Proxy-Authorization` meant for this hop, a `Connection: X-Secret` that hides a field from
/// the next). Hyper frames each side's body itself.
///
/// A request is stripped before the cache sees it, not on its way to the origin: a field the
/// client's `Connection` names must not be keyed (`Vary: Accept-Language` with `Connection:
/// accept-language`) when the origin never gets it, or the origin's answer to a request
/// without it would be stored as the answer to one with it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // read as bytes: one byte outside ASCII must not hide the names beside it
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Whether `request` asks to switch to WebSocket (RFC 6455 §4.1, RFC 9110 §7.8): an HTTP/1.1
/// `GET` whose `Upgrade` names `websocket` and whose `Connection` names `upgrade`. Any other
/// `Upgrade` (`h2c` above all, which would hand the client an HTTP/2 connection to the origin
/// past the cache) is a hop-by-hop field like the others: stripped, and the request answered
/// as a plain one, as RFC 9110 §7.8 lets a server ignore an upgrade.
pub fn asks_for_websocket<B>(request: &Request<B>) -> bool {
    let lists = |name: header::HeaderName, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|item| {
                // a protocol may carry a version, `websocket/13`: RFC 9110 §7.8
                let item = item.trim();
                let name = item.split_once('/').map_or(item, |(name, _)| name);
                name.eq_ignore_ascii_case(token)
            })
    };
    request.method() == Method::GET
        && request.version() == Version::HTTP_11
        && lists(header::UPGRADE, "websocket")
        && lists(header::CONNECTION, "upgrade")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn connection_fields_and_the_fields_it_names_are_removed() {
        let mut map = headers(&[
            ("connection", "close, X-Secret"),
            ("connection", "accept-language"),
            ("x-secret", "s3"),
            ("accept-language", "fr"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic eDp5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("accept", "text/html"),
        ]);
        strip_hop_by_hop(&mut map);
        assert_eq!(map, headers(&[("accept", "text/html")]));
    }

    /// A `Connection` line with a byte outside ASCII still names its other fields (the
    /// adversary's review: `Connection: x-a, caf\xe9` forwarded `X-A`).
    #[test]
    fn a_connection_line_with_a_non_ascii_byte_still_names_its_fields() {
        let mut map = HeaderMap::new();
        map.append(
            header::CONNECTION,
            http::HeaderValue::from_bytes(b"x-a, caf\xe9").unwrap(),
        );
        map.append("x-a", "secret".parse().unwrap());
        map.append("accept", "text/html".parse().unwrap());
        strip_hop_by_hop(&mut map);
        assert_eq!(map, headers(&[("accept", "text/html")]));
    }

    #[test]
    fn only_a_websocket_get_with_connection_upgrade_is_an_upgrade() {
        let request = |method: Method, version: Version, pairs: &[(&str, &str)]| {
            let mut request = Request::builder()
                .method(method)
                .version(version)
                .body(())
                .unwrap();
            *request.headers_mut() = headers(pairs);
            request
        };
        let websocket = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ];
        assert!(asks_for_websocket(&request(
            Method::GET,
            Version::HTTP_11,
            &websocket
        )));
        assert!(asks_for_websocket(&request(
            Method::GET,
            Version::HTTP_11,
            &[("connection", "upgrade"), ("upgrade", "h2c, websocket/13")]
        )));
        for (method, version, pairs) in [
            (Method::POST, Version::HTTP_11, &websocket[..]),
            (Method::GET, Version::HTTP_10, &websocket[..]),
            (
                Method::GET,
                Version::HTTP_11,
                &[("upgrade", "websocket")][..],
            ),
            (
                Method::GET,
                Version::HTTP_11,
                &[("connection", "upgrade"), ("upgrade", "h2c")][..],
            ),
            (
                Method::GET,
                Version::HTTP_11,
                &[("connection", "upgrade"), ("upgrade", "websockets")][..],
            ),
        ] {
            assert!(
                !asks_for_websocket(&request(method.clone(), version, pairs)),
                "{method} {version:?} {pairs:?}"
            );
        }
    }
}
