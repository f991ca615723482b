//! What the layer hands to handlers, and how tokens become store keys.

use std::fmt;
use std::sync::Arc;

use crate::store::{KeyScheme, StoreError};
use sha2::{Digest, Sha256};

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

/// Set beside [`Authenticated<P>`] on every authenticated request, naming `P`, so that a
/// layer looking for another principal type (`User` where the auth layer attaches
/// `Arc<User>`) can tell a misconfiguration from an anonymous request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PrincipalType(pub(crate) &'static str);

/// How a token is kept in the store.
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::TokenStorage;
///
/// assert_eq!(TokenStorage::default(), TokenStorage::Plain);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TokenStorage {
    /// The token itself is the key: what a Django app's `cache.set(token, user, timeout)`
    /// writes, so both can share tokens. Default.
    #[default]
    Plain,
    /// The key is the SHA-256 of the token (hex), so a leaked dump or a `KEYS *` holds no
    /// usable token. Lookups hash the presented token.
    Sha256,
}

/// Where tokens live in the store: a key prefix, and whether keys are the token or its hash.
/// Share one value between the [`TokenAuthLayer`](super::TokenAuthLayer) and
/// [`Tokens`](super::Tokens).
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::{TokenKeys, TokenStorage};
///
/// let keys = TokenKeys::new().prefix("token:");
/// assert_eq!(keys.key("abc"), "token:abc");
///
/// let hashed = TokenKeys::new().storage(TokenStorage::Sha256);
/// assert_eq!(
///     hashed.key("abc"),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// ```
#[derive(Debug, Clone, Default)]
pub struct TokenKeys {
    prefix: Arc<str>,
    storage: TokenStorage,
}

impl TokenKeys {
    /// Keys that are the token itself, with no prefix.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenKeys;
    ///
    /// assert_eq!(TokenKeys::new().key("abc"), "abc");
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A prefix before the token (or its hash). Defaults to none.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenKeys;
    ///
    /// assert_eq!(TokenKeys::new().prefix("t:").key("x"), "t:x");
    /// ```
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether keys hold the token or its SHA-256. Defaults to [`TokenStorage::Plain`].
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::{TokenKeys, TokenStorage};
    ///
    /// let keys = TokenKeys::new().storage(TokenStorage::Sha256);
    /// assert_eq!(keys.key("abc").len(), 64);
    /// ```
    #[must_use]
    pub fn storage(mut self, storage: TokenStorage) -> Self {
        self.storage = storage;
        self
    }

    /// The store key (before the store's own key scheme) for `token`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenKeys;
    ///
    /// assert_eq!(TokenKeys::new().key("abc"), "abc");
    /// ```
    #[must_use]
    pub fn key(&self, token: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 64);
        key.push_str(&self.prefix);
        match self.storage {
            TokenStorage::Plain => key.push_str(token),
            TokenStorage::Sha256 => hex_into(&Sha256::digest(token.as_bytes()), &mut key),
        }
        key
    }

    /// The full store key for `token` under `scheme` (the store's own layout applied), built
    /// in one allocation: the auth layer does this on every request.
    pub(crate) fn full_key(&self, scheme: &KeyScheme, token: &str) -> Result<String, StoreError> {
        match self.storage {
            TokenStorage::Plain => scheme.make_joined(&[&self.prefix, token]),
            TokenStorage::Sha256 => {
                let mut hex = String::with_capacity(64);
                hex_into(&Sha256::digest(token.as_bytes()), &mut hex);
                scheme.make_joined(&[&self.prefix, &hex])
            }
        }
    }

    /// The part of a store key after the prefix: the token, or its hash.
    pub(crate) fn id_of<'a>(&self, key: &'a str) -> &'a str {
        key.strip_prefix(self.prefix.as_ref()).unwrap_or(key)
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex_digest(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    hex_into(bytes, &mut out);
    out
}

pub(crate) fn hex_into(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
}
