//! The layer and its builder: what applications configure.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde::de::DeserializeOwned;
use tower_layer::Layer;

use super::config::{Config, Validator};
use super::paths::{Access, PathKind, PathPolicy};
use super::{
    AmbiguousPaths, Case, Challenge, JsonRejection, RejectionResponse, TokenAuth, TokenKeys,
    TokenSource, TrailingSlash,
};
use crate::decoded::DecodedMemo;
use crate::principal::Credentialed;
use crate::store::{AnyStore, Store};
use crate::{ConfigError, FailurePolicy};

const DEFAULT_MAX_TOKEN_LEN: usize = 256;

/// A [`Layer`] that authenticates requests by a token looked up in the store.
///
/// Built with [`TokenAuthLayer::bearer`] or [`TokenAuthLayer::drf`]; see the [module
/// docs](super) for the whole behaviour. `P` is the application's principal type, decoded
/// from the stored JSON (or a bare user id, with `P = u64`).
///
/// The layer keeps the principals it decoded lately (256, each by its token and the exact
/// JSON it came from) and gives each request a clone, so a token's hit does not parse its
/// JSON again; a principal changed in the store is other JSON, decoded anew. A `P` that
/// holds shared state (an `Arc<Mutex<_>>` left out of its JSON) therefore shares it among
/// one token's requests, never between two tokens.
///
/// # Example
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_redis_http::auth::TokenAuthLayer;
/// use tower_redis_http::store::MemoryStore;
///
/// # fn main() -> Result<(), tower_redis_http::ConfigError> {
/// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new())
///     .allow("/login/")
///     .build()?;
/// let service = ServiceBuilder::new().layer(auth).service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
/// });
/// # Ok(()) }
/// ```
#[must_use]
pub struct TokenAuthLayer<P, R = JsonRejection> {
    config: Arc<Config<P>>,
    rejection: R,
}

impl<P, R: Clone> Clone for TokenAuthLayer<P, R> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
            rejection: self.rejection.clone(),
        }
    }
}

impl<P, R> std::fmt::Debug for TokenAuthLayer<P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthLayer")
            .field("store", &self.config.store)
            .field("sources", &self.config.sources)
            .field("paths", &self.config.paths)
            .field("keys", &self.config.keys)
            .field("sliding", &self.config.sliding)
            .field("refresh_interval", &self.config.refresh_interval)
            .field("on_store_error", &self.config.on_store_error)
            .finish_non_exhaustive()
    }
}

impl<P> TokenAuthLayer<P>
where
    P: DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A builder for `Authorization: Bearer <token>` (RFC 6750) with
    /// `WWW-Authenticate: Bearer realm="api"` challenges.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new()).build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn bearer(store: impl Into<AnyStore>) -> TokenAuthBuilder<P> {
        TokenAuthBuilder::new(
            store.into(),
            TokenSource::bearer(),
            Challenge::bearer("api"),
        )
    }

    /// A builder for Django REST framework's `Authorization: Token <token>`, answering with
    /// `WWW-Authenticate: Token` as DRF does.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::drf(MemoryStore::new()).build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn drf(store: impl Into<AnyStore>) -> TokenAuthBuilder<P> {
        TokenAuthBuilder::new(
            store.into(),
            TokenSource::keyword("Token"),
            Challenge::keyword("Token"),
        )
    }
}

impl<P, R> TokenAuthLayer<P, R> {
    /// Replaces the whole rejection response (401, 400, 503) with the application's own.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::Response;
    /// use tower_redis_http::auth::{AuthError, TokenAuthLayer};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new())
    ///     .build()?
    ///     .with_rejection_response(|err: &AuthError| {
    ///         let body = serde_json::json!({"code": 1008, "msg": err.kind().message()});
    ///         Response::new(Bytes::from(body.to_string()))
    ///     });
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn with_rejection_response<R2: RejectionResponse>(
        self,
        rejection: R2,
    ) -> TokenAuthLayer<P, R2> {
        TokenAuthLayer {
            config: self.config,
            rejection,
        }
    }
}

impl<S, P, R: Clone> Layer<S> for TokenAuthLayer<P, R> {
    type Service = TokenAuth<S, P, R>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenAuth::new(inner, Arc::clone(&self.config), self.rejection.clone())
    }
}

/// Configures a [`TokenAuthLayer`]; start from [`TokenAuthLayer::bearer`] or
/// [`TokenAuthLayer::drf`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::Method;
/// use tower_redis_http::FailurePolicy;
/// use tower_redis_http::auth::{TokenAuthLayer, TokenSource};
/// use tower_redis_http::store::MemoryStore;
///
/// #[derive(Clone, serde::Deserialize)]
/// struct User { id: u64, is_active: bool }
///
/// let auth = TokenAuthLayer::<User>::bearer(MemoryStore::new())
///     .token_from(TokenSource::cookie("token"))
///     .allow_for([Method::POST], "/login/")
///     .allow("/register/")
///     .allow("/sms_codes/{mobile}/")
///     .allow_prefix("/static/")
///     .allow_method(Method::OPTIONS)
///     .optional("/articles/")
///     .sliding_expiration(Duration::from_secs(72 * 3600))
///     .validate(|user: &User| if user.is_active { Ok(()) } else { Err("User inactive or deleted.".into()) })
///     .on_store_error(FailurePolicy::Closed)
///     .build()?;
/// # Ok::<(), tower_redis_http::ConfigError>(())
/// ```
#[must_use]
pub struct TokenAuthBuilder<P> {
    store: AnyStore,
    sources: Vec<TokenSource>,
    paths: PathPolicy,
    keys: TokenKeys,
    max_token_len: usize,
    sliding: Option<Duration>,
    sliding_refresh_interval: Duration,
    validate: Option<Validator<P>>,
    challenge: Challenge,
    on_store_error: FailurePolicy,
    error: Option<ConfigError>,
    _principal: PhantomData<fn() -> P>,
}

impl<P> std::fmt::Debug for TokenAuthBuilder<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthBuilder")
            .field("sources", &self.sources)
            .field("paths", &self.paths)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<P> TokenAuthBuilder<P>
where
    P: DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn new(store: AnyStore, source: TokenSource, challenge: Challenge) -> Self {
        Self {
            store,
            sources: vec![source],
            paths: PathPolicy::default(),
            keys: TokenKeys::default(),
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
            sliding: None,
            sliding_refresh_interval: Duration::ZERO,
            validate: None,
            challenge,
            on_store_error: FailurePolicy::Closed,
            error: None,
            _principal: PhantomData,
        }
    }

    fn rule(
        mut self,
        option: &'static str,
        kind: PathKind,
        path: &str,
        methods: Option<Vec<Method>>,
        access: Access,
    ) -> Self {
        if self.error.is_none() {
            self.error = self.paths.add(option, kind, path, methods, access).err();
        }
        self
    }

    /// Also looks for tokens in `source`, after the sources already configured. Defaults to
    /// the preset's `Authorization` scheme alone.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::{TokenAuthLayer, TokenSource};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new())
    ///     .token_from(TokenSource::query("token"))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn token_from(mut self, source: TokenSource) -> Self {
        self.sources.push(source);
        self
    }

    /// Replaces the token sources, tried in the given order.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::{TokenAuthLayer, TokenSource};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new())
    ///     .token_sources([TokenSource::cookie("token")])
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn token_sources(mut self, sources: impl IntoIterator<Item = TokenSource>) -> Self {
        self.sources = sources.into_iter().collect();
        self
    }

    /// Lets requests to `path` through without a token, whatever the method. `path` is exact
    /// (`/login/`) or a pattern with `{name}` segments (`/sms_codes/{mobile}/`) and an optional
    /// final `{*rest}`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new()).allow("/login/").build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn allow(self, path: &str) -> Self {
        self.rule("allow", PathKind::Pattern, path, None, Access::Open)
    }

    /// Like [`allow`](Self::allow), for the given methods only.
    ///
    /// # Example
    ///
    /// ```
    /// use http::Method;
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new())
    ///     .allow_for([Method::POST], "/login/")
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn allow_for(self, methods: impl IntoIterator<Item = Method>, path: &str) -> Self {
        let methods = methods.into_iter().collect();
        self.rule(
            "allow_for",
            PathKind::Pattern,
            path,
            Some(methods),
            Access::Open,
        )
    }

    /// Lets every path under `prefix` through, matched at segment boundaries: `/static`
    /// allows `/static` and `/static/app.js`, never `/static-admin`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new()).allow_prefix("/static/").build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn allow_prefix(self, prefix: &str) -> Self {
        self.rule("allow_prefix", PathKind::Prefix, prefix, None, Access::Open)
    }

    /// Lets `method` through on every path (`OPTIONS`, for CORS preflight requests).
    ///
    /// # Example
    ///
    /// ```
    /// use http::Method;
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new()).allow_method(Method::OPTIONS).build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn allow_method(self, method: Method) -> Self {
        self.rule(
            "allow_method",
            PathKind::Any,
            "/",
            Some(vec![method]),
            Access::Open,
        )
    }

    /// Makes authentication optional on `path` (exact or pattern): a valid token attaches the
    /// principal, no token passes anonymously, a bad token is rejected.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new()).optional("/articles/").build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn optional(self, path: &str) -> Self {
        self.rule("optional", PathKind::Pattern, path, None, Access::Optional)
    }

    /// Makes authentication optional under `prefix`, matched at segment boundaries.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new()).optional_prefix("/public/").build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn optional_prefix(self, prefix: &str) -> Self {
        self.rule(
            "optional_prefix",
            PathKind::Prefix,
            prefix,
            None,
            Access::Optional,
        )
    }

    /// How letter case counts in path matching. Defaults to [`Case::Sensitive`].
    pub fn case(mut self, case: Case) -> Self {
        self.paths.set_case(case);
        self
    }

    /// How a trailing slash counts in path matching. Defaults to [`TrailingSlash::Exact`].
    pub fn trailing_slash(mut self, trailing_slash: TrailingSlash) -> Self {
        self.paths.set_trailing_slash(trailing_slash);
        self
    }

    /// What happens to paths not in normal form. Defaults to [`AmbiguousPaths::Reject`] (400).
    pub fn ambiguous_paths(mut self, ambiguous: AmbiguousPaths) -> Self {
        self.paths.set_ambiguous(ambiguous);
        self
    }

    /// Where tokens live in the store; share it with [`Tokens`](super::Tokens). Defaults to
    /// [`TokenKeys::new`]: the token itself is the key.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::{TokenAuthLayer, TokenKeys, TokenStorage};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new())
    ///     .token_keys(TokenKeys::new().prefix("token:").storage(TokenStorage::Sha256))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn token_keys(mut self, keys: TokenKeys) -> Self {
        self.keys = keys;
        self
    }

    /// The longest token accepted, in bytes; longer ones are refused before any store call.
    /// Defaults to 256.
    pub fn max_token_len(mut self, max: usize) -> Self {
        self.max_token_len = max;
        self
    }

    /// Pushes a token's expiry out to `ttl` from now on every authenticated request, in the
    /// same round trip as the lookup (Redis `GETEX`). Defaults to off.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new())
    ///     .sliding_expiration(Duration::from_secs(72 * 3600))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn sliding_expiration(mut self, ttl: Duration) -> Self {
        self.sliding = Some(ttl);
        self
    }

    /// Refreshes a [sliding](Self::sliding_expiration) token's expiry only once it has less
    /// than the TTL less `interval` left, as knox's `MIN_REFRESH_INTERVAL` does: the token's
    /// other requests are plain reads. A token then lives at least its TTL less `interval`
    /// after its last request, also when another client rewrote it with a shorter TTL (it is
    /// refreshed on its next request). Defaults to zero: every request refreshes.
    ///
    /// The gain is where the store answers without a round trip:
    ///
    /// - the memory store reads the token's expiry with it;
    /// - a Redis store's near cache keeps the expiry Redis gave with the value (`PTTL`); a
    ///   token it does not hold is read with its expiry (an `EXISTS`, then a tracked `GET`
    ///   and `PTTL`: two round trips, which fill it), and refreshed in one more only when
    ///   that is due. A near cache too small to keep a hot token therefore costs more round
    ///   trips than refreshing on every request. A token another client revokes
    ///   or rewrites leaves the near cache when Redis's invalidation arrives, as a token
    ///   without sliding expiry does; until then the near cache may answer with it (see
    ///   [`NearCache`](crate::store::NearCache));
    /// - on Redis without a near cache every lookup is a round trip anyway, and it refreshes
    ///   in that same trip (`GETEX`), as without this setting.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) fails when `interval` is not shorter than the sliding TTL (a
    /// token could expire between two refreshes), or when no sliding expiration is set.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let auth = TokenAuthLayer::<u64>::bearer(MemoryStore::new())
    ///     .sliding_expiration(Duration::from_secs(10 * 3600))
    ///     .sliding_refresh_interval(Duration::from_secs(60))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn sliding_refresh_interval(mut self, interval: Duration) -> Self {
        self.sliding_refresh_interval = interval;
        self
    }

    /// Checks each decoded principal; an `Err(message)` rejects the request with 401 and that
    /// message (DRF's `"User inactive or deleted."`). Defaults to accepting every principal.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// #[derive(Clone, serde::Deserialize)]
    /// struct User { is_active: bool }
    ///
    /// let auth = TokenAuthLayer::<User>::bearer(MemoryStore::new())
    ///     .validate(|user: &User| if user.is_active { Ok(()) } else { Err("User inactive or deleted.".into()) })
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn validate(
        mut self,
        validate: impl Fn(&P) -> Result<(), Cow<'static, str>> + Send + Sync + 'static,
    ) -> Self {
        self.validate = Some(Arc::new(validate));
        self
    }

    /// The `WWW-Authenticate` challenge. Defaults to the preset's (`Bearer realm="api"` or
    /// `Token`).
    pub fn challenge(mut self, challenge: Challenge) -> Self {
        self.challenge = challenge;
        self
    }

    /// What a store failure does. Defaults to [`FailurePolicy::Closed`]: 503. With
    /// [`FailurePolicy::Open`], the token is treated as unknown (401): never a silent pass.
    pub fn on_store_error(mut self, policy: FailurePolicy) -> Self {
        self.on_store_error = policy;
        self
    }

    /// The layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidOption`] for a path that is not in normal form or a malformed
    /// pattern (naming the builder method), no token source, or a zero token bound.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::TokenAuthLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let err = TokenAuthLayer::<u64>::bearer(MemoryStore::new()).allow("/a/../b").build().unwrap_err();
    /// assert!(err.to_string().contains("`allow`"));
    /// ```
    pub fn build(self) -> Result<TokenAuthLayer<P>, ConfigError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        if self.sources.is_empty() {
            return Err(ConfigError::InvalidOption {
                option: "token_sources",
                reason: "at least one token source is needed".to_owned(),
            });
        }
        if self.max_token_len == 0 {
            return Err(ConfigError::InvalidOption {
                option: "max_token_len",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.sliding.is_some_and(|ttl| ttl.is_zero()) {
            return Err(ConfigError::InvalidOption {
                option: "sliding_expiration",
                reason: "a zero TTL would delete every token it touches".to_owned(),
            });
        }
        if !self.sliding_refresh_interval.is_zero() {
            let reason = match self.sliding {
                None => Some("there is no sliding expiration to refresh".to_owned()),
                Some(ttl) if self.sliding_refresh_interval >= ttl => Some(format!(
                    "{:?} is not shorter than the sliding TTL {ttl:?}: a token could expire \
                     between two refreshes",
                    self.sliding_refresh_interval
                )),
                Some(_) => None,
            };
            if let Some(reason) = reason {
                return Err(ConfigError::InvalidOption {
                    option: "sliding_refresh_interval",
                    reason,
                });
            }
        }
        let key_start = self.keys.fixed_start(self.store.key_scheme());
        Ok(TokenAuthLayer {
            config: Arc::new(Config {
                store: self.store,
                credentialed: Credentialed {
                    query_tokens: self
                        .sources
                        .iter()
                        .filter_map(TokenSource::query_parameter)
                        .cloned()
                        .collect(),
                    principal_type: std::any::type_name::<P>(),
                },
                sources: self.sources,
                paths: self.paths,
                key_start,
                keys: self.keys,
                max_token_len: self.max_token_len,
                sliding: self.sliding,
                refresh_interval: self.sliding_refresh_interval,
                validate: self.validate,
                challenge: self.challenge,
                on_store_error: self.on_store_error,
                decoded: DecodedMemo::new(),
            }),
            rejection: JsonRejection,
        })
    }
}
