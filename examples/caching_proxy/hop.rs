//! The fields that belong to one connection (RFC 9110 §7.6.1).

use http::{HeaderMap, HeaderName, header};

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
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
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
}
