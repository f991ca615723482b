//! The service: what is decided without the store (path policy, token syntax), then the lookup.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use serde::de::DeserializeOwned;
use tower_service::Service;

use super::config::Config;
use super::future::{ResponseFuture, TokenCheck};
use super::paths::Access;
use super::source::extract_token;
use super::{AuthErrorKind, RejectionResponse, Token, rejection};
use crate::body::ResponseBody;
use crate::gate::Gate;
use crate::store::{Backend, MAX_EXPIRY, Store, StoreError};
use bytes::Bytes;

/// The service [`TokenAuthLayer`](super::TokenAuthLayer) wraps around an inner service.
///
/// # Example
///
/// ```
/// use tower::{Service, ServiceBuilder, ServiceExt};
/// use tower_redis_http::auth::TokenAuthLayer;
/// use tower_redis_http::store::MemoryStore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let service = ServiceBuilder::new()
///     .layer(TokenAuthLayer::<u64>::bearer(MemoryStore::new()).build()?)
///     .service_fn(|_req: http::Request<String>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
///     });
/// let response = service.oneshot(http::Request::new(String::new())).await?;
/// assert_eq!(response.status(), 401);
/// # Ok(()) }
/// ```
pub struct TokenAuth<S, P, R> {
    inner: S,
    config: Arc<Config<P>>,
    rejection: R,
}

impl<S, P, R> TokenAuth<S, P, R> {
    pub(crate) fn new(inner: S, config: Arc<Config<P>>, rejection: R) -> Self {
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
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new()).build()?.layer(7);
    /// assert_eq!(*auth.get_ref(), 7);
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
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let mut auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new()).build()?.layer(7);
    /// *auth.get_mut() = 8;
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
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new()).build()?.layer(7);
    /// assert_eq!(auth.into_inner(), 7);
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, P, R: Clone> Clone for TokenAuth<S, P, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            rejection: self.rejection.clone(),
        }
    }
}

impl<S: std::fmt::Debug, P, R> std::fmt::Debug for TokenAuth<S, P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuth")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// What `call` decided before any store call.
enum Decision {
    Pass,
    Lookup { token: Token },
    Reject(AuthErrorKind),
}

impl<P> Config<P> {
    /// Path policy and token extraction: everything decided without the store.
    fn decide<B>(&self, request: &Request<B>) -> Decision {
        let access = match self.paths.access(request.method(), request.uri().path()) {
            Ok(access) => access,
            Err(why) => {
                crate::observe::auth("malformed");
                return Decision::Reject(AuthErrorKind::PathNotNormalized(why));
            }
        };
        if access == Access::Open {
            crate::observe::auth("open_path");
            return Decision::Pass;
        }
        match extract_token(
            &self.sources,
            request.headers(),
            request.uri(),
            self.max_token_len,
        ) {
            // a present token is checked on optional paths too: a bad one is rejected
            Ok(Some(token)) => Decision::Lookup { token },
            Ok(None) if access == Access::Optional => {
                crate::observe::auth("anonymous");
                Decision::Pass
            }
            Ok(None) => {
                crate::observe::auth("missing");
                Decision::Reject(AuthErrorKind::NotAuthenticated)
            }
            Err(kind) => {
                crate::observe::auth("malformed");
                Decision::Reject(kind)
            }
        }
    }
}

/// How a token the store could not answer at once is looked up.
enum Lookup {
    /// A plain read: no sliding expiration.
    Read,
    /// A read that pushes the token's expiry out to `ttl` from now (`GETEX`).
    Refresh { ttl: Duration },
    /// A read with the token's expiry (`GET` and `PTTL`, filling a near cache), refreshed
    /// in a second round trip only when the expiry says it is due.
    ReadThenRefreshIfDue { ttl: Duration },
}

/// What the store could tell of a token without a round trip.
enum AtOnce {
    /// Its value (or its absence), with no refresh due.
    Found(Result<Option<Bytes>, StoreError>),
    /// Nothing that serves the request: only a round trip can tell, or a refresh is due.
    Unknown,
}

impl<P> Config<P> {
    /// Whether a sliding token with `left` to live is served without a refresh: while it has
    /// at least its TTL less the refresh interval, as knox decides from a token's expiry. A
    /// token another client rewrote with a shorter TTL is therefore refreshed on its next
    /// request, and one without expiry at once, unless the TTL is past the longest expiry a
    /// store keeps (a refresh then leaves the token without one).
    fn fresh_enough(&self, ttl: Duration, left: Option<Duration>) -> bool {
        !self.refresh_interval.is_zero()
            && left.map_or(ttl > MAX_EXPIRY, |left| {
                left >= ttl.saturating_sub(self.refresh_interval)
            })
    }

    /// What the store tells of the token under `key` at once (the memory store, a near
    /// cache); a sliding token only while no refresh is due.
    fn at_once(&self, key: &str) -> AtOnce {
        let Some(ttl) = self.sliding else {
            return self
                .store
                .get_now(key)
                .map_or(AtOnce::Unknown, AtOnce::Found);
        };
        if self.refresh_interval.is_zero() {
            return AtOnce::Unknown;
        }
        match self.store.get_now_expiring(key) {
            Some(Ok(Some((value, left)))) if self.fresh_enough(ttl, left) => {
                AtOnce::Found(Ok(Some(value)))
            }
            // an error, a token gone (refused the same either way) and one due for its
            // refresh take the path that refreshes
            _ => AtOnce::Unknown,
        }
    }

    /// How a token the store could not answer at once is looked up. A sliding token is
    /// refreshed in the lookup's round trip (`GETEX`), except on a near cache under a refresh
    /// interval: there the lookup reads the token with its expiry, which fills the near cache
    /// for the next requests, and refreshes in a second round trip only when it is due.
    fn lookup(&self) -> Lookup {
        let Some(ttl) = self.sliding else {
            return Lookup::Read;
        };
        if !self.refresh_interval.is_zero() && self.store.has_near_cache() {
            return Lookup::ReadThenRefreshIfDue { ttl };
        }
        Lookup::Refresh { ttl }
    }
}

/// The lookup of the token under `key` on `config`'s store.
async fn look_up<P>(
    config: &Config<P>,
    key: &str,
    lookup: Lookup,
) -> Result<Option<Bytes>, StoreError> {
    match lookup {
        Lookup::Read => config.store.get_full(key).await,
        Lookup::Refresh { ttl } => config.store.get_and_refresh_full(key, ttl).await,
        Lookup::ReadThenRefreshIfDue { ttl } => match config.store.get_expiring_full(key).await? {
            None => Ok(None),
            Some((value, left)) if config.fresh_enough(ttl, left) => Ok(Some(value)),
            Some(_) => config.store.get_and_refresh_full(key, ttl).await,
        },
    }
}

impl<S, P, R, ReqBody, ResBody> Service<Request<ReqBody>> for TokenAuth<S, P, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    P: DeserializeOwned + Clone + Send + Sync + 'static,
    R: RejectionResponse,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, P, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let span = crate::observe::span("auth");
        match span.in_scope(|| self.config.decide(&request)) {
            Decision::Pass => ResponseFuture::new(Gate::open(self.inner.call(request))),
            Decision::Reject(kind) => {
                let error = self.config.error(kind);
                ResponseFuture::new(Gate::answer(rejection::respond(&self.rejection, &error)))
            }
            Decision::Lookup { token } => {
                let config = &self.config;
                let key = config.keys.full_key(
                    config.store.key_scheme(),
                    config.key_start.as_deref(),
                    token.as_str(),
                );
                // the memory store, and a Redis store's near cache holding the token, answer
                // at once: no boxed future, no second poll
                let at_once = key
                    .as_ref()
                    .map_or(AtOnce::Unknown, |key| config.at_once(key));
                if let (Ok(key), AtOnce::Found(found)) = (&key, at_once) {
                    let verdict = span.in_scope(|| {
                        config.verdict(found, key, token, &self.rejection, &mut request)
                    });
                    return ResponseFuture::new(Gate::decided(verdict, &mut self.inner, request));
                }
                let lookup = config.lookup();
                // clone-and-swap: the future gets the service that was polled ready
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                let shared = Arc::clone(config);
                let owner = key.as_ref().map_or_else(|_| String::new(), Clone::clone);
                let check = Box::pin(async move { look_up(&shared, &key?, lookup).await });
                let keeper = TokenCheck {
                    config: Arc::clone(config),
                    rejection: self.rejection.clone(),
                    token,
                    key: owner,
                };
                ResponseFuture::lookup(check, ready, request, keeper, span)
            }
        }
    }
}
