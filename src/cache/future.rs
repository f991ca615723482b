use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::Recorder;
use super::entry::Entry;
use super::flight::{FlightGuard, Role};
use super::layer::Config;
use super::service::{StoreCall, X_CACHE, http_date_after};
use super::{ResponseBody, key, policy};

/// Why a request went to the inner service (RFC 9211 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fwd {
    UriMiss,
    VaryMiss,
    Request,
    Miss,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Self::UriMiss => "uri-miss",
            Self::VaryMiss => "vary-miss",
            Self::Request => "request",
            Self::Miss => "miss",
        }
    }
}

/// A cacheable request on its way through the layer.
pub(crate) struct Ctx<S, ReqBody> {
    pub(crate) inner: S,
    pub(crate) request: Request<ReqBody>,
    pub(crate) url: String,
    pub(crate) store_allowed: bool,
    pub(crate) head: bool,
    pub(crate) config: Arc<Config>,
}

/// Which read a lookup is waiting for.
pub(crate) enum Phase {
    /// The URL's learned Vary list.
    Vary,
    /// The entry for the request's variant.
    Entry {
        vary: Arc<Vec<HeaderName>>,
        key: String,
    },
}

/// What the miss path needs to decide about storing the response.
pub(crate) struct Pending {
    config: Arc<Config>,
    url: String,
    request_headers: HeaderMap,
    fwd: Fwd,
    flight: Option<FlightGuard>,
    store_allowed: bool,
    head: bool,
}

type Wait = Pin<Box<dyn Future<Output = Option<Arc<Entry>>> + Send>>;

pin_project! {
    /// The response future of [`ResponseCache`](super::ResponseCache).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{Service, ServiceBuilder, ServiceExt};
    /// use tower_redis_http::cache::{ResponseCacheLayer, ResponseFuture};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut service = ServiceBuilder::new()
    ///     .layer(ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30)).build()?)
    ///     .service_fn(|_req: http::Request<String>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("hi"))))
    ///     });
    /// let ready = service.ready().await?;
    /// let future: ResponseFuture<_, _> = ready.call(http::Request::new(String::new()));
    /// assert_eq!(future.await?.status(), 200);
    /// # Ok(()) }
    /// ```
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Lookup { call: StoreCall, phase: Option<Phase>, ctx: Option<Ctx<S, ReqBody>> },
        Waiting { wait: Wait, fwd: Fwd, ctx: Option<Ctx<S, ReqBody>> },
        Inner { #[pin] future: S::Future, pending: Option<Pending> },
        Done { response: Option<Response<Bytes>> },
    }
}

impl<S, ReqBody> std::fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Lookup { .. } => "Lookup",
            State::Waiting { .. } => "Waiting",
            State::Inner { .. } => "Inner",
            State::Done { .. } => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn passthrough(future: S::Future) -> Self {
        Self {
            state: State::Inner {
                future,
                pending: None,
            },
        }
    }

    pub(crate) fn lookup_vary(ctx: Ctx<S, ReqBody>, call: StoreCall) -> Self {
        Self {
            state: State::Lookup {
                call,
                phase: Some(Phase::Vary),
                ctx: Some(ctx),
            },
        }
    }

    pub(crate) fn lookup_entry(
        ctx: Ctx<S, ReqBody>,
        call: StoreCall,
        vary: Arc<Vec<HeaderName>>,
        key: String,
    ) -> Self {
        Self {
            state: State::Lookup {
                call,
                phase: Some(Phase::Entry { vary, key }),
                ctx: Some(ctx),
            },
        }
    }

    pub(crate) fn entry_found(
        ctx: Ctx<S, ReqBody>,
        vary: &[HeaderName],
        key: String,
        found: Found,
    ) -> Self {
        Self {
            state: after_entry(ctx, vary, key, found),
        }
    }

    pub(crate) fn hit(response: Response<Bytes>) -> Self {
        Self {
            state: State::Done {
                response: Some(response),
            },
        }
    }

    pub(crate) fn miss(ctx: Ctx<S, ReqBody>, fwd: Fwd, flight_key: Option<String>) -> Self {
        Self {
            state: miss_state(ctx, fwd, flight_key),
        }
    }
}

/// What a lookup of a variant's entry found.
pub(crate) enum Found {
    Fresh(Entry),
    Missing,
    /// Stored under another Vary list, or past its TTL.
    Outdated,
    Unreadable(super::entry::EntryError),
}

impl Found {
    pub(crate) fn read(stored: Option<Bytes>, vary: &[HeaderName]) -> Self {
        let Some(stored) = stored else {
            return Self::Missing;
        };
        match Entry::decode(&stored) {
            Ok(entry) if entry.vary == vary && entry.ttl > entry_age(&entry) => Self::Fresh(entry),
            Ok(_) => Self::Outdated,
            Err(err) => Self::Unreadable(err),
        }
    }
}

/// Where a request goes once its variant's entry was looked up under `key`.
fn after_entry<S, ReqBody>(
    ctx: Ctx<S, ReqBody>,
    vary: &[HeaderName],
    key: String,
    found: Found,
) -> State<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    let config = Arc::clone(&ctx.config);
    match found {
        Found::Fresh(entry) => State::Done {
            response: Some(config.serve(entry, ctx.request.headers(), ctx.head)),
        },
        Found::Missing => {
            let fwd = if vary.is_empty() {
                Fwd::UriMiss
            } else {
                Fwd::VaryMiss
            };
            miss_state(ctx, fwd, Some(key))
        }
        Found::Outdated => {
            config.vary_lists.invalidate(&ctx.url);
            miss_state(ctx, Fwd::VaryMiss, Some(key))
        }
        Found::Unreadable(err) => {
            tracing::warn!(key = %key, error = %crate::failure::ErrorChain(&err), "unreadable cache entry; deleting it");
            config.discard(key.clone());
            miss_state(ctx, Fwd::UriMiss, Some(key))
        }
    }
}

/// The miss path: join the single flight when storing is possible, else call the handler.
fn miss_state<S, ReqBody>(
    ctx: Ctx<S, ReqBody>,
    fwd: Fwd,
    flight_key: Option<String>,
) -> State<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    let flight = match (&ctx.config.flight_wait, flight_key) {
        (Some(wait), Some(key)) if ctx.store_allowed && !ctx.head => {
            match ctx.config.flights.join(&key) {
                Role::Leader(guard) => Some(guard),
                Role::Follower(waiter) => {
                    return State::Waiting {
                        wait: Box::pin(waiter.wait(*wait)),
                        fwd,
                        ctx: Some(ctx),
                    };
                }
            }
        }
        _ => None,
    };
    call_inner(ctx, fwd, flight)
}

fn call_inner<S, ReqBody>(
    mut ctx: Ctx<S, ReqBody>,
    fwd: Fwd,
    flight: Option<FlightGuard>,
) -> State<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    // the varied request headers are only known from the response: keep them for the key
    let request_headers = if ctx.store_allowed && !ctx.head {
        ctx.request.headers().clone()
    } else {
        HeaderMap::new()
    };
    let future = ctx.inner.call(ctx.request);
    State::Inner {
        future,
        pending: Some(Pending {
            config: ctx.config,
            url: ctx.url,
            request_headers,
            fwd,
            flight,
            store_allowed: ctx.store_allowed,
            head: ctx.head,
        }),
    }
}

impl Pending {
    /// Adds the miss's `Cache-Status`, and a recorder when the response is to be stored.
    fn decide(self, parts: &mut http::response::Parts, body_len: Option<u64>) -> Option<Recorder> {
        let config = Arc::clone(&self.config);
        let fwd = self.fwd;
        let recorder = self.recorder(parts, body_len);
        let stored = if recorder.is_some() && body_len.is_some() {
            "; stored"
        } else {
            ""
        };
        config.cache_status(&mut parts.headers, &format!("fwd={}{stored}", fwd.as_str()));
        if config.x_cache {
            parts
                .headers
                .insert(X_CACHE, HeaderValue::from_static("MISS"));
        }
        recorder
    }

    fn recorder(
        self,
        parts: &mut http::response::Parts,
        body_len: Option<u64>,
    ) -> Option<Recorder> {
        let config = &self.config;
        if !self.store_allowed || self.head || !config.statuses.contains(&parts.status) {
            return None;
        }
        if body_len.is_some_and(|len| len > config.max_body as u64) {
            return None;
        }
        let facts = policy::RequestFacts {
            has_authorization: self.request_headers.contains_key(header::AUTHORIZATION),
        };
        let ttl =
            match policy::storable(facts, &parts.headers, config.timeout, config.store_cookies) {
                Ok(ttl) => ttl,
                Err(reason) => {
                    tracing::debug!(?reason, "response not stored");
                    return None;
                }
            };
        let vary = policy::vary(&parts.headers).ok()?;
        if config.patch_headers {
            patch_response_headers(&mut parts.headers, ttl);
        }
        let mut stored_headers = parts.headers.clone();
        policy::strip_unstorable(&mut stored_headers);
        let variant = key::variant_hash(&vary, &self.request_headers);
        config
            .vary_lists
            .insert(self.url.clone(), Arc::new(vary.clone()));
        Some(Recorder {
            chunks: Vec::new(),
            len: 0,
            limit: config.max_body,
            status: parts.status,
            headers: stored_headers,
            entry_key: key::entry_key(&config.prefix, &self.url, &variant),
            vary_key: key::vary_key(&config.prefix, &self.url),
            vary,
            variant: variant.into_owned(),
            ttl,
            store: config.store.clone(),
            compute_etag: config.compute_etag,
            compress_above: config.compress_above,
            flight: self.flight,
        })
    }
}

/// Django's `patch_response_headers`: `max-age` no longer than `ttl`, `Expires` if absent.
fn patch_response_headers(headers: &mut HeaderMap, ttl: std::time::Duration) {
    let existing = policy::cache_control(headers).max_age;
    let max_age = existing.map_or(ttl.as_secs(), |m| m.min(ttl.as_secs()));
    let others: Vec<String> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            v.split(',')
                .map(|d| d.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty() && !d.to_ascii_lowercase().starts_with("max-age"))
        .collect();
    let mut value = others.join(", ");
    if !value.is_empty() {
        value.push_str(", ");
    }
    value.push_str(&format!("max-age={max_age}"));
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    if !headers.contains_key(header::EXPIRES)
        && let Some(expires) = http_date_after(ttl)
    {
        headers.insert(header::EXPIRES, expires);
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Lookup { call, phase, ctx } => {
                    let found = ready!(call.as_mut().poll(cx));
                    let ctx = ctx.take().expect("a lookup is polled until it moves on");
                    let phase = phase.take().expect("a lookup has a phase");
                    let config = Arc::clone(&ctx.config);
                    let found = match found {
                        Ok(found) => found,
                        Err(err) if config.on_store_error.handle("cache", &err) => {
                            state.set(call_inner(ctx, Fwd::Miss, None));
                            continue;
                        }
                        Err(_) => {
                            state.set(State::Done {
                                response: Some(config.unavailable()),
                            });
                            continue;
                        }
                    };
                    let next = match (phase, found) {
                        (Phase::Vary, None) => {
                            let flight_key = key::entry_key(&config.prefix, &ctx.url, "-");
                            miss_state(ctx, Fwd::UriMiss, Some(flight_key))
                        }
                        (Phase::Vary, Some(list)) => match key::decode_vary(&list) {
                            Some(vary) => {
                                let vary = Arc::new(vary);
                                config.vary_lists.insert(ctx.url.clone(), Arc::clone(&vary));
                                let variant = key::variant_hash(&vary, ctx.request.headers());
                                let key = key::entry_key(&config.prefix, &ctx.url, &variant);
                                State::Lookup {
                                    call: config.fetch(key.clone()),
                                    phase: Some(Phase::Entry { vary, key }),
                                    ctx: Some(ctx),
                                }
                            }
                            None => {
                                tracing::warn!(url = %ctx.url, "stored Vary list is unreadable; treating as a miss");
                                config.discard(key::vary_key(&config.prefix, &ctx.url));
                                let flight_key = key::entry_key(&config.prefix, &ctx.url, "-");
                                miss_state(ctx, Fwd::UriMiss, Some(flight_key))
                            }
                        },
                        (Phase::Entry { vary, key }, stored) => {
                            let found = Found::read(stored, &vary);
                            after_entry(ctx, &vary, key, found)
                        }
                    };
                    state.set(next);
                }
                StateProj::Waiting { wait, fwd, ctx } => {
                    let shared = ready!(wait.as_mut().poll(cx));
                    let ctx = ctx.take().expect("a wait is polled until it moves on");
                    let next = match shared {
                        // the leader's request may have differed in the headers it varies on
                        Some(entry)
                            if key::variant_hash(&entry.vary, ctx.request.headers())
                                == entry.variant =>
                        {
                            State::Done {
                                response: Some(ctx.config.serve(
                                    Entry::clone(&entry),
                                    ctx.request.headers(),
                                    ctx.head,
                                )),
                            }
                        }
                        _ => call_inner(ctx, *fwd, None),
                    };
                    state.set(next);
                }
                StateProj::Inner { future, pending } => {
                    let response = ready!(future.poll(cx))?;
                    let Some(pending) = pending.take() else {
                        return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                    };
                    let (mut parts, body) = response.into_parts();
                    let recorder = pending.decide(&mut parts, body.size_hint().exact());
                    let body = match recorder {
                        Some(recorder) => ResponseBody::recording(body, recorder),
                        None => ResponseBody::inner(body),
                    };
                    return Poll::Ready(Ok(Response::from_parts(parts, body)));
                }
                StateProj::Done { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::cached)));
                }
            }
        }
    }
}

fn entry_age(entry: &Entry) -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(entry.stored_at)
        .unwrap_or_default()
}
