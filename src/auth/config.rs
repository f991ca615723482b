//! The layer's settings, shared by the layer, its services and their futures behind one `Arc`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use super::paths::PathPolicy;
use super::{AuthError, AuthErrorKind, Challenge, TokenKeys, TokenSource};
use crate::FailurePolicy;
use crate::decoded::DecodedMemo;
use crate::principal::Credentialed;
use crate::store::AnyStore;

pub(crate) type Validator<P> = Arc<dyn Fn(&P) -> Result<(), Cow<'static, str>> + Send + Sync>;

/// Everything a [`TokenAuth`](super::TokenAuth) service needs per request, shared behind one `Arc`.
pub(crate) struct Config<P> {
    pub(crate) store: AnyStore,
    pub(crate) sources: Vec<TokenSource>,
    pub(crate) paths: PathPolicy,
    pub(crate) keys: TokenKeys,
    /// The start every token's store key shares (prefix, version, the keys' prefix), made
    /// once; `None` under a custom key function.
    pub(crate) key_start: Option<String>,
    pub(crate) max_token_len: usize,
    pub(crate) sliding: Option<Duration>,
    /// Under sliding expiration, how much of its TTL a token may lose before a lookup
    /// refreshes it; zero: every lookup refreshes.
    pub(crate) refresh_interval: Duration,
    pub(crate) validate: Option<Validator<P>>,
    pub(crate) challenge: Challenge,
    pub(crate) on_store_error: FailurePolicy,
    /// What marks the requests let through on a token, and their responses, for the cache.
    pub(crate) credentialed: Credentialed,
    /// The principals decoded from stored JSON, by that JSON: a token's hit does not parse it
    /// again, and a principal changed in the store is other JSON, decoded anew.
    pub(crate) decoded: DecodedMemo<P>,
}

impl<P> Config<P> {
    pub(crate) fn error(&self, kind: AuthErrorKind) -> AuthError {
        AuthError::new(kind, self.challenge.clone())
    }
}
