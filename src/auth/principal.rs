//! How tokens become store keys.

use std::sync::Arc;

use crate::store::{KeyScheme, StoreError};
use sha2::{Digest, Sha256};

use crate::hex::hex_into;

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
#[non_exhaustive]
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
    /// in one allocation: the auth layer does this on every request. `start` is the scheme's
    /// [fixed start](KeyScheme::fixed_start) of this prefix, when the layer made it once.
    pub(crate) fn full_key(
        &self,
        scheme: &KeyScheme,
        start: Option<&str>,
        token: &str,
    ) -> Result<String, StoreError> {
        let hex;
        let id = match self.storage {
            TokenStorage::Plain => token,
            TokenStorage::Sha256 => {
                let mut digest = String::with_capacity(64);
                hex_into(&Sha256::digest(token.as_bytes()), &mut digest);
                hex = digest;
                &hex
            }
        };
        match start {
            Some(start) => scheme.make_from_start(start, &[id]),
            None => scheme.make_joined(&[&self.prefix, id]),
        }
    }

    /// What every full key of this layout starts with under `scheme`, made once.
    pub(crate) fn fixed_start(&self, scheme: &KeyScheme) -> Option<String> {
        scheme.fixed_start(&self.prefix)
    }

    /// The part of a store key after the prefix: the token, or its hash.
    pub(crate) fn id_of<'a>(&self, key: &'a str) -> &'a str {
        key.strip_prefix(self.prefix.as_ref()).unwrap_or(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_key_from_the_fixed_start_is_the_key_the_scheme_makes() {
        let layouts = [
            TokenKeys::new(),
            TokenKeys::new().prefix("token:"),
            TokenKeys::new().storage(TokenStorage::Sha256),
            TokenKeys::new().prefix("t:").storage(TokenStorage::Sha256),
        ];
        let schemes = [
            KeyScheme::django("", 1),
            KeyScheme::django("shop", 7),
            KeyScheme::raw(),
            KeyScheme::django("p", 1).max_len(20),
        ];
        for keys in &layouts {
            for scheme in &schemes {
                for token in ["abc", "0123456789abcdef0123456789abcdef"] {
                    let start = keys.fixed_start(scheme);
                    let made = keys.full_key(scheme, start.as_deref(), token);
                    let expected = scheme.make(&keys.key(token));
                    assert_eq!(
                        made.map_err(|err| err.kind()),
                        expected.map_err(|err| err.kind()),
                        "{keys:?} {scheme:?} {token}"
                    );
                }
            }
        }
    }
}
