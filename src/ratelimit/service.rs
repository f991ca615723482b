//! The service: each applicable rule's store key from the request, then the check.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::check::Checks;
use super::client_ip::Client;
use super::config::{Config, MissingKey};
use super::future::ResponseFuture;
use super::key::{KeyError, RequestHead};
use super::rejection::{LimitedResponse, Refusal, refuse};
use crate::body::ResponseBody;
use crate::store::Store;

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

impl Config {
    /// Logs, once per layer, why a rule cannot compute its keys: an operator must notice, and
    /// a log line per request would bury the cause.
    fn report_misconfiguration(&self, rule: &str, why: &str) {
        if !self
            .misconfiguration_reported
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::error!(
                layer = "ratelimit",
                rule,
                "{why}; every such request is answered 500 until this is fixed"
            );
        }
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
        let client = if config.needs_ip {
            (config.peer)(request.extensions()).map(|peer| {
                super::client_ip::resolve(
                    peer,
                    request.headers(),
                    &config.trusted,
                    &config.client_header,
                )
            })
        } else {
            None
        };
        let head = RequestHead {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
            client_ip: match client {
                Some(Client::Address(address)) => Some(address),
                _ => None,
            },
            client,
        };
        let mut checks = Checks::new();
        for (index, rule) in config.rules.iter().enumerate() {
            if rule.applies.as_ref().is_some_and(|applies| !applies(&head)) {
                continue;
            }
            match rule.key.extract(&head) {
                Err(KeyError::Malformed(why)) => {
                    return ResponseFuture::done(refuse(
                        &self.rejection,
                        Refusal::MalformedKey(why),
                    ));
                }
                Err(KeyError::Misconfigured(why)) => {
                    config.report_misconfiguration(&rule.name, &why);
                    return ResponseFuture::done(refuse(&self.rejection, Refusal::Misconfigured));
                }
                Ok(Some(key)) => match rule.store_key(config.store.key_scheme(), &key) {
                    Ok(store_key) => checks.push((index, store_key)),
                    Err(err) if config.survives(index, &err) => {}
                    Err(_) => {
                        return ResponseFuture::done(refuse(
                            &self.rejection,
                            Refusal::StoreUnavailable,
                        ));
                    }
                },
                Ok(None) if config.missing_key == MissingKey::Reject => {
                    return ResponseFuture::done(refuse(&self.rejection, Refusal::MissingKey));
                }
                Ok(None) => {}
            }
        }
        if checks.is_empty() {
            return ResponseFuture::passthrough(self.inner.call(request));
        }
        let span = crate::observe::span("ratelimit");
        if let Some(outcome) = span.in_scope(|| config.check_now(&mut checks)) {
            return ResponseFuture::decided(
                outcome,
                &mut self.inner,
                request,
                config,
                &self.rejection,
            );
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
            span,
        )
    }
}
