//! What a rule counts by.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName, Method, Uri};
use sha2::{Digest, Sha256};

use crate::ConfigError;
use crate::hex::hex_digest;
use crate::principal::{Authenticated, Credentialed};

/// The longest key text kept as is; longer ones are hashed, so request data cannot make keys
/// grow without bound.
const MAX_KEY_TEXT: usize = 128;

/// What starts a hashed key text, and no literal one.
const HASHED_MARKER: &str = "sha256:";

/// A view of the request for [`Key::custom`] extractors.
///
/// # Example
///
/// ```
/// use tower_redis_http::ratelimit::{Key, RequestHead};
///
/// let by_tenant = Key::custom(|request: &RequestHead<'_>| {
///     request.headers.get("x-tenant")?.to_str().ok().map(str::to_owned)
/// });
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (where the auth layer puts the principal).
    pub extensions: &'a Extensions,
    /// The client address, when it could be resolved.
    pub client_ip: Option<IpAddr>,
    /// Who the client is: its address, or the identifier a trusted proxy reported in place of
    /// one (`unknown`, `_hidden`), which `Key::client_ip` keys by.
    pub(crate) client: Option<super::client_ip::Client<'a>>,
}

impl RequestHead<'_> {
    /// Whether the request's path is `pattern` (`{name}` standing for any one non-empty
    /// segment) as a router may see it: a trailing slash and the letter case of ASCII letters
    /// do not count. For rule conditions, where `uri.path() == "/login/"` would let
    /// `POST /login` past a login limit on a router that serves both spellings; counting a
    /// spelling the router does not serve costs nothing.
    ///
    /// # Example
    ///
    /// ```
    /// use http::Method;
    /// use tower_redis_http::ratelimit::{Key, RequestHead, Rule};
    ///
    /// let logins = Rule::fixed_window("login", "10/m", Key::client_ip())
    ///     .when(|request: &RequestHead<'_>| {
    ///         request.method == Method::POST && request.path_is("/login/")
    ///     });
    /// ```
    pub fn path_is(&self, pattern: &str) -> bool {
        same_route(pattern, self.uri.path())
    }
}

/// A path without its trailing slash (`/` stays itself).
fn without_trailing_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => path,
    }
}

/// See [`RequestHead::path_is`].
fn same_route(pattern: &str, path: &str) -> bool {
    let mut wanted = without_trailing_slash(pattern).split('/');
    let mut parts = without_trailing_slash(path).split('/');
    loop {
        match (wanted.next(), parts.next()) {
            (None, None) => return true,
            (Some(want), Some(part)) => {
                let any = want.len() > 2 && want.starts_with('{') && want.ends_with('}');
                if (any && part.is_empty()) || (!any && !want.eq_ignore_ascii_case(part)) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

type Extract = Arc<dyn Fn(&RequestHead<'_>) -> Option<String> + Send + Sync>;

/// What a [`Rule`](super::Rule) counts by: a path segment, a header, a query parameter, the
/// client address, the authenticated principal, anything else by closure, or one counter for
/// all.
///
/// A request whose key cannot be extracted is passed through or rejected with 400, as the
/// layer is configured ([`MissingKey`](super::MissingKey)).
///
/// # Example
///
/// ```
/// use http::HeaderName;
/// use tower_redis_http::ratelimit::Key;
///
/// let keys = [
///     Key::path_segment("/sms_codes/{mobile}/", "mobile"),
///     Key::header(HeaderName::from_static("x-api-key")),
///     Key::query("phone"),
///     Key::client_ip(),
///     Key::principal(|user_id: &u64| user_id.to_string()),
///     Key::global(),
/// ];
/// ```
#[derive(Clone)]
pub struct Key(pub(crate) KeyKind);

/// The id of the principal of type `P`, when the request carries one.
type PrincipalId = Arc<dyn Fn(&Extensions) -> Option<String> + Send + Sync>;

#[derive(Clone)]
pub(crate) enum KeyKind {
    PathSegment {
        pattern: Arc<str>,
        name: Arc<str>,
    },
    Header(HeaderName),
    Query(Arc<str>),
    ClientIp,
    Principal {
        id: PrincipalId,
        type_name: &'static str,
    },
    Global,
    Custom(Extract),
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            KeyKind::PathSegment { pattern, name } => {
                write!(f, "Key::path_segment({pattern:?}, {name:?})")
            }
            KeyKind::Header(name) => write!(f, "Key::header({name:?})"),
            KeyKind::Query(name) => write!(f, "Key::query({name:?})"),
            KeyKind::ClientIp => f.write_str("Key::client_ip()"),
            KeyKind::Principal { type_name, .. } => write!(f, "Key::principal::<{type_name}>(..)"),
            KeyKind::Global => f.write_str("Key::global()"),
            KeyKind::Custom(_) => f.write_str("Key::custom(..)"),
        }
    }
}

impl Key {
    /// The named segment of a path pattern: `/sms_codes/{mobile}/` keyed by `mobile`. Paths
    /// that do not match the pattern (or are not in normal form) have no key. A trailing
    /// slash and the case of ASCII letters in the pattern's literal segments do not count,
    /// as for [`RequestHead::path_is`]: `/SMS_codes/138/` and `/sms_codes/138` share
    /// `/sms_codes/138/`'s key, whichever of them the router serves.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::Key;
    ///
    /// let key = Key::path_segment("/sms_codes/{mobile}/", "mobile");
    /// ```
    pub fn path_segment(pattern: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self(KeyKind::PathSegment {
            pattern: pattern.into(),
            name: name.into(),
        })
    }

    /// A request header's value. A request that repeats the header, or sends a value that
    /// is not text, is refused (400): the application behind may read another line, or
    /// decode the bytes otherwise, than the key does.
    ///
    /// # Example
    ///
    /// ```
    /// use http::HeaderName;
    /// use tower_redis_http::ratelimit::Key;
    ///
    /// let key = Key::header(HeaderName::from_static("x-api-key"));
    /// ```
    pub fn header(name: HeaderName) -> Self {
        Self(KeyKind::Header(name))
    }

    /// A query parameter's value, percent-decoded. A request that repeats the parameter is
    /// refused (400): axum's and Django's extractors take the last of repeated parameters,
    /// so keying by the first would let `?phone=<random>&phone=<victim>` send the victim a
    /// code on every request.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::Key;
    ///
    /// let key = Key::query("phone");
    /// ```
    pub fn query(name: impl Into<Arc<str>>) -> Self {
        Self(KeyKind::Query(name.into()))
    }

    /// The client address: the peer, or what trusted proxies forwarded (see
    /// [`RateLimitBuilder::trusted_proxies`](super::RateLimitBuilder::trusted_proxies)). IPv6
    /// clients count by their /64, except those whose address embeds an IPv4 one (NAT64's
    /// `64:ff9b::/96`, 6to4's `2002::/16`, Teredo, IPv4-mapped), which count as that IPv4
    /// client.
    ///
    /// The peer is read from the request extensions: a `std::net::SocketAddr` or `IpAddr`
    /// (what a hyper or warp server should insert per connection), axum's
    /// `ConnectInfo<SocketAddr>` with the `axum` feature (`axum::serve(listener,
    /// app.into_make_service_with_connect_info::<SocketAddr>())`), or wherever
    /// [`RateLimitBuilder::peer_address`](super::RateLimitBuilder::peer_address) says. A
    /// request without one is a misconfiguration, answered 500 and logged once per layer:
    /// never an unlimited pass. When the nearest untrusted hop of a forwarded chain is not an
    /// address (`unknown`, an obfuscated `_hidden`), that identifier is the key.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::Key;
    ///
    /// let key = Key::client_ip();
    /// ```
    pub fn client_ip() -> Self {
        Self(KeyKind::ClientIp)
    }

    /// The principal the auth layer attached ([`Authenticated<P>`]), mapped to its id.
    /// Anonymous requests have no key. A request the auth layer authenticated with a principal
    /// of another type (`User` expected, `Arc<User>` attached) is a misconfiguration: it is
    /// answered 500 and logged, never let through unlimited.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::Key;
    ///
    /// #[derive(Clone)]
    /// struct User { id: u64 }
    ///
    /// let key = Key::principal(|user: &User| user.id.to_string());
    /// ```
    pub fn principal<P: Send + Sync + 'static>(
        id: impl Fn(&P) -> String + Send + Sync + 'static,
    ) -> Self {
        Self(KeyKind::Principal {
            id: Arc::new(move |extensions: &Extensions| {
                extensions
                    .get::<Authenticated<P>>()
                    .map(|auth| id(&auth.principal))
            }),
            type_name: std::any::type_name::<P>(),
        })
    }

    /// Any key computed from the request.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::{Key, RequestHead};
    ///
    /// let key = Key::custom(|request: &RequestHead<'_>| Some(request.method.to_string()));
    /// ```
    pub fn custom(
        extract: impl Fn(&RequestHead<'_>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self(KeyKind::Custom(Arc::new(extract)))
    }

    /// One counter for every request.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::Key;
    ///
    /// let key = Key::global();
    /// ```
    pub fn global() -> Self {
        Self(KeyKind::Global)
    }

    pub(crate) fn compile(&self) -> Result<CompiledKey, ConfigError> {
        Ok(match &self.0 {
            KeyKind::PathSegment { pattern, name } => {
                CompiledKey::PathSegment(compile_pattern(pattern, name)?)
            }
            KeyKind::Header(name) => CompiledKey::Header(name.clone()),
            KeyKind::Query(name) => CompiledKey::Query(Arc::clone(name)),
            KeyKind::ClientIp => CompiledKey::ClientIp,
            KeyKind::Principal { id, type_name } => CompiledKey::Principal {
                id: Arc::clone(id),
                type_name,
            },
            KeyKind::Global => CompiledKey::Global,
            KeyKind::Custom(extract) => CompiledKey::Custom(Arc::clone(extract)),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(String),
    Any,
    Capture,
}

/// The key text of [`Key::global`]'s single key.
const GLOBAL: &str = "*";

pub(crate) enum CompiledKey {
    PathSegment(Vec<Segment>),
    Header(HeaderName),
    Query(Arc<str>),
    ClientIp,
    Principal {
        id: PrincipalId,
        type_name: &'static str,
    },
    Global,
    Custom(Extract),
}

fn compile_pattern(pattern: &str, wanted: &str) -> Result<Vec<Segment>, ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidOption {
        option: "path_segment",
        reason: format!("`{pattern}`: {reason}"),
    };
    if !pattern.starts_with('/') {
        return Err(invalid("a pattern starts with '/'"));
    }
    let mut captures = 0;
    let segments = pattern
        .split('/')
        .map(
            |part| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if name == wanted => {
                    captures += 1;
                    Ok(Segment::Capture)
                }
                Some(name) if !name.is_empty() && !name.contains(['{', '}']) => Ok(Segment::Any),
                Some(_) => Err(invalid("`{}` is not a segment name")),
                None if part.contains(['{', '}']) => {
                    Err(invalid("a `{name}` must be a whole segment"))
                }
                None => Ok(Segment::Literal(part.to_owned())),
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    // the trailing slash does not count (see `capture`)
    let mut segments = segments;
    if segments.len() > 2
        && matches!(segments.last(), Some(Segment::Literal(last)) if last.is_empty())
    {
        segments.pop();
    }
    if captures != 1 {
        return Err(invalid(&format!(
            "the pattern must name `{{{wanted}}}` exactly once"
        )));
    }
    Ok(segments)
}

/// Why a request's key could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// The request names the rule's route in a spelling whose value is ambiguous: 400.
    Malformed(&'static str),
    /// The layer cannot compute the key for any request like this one (no client address to
    /// be found, another principal type attached): the operator must fix the set-up, 500.
    Misconfigured(String),
}

impl CompiledKey {
    /// The key text for `request`, hashed when long or when it starts as a hash does; `Ok(None)` when the request has none by
    /// design (an anonymous request on a per-user rule, a header it did not send), and a
    /// [`KeyError`] when the key cannot be computed.
    ///
    /// A path segment is percent-decoded, because routers hand the decoded value to the
    /// handler (axum's `Path` does; warp's `param` does not, so the examples decode it as
    /// axum does): `/sms_codes/%313800138000/` is the number `13800138000` and must share its
    /// counter, or each of a number's 2,048 spellings would buy another SMS.
    /// The key of every request, when it cannot change (`Key::global()`).
    pub(crate) fn fixed(&self) -> Option<&'static str> {
        match self {
            Self::Global => Some(GLOBAL),
            _ => None,
        }
    }

    pub(crate) fn extract<'a>(
        &self,
        request: &RequestHead<'a>,
    ) -> Result<Option<Cow<'a, str>>, KeyError> {
        let text = match self {
            Self::PathSegment(segments) => match capture(segments, request.uri.path())? {
                Some(text) => text,
                None => return Ok(None),
            },
            // a value the application may read otherwise than the key does (another of two
            // lines, another of two parameters, a decoding of bytes that are not text) would
            // let a client count against one key and act on another
            Self::Header(name) => {
                let mut values = request.headers.get_all(name).iter();
                let Some(value) = values.next() else {
                    return Ok(None);
                };
                if values.next().is_some() {
                    return Err(KeyError::Malformed("the key header is repeated"));
                }
                let value = value
                    .to_str()
                    .map_err(|_| KeyError::Malformed("the key header is not text"))?;
                Cow::Borrowed(value.trim())
            }
            Self::Query(name) => {
                let mut found = request.uri.query().into_iter().flat_map(|query| {
                    form_urlencoded::parse(query.as_bytes())
                        .filter(|(key, _)| key == name.as_ref())
                        .map(|(_, value)| value)
                });
                let Some(value) = found.next() else {
                    return Ok(None);
                };
                if found.next().is_some() {
                    return Err(KeyError::Malformed("the key parameter is repeated"));
                }
                value
            }
            Self::ClientIp => match request.client {
                Some(super::client_ip::Client::Unnamed) => {
                    return Err(KeyError::Misconfigured(
                        "a trusted proxy forwarded a request without naming its client in the \
                         configured header (`RateLimitBuilder::client_address_header`, \
                         X-Forwarded-For by default): keyed by the proxy's address, every client \
                         behind it would share one limit"
                            .to_owned(),
                    ));
                }
                Some(client) => Cow::Owned(super::client_ip::client_key_text(client)),
                None => {
                    return Err(KeyError::Misconfigured(
                        "a rule keyed by the client address found none: the server must put \
                         the peer address in the request extensions (a `SocketAddr`, axum's \
                         `ConnectInfo<SocketAddr>`), or `RateLimitBuilder::peer_address` must \
                         say where it is"
                            .to_owned(),
                    ));
                }
            },
            Self::Principal { id, type_name } => match id(request.extensions) {
                Some(id) => Cow::Owned(id),
                None => match request.extensions.get::<Credentialed>() {
                    Some(Credentialed {
                        principal_type: attached,
                        ..
                    }) => {
                        return Err(KeyError::Misconfigured(format!(
                            "`Key::principal::<{type_name}>` found no such principal, but the \
                             auth layer attached a `{attached}`: give both the same type"
                        )));
                    }
                    None => return Ok(None),
                },
            },
            Self::Global => Cow::Borrowed(GLOBAL),
            Self::Custom(extract) => match extract(request) {
                Some(text) => Cow::Owned(text),
                None => return Ok(None),
            },
        };
        if text.is_empty() {
            return Ok(None);
        }
        // a text that starts with the marker is hashed too, so a key starting with it is
        // always a hash: a client sending `sha256:<hex>` literally would otherwise count
        // against the long key hashed to it
        Ok(Some(
            if text.len() > MAX_KEY_TEXT || text.starts_with(HASHED_MARKER) {
                Cow::Owned(format!(
                    "{HASHED_MARKER}{}",
                    hex_digest(&Sha256::digest(text.as_bytes()))
                ))
            } else {
                text
            },
        ))
    }
}

/// The captured segment of `path`, percent-decoded, when `path` has the pattern's shape.
///
/// Literal segments compare raw, as axum's router matches them. A path of the pattern's shape
/// that is not in normal form (dot segments, `//`, encoded `/`, `.`, `%` or `;`), or whose
/// captured value does not decode to UTF-8, is [`Malformed`]: its value is whatever a given
/// router makes of it, so no key can be trusted to be the one the handler sees.
fn capture<'a>(segments: &[Segment], path: &'a str) -> Result<Option<Cow<'a, str>>, KeyError> {
    let mut captured = None;
    // a router that serves the pattern's path may serve it with or without the trailing
    // slash, and in other letter case: each spelling must meet the rule
    let mut parts = without_trailing_slash(path).split('/');
    for segment in segments {
        let Some(part) = parts.next() else {
            return Ok(None);
        };
        match segment {
            Segment::Literal(literal) if part.eq_ignore_ascii_case(literal) => {}
            Segment::Any | Segment::Capture if part.is_empty() => {
                // `//` where a value belongs: the route's shape, spelled ambiguously
                return Err(KeyError::Malformed("the path has an empty segment"));
            }
            Segment::Any => {}
            Segment::Capture => captured = Some(part),
            Segment::Literal(_) => return Ok(None),
        }
    }
    if parts.next().is_some() {
        return Ok(None);
    }
    crate::path::check_normalized(path).map_err(KeyError::Malformed)?;
    let Some(raw) = captured else {
        return Ok(None);
    };
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(Some)
        .map_err(|_| KeyError::Malformed("the path segment does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract(key: &Key, uri: &str, headers: &[(&str, &str)], ip: Option<&str>) -> Option<String> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let uri: Uri = uri.parse().unwrap();
        let extensions = Extensions::new();
        let head = RequestHead {
            method: &Method::GET,
            uri: &uri,
            headers: &map,
            extensions: &extensions,
            client_ip: ip.map(|ip| ip.parse().unwrap()),
            client: ip.map(|ip| super::super::client_ip::Client::Address(ip.parse().unwrap())),
        };
        key.compile()
            .unwrap()
            .extract(&head)
            .unwrap()
            .map(Cow::into_owned)
    }

    #[test]
    fn path_segments_are_captured_only_on_matching_normal_paths() {
        let key = || Key::path_segment("/sms_codes/{mobile}/", "mobile");
        assert_eq!(
            extract(&key(), "/sms_codes/13800138000/", &[], None).as_deref(),
            Some("13800138000")
        );
        // issue 29, finding 2: every spelling a router may serve the route under
        for uri in [
            "/sms_codes/13800138000",
            "/SMS_Codes/13800138000/",
            "/sms_codes/13800138000/?x=1",
        ] {
            assert_eq!(
                extract(&key(), uri, &[], None).as_deref(),
                Some("13800138000"),
                "{uri}"
            );
        }
        for uri in [
            "/sms_codes/1/2/",
            "/other/1/",
            "/sms_codes/../1/",
            "/sms_codes/",
            "/sms_codes",
        ] {
            assert_eq!(extract(&key(), uri, &[], None), None, "{uri}");
        }
        let two = Key::path_segment("/users/{user}/codes/{code}", "code");
        assert_eq!(
            extract(&two, "/users/7/codes/x1", &[], None).as_deref(),
            Some("x1")
        );
    }

    fn refusal(key: &Key, uri: &str) -> Option<KeyError> {
        refusal_with(key, uri, &HeaderMap::new())
    }

    fn refusal_with(key: &Key, uri: &str, headers: &HeaderMap) -> Option<KeyError> {
        let uri: Uri = uri.parse().unwrap();
        let extensions = Extensions::new();
        let head = RequestHead {
            method: &Method::GET,
            uri: &uri,
            headers,
            extensions: &extensions,
            client_ip: None,
            client: None,
        };
        key.compile().unwrap().extract(&head).err()
    }

    #[test]
    fn every_spelling_of_a_segment_is_one_key() {
        let key = || Key::path_segment("/sms_codes/{mobile}/", "mobile");
        for uri in [
            "/sms_codes/13800138000/",
            "/sms_codes/%313800138000/",
            "/sms_codes/%31%33%38%30%30%31%33%38%30%30%30/",
            "/sms_codes/1380013800%30/",
        ] {
            assert_eq!(
                extract(&key(), uri, &[], None).as_deref(),
                Some("13800138000"),
                "{uri}"
            );
        }
        assert_eq!(
            extract(&key(), "/sms_codes/%E5%BC%A0/", &[], None).as_deref(),
            Some("张")
        );
    }

    #[test]
    fn a_route_spelled_ambiguously_is_refused_not_passed() {
        let key = || Key::path_segment("/users/{name}/", "name");
        for uri in [
            "/users/john%2Edoe/",
            "/users/a%2Fb/",
            "/users/%2531/",
            "/users/a%3Bb/",
            "/users//",
            "/users/%FF/",
            "/users/x;y/",
        ] {
            assert!(
                matches!(refusal(&key(), uri), Some(KeyError::Malformed(_))),
                "{uri} was not refused"
            );
        }
        // paths that are not the route are not the rule's business
        assert_eq!(refusal(&key(), "/other/a%2Fb/"), None);
        assert_eq!(extract(&key(), "/other/a%2Fb/", &[], None), None);
    }

    #[test]
    fn headers_queries_addresses_and_globals() {
        let api = || Key::header(HeaderName::from_static("x-api-key"));
        assert_eq!(
            extract(&api(), "/", &[("x-api-key", " k1 ")], None).as_deref(),
            Some("k1")
        );
        assert_eq!(extract(&api(), "/", &[("x-api-key", "")], None), None);
        assert_eq!(extract(&api(), "/", &[], None), None);
        assert_eq!(
            extract(&Key::query("phone"), "/?phone=%2B86%20138", &[], None).as_deref(),
            Some("+86 138")
        );
        assert_eq!(extract(&Key::query("phone"), "/?x=1", &[], None), None);
        // issue 29, finding 6: a key the handler may read otherwise is refused, 400
        for uri in [
            "/?phone=1&phone=2",
            "/?phone=1&x=0&phone=1",
            "/?phone&phone=2",
        ] {
            assert!(
                matches!(
                    refusal(&Key::query("phone"), uri),
                    Some(KeyError::Malformed("the key parameter is repeated"))
                ),
                "{uri}"
            );
        }
        let mut twice = HeaderMap::new();
        twice.append("x-api-key", "a".parse().unwrap());
        twice.append("x-api-key", "b".parse().unwrap());
        assert!(matches!(
            refusal_with(&api(), "/", &twice),
            Some(KeyError::Malformed("the key header is repeated"))
        ));
        let mut bytes = HeaderMap::new();
        bytes.insert(
            "x-api-key",
            http::HeaderValue::from_bytes(b"k\xff").unwrap(),
        );
        assert!(matches!(
            refusal_with(&api(), "/", &bytes),
            Some(KeyError::Malformed("the key header is not text"))
        ));
        assert_eq!(
            extract(&Key::client_ip(), "/", &[], Some("203.0.113.9")).as_deref(),
            Some("203.0.113.9")
        );
        assert!(matches!(
            refusal(&Key::client_ip(), "/"),
            Some(KeyError::Misconfigured(_))
        ));
        assert_eq!(
            extract(&Key::global(), "/", &[], None).as_deref(),
            Some("*")
        );
    }

    #[test]
    fn a_principal_of_another_type_is_a_misconfiguration_not_an_anonymous_request() {
        #[derive(Clone)]
        struct User {
            id: u64,
        }
        let key = Key::principal(|user: &User| user.id.to_string())
            .compile()
            .unwrap();
        let uri: Uri = "/".parse().unwrap();
        let headers = HeaderMap::new();
        let head = |extensions| RequestHead {
            method: &Method::GET,
            uri: &uri,
            headers: &headers,
            extensions,
            client_ip: None,
            client: None,
        };
        let anonymous = Extensions::new();
        assert_eq!(key.extract(&head(&anonymous)), Ok(None));
        let mut right = Extensions::new();
        right.insert(Authenticated::new(User { id: 7 }, "t".into()));
        right.insert(Credentialed {
            query_tokens: Arc::from([]),
            principal_type: std::any::type_name::<User>(),
        });
        assert_eq!(key.extract(&head(&right)).unwrap().as_deref(), Some("7"));
        let mut wrong = Extensions::new();
        wrong.insert(Authenticated::new(Arc::new(User { id: 7 }), "t".into()));
        wrong.insert(Credentialed {
            query_tokens: Arc::from([]),
            principal_type: std::any::type_name::<Arc<User>>(),
        });
        let Err(KeyError::Misconfigured(why)) = key.extract(&head(&wrong)) else {
            panic!("a wrong principal type passed");
        };
        assert!(why.contains("Arc<"), "{why}");
    }

    #[test]
    fn long_keys_are_hashed() {
        let long = "a".repeat(500);
        let key = extract(
            &Key::header(HeaderName::from_static("x-k")),
            "/",
            &[("x-k", &long)],
            None,
        )
        .unwrap();
        assert!(key.starts_with("sha256:") && key.len() == 7 + 64);
        // issue 29, finding 8b: the hashed form sent literally is hashed again, not shared
        let literal = extract(
            &Key::header(HeaderName::from_static("x-k")),
            "/",
            &[("x-k", &key)],
            None,
        )
        .unwrap();
        assert!(literal.starts_with("sha256:") && literal.len() == 7 + 64);
        assert_ne!(literal, key);
        for short in ["sha256:", "sha256:x", "SHA256:x"] {
            let text = extract(
                &Key::header(HeaderName::from_static("x-k")),
                "/",
                &[("x-k", short)],
                None,
            )
            .unwrap();
            assert_eq!(
                text.starts_with("sha256:"),
                short.starts_with("sha256:"),
                "{short}"
            );
        }
    }

    #[test]
    fn bad_patterns_are_config_errors() {
        for (pattern, name) in [
            ("sms/{m}/", "m"),
            ("/sms/{x}/", "m"),
            ("/a/{m}/{m}", "m"),
            ("/a{m}/", "m"),
            ("/{}/", "m"),
        ] {
            assert!(
                Key::path_segment(pattern, name).compile().is_err(),
                "{pattern}"
            );
        }
    }

    #[test]
    fn path_is_ignores_the_trailing_slash_and_letter_case() {
        for (pattern, path, expected) in [
            ("/login/", "/login/", true),
            ("/login/", "/login", true),
            ("/login", "/login/", true),
            ("/login/", "/LOGIN/", true),
            ("/login/", "/login//", false),
            ("/login/", "/logins/", false),
            ("/login/", "/", false),
            ("/", "/", true),
            ("/users/{id}/", "/users/7", true),
            ("/users/{id}/", "/users//", false),
            ("/users/{id}/", "/users/7/x/", false),
        ] {
            assert_eq!(same_route(pattern, path), expected, "{pattern} {path}");
        }
    }
}
