//! The layer's compiled rules and settings, shared by its services and futures behind one `Arc`.

use std::sync::Arc;

use http::HeaderValue;

use super::client_ip::ClientAddressHeader;
use super::key::CompiledKey;
use super::rule::Commit;
use crate::FailurePolicy;
use crate::peer::{Network, PeerFn};
use crate::store::{AnyStore, RatePolicy};

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
}

pub(crate) struct Config {
    pub(crate) store: AnyStore,
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) missing_key: MissingKey,
    pub(crate) commit: Commit,
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
