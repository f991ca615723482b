use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower_service::Service;

use super::future::ResponseFuture;
use super::key::RequestHead;
use super::layer::{Config, LimitedResponse, MissingKey};
use crate::body::ResponseBody;
use crate::store::{AnyStore, RateDecision, RatePolicy, Store, StoreError};

/// One hit a rule counted.
pub(crate) struct Counted {
    pub(crate) rule: usize,
    pub(crate) key: String,
    pub(crate) decision: RateDecision,
}

/// What checking the rules found.
pub(crate) enum Outcome {
    Allowed(Vec<Counted>),
    Denied { rule: usize, decision: RateDecision },
}

pub(crate) type Check = Pin<Box<dyn Future<Output = Result<Outcome, StoreError>> + Send>>;

/// The service [`RateLimitLayer`](super::RateLimitLayer) wraps around an inner service.
///
/// # Example
///
/// ```
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
/// use tower_redis_http::store::MemoryStore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let service = ServiceBuilder::new()
///     .layer(RateLimitLayer::builder(MemoryStore::new()).rule(Rule::fixed_window("all", "1/m", Key::global())).build()?)
///     .service_fn(|_req: http::Request<String>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("ok"))))
///     });
/// assert_eq!(service.clone().oneshot(http::Request::new(String::new())).await?.status(), 200);
/// assert_eq!(service.oneshot(http::Request::new(String::new())).await?.status(), 429);
/// # Ok(()) }
/// ```
pub struct RateLimit<S, R> {
    inner: S,
    config: Arc<Config>,
    rejection: R,
}

impl<S, R> RateLimit<S, R> {
    pub(crate) fn new(inner: S, config: Arc<Config>, rejection: R) -> Self {
        Self {
            inner,
            config,
            rejection,
        }
    }

    /// The inner service.
    ///
    /// # Example
    ///
    /// ```
    /// use tower::Layer;
    /// use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let limit = RateLimitLayer::builder(MemoryStore::new()).rule(Rule::fixed_window("a", "1/m", Key::global())).build()?.layer(7);
    /// assert_eq!(*limit.get_ref(), 7);
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
    /// use tower::Layer;
    /// use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let mut limit = RateLimitLayer::builder(MemoryStore::new()).rule(Rule::fixed_window("a", "1/m", Key::global())).build()?.layer(7);
    /// *limit.get_mut() = 8;
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
    /// use tower::Layer;
    /// use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let limit = RateLimitLayer::builder(MemoryStore::new()).rule(Rule::fixed_window("a", "1/m", Key::global())).build()?.layer(7);
    /// assert_eq!(limit.into_inner(), 7);
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, R: Clone> Clone for RateLimit<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            rejection: self.rejection.clone(),
        }
    }
}

impl<S: std::fmt::Debug, R> std::fmt::Debug for RateLimit<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Gives back `hits`, best effort: a failure to release only leaves a hit counted.
pub(crate) async fn release_all(store: &AnyStore, hits: &[(String, RatePolicy, RateDecision)]) {
    for (key, policy, decision) in hits {
        if let Err(err) = store.release(key, policy, decision).await {
            let _ = crate::FailurePolicy::Open.handle("ratelimit", &err);
        }
    }
}

impl Config {
    /// Checks every applicable rule in order; a refusal gives back what earlier rules counted.
    fn check(self: &Arc<Self>, checks: Vec<(usize, String)>) -> Check {
        let config = Arc::clone(self);
        Box::pin(async move {
            let mut counted: Vec<Counted> = Vec::with_capacity(checks.len());
            for (rule, key) in checks {
                let policy = config.rules[rule].policy;
                let decision = match config.store.rate_limit(&key, &policy).await {
                    Ok(decision) => decision,
                    Err(err) => {
                        config.give_back(&counted).await;
                        return Err(err);
                    }
                };
                if !decision.allowed {
                    config.give_back(&counted).await;
                    return Ok(Outcome::Denied { rule, decision });
                }
                counted.push(Counted {
                    rule,
                    key,
                    decision,
                });
            }
            Ok(Outcome::Allowed(counted))
        })
    }

    async fn give_back(&self, counted: &[Counted]) {
        let hits: Vec<_> = counted
            .iter()
            .map(|c| (c.key.clone(), self.rules[c.rule].policy, c.decision.clone()))
            .collect();
        release_all(&self.store, &hits).await;
    }

    pub(crate) fn bad_request() -> Response<Bytes> {
        let mut response = Response::new(Bytes::from_static(
            br#"{"detail":"The request carries no value to rate-limit it by."}"#,
        ));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }

    pub(crate) fn unavailable() -> Response<Bytes> {
        let mut response = Response::new(Bytes::from_static(
            br#"{"detail":"Rate limiting is temporarily unavailable."}"#,
        ));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: LimitedResponse,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let config = &self.config;
        let client_ip = if config.needs_ip {
            (config.peer)(request.extensions())
                .map(|peer| super::client_ip::resolve(peer, request.headers(), &config.trusted))
        } else {
            None
        };
        let head = RequestHead {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
            client_ip,
        };
        let mut checks = Vec::with_capacity(config.rules.len());
        for (index, rule) in config.rules.iter().enumerate() {
            match rule.key.extract(&head) {
                Some(key) => {
                    let mut store_key = String::with_capacity(4 + rule.name.len() + key.len());
                    store_key.push_str("rl:");
                    store_key.push_str(&rule.name);
                    store_key.push(':');
                    store_key.push_str(&key);
                    checks.push((index, store_key));
                }
                None if config.missing_key == MissingKey::Reject => {
                    return ResponseFuture::done(Config::bad_request());
                }
                None => {}
            }
        }
        if checks.is_empty() {
            return ResponseFuture::passthrough(self.inner.call(request));
        }
        // clone-and-swap: the future gets the service that was polled ready
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::checking(
            config.check(checks),
            inner,
            request,
            Arc::clone(config),
            self.rejection.clone(),
        )
    }
}
