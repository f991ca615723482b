use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower_service::Service;

use super::entry::Entry;
use super::flight::StoreLock;
use super::future::{Ctx, Found, Fwd, Miss, Pending, ResponseFuture, Url};
use super::layer::{self, CacheRefusal, Config, RequestDirectives};
use super::policy::{RequestRules, Verdict};
use super::{invalidate, key, policy};
use crate::store::{CacheWrite, Store, StoreError, StoreErrorKind};

pub(crate) type StoreCall = Pin<Box<dyn Future<Output = Result<Option<Bytes>, StoreError>> + Send>>;

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

/// How long a store that refused a write is taken to refuse the next ones.
const WRITES_REFUSED_FOR_MS: u64 = 1_000;

/// Milliseconds since the Unix epoch: the clock the layer's shared deadlines are kept in.
pub(crate) fn unix_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

impl Config {
    /// The store call that fetches `key`.
    pub(crate) fn fetch(self: &Arc<Self>, key: String) -> StoreCall {
        let config = Arc::clone(self);
        Box::pin(async move { config.store.get(&key).await })
    }

    /// Stores `entry` (and the URL's Vary list) in the background: a response need not wait
    /// for it.
    pub(crate) fn put(self: &Arc<Self>, entry: Arc<Entry>, url: &str, lock: Option<StoreLock>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no Tokio runtime to store a cache entry in; not stored");
            return;
        };
        let prefix = self.prefix();
        let entry_key = key::entry_key(&prefix, url, &entry.variant);
        let vary_key = key::vary_key(&prefix, url);
        let index_key = key::index_key(&prefix, url);
        let config = Arc::clone(self);
        let url = url.to_owned();
        // the write releases the lock in the same atomic step: no instance sees it free
        // before the entry is there
        let unlock = lock.map(StoreLock::released_by_write);
        runtime.spawn(async move {
            // encoded (and compressed) here rather than in the response body's last poll
            let written = config
                .store
                .cache_put(&CacheWrite {
                    entry_key: &entry_key,
                    entry: entry.encode(config.compress_above),
                    vary_key: &vary_key,
                    vary: Bytes::from(key::encode_vary(&entry.vary)),
                    index_key: &index_key,
                    ttl: entry.keep,
                    unlock: unlock.as_ref().map(|(key, owner)| (key.as_str(), &**owner)),
                })
                .await;
            if let Err(err) = written {
                if matches!(
                    err.kind(),
                    StoreErrorKind::CapacityExceeded | StoreErrorKind::Server
                ) {
                    config
                        .writes_refused_until
                        .store(unix_ms() + WRITES_REFUSED_FOR_MS, Ordering::Relaxed);
                }
                tracing::warn!(
                    layer = "cache",
                    url = %url,
                    error = %crate::failure::ErrorChain(&err),
                    "cache entry not stored, though its response announced it"
                );
            }
        });
    }

    /// Whether a store write failed as refused within the last second: `Cache-Status` then
    /// does not announce `stored` for a write that is likely to fail as well.
    pub(crate) fn writes_refused(&self) -> bool {
        let until = self.writes_refused_until.load(Ordering::Relaxed);
        until != 0 && unix_ms() < until
    }

    /// Tells the other instances sharing the store that `key`'s answer could not be stored,
    /// in the background: their leaders then skip the lock instead of waiting on it. A memory
    /// store is this process's own, where the flights' memo is enough.
    pub(crate) fn remember_uncacheable(self: &Arc<Self>, key: &str) {
        if self.store.answers_at_once() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let config = Arc::clone(self);
        let memo = crate::store::hit_for_miss_key(key);
        runtime.spawn(async move {
            let written = config
                .store
                .set(
                    &memo,
                    Bytes::from_static(b"1"),
                    crate::store::Expiry::After(config.hit_for_miss),
                )
                .await;
            if let Err(err) = written {
                tracing::debug!(error = %err, "hit-for-miss memo not stored");
            }
        });
    }

    /// Deletes an entry that could not be read, in the background.
    pub(crate) fn discard(self: &Arc<Self>, key: String) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let config = Arc::clone(self);
            runtime.spawn(async move {
                let _ = config.store.delete(&key).await;
            });
        }
    }

    /// A response from `entry` (a hit, a shared single-flight result, a revalidated or a
    /// stale entry), or 304 when the request's validators match. Takes the entry by value so
    /// a hit moves its headers and body instead of copying them.
    pub(crate) fn serve(
        &self,
        entry: Entry,
        request: &HeaderMap,
        head: bool,
        served: Served,
    ) -> Response<Bytes> {
        let age = entry.age(SystemTime::now());
        let ttl_left = i128::from(entry.freshness.as_secs()) - i128::from(age.as_secs());

        let mut response = if not_modified(request, &entry.headers) {
            let mut response = Response::new(Bytes::new());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            // RFC 9110 §15.4.5: what a 304 carries
            for name in [
                header::CACHE_CONTROL,
                header::CONTENT_LOCATION,
                header::DATE,
                header::ETAG,
                header::EXPIRES,
                header::LAST_MODIFIED,
                header::VARY,
            ] {
                for value in entry.headers.get_all(&name) {
                    response.headers_mut().append(name.clone(), value.clone());
                }
            }
            response
        } else {
            let body = if head { Bytes::new() } else { entry.body };
            let mut response = Response::new(body);
            *response.status_mut() = entry.status;
            *response.headers_mut() = entry.headers;
            response
        };
        let headers = response.headers_mut();
        // RFC 9111 §5.1: the current age, replacing any Age the entry held
        headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
        self.cache_status_served(headers, served, ttl_left);
        if self.x_cache {
            headers.insert(
                X_CACHE,
                HeaderValue::from_static(if served == Served::Hit { "HIT" } else { "MISS" }),
            );
        }
        response
    }

    /// Appends this cache's member to `Cache-Status` (RFC 9211 §2: the cache nearest the
    /// client comes last).
    pub(crate) fn cache_status(&self, headers: &mut HeaderMap, params: &str) {
        if let Ok(value) = HeaderValue::from_str(&format!("{}; {params}", self.name)) {
            headers.append(CACHE_STATUS, value);
        }
    }

    /// `Cache-Status` for a response from the inner service, `<name>; fwd=<why>[; stored]`:
    /// built once with the layer, as it is on every miss.
    pub(crate) fn forwarded_status(&self, fwd: Fwd, stored: bool) -> HeaderValue {
        self.forwarded_statuses[fwd.index()][usize::from(stored)].clone()
    }

    /// `Cache-Status` for a response from an entry, built without the formatting machinery:
    /// it is on every hit. `ttl` is negative once the entry is stale (RFC 9211 §2.5).
    fn cache_status_served(&self, headers: &mut HeaderMap, served: Served, ttl_left: i128) {
        let mut value = String::with_capacity(self.name.len() + 48);
        value.push_str(&self.name);
        match served {
            Served::Hit => value.push_str("; hit"),
            Served::Revalidated => value.push_str("; fwd=stale; fwd-status=304"),
            Served::StaleOnError(Some(status)) => {
                value.push_str("; fwd=stale; fwd-status=");
                value.push_str(status.as_str());
            }
            Served::StaleOnError(None) => value.push_str("; fwd=stale"),
        }
        value.push_str("; ttl=");
        value.push_str(itoa::Buffer::new().format(ttl_left));
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
            headers.append(CACHE_STATUS, value);
        }
    }

    /// The answer the cache gives by itself for `refusal`: the configured one, or the
    /// default.
    fn refuse(&self, refusal: CacheRefusal) -> Response<Bytes> {
        match &self.refusal {
            Some(respond) => respond(&refusal),
            None => refusal.response(),
        }
    }

    /// RFC 9111 §5.2.1.7: `only-if-cached` and nothing usable stored.
    pub(crate) fn gateway_timeout(&self) -> Response<Bytes> {
        let mut response = self.refuse(CacheRefusal::OnlyIfCached);
        self.cache_status(response.headers_mut(), "fwd=miss; detail=only-if-cached");
        response
    }

    /// The store failed and the layer fails closed.
    pub(crate) fn unavailable(&self) -> Response<Bytes> {
        self.refuse(CacheRefusal::StoreUnavailable)
    }

    /// Where a cacheable request starts: what may be looked up and stored, and what the
    /// request asks of a stored entry.
    /// Whether the request comes straight from a trusted proxy, whose forwarding headers are
    /// then keyed instead of refused.
    pub(crate) fn comes_through_trusted_proxy(&self, extensions: &http::Extensions) -> bool {
        !self.trusted.is_empty()
            && (self.peer)(extensions)
                .is_some_and(|peer| crate::peer::is_trusted(&self.trusted, peer))
    }

    fn plan<B: http_body::Body>(&self, request: &Request<B>, forwarded: bool) -> Plan {
        let (mut lookup, mut store, mut rules) = (true, true, RequestRules::default());
        if self.request_directives == RequestDirectives::Honor {
            let cc = policy::cache_control(request.headers());
            // RFC 9111 §5.4: Pragma counts only without Cache-Control
            let pragma_no_cache = !request.headers().contains_key(header::CACHE_CONTROL)
                && request
                    .headers()
                    .get(header::PRAGMA)
                    .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"no-cache"));
            if self.http.is_some() {
                rules = RequestRules {
                    no_cache: cc.no_cache || pragma_no_cache,
                    max_age: cc.max_age,
                    max_stale: cc.max_stale,
                    min_fresh: cc.min_fresh,
                    only_if_cached: cc.only_if_cached,
                };
            } else {
                lookup = !(cc.no_cache || cc.max_age == Some(0) || pragma_no_cache);
            }
            store = !cc.no_store;
        }
        // one pass over the request's fields: cheaper than hashing each unkeyed name into the
        // map, and requests carry few headers
        if request.headers().iter().any(|(name, value)| {
            (self.unkeyed.contains(name)
                && !(forwarded && layer::FORWARDING.contains(&name.as_str())))
                || announces_body(name, value)
        }) || carries_body_without_length(request)
        {
            store = false;
        }
        Plan {
            lookup,
            store,
            rules,
        }
    }

    /// What `entry` may do for a request with `rules`.
    pub(crate) fn verdict(&self, entry: &Entry, rules: &RequestRules) -> Verdict {
        policy::verdict(
            entry.age(SystemTime::now()),
            entry.freshness,
            &entry.reuse,
            rules,
        )
    }
}

/// How a response from an entry came about, for `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// From the store without asking the inner service.
    Hit,
    /// The inner service answered 304 to a conditional request.
    Revalidated,
    /// The inner service failed (with this status, or an error): stale copy served.
    StaleOnError(Option<StatusCode>),
}

pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

struct Plan {
    lookup: bool,
    store: bool,
    rules: RequestRules,
}

/// Whether a request field announces a body: a `Transfer-Encoding`, or a `Content-Length`
/// other than 0 (RFC 9112 §6.3). A body on a `GET` or `HEAD` is not in the key, so its answer
/// is never stored ("fat GET" poisoning); an unreadable length counts as a body.
fn announces_body(name: &HeaderName, value: &HeaderValue) -> bool {
    *name == header::TRANSFER_ENCODING
        || (*name == header::CONTENT_LENGTH && value.as_bytes().iter().any(|&b| b != b'0'))
}

/// Whether an HTTP/2 or HTTP/3 request carries a body it announced no length for: DATA
/// frames need no `Content-Length` there, so the framing headers do not tell. HTTP/1 bodies
/// are always framed by a header ([`announces_body`]), so only later versions ask the body,
/// and a body type that cannot tell it has ended (one keeping `http_body::Body`'s default
/// `is_end_stream`, as some wrappers do) counts as carrying one: not storing is the safe side.
fn carries_body_without_length<B: http_body::Body>(request: &Request<B>) -> bool {
    matches!(
        request.version(),
        http::Version::HTTP_2 | http::Version::HTTP_3
    ) && !request.body().is_end_stream()
}

/// RFC 9110 §13.1.2 and §13.1.3: `If-None-Match` (weak comparison) wins over
/// `If-Modified-Since`.
fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut conditions = request.get_all(header::IF_NONE_MATCH).iter().peekable();
    if conditions.peek().is_some() {
        let etag = stored.get(header::ETAG).and_then(|e| e.to_str().ok());
        let Some(etag) = etag else {
            return false;
        };
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
        let ours = opaque(etag);
        return conditions
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|candidate| candidate.trim() == "*" || opaque(candidate) == ours);
    }
    let Some(since) = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok())
    else {
        return false;
    };
    let modified = stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok());
    modified.is_some_and(|modified| modified <= since)
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
        let head = request.method() == Method::HEAD;
        if request.method() != Method::GET && !head {
            if invalidate::invalidates(request.method()) {
                let target = request.uri().clone();
                let headers = request.headers().clone();
                let forwarded = self
                    .config
                    .comes_through_trusted_proxy(request.extensions());
                let future = self.inner.call(request);
                return ResponseFuture::invalidating(
                    future,
                    Arc::clone(&self.config),
                    target,
                    headers,
                    forwarded,
                );
            }
            return ResponseFuture::passthrough(self.inner.call(request));
        }
        self.config.recheck_generation();
        let prefix = self.config.prefix();
        let forwarded = self
            .config
            .comes_through_trusted_proxy(request.extensions());
        let plan = self.config.plan(&request, forwarded);
        let parts = key::url_parts(
            request.uri(),
            request.headers(),
            &self.config.default_scheme,
            self.config.query,
            forwarded,
        );
        let url_id = self.config.unstorable.identity(&parts);
        let credentialed = request.headers().contains_key(header::AUTHORIZATION);
        if plan.lookup && self.config.unstorable.remembers(url_id, credentialed) {
            // nothing stored and the last answer unstorable: no lookup, no flight, no key
            drop(parts);
            if plan.rules.only_if_cached {
                return ResponseFuture::hit(self.config.gateway_timeout());
            }
            let miss = Miss {
                fwd: Fwd::UriMiss,
                store_allowed: plan.store,
                head,
                remembered_unstorable: true,
            };
            let url = Url {
                key: String::new(),
                id: url_id,
            };
            let pending =
                Pending::new(Arc::clone(&self.config), url, request.headers(), miss, None);
            return ResponseFuture::forwarded(self.inner.call(request), pending);
        }
        let url = parts.key();
        drop(parts);
        // a known Vary list gives the entry's variant up front, computed once for either store
        let known = self
            .config
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
            && self.config.store.answers_at_once()
            && let Ok(full_key) = self
                .config
                .store
                .key_scheme()
                .make_joined(&[&prefix, "{", &url, "}:", variant])
            && let Some(stored) = self.config.store.get_now(&full_key)
        {
            match Found::read(stored, vary) {
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
        // clone-and-swap: the future gets the service that was polled ready
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let ctx = Ctx {
            inner,
            request,
            url,
            url_id,
            store_allowed: plan.store,
            head,
            rules: plan.rules,
            config: Arc::clone(&self.config),
            detach: refresh_detached::<S, ReqBody, ResBody>,
        };
        if !plan.lookup {
            return ResponseFuture::miss(ctx, Fwd::Request, None);
        }
        match known {
            Some((vary, variant)) => {
                let entry_key = key::entry_key(&prefix, &ctx.url, &variant);
                if let Some(found) = found_now {
                    return ResponseFuture::entry_found(ctx, &vary, entry_key, found);
                }
                let call = self.config.fetch(entry_key.clone());
                ResponseFuture::lookup_entry(ctx, call, vary, entry_key)
            }
            None => {
                // the memory store tells at once that the URL has no Vary list (a URL never
                // stored, or not storable): a miss without a boxed lookup
                if self.config.store.answers_at_once()
                    && let Ok(full_key) = self
                        .config
                        .store
                        .key_scheme()
                        .make_joined(&[&prefix, "{", &ctx.url, "}:vary"])
                    && let Some(None) = self.config.store.get_now(&full_key)
                {
                    let flight_key = key::entry_key(&prefix, &ctx.url, "-");
                    return ResponseFuture::miss(ctx, Fwd::UriMiss, Some(flight_key));
                }
                let call = self.config.fetch(key::vary_key(&prefix, &ctx.url));
                ResponseFuture::lookup_vary(ctx, call)
            }
        }
    }
}

/// Drives a stale entry's refresh to its end (a store, when its answer is storable, happens
/// once the body has gone by) while the client that found the entry stale is already served.
fn refresh_detached<S, ReqBody, ResBody>(
    runtime: &tokio::runtime::Handle,
    refresh: ResponseFuture<S, ReqBody>,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
{
    runtime.spawn(async move {
        let Ok(response) = refresh.await else {
            // the stale copy stays until the next request tries again
            tracing::debug!("the inner service failed a background refresh");
            return;
        };
        let mut body = std::pin::pin!(response.into_body());
        while let Some(frame) =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await
        {
            if frame.is_err() {
                tracing::debug!("the body of a background refresh failed; not stored");
                break;
            }
        }
    });
}

/// `time` as an HTTP date (`Date`, `Expires`).
pub(crate) fn http_date(time: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(time)).expect("an HTTP date is a valid value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    #[test]
    fn conditional_requests_follow_rfc_9110() {
        let stored = map(&[
            ("etag", "\"v1\""),
            ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]);
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("if-none-match", "\"v1\"")], true),
            (&[("if-none-match", "W/\"v1\"")], true),
            (&[("if-none-match", "\"v0\", \"v1\"")], true),
            (&[("if-none-match", "*")], true),
            (&[("if-none-match", "\"v2\"")], false),
            // If-None-Match wins over If-Modified-Since
            (
                &[
                    ("if-none-match", "\"v2\""),
                    ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ],
                false,
            ),
            (
                &[("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")],
                true,
            ),
            (
                &[("if-modified-since", "Thu, 22 Oct 2015 07:28:00 GMT")],
                true,
            ),
            (
                &[("if-modified-since", "Tue, 20 Oct 2015 07:28:00 GMT")],
                false,
            ),
            (&[("if-modified-since", "not a date")], false),
            (&[], false),
        ];
        for (request, expected) in cases {
            assert_eq!(
                not_modified(&map(request), &stored),
                *expected,
                "{request:?}"
            );
        }
        assert!(!not_modified(
            &map(&[("if-none-match", "*")]),
            &HeaderMap::new()
        ));
    }
}
