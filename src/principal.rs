//! What the auth layer hands to the requests it lets through, found here by the other
//! layers (the rate limiter keys by the principal) without importing the auth layer.

use std::fmt;
use std::sync::Arc;

/// A presented token. Its `Debug` output is redacted, so it can sit in logged structs.
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::Token;
///
/// let token = Token::from("a1b2c3");
/// assert_eq!(token.as_str(), "a1b2c3");
/// assert_eq!(format!("{token:?}"), "Token(***)");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(Arc<str>);

impl Token {
    /// The token text.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::Token;
    ///
    /// assert_eq!(Token::from("t").as_str(), "t");
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Token {
    fn from(token: &str) -> Self {
        Self(Arc::from(token))
    }
}

impl From<String> for Token {
    fn from(token: String) -> Self {
        Self(Arc::from(token))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// The request extension the auth layer adds for an authenticated request: the decoded
/// principal and the token it was found under.
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::{Authenticated, Token};
///
/// fn user_id(request: &http::Request<()>) -> Option<u64> {
///     request.extensions().get::<Authenticated<u64>>().map(|auth| auth.principal)
/// }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Authenticated<P> {
    /// The stored principal, decoded.
    pub principal: P,
    /// The token the request presented.
    pub token: Token,
}

impl<P> Authenticated<P> {
    pub(crate) fn new(principal: P, token: Token) -> Self {
        Self { principal, token }
    }
}

/// Set by the auth layer on a request it let through on a token, whatever carried the token
/// (`Authorization`, a cookie, another header, a query parameter), and on that request's
/// response. A shared cache treats both as it treats a request with `Authorization` (RFC 9111
/// §3.5): one user's answer is stored for all only when it says it may be. The cache sees
/// the request's mark when it sits inside the auth layer, the response's when outside.
///
/// It also names the principal type `P` of the [`Authenticated<P>`] beside it, so that a layer
/// looking for another type (`User` where the auth layer attaches `Arc<User>`) can tell a
/// misconfiguration from an anonymous request: one extension for both, since each costs a
/// request an allocation.
#[derive(Debug, Clone)]
pub(crate) struct Credentialed {
    /// The query parameters the auth layer reads tokens from: never part of a cache key, so
    /// a token never becomes part of a key in the store.
    pub(crate) query_tokens: Arc<[Arc<str>]>,
    /// `std::any::type_name` of the principal the auth layer attaches.
    pub(crate) principal_type: &'static str,
}
