//! The cache's service: where a request starts, and the paths decided in `call`
//! (pass-through, memory-store hits, the unstorable-URL memo, misses that need no lookup).

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderName;
use http::{Method, Request, Response};
use tower_service::Service;

use super::answer::Served;
use super::config::Config;
use super::flow::{Start, flow};
use super::future::ResponseFuture;
use super::origin::Pending;
use super::policy::Verdict;
use super::request::{Ctx, Found, Miss, Plan, Url};
use super::status::Fwd;
use super::{invalidate, key};
use crate::store::{Backend, Store};

/// The service [`ResponseCacheLayer`](super::ResponseCacheLayer) wraps around an inner
/// service.
///
/// The inner service, its future, and the request and response bodies must be `Send +
/// 'static` (as in any `axum`, `hyper` or `warp` server): a `stale-while-revalidate` refresh
/// runs in a task of its own.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_redis_http::cache::ResponseCacheLayer;
/// use tower_redis_http::store::MemoryStore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let service = ServiceBuilder::new()
///     .layer(ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30)).build()?)
///     .service_fn(|_req: http::Request<String>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("hi"))))
///     });
/// let response = service.oneshot(http::Request::new(String::new())).await?;
/// assert!(response.headers().contains_key("cache-status"));
/// # Ok(()) }
/// ```
pub struct ResponseCache<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> ResponseCache<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::Layer;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(1)).build()?.layer(7);
    /// assert_eq!(*cache.get_ref(), 7);
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::Layer;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let mut cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(1)).build()?.layer(7);
    /// *cache.get_mut() = 8;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::Layer;
    /// use tower_redis_http::cache::ResponseCacheLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let cache = ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(1)).build()?.layer(7);
    /// assert_eq!(cache.into_inner(), 7);
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for ResponseCache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for ResponseCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ResponseCache<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: http_body::Body + Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<super::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let span = crate::observe::span("cache");
        let _in_span = span.enter();
        let head = request.method() == Method::HEAD;
        if request.method() != Method::GET && !head {
            return self.not_cacheable(request);
        }
        let forwarded = self
            .config
            .comes_through_trusted_proxy(request.extensions());
        let parts = self.config.url_parts(&request, forwarded);
        let credentialed = super::request::credentialed(&request);
        // the identity is worth computing here only when the memo holds any URL; a request
        // that goes on to a miss computes it below
        let remembered_id = self
            .config
            .state
            .unstorable
            .holds_any(credentialed)
            .then(|| self.config.state.unstorable.identity(&parts))
            .filter(|&url_id| self.config.state.unstorable.remembers(url_id, credentialed));
        let remembered = remembered_id.is_some();
        // nothing stored and the last answer unstorable: seven requests in eight pass with
        // only `Cache-Status` added, before the request's directives are even read (a
        // request that has some takes the checked path below)
        if remembered
            && !self.config.reads_directives(request.headers())
            && !self.config.state.unstorable.rechecks()
        {
            crate::observe::cache("miss");
            crate::observe::cache_not_stored("remembered");
            let status = self.config.forwarded_status(Fwd::UriMiss, false);
            return ResponseFuture::passed(self.inner.call(request), status, self.config.x_cache);
        }
        self.config.recheck_generation();
        let plan = self.config.plan(&request, forwarded);
        if let Some(url_id) = remembered_id
            && plan.lookup
        {
            // no lookup, no flight, no key: the answer is checked for storability
            return self.forward_remembered(request, url_id, &plan, head);
        }
        let url = parts.key();
        let prefix = self.config.prefix();
        // a known Vary list gives the entry's variant up front, computed once for either store
        let known = self
            .config
            .state
            .vary_lists
            .get(&url)
            .filter(|_| plan.lookup)
            .map(|vary| {
                let variant = key::variant_hash(&vary, request.headers());
                (vary, variant)
            });
        // the memory store answers at once: a hit needs neither the inner service nor a future
        let mut found_now = None;
        if let Some((vary, variant)) = &known
            && let Some(found) = self.read_now(&prefix, &url, variant, vary)
        {
            match found {
                Found::Entry(entry)
                    if matches!(
                        self.config.verdict(&entry, &plan.rules),
                        Verdict::Fresh | Verdict::StaleAccepted
                    ) =>
                {
                    let response = self
                        .config
                        .serve(entry, request.headers(), head, Served::Hit);
                    return ResponseFuture::hit(response);
                }
                other => found_now = Some(other),
            }
        }
        let url_id = remembered_id.unwrap_or_else(|| self.config.state.unstorable.identity(&parts));
        drop(parts);
        // clone-and-swap: the future gets the service that was polled ready
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let ctx = Ctx {
            ranged: !head && super::request::asks_ranges(request.headers()),
            credentialed,
            inner,
            request,
            url,
            url_id,
            store_allowed: plan.store,
            head,
            rules: plan.rules,
            config: Arc::clone(&self.config),
        };
        let start = self.flow_start(plan.lookup, known, found_now, &prefix, &ctx.url);
        ResponseFuture::flowing(Box::pin(tracing::Instrument::instrument(
            flow::<S, ReqBody, ResBody>(ctx, start),
            span.clone(),
        )))
    }
}

impl<S> ResponseCache<S> {
    /// A request other than GET and HEAD: passed through, and when it is unsafe, what its
    /// success changes is invalidated (RFC 9111 §4.4).
    fn not_cacheable<ReqBody>(&mut self, request: Request<ReqBody>) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        if !invalidate::invalidates(request.method()) {
            return ResponseFuture::passthrough(self.inner.call(request));
        }
        let target = request.uri().clone();
        let headers = request.headers().clone();
        let forwarded = self
            .config
            .comes_through_trusted_proxy(request.extensions());
        let future = self.inner.call(request);
        ResponseFuture::invalidating(future, Arc::clone(&self.config), target, headers, forwarded)
    }

    /// A request for a URL remembered as unstorable whose answer is checked: straight to the
    /// inner service, called here (no clone of it kept), without its key or headers.
    fn forward_remembered<ReqBody>(
        &mut self,
        request: Request<ReqBody>,
        url_id: u64,
        plan: &Plan,
        head: bool,
    ) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        if plan.rules.only_if_cached {
            return ResponseFuture::hit(self.config.gateway_timeout());
        }
        let miss = Miss {
            fwd: Fwd::UriMiss,
            store_allowed: plan.store,
            head,
            remembered_unstorable: true,
            ranged: false,
            credentialed: super::request::credentialed(&request),
        };
        let url = Url {
            key: String::new(),
            id: url_id,
        };
        let pending = Pending::new(Arc::clone(&self.config), url, request.headers(), miss, None);
        ResponseFuture::forwarded(self.inner.call(request), pending)
    }
}

impl<S> ResponseCache<S> {
    /// Where the flow of a request not answered within `call` starts: the miss when it may
    /// not look anything up, the read entry or the lookup when its Vary list is `known`, and
    /// else the lookup of the list (or the miss, when the memory store has none).
    fn flow_start(
        &self,
        lookup: bool,
        known: Option<(Arc<Vec<HeaderName>>, std::borrow::Cow<'static, str>)>,
        found_now: Option<Found>,
        prefix: &str,
        url: &str,
    ) -> Start {
        if !lookup {
            return Start::Miss {
                fwd: Fwd::Request,
                flight_key: None,
            };
        }
        match known {
            Some((vary, variant)) => {
                let key = key::entry_key(prefix, url, &variant);
                match found_now {
                    Some(found) => Start::Found { vary, key, found },
                    None => Start::Lookup {
                        known: Some((vary, key)),
                    },
                }
            }
            // the memory store tells at once that the URL has no Vary list (a URL never
            // stored, or not storable): a miss without a lookup
            None if self.has_no_vary_list_now(prefix, url) => Start::Miss {
                fwd: Fwd::UriMiss,
                flight_key: Some(key::entry_key(prefix, url, "-")),
            },
            None => Start::Lookup { known: None },
        }
    }

    /// The variant's entry, read at once from a store that answers at once (the memory
    /// store) or from a Redis store's near cache; `None` when that needs a round trip.
    fn read_now(
        &self,
        prefix: &str,
        url: &str,
        variant: &str,
        vary: &[HeaderName],
    ) -> Option<Found> {
        let store = &self.config.store;
        if !store.answers_at_once() && !store.has_near_cache() {
            return None;
        }
        let full_key = store
            .key_scheme()
            .make_joined(&[prefix, "{", url, "}:", variant])
            .ok()?;
        // a failure takes the path that handles it by the layer's policy
        let stored = store.get_now(&full_key)?.ok()?;
        Some(Found::read(stored, vary, &self.config.state.heads))
    }

    /// Whether a store that answers at once holds no Vary list for `url`: a URL never stored.
    fn has_no_vary_list_now(&self, prefix: &str, url: &str) -> bool {
        let store = &self.config.store;
        store.answers_at_once()
            && store
                .key_scheme()
                .make_joined(&[prefix, "{", url, "}:vary"])
                .is_ok_and(|full_key| {
                    matches!(store.now(|store| store.get_full(&full_key)), Some(Ok(None)))
                })
    }
}
