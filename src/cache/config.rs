//! The layer's settings, as `build` checked them, and the state it keeps while it runs.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderName, HeaderValue};

use super::directives::Targeting;
use super::entry::Head;
use super::flight::{Flights, WaitLimits};
use super::key::QueryOrder;
use super::memo::UnstorableUrls;
use super::policy::HttpRules;
use super::recent::RecentPieces;
use super::refusal::RefusalFn;
use crate::FailurePolicy;
use crate::decoded::DecodedMemo;
use crate::peer::{Network, PeerFn};
use crate::store::AnyStore;

/// Whether the request's own `Cache-Control` counts.
///
/// # Example
///
/// ```
/// use tower_redis_http::cache::RequestDirectives;
///
/// assert_eq!(RequestDirectives::default(), RequestDirectives::Ignore);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RequestDirectives {
    /// Ignored, as Django's cache middleware does: a client cannot bypass the cache. The
    /// default of the `cache_page` mode.
    #[default]
    Ignore,
    /// The default of the HTTP-cache mode, where RFC 9111 §5.2.1 applies in full: `no-cache`
    /// (or `Pragma: no-cache`) and `max-age` revalidate an entry too old for the client,
    /// `min-fresh` and `max-stale` move the freshness bar, `only-if-cached` answers 504 rather
    /// than forwarding, and `no-store` keeps the response from being stored.
    ///
    /// In the `cache_page` mode, which cannot revalidate: `no-cache`, `max-age=0` and
    /// `Pragma: no-cache` skip the lookup; `no-store` keeps the
    /// response from being stored.
    Honor,
}

/// A layer's settings, as `build` checked them, and its run-time [`State`]: what every
/// service, response future, body and invalidator of the layer shares behind one `Arc`.
pub(crate) struct Config {
    pub(crate) store: AnyStore,
    /// `cache_page`'s timeout, or the HTTP-cache mode's bound on how long entries are kept.
    pub(crate) timeout: Duration,
    /// The HTTP-cache mode's rules; `None` in the `cache_page` mode.
    pub(crate) http: Option<HttpRules>,
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) max_body: usize,
    pub(crate) query: QueryOrder,
    pub(crate) request_directives: RequestDirectives,
    pub(crate) store_cookies: bool,
    /// The targeted cache-control fields this cache obeys (RFC 9213), and how far they reach.
    pub(crate) targeted: Targeting,
    pub(crate) patch_headers: bool,
    pub(crate) x_cache: bool,
    pub(crate) name: String,
    pub(crate) compute_etag: bool,
    pub(crate) compress_above: Option<usize>,
    pub(crate) flight_wait: Option<Duration>,
    pub(crate) flight_deadline: Duration,
    pub(crate) flight_max_wait: Duration,
    pub(crate) lock_ttl: Option<Duration>,
    pub(crate) on_store_error: FailurePolicy,
    /// Replaces the answers the cache gives by itself (see [`CacheRefusal`](super::CacheRefusal)).
    pub(crate) refusal: Option<RefusalFn>,
    pub(crate) prefix: String,
    pub(crate) default_scheme: String,
    pub(crate) unkeyed: Vec<HeaderName>,
    /// The proxies whose forwarding headers are keyed rather than refused.
    pub(crate) trusted: Vec<Network>,
    pub(crate) peer: PeerFn,
    pub(crate) hit_for_miss: Duration,
    /// `Cache-Status` of a response from the inner service, by `fwd` reason and whether it
    /// is stored (see `Config::forwarded_status`).
    pub(crate) forwarded_statuses: &'static [[HeaderValue; 2]; 5],
    /// The same with why a response was not stored, unless the layer leaves that out.
    pub(crate) unstored_statuses: Option<&'static super::status::NotStoredStatuses>,
    /// What the layer learns and keeps while it runs.
    pub(crate) state: State,
}

/// What a layer learns and keeps while it runs, in this process: the flights under way, the
/// memos, the namespace generation, and the Vary lists and pieces it saw last. Made empty by
/// `build`.
pub(crate) struct State {
    pub(crate) flights: Arc<Flights>,
    pub(crate) unstorable: UnstorableUrls,
    /// The namespace generation (see `CacheInvalidator::invalidate_all`), and when to reread
    /// it (milliseconds since the Unix epoch).
    pub(crate) generation: AtomicU64,
    pub(crate) generation_due: AtomicU64,
    /// The near cache's count of changes when this layer last looked (see
    /// `recheck_generation`).
    pub(crate) near_changes_seen: AtomicU64,
    /// Until when (milliseconds since the Unix epoch) the store is taken to refuse writes,
    /// after it refused one (out of memory, a read-only replica): misses meanwhile do not
    /// announce `detail=storing` in `Cache-Status`.
    pub(crate) writes_refused_until: AtomicU64,
    /// The heads of entries decoded lately, by their stored bytes: a hit copies the status,
    /// headers and times instead of parsing them again.
    pub(crate) heads: DecodedMemo<Head>,
    /// The pieces of partial responses this process stored last, by their key, for a few
    /// seconds: a store write ends after its response, so the client's next range request
    /// could otherwise read the pieces from before it, and its own write would drop them.
    pub(crate) recent_pieces: RecentPieces,
    /// The learned Vary list per URL, so that a hit costs one round trip.
    pub(crate) vary_lists: moka::sync::Cache<String, Arc<Vec<HeaderName>>>,
}

impl Config {
    /// How long a request arriving now waits on flights.
    pub(crate) fn wait_limits(&self) -> WaitLimits {
        let now = tokio::time::Instant::now();
        WaitLimits {
            silence: self.flight_deadline,
            // bounded at build; a clock near its end waits the deadline alone
            gives_up_at: now
                .checked_add(self.flight_max_wait)
                .unwrap_or(now + self.flight_deadline),
        }
    }

    /// Whether stored entries keep `Set-Cookie`, and hits replay it.
    pub(crate) fn replays_cookies(&self) -> bool {
        self.http.is_some_and(|rules| rules.replay_cookies)
    }
}
