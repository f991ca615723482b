//! The layer's compiled rules and settings, shared by its services and futures behind one `Arc`.

use std::sync::Arc;

use http::HeaderValue;

use super::client_ip::ClientAddressHeader;
use super::key::CompiledKey;
use super::rule::Commit;
use crate::FailurePolicy;
use crate::peer::{Network, PeerFn};
use crate::store::{AnyStore, KeyScheme, RatePolicy, StoreError};

/// What happens to a request whose key cannot be extracted (no such header, a path that does
/// not match the pattern, an anonymous user).
///
/// # Example
///
/// ```
/// use tower_redis_http::ratelimit::MissingKey;
///
/// assert_eq!(MissingKey::default(), MissingKey::Pass);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MissingKey {
    /// The rule does not apply to it. Default.
    #[default]
    Pass,
    /// Answer `400 Bad Request`.
    Reject,
}

pub(crate) struct CompiledRule {
    pub(crate) name: Arc<str>,
    pub(crate) policy: RatePolicy,
    /// This rule's `RateLimit-Policy` item.
    pub(crate) policy_item: String,
    pub(crate) key: CompiledKey,
    pub(crate) on_store_error: FailurePolicy,
    pub(crate) applies: Option<super::rule::Applies>,
    pub(crate) commit: Commit,
    /// The store key around the request's key: `rl:<name>:` and `` by default.
    pub(crate) key_before: Arc<str>,
    pub(crate) key_after: Arc<str>,
    pub(crate) key_making: KeyMaking,
}

/// How a rule makes a request's full store key, decided at build time so that the work that
/// cannot change between requests is done once.
pub(crate) enum KeyMaking {
    /// The same full key for every request (`Key::global()`): made once.
    Fixed(String),
    /// The full key's start (the key scheme's prefix and version, then `rl:<name>:`) made
    /// once; each request appends its key and the rule's end.
    FromStart(String),
    /// Through the key scheme each time: a custom key function, or a fixed key the scheme
    /// refuses (too long), which then fails per request as any other key would.
    ByScheme,
}

/// A rule's full store key for one request.
pub(crate) enum StoreKey {
    /// The rule's [`KeyMaking::Fixed`] key.
    Fixed,
    Made(String),
}

impl CompiledRule {
    /// How this rule makes its keys on `scheme`.
    pub(crate) fn key_making(
        key: &CompiledKey,
        before: &str,
        after: &str,
        scheme: &KeyScheme,
    ) -> KeyMaking {
        let Some(start) = scheme.fixed_start(before) else {
            return KeyMaking::ByScheme;
        };
        match key.fixed() {
            Some(fixed) => match scheme.make_from_start(&start, &[fixed, after]) {
                Ok(full) => KeyMaking::Fixed(full),
                Err(_) => KeyMaking::ByScheme,
            },
            None => KeyMaking::FromStart(start),
        }
    }

    /// The full store key for the request's `key`.
    pub(crate) fn store_key(&self, scheme: &KeyScheme, key: &str) -> Result<StoreKey, StoreError> {
        match &self.key_making {
            KeyMaking::Fixed(_) => Ok(StoreKey::Fixed),
            KeyMaking::FromStart(start) => scheme
                .make_from_start(start, &[key, &self.key_after])
                .map(StoreKey::Made),
            KeyMaking::ByScheme => scheme
                .make_joined(&[&self.key_before, key, &self.key_after])
                .map(StoreKey::Made),
        }
    }

    /// The text of `key`, one of this rule's store keys.
    pub(crate) fn key_text<'a>(&'a self, key: &'a StoreKey) -> &'a str {
        match (key, &self.key_making) {
            (StoreKey::Made(made), _) => made,
            (StoreKey::Fixed, KeyMaking::Fixed(fixed)) => fixed,
            (StoreKey::Fixed, _) => {
                unreachable!("`store_key` answers `Fixed` only for a rule whose key is fixed")
            }
        }
    }
}

pub(crate) struct Config {
    pub(crate) store: AnyStore,
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) missing_key: MissingKey,
    pub(crate) commit: Commit,
    /// Whether any rule commits on success only, so that an allowed request may hold hits
    /// to give back: without one, the hold is never looked for.
    pub(crate) holds_hits: bool,
    pub(crate) informational: bool,
    /// `RateLimit-Policy` when every rule counted the request (the usual case).
    pub(crate) all_policies: Option<HeaderValue>,
    pub(crate) trusted: Vec<Network>,
    /// The header a trusted proxy names the client in.
    pub(crate) client_header: ClientAddressHeader,
    pub(crate) peer: PeerFn,
    pub(crate) needs_ip: bool,
    /// Whether a misconfigured rule was logged already (once per layer).
    pub(crate) misconfiguration_reported: std::sync::atomic::AtomicBool,
}
