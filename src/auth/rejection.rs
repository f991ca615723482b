//! Why a request was turned away, and the response that says so.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// Why the auth layer turned a request away.
///
/// The default messages are Django REST framework's, word for word, so clients written against
/// a DRF backend keep working. The kind is also put into the rejection response's extensions,
/// so outer layers and tests can read it.
///
/// # Example
///
/// ```
/// use http::StatusCode;
/// use tower_redis_http::auth::AuthErrorKind;
///
/// let kind = AuthErrorKind::TokenContainsSpaces;
/// assert_eq!(kind.status(), StatusCode::UNAUTHORIZED);
/// assert_eq!(kind.message(), "Invalid token header. Token string should not contain spaces.");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthErrorKind {
    /// No token in any configured source.
    NotAuthenticated,
    /// The scheme keyword with nothing after it (`Authorization: Bearer`), or an empty
    /// query parameter, cookie or header.
    NoCredentials,
    /// More than one word after the keyword.
    TokenContainsSpaces,
    /// A byte outside RFC 6750's `b64token` alphabet, or not UTF-8.
    InvalidCharacters,
    /// Longer than the configured bound; refused before any store call.
    TokenTooLong,
    /// Unknown, expired or revoked.
    InvalidToken,
    /// The stored principal failed the layer's validation (DRF's inactive user).
    PrincipalRejected(Cow<'static, str>),
    /// More than one token in one request (two `Authorization` headers, two `token`
    /// parameters): RFC 6750's `invalid_request`.
    MultipleCredentials,
    /// The path is not in normal form (dot segments, `//`, encoded separators, ...).
    PathNotNormalized(&'static str),
    /// The store failed and the layer fails closed.
    StoreUnavailable,
}

impl AuthErrorKind {
    /// The message for the `detail` field.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::AuthErrorKind;
    ///
    /// assert_eq!(AuthErrorKind::InvalidToken.message(), "Invalid token.");
    /// ```
    #[must_use]
    pub fn message(&self) -> &str {
        match self {
            Self::NotAuthenticated => "Authentication credentials were not provided.",
            Self::NoCredentials => "Invalid token header. No credentials provided.",
            Self::TokenContainsSpaces => {
                "Invalid token header. Token string should not contain spaces."
            }
            Self::InvalidCharacters => {
                "Invalid token header. Token string should not contain invalid characters."
            }
            Self::TokenTooLong => "Invalid token header. Token string is too long.",
            Self::InvalidToken => "Invalid token.",
            Self::PrincipalRejected(message) => message,
            Self::MultipleCredentials => "Invalid request. More than one token was provided.",
            Self::PathNotNormalized(_) => {
                "The request was rejected because the URL was not normalized."
            }
            Self::StoreUnavailable => "Authentication is temporarily unavailable.",
        }
    }

    /// The status the default response uses: 401, or 400 for malformed requests, or 503.
    ///
    /// # Example
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_redis_http::auth::AuthErrorKind;
    ///
    /// assert_eq!(AuthErrorKind::MultipleCredentials.status(), StatusCode::BAD_REQUEST);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MultipleCredentials | Self::PathNotNormalized(_) => StatusCode::BAD_REQUEST,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// RFC 6750's `error` code for a Bearer challenge, when there is one.
    fn bearer_error(&self) -> Option<&'static str> {
        match self {
            Self::NotAuthenticated | Self::StoreUnavailable | Self::PathNotNormalized(_) => None,
            Self::MultipleCredentials => Some("invalid_request"),
            _ => Some("invalid_token"),
        }
    }
}

impl std::fmt::Display for AuthErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// A rejection, handed to the [`RejectionResponse`] that turns it into a response.
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::{AuthError, AuthErrorKind, Challenge};
///
/// let err = AuthError::new(AuthErrorKind::InvalidToken, Challenge::bearer("api"));
/// assert_eq!(
///     err.www_authenticate().unwrap(),
///     r#"Bearer realm="api", error="invalid_token", error_description="Invalid token.""#
/// );
/// ```
#[derive(Debug, Clone)]
pub struct AuthError {
    kind: AuthErrorKind,
    challenge: Challenge,
}

impl AuthError {
    /// A rejection of `kind`, answered with `challenge`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::{AuthError, AuthErrorKind, Challenge};
    ///
    /// let err = AuthError::new(AuthErrorKind::NotAuthenticated, Challenge::keyword("Token"));
    /// assert_eq!(err.www_authenticate().unwrap(), "Token");
    /// ```
    #[must_use]
    pub fn new(kind: AuthErrorKind, challenge: Challenge) -> Self {
        Self { kind, challenge }
    }

    /// Why the request was rejected.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::{AuthError, AuthErrorKind, Challenge};
    ///
    /// let err = AuthError::new(AuthErrorKind::InvalidToken, Challenge::bearer("api"));
    /// assert_eq!(err.kind(), &AuthErrorKind::InvalidToken);
    /// ```
    #[must_use]
    pub fn kind(&self) -> &AuthErrorKind {
        &self.kind
    }

    /// The `WWW-Authenticate` value for this rejection, if its status is 401 (RFC 9110
    /// §15.5.2: every 401 carries a challenge) or 400 in Bearer mode (RFC 6750 §3.1).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::{AuthError, AuthErrorKind, Challenge};
    ///
    /// let err = AuthError::new(AuthErrorKind::NotAuthenticated, Challenge::bearer("api"));
    /// assert_eq!(err.www_authenticate().unwrap(), r#"Bearer realm="api""#);
    /// ```
    #[must_use]
    pub fn www_authenticate(&self) -> Option<HeaderValue> {
        let status = self.kind.status();
        match &self.challenge.0 {
            ChallengeKind::Keyword(keyword) if status == StatusCode::UNAUTHORIZED => {
                HeaderValue::from_str(keyword).ok()
            }
            ChallengeKind::Keyword(_) => None,
            ChallengeKind::Bearer { realm } => {
                let error = self.kind.bearer_error();
                if status != StatusCode::UNAUTHORIZED && error.is_none() {
                    return None;
                }
                let mut value = format!("Bearer realm=\"{}\"", quoted_string_escape(realm));
                if let Some(error) = error {
                    value.push_str(&format!(
                        ", error=\"{error}\", error_description=\"{}\"",
                        quoted_string_escape(self.kind.message())
                    ));
                }
                HeaderValue::from_str(&value).ok()
            }
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for AuthError {}

fn quoted_string_escape(text: &str) -> Cow<'_, str> {
    if text.contains(['"', '\\']) {
        Cow::Owned(text.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        Cow::Borrowed(text)
    }
}

/// The `WWW-Authenticate` challenge a layer answers with.
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::Challenge;
///
/// let bearer = Challenge::bearer("shop");
/// let drf = Challenge::keyword("Token");
/// ```
#[derive(Debug, Clone)]
pub struct Challenge(ChallengeKind);

#[derive(Debug, Clone)]
enum ChallengeKind {
    Bearer { realm: Arc<str> },
    Keyword(Arc<str>),
}

impl Challenge {
    /// RFC 6750: `Bearer realm="..."`, with `error` and `error_description` for bad tokens.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::Challenge;
    ///
    /// let challenge = Challenge::bearer("api");
    /// ```
    #[must_use]
    pub fn bearer(realm: impl Into<Arc<str>>) -> Self {
        Self(ChallengeKind::Bearer {
            realm: realm.into(),
        })
    }

    /// Django REST framework's `TokenAuthentication`: the bare keyword (`Token`).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::Challenge;
    ///
    /// let challenge = Challenge::keyword("Token");
    /// ```
    #[must_use]
    pub fn keyword(keyword: impl Into<Arc<str>>) -> Self {
        Self(ChallengeKind::Keyword(keyword.into()))
    }
}

/// Turns a rejection into the response the client gets.
///
/// Implemented by [`JsonRejection`] (the default) and by any
/// `Fn(&AuthError) -> http::Response<Bytes>` closure, for applications that answer with their
/// own shape (`{"code": 1008, "msg": ...}`). Whatever the response, the layer adds the
/// [`AuthErrorKind`] to its extensions and, on a 401 without one, the `WWW-Authenticate`
/// challenge that RFC 9110 requires.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Response, StatusCode};
/// use tower_redis_http::auth::{AuthError, AuthErrorKind, Challenge, RejectionResponse};
///
/// let legacy = |err: &AuthError| {
///     let body = serde_json::json!({"code": 1008, "msg": err.kind().message()});
///     Response::builder()
///         .status(StatusCode::OK)
///         .body(Bytes::from(body.to_string()))
///         .unwrap()
/// };
/// let response = legacy.rejection(&AuthError::new(AuthErrorKind::InvalidToken, Challenge::bearer("api")));
/// assert_eq!(response.status(), StatusCode::OK);
/// ```
pub trait RejectionResponse: Clone + Send + Sync + 'static {
    /// The response for `error`.
    fn rejection(&self, error: &AuthError) -> Response<Bytes>;
}

impl<F> RejectionResponse for F
where
    F: Fn(&AuthError) -> Response<Bytes> + Clone + Send + Sync + 'static,
{
    fn rejection(&self, error: &AuthError) -> Response<Bytes> {
        self(error)
    }
}

/// The default rejection: the kind's status, `WWW-Authenticate`, and
/// `{"detail": "<message>"}` as Django REST framework answers.
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::{AuthError, AuthErrorKind, Challenge, JsonRejection, RejectionResponse};
///
/// let response = JsonRejection.rejection(&AuthError::new(AuthErrorKind::InvalidToken, Challenge::bearer("api")));
/// assert_eq!(response.status(), 401);
/// assert_eq!(response.body().as_ref(), br#"{"detail":"Invalid token."}"#);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonRejection;

impl RejectionResponse for JsonRejection {
    fn rejection(&self, error: &AuthError) -> Response<Bytes> {
        let mut response = crate::json::detail(error.kind().status(), error.kind().message());
        if let Some(challenge) = error.www_authenticate() {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// Builds the final rejection: the application's response, plus the kind in extensions and
/// the challenge a 401 must carry.
pub(crate) fn respond<R: RejectionResponse>(rejection: &R, error: &AuthError) -> Response<Bytes> {
    let mut response = rejection.rejection(error);
    if response.status() == StatusCode::UNAUTHORIZED
        && !response.headers().contains_key(header::WWW_AUTHENTICATE)
        && let Some(challenge) = error.www_authenticate()
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    response.extensions_mut().insert(error.kind().clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_follow_rfc_6750() {
        let cases = [
            (
                AuthErrorKind::NotAuthenticated,
                Some(r#"Bearer realm="api""#),
            ),
            (
                AuthErrorKind::InvalidToken,
                Some(
                    r#"Bearer realm="api", error="invalid_token", error_description="Invalid token.""#,
                ),
            ),
            (
                AuthErrorKind::MultipleCredentials,
                Some(
                    r#"Bearer realm="api", error="invalid_request", error_description="Invalid request. More than one token was provided.""#,
                ),
            ),
            (AuthErrorKind::StoreUnavailable, None),
            (AuthErrorKind::PathNotNormalized("x"), None),
        ];
        for (kind, expected) in cases {
            let err = AuthError::new(kind.clone(), Challenge::bearer("api"));
            let got = err.www_authenticate();
            assert_eq!(
                got.as_ref().map(|v| v.to_str().unwrap()),
                expected,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn keyword_challenge_is_the_bare_keyword_on_401_only() {
        let err = AuthError::new(
            AuthErrorKind::TokenContainsSpaces,
            Challenge::keyword("Token"),
        );
        assert_eq!(err.www_authenticate().unwrap(), "Token");
        let err = AuthError::new(
            AuthErrorKind::MultipleCredentials,
            Challenge::keyword("Token"),
        );
        assert_eq!(err.www_authenticate(), None);
    }

    #[test]
    fn quotes_in_realm_and_messages_are_escaped() {
        let err = AuthError::new(
            AuthErrorKind::PrincipalRejected("say \"no\"".into()),
            Challenge::bearer("a\"b"),
        );
        assert_eq!(
            err.www_authenticate().unwrap(),
            r#"Bearer realm="a\"b", error="invalid_token", error_description="say \"no\"""#
        );
    }

    #[test]
    fn custom_rejections_still_carry_the_challenge_and_kind() {
        let custom = |_: &AuthError| {
            Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .body(Bytes::from_static(b"{\"code\":1008}"))
                .unwrap()
        };
        let response = respond(
            &custom,
            &AuthError::new(AuthErrorKind::InvalidToken, Challenge::bearer("api")),
        );
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(
            response.extensions().get::<AuthErrorKind>(),
            Some(&AuthErrorKind::InvalidToken)
        );
    }
}
