//! Where tokens come from.

use std::sync::Arc;

use http::Uri;
use http::header::{self, HeaderMap, HeaderName};

use super::{AuthErrorKind, Token};

/// One place the auth layer looks for a token. A layer tries its sources in order; the first
/// that holds anything decides, so a malformed `Authorization` header is reported as such
/// rather than skipped for a cookie.
///
/// # Example
///
/// ```
/// use http::HeaderName;
/// use tower_redis_http::auth::TokenSource;
///
/// let sources = [
///     TokenSource::bearer(),                       // Authorization: Bearer <token>
///     TokenSource::keyword("Token"),               // Authorization: Token <token> (DRF)
///     TokenSource::query("token"),                 // ?token=<token>
///     TokenSource::cookie("token"),                // Cookie: token=<token>
///     TokenSource::header(HeaderName::from_static("x-auth-token")),
/// ];
/// ```
#[derive(Debug, Clone)]
pub struct TokenSource(Source);

#[derive(Debug, Clone)]
enum Source {
    Authorization { keyword: Arc<str> },
    Query(Arc<str>),
    Cookie(Arc<str>),
    Header(HeaderName),
}

impl TokenSource {
    /// The query parameter this source reads, if it reads one.
    pub(crate) fn query_parameter(&self) -> Option<&Arc<str>> {
        match &self.0 {
            Source::Query(name) => Some(name),
            _ => None,
        }
    }

    /// `Authorization: Bearer <token>` (RFC 6750), the default.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenSource;
    ///
    /// let source = TokenSource::bearer();
    /// ```
    #[must_use]
    pub fn bearer() -> Self {
        Self::keyword("Bearer")
    }

    /// `Authorization: <keyword> <token>`, the keyword matched case-insensitively, as Django
    /// REST framework's `TokenAuthentication.keyword`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenSource;
    ///
    /// let drf = TokenSource::keyword("Token");
    /// ```
    #[must_use]
    pub fn keyword(keyword: impl Into<Arc<str>>) -> Self {
        Self(Source::Authorization {
            keyword: keyword.into(),
        })
    }

    /// A query-string parameter (`?token=...`), percent-decoded. RFC 6750 §2.3 discourages it:
    /// URLs end up in logs.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenSource;
    ///
    /// let source = TokenSource::query("access_token");
    /// ```
    #[must_use]
    pub fn query(name: impl Into<Arc<str>>) -> Self {
        Self(Source::Query(name.into()))
    }

    /// A cookie; the first of that name counts.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenSource;
    ///
    /// let source = TokenSource::cookie("session_token");
    /// ```
    #[must_use]
    pub fn cookie(name: impl Into<Arc<str>>) -> Self {
        Self(Source::Cookie(name.into()))
    }

    /// A custom header whose whole value is the token.
    ///
    /// # Example
    ///
    /// ```
    /// use http::HeaderName;
    /// use tower_redis_http::auth::TokenSource;
    ///
    /// let source = TokenSource::header(HeaderName::from_static("x-api-key"));
    /// ```
    #[must_use]
    pub fn header(name: HeaderName) -> Self {
        Self(Source::Header(name))
    }

    /// The token this source holds: `Ok(None)` when it holds nothing.
    fn extract(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        max_len: usize,
    ) -> Result<Option<Token>, AuthErrorKind> {
        match &self.0 {
            Source::Authorization { keyword } => {
                let mut values = headers.get_all(header::AUTHORIZATION).iter();
                let Some(value) = values.next() else {
                    return Ok(None);
                };
                if values.next().is_some() {
                    return Err(AuthErrorKind::MultipleCredentials);
                }
                let mut words = value
                    .as_bytes()
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|word| !word.is_empty());
                // another scheme (Basic, ...) is not ours to judge
                if !words
                    .next()
                    .is_some_and(|scheme| scheme.eq_ignore_ascii_case(keyword.as_bytes()))
                {
                    return Ok(None);
                }
                let Some(token) = words.next() else {
                    return Err(AuthErrorKind::NoCredentials);
                };
                if words.next().is_some() {
                    return Err(AuthErrorKind::TokenContainsSpaces);
                }
                checked_token(token, max_len).map(Some)
            }
            Source::Query(name) => {
                let Some(query) = uri.query() else {
                    return Ok(None);
                };
                let mut found = None;
                for (key, value) in form_urlencoded::parse(query.as_bytes()) {
                    if key == name.as_ref() {
                        if found.is_some() {
                            return Err(AuthErrorKind::MultipleCredentials);
                        }
                        found = Some(value);
                    }
                }
                found
                    .map(|value| whole_value_token(value.as_bytes(), max_len))
                    .transpose()
            }
            Source::Cookie(name) => {
                for value in headers.get_all(header::COOKIE) {
                    for pair in value.as_bytes().split(|&b| b == b';') {
                        let pair = pair.trim_ascii();
                        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                            continue;
                        };
                        if pair[..eq].trim_ascii() == name.as_bytes() {
                            let value = pair[eq + 1..].trim_ascii();
                            // RFC 6265 allows a cookie value in double quotes
                            let value = value
                                .strip_prefix(b"\"")
                                .and_then(|v| v.strip_suffix(b"\""))
                                .unwrap_or(value);
                            return whole_value_token(value, max_len).map(Some);
                        }
                    }
                }
                Ok(None)
            }
            Source::Header(name) => {
                let mut values = headers.get_all(name).iter();
                let Some(value) = values.next() else {
                    return Ok(None);
                };
                if values.next().is_some() {
                    return Err(AuthErrorKind::MultipleCredentials);
                }
                whole_value_token(value.as_bytes(), max_len).map(Some)
            }
        }
    }
}

/// A token that is a source's whole value: empty means no credentials, inner whitespace means
/// spaces.
fn whole_value_token(value: &[u8], max_len: usize) -> Result<Token, AuthErrorKind> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err(AuthErrorKind::NoCredentials);
    }
    if value.iter().any(u8::is_ascii_whitespace) {
        return Err(AuthErrorKind::TokenContainsSpaces);
    }
    checked_token(value, max_len)
}

/// RFC 6750 §2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn checked_token(token: &[u8], max_len: usize) -> Result<Token, AuthErrorKind> {
    if token.len() > max_len {
        return Err(AuthErrorKind::TokenTooLong);
    }
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    let (body, _padding) = token.split_at(body_len);
    if body.is_empty()
        || !body.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
    {
        return Err(AuthErrorKind::InvalidCharacters);
    }
    Ok(Token::from(
        std::str::from_utf8(token).expect("b64token bytes are ASCII"),
    ))
}

/// The token of the first source that holds anything.
pub(crate) fn extract_token(
    sources: &[TokenSource],
    headers: &HeaderMap,
    uri: &Uri,
    max_len: usize,
) -> Result<Option<Token>, AuthErrorKind> {
    for source in sources {
        if let Some(token) = source.extract(headers, uri, max_len)? {
            return Ok(Some(token));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AuthErrorKind::*;

    fn parts(uri: &str, headers: &[(&str, &[u8])]) -> http::request::Parts {
        let mut builder = http::Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, http::HeaderValue::from_bytes(value).unwrap());
        }
        builder.body(()).unwrap().into_parts().0
    }

    type Extracted = Result<Option<String>, AuthErrorKind>;

    fn extract(
        sources: &[TokenSource],
        uri: &str,
        headers: &[(&str, &[u8])],
    ) -> Result<Option<String>, AuthErrorKind> {
        let parts = parts(uri, headers);
        extract_token(sources, &parts.headers, &parts.uri, 16)
            .map(|token| token.map(|token| token.as_str().to_owned()))
    }

    #[test]
    fn authorization_header_follows_drf() {
        let bearer = [TokenSource::bearer()];
        let token = [TokenSource::keyword("Token")];
        let ok = |t: &str| Ok(Some(t.to_owned()));
        let cases: &[(&[TokenSource], &[u8], Extracted)] = &[
            (&bearer, b"Bearer abc123", ok("abc123")),
            (&bearer, b"bearer abc123", ok("abc123")),
            (&bearer, b"BEARER   abc123  ", ok("abc123")),
            (&bearer, b"Bearer a-b.c_d~e+f/g==", ok("a-b.c_d~e+f/g==")),
            (&bearer, b"Bearer", Err(NoCredentials)),
            (&bearer, b"Bearer   ", Err(NoCredentials)),
            (&bearer, b"Bearer abc 123", Err(TokenContainsSpaces)),
            (&bearer, b"Bearer abc\"123", Err(InvalidCharacters)),
            (&bearer, b"Bearer ab=c", Err(InvalidCharacters)),
            (&bearer, b"Bearer ===", Err(InvalidCharacters)),
            (
                &bearer,
                b"Bearer \xe4\xbd\xa0\xe5\xa5\xbd",
                Err(InvalidCharacters),
            ),
            (&bearer, b"Bearer \xff\xfe", Err(InvalidCharacters)),
            (&bearer, b"Bearer 0123456789abcdefX", Err(TokenTooLong)),
            (&bearer, b"Basic dXNlcjpwdw==", Ok(None)),
            (&bearer, b"Token abc123", Ok(None)),
            (&token, b"Token abc123", ok("abc123")),
            (&token, b"token abc123", ok("abc123")),
            (&token, b"Token", Err(NoCredentials)),
            (&token, b"Bearer abc123", Ok(None)),
        ];
        for (sources, header, expected) in cases {
            let got = extract(sources, "/", &[("authorization", header)]);
            assert_eq!(&got, expected, "{:?}", String::from_utf8_lossy(header));
        }
    }

    #[test]
    fn missing_and_duplicate_authorization() {
        let bearer = [TokenSource::bearer()];
        assert_eq!(extract(&bearer, "/", &[]), Ok(None));
        assert_eq!(
            extract(
                &bearer,
                "/",
                &[
                    ("authorization", b"Bearer a"),
                    ("authorization", b"Bearer b")
                ]
            ),
            Err(MultipleCredentials)
        );
    }

    #[test]
    fn query_cookie_and_header_sources() {
        let query = [TokenSource::query("token")];
        assert_eq!(extract(&query, "/?token=abc", &[]), Ok(Some("abc".into())));
        assert_eq!(
            extract(&query, "/?a=1&token=ab%2Dc", &[]),
            Ok(Some("ab-c".into()))
        );
        assert_eq!(extract(&query, "/?tokenx=abc", &[]), Ok(None));
        assert_eq!(extract(&query, "/?token=", &[]), Err(NoCredentials));
        assert_eq!(
            extract(&query, "/?token=a+b", &[]),
            Err(TokenContainsSpaces)
        );
        assert_eq!(
            extract(&query, "/?token=a%00b", &[]),
            Err(InvalidCharacters)
        );
        assert_eq!(
            extract(&query, "/?token=a&token=b", &[]),
            Err(MultipleCredentials)
        );

        let cookie = [TokenSource::cookie("token")];
        assert_eq!(
            extract(&cookie, "/", &[("cookie", b"a=1; token=abc; b=2")]),
            Ok(Some("abc".into()))
        );
        assert_eq!(
            extract(&cookie, "/", &[("cookie", b"token=\"abc\"")]),
            Ok(Some("abc".into()))
        );
        assert_eq!(
            extract(&cookie, "/", &[("cookie", b"xtoken=abc")]),
            Ok(None)
        );
        assert_eq!(
            extract(&cookie, "/", &[("cookie", b"token=")]),
            Err(NoCredentials)
        );
        assert_eq!(
            extract(&cookie, "/", &[("cookie", b"a=1"), ("cookie", b"token=t2")]),
            Ok(Some("t2".into()))
        );

        let header = [TokenSource::header(HeaderName::from_static("x-auth-token"))];
        assert_eq!(
            extract(&header, "/", &[("x-auth-token", b" abc ")]),
            Ok(Some("abc".into()))
        );
        assert_eq!(
            extract(&header, "/", &[("x-auth-token", b"a b")]),
            Err(TokenContainsSpaces)
        );
        assert_eq!(
            extract(&header, "/", &[("x-auth-token", b"")]),
            Err(NoCredentials)
        );
    }

    #[test]
    fn sources_are_tried_in_order_and_the_first_present_decides() {
        let sources = [
            TokenSource::bearer(),
            TokenSource::query("token"),
            TokenSource::cookie("token"),
        ];
        assert_eq!(
            extract(&sources, "/?token=q", &[("cookie", b"token=c")]),
            Ok(Some("q".into()))
        );
        assert_eq!(
            extract(&sources, "/", &[("cookie", b"token=c")]),
            Ok(Some("c".into()))
        );
        assert_eq!(
            extract(&sources, "/?token=q", &[("authorization", b"Bearer a b")]),
            Err(TokenContainsSpaces)
        );
        assert_eq!(
            extract(&sources, "/?x=1", &[("authorization", b"Basic abc")]),
            Ok(None)
        );
    }
}
