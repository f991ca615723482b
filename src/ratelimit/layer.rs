//! The layer and its builder, which compiles the rules into the shared config.

use std::net::IpAddr;
use std::sync::Arc;

use http::{Extensions, StatusCode};
use tower_layer::Layer;

use super::client_ip::ClientAddressHeader;
use super::config::{CompiledRule, Config, MissingKey};
use super::headers::{policy_field, policy_item, valid_name};
use super::key::CompiledKey;
use super::rejection::{JsonLimited, LimitedResponse};
use super::{Commit, RateLimit, Rule};
use crate::peer::{PeerFn, default_peer};
use crate::store::{AnyStore, Store};
use crate::{ConfigError, FailurePolicy};

/// A [`Layer`] that limits requests per key, atomically in the store.
///
/// See the [module docs](super) for the policies, keys and answers.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
/// use tower_redis_http::store::MemoryStore;
///
/// let limit = RateLimitLayer::builder(MemoryStore::new())
///     .rule(Rule::cooldown("sms", Duration::from_secs(60), Key::path_segment("/sms_codes/{mobile}/", "mobile")))
///     .build()?;
/// let service = ServiceBuilder::new().layer(limit).service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("ok"))))
/// });
/// # Ok::<(), tower_redis_http::ConfigError>(())
/// ```
#[must_use]
pub struct RateLimitLayer<R = JsonLimited> {
    config: Arc<Config>,
    rejection: R,
}

impl<R: Clone> Clone for RateLimitLayer<R> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
            rejection: self.rejection.clone(),
        }
    }
}

impl<R> std::fmt::Debug for RateLimitLayer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules: Vec<&str> = self.config.rules.iter().map(|r| &*r.name).collect();
        f.debug_struct("RateLimitLayer")
            .field("rules", &rules)
            .field("commit", &self.config.commit)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// A builder for a layer counting in `store`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let limit = RateLimitLayer::builder(MemoryStore::new())
    ///     .rule(Rule::fixed_window("api", "100/h", Key::client_ip()))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn builder(store: impl Into<AnyStore>) -> RateLimitBuilder {
        RateLimitBuilder {
            store: store.into(),
            rules: Vec::new(),
            missing_key: MissingKey::default(),
            commit: Commit::default(),
            informational: true,
            on_store_error: None,
            trusted: Vec::new(),
            client_header: ClientAddressHeader::default(),
            peer: Arc::new(default_peer),
            status: StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl<R> RateLimitLayer<R> {
    /// Replaces the whole answer to a limited request (the Django original answers 400 with
    /// `{"message": ...}`).
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Response, StatusCode};
    /// use tower_redis_http::ratelimit::{Key, Limited, RateLimitLayer, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let limit = RateLimitLayer::builder(MemoryStore::new())
    ///     .rule(Rule::fixed_window("api", "5/m", Key::global()))
    ///     .build()?
    ///     .with_rejection_response(|_: &Limited| {
    ///         let mut response = Response::new(Bytes::from_static(br#"{"message":"too often"}"#));
    ///         *response.status_mut() = StatusCode::BAD_REQUEST;
    ///         response
    ///     });
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn with_rejection_response<R2: LimitedResponse>(self, rejection: R2) -> RateLimitLayer<R2> {
        RateLimitLayer {
            config: self.config,
            rejection,
        }
    }
}

impl<S, R: Clone> Layer<S> for RateLimitLayer<R> {
    type Service = RateLimit<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, Arc::clone(&self.config), self.rejection.clone())
    }
}

/// Configures a [`RateLimitLayer`]; start from [`RateLimitLayer::builder`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_redis_http::ratelimit::{Commit, Key, RateLimitLayer, Rule};
/// use tower_redis_http::store::MemoryStore;
///
/// let limit = RateLimitLayer::builder(MemoryStore::new())
///     .rule(Rule::cooldown("sms", Duration::from_secs(60), Key::path_segment("/sms_codes/{mobile}/", "mobile")))
///     .rule(Rule::fixed_window("sms_ip", "10/h", Key::client_ip()))
///     .trusted_proxies(["10.0.0.0/8"])
///     .commit(Commit::OnSuccess)
///     .build()?;
/// # Ok::<(), tower_redis_http::ConfigError>(())
/// ```
#[must_use]
pub struct RateLimitBuilder {
    store: AnyStore,
    rules: Vec<Rule>,
    missing_key: MissingKey,
    commit: Commit,
    informational: bool,
    on_store_error: Option<FailurePolicy>,
    trusted: Vec<String>,
    client_header: ClientAddressHeader,
    peer: PeerFn,
    status: StatusCode,
}

impl std::fmt::Debug for RateLimitBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitBuilder")
            .field("rules", &self.rules)
            .field("trusted", &self.trusted)
            .field("client_header", &self.client_header)
            .finish_non_exhaustive()
    }
}

impl RateLimitBuilder {
    /// Adds a rule; a request must pass every rule. Rules are checked in order, and when one
    /// refuses, the hits the earlier ones counted are given back.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// What a request without a key gets. Defaults to [`MissingKey::Pass`].
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::{Key, MissingKey, RateLimitLayer, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let limit = RateLimitLayer::builder(MemoryStore::new())
    ///     .rule(Rule::fixed_window("api", "5/m", Key::query("phone")))
    ///     .on_missing_key(MissingKey::Reject)
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn on_missing_key(mut self, missing: MissingKey) -> Self {
        self.missing_key = missing;
        self
    }

    /// When hits stay counted, for rules that do not say themselves ([`Rule::commit`]).
    /// Defaults to [`Commit::Always`].
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::{Commit, Key, RateLimitLayer, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let limit = RateLimitLayer::builder(MemoryStore::new())
    ///     .rule(Rule::fixed_window("api", "5/m", Key::global()))
    ///     .commit(Commit::OnSuccess)
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn commit(mut self, commit: Commit) -> Self {
        self.commit = commit;
        self
    }

    /// Whether allowed responses carry `RateLimit` and `RateLimit-Policy` too. Defaults to on.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let limit = RateLimitLayer::builder(MemoryStore::new())
    ///     .rule(Rule::fixed_window("api", "5/m", Key::global()))
    ///     .informational_headers(false)
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn informational_headers(mut self, on: bool) -> Self {
        self.informational = on;
        self
    }

    /// The status of the default rejection. Defaults to 429 Too Many Requests.
    ///
    /// # Example
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let limit = RateLimitLayer::builder(MemoryStore::new())
    ///     .rule(Rule::fixed_window("api", "5/m", Key::global()))
    ///     .status(StatusCode::BAD_REQUEST)
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// What a store failure does to rules that do not say themselves
    /// ([`Rule::on_store_error`]). Unset by default, so that each rule keeps its own default:
    /// cooldowns fail closed (503), fixed windows and GCRA fail open (the request goes on
    /// uncounted). Either way the failure is logged at `WARN`, and a dropped connection is
    /// first retried once on a new connection where the command allows it.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::FailurePolicy;
    /// use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let limit = RateLimitLayer::builder(MemoryStore::new())
    ///     .rule(Rule::fixed_window("api", "5/m", Key::global()))
    ///     .on_store_error(FailurePolicy::Closed)
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn on_store_error(mut self, policy: FailurePolicy) -> Self {
        self.on_store_error = Some(policy);
        self
    }

    /// The proxies whose `Forwarded` / `X-Forwarded-For` is believed, as addresses or networks
    /// (`10.0.0.0/8`, `::1`). Defaults to none: the peer address is the client, whatever the
    /// headers say.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let limit = RateLimitLayer::builder(MemoryStore::new())
    ///     .rule(Rule::fixed_window("api", "5/m", Key::client_ip()))
    ///     .trusted_proxies(["127.0.0.1", "10.0.0.0/8"])
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn trusted_proxies<T: Into<String>>(
        mut self,
        networks: impl IntoIterator<Item = T>,
    ) -> Self {
        self.trusted = networks.into_iter().map(Into::into).collect();
        self
    }

    /// The header in which the [trusted proxies](Self::trusted_proxies) name the client:
    /// the one the deployment's proxy writes. Defaults to
    /// [`ClientAddressHeader::XForwardedFor`], which nginx, HAProxy, AWS ALB, Heroku and
    /// Google Cloud load balancers append to.
    ///
    /// Only this header is read, whatever else a request carries: a client behind nginx that
    /// sends its own `Forwarded: for=<random>` gets it passed through untouched, and would
    /// pick its own key if `Forwarded` were believed. A request from a trusted proxy whose
    /// header names no client is answered 500 and logged once, as a misconfiguration:
    /// keyed by the proxy's address, every client behind it would share one limit.
    ///
    /// # Example
    ///
    /// ```
    /// use http::HeaderName;
    /// use tower_redis_http::ratelimit::{ClientAddressHeader, Key, RateLimitLayer, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let limit = RateLimitLayer::builder(MemoryStore::new())
    ///     .rule(Rule::fixed_window("login", "10/m", Key::client_ip()))
    ///     .trusted_proxies(["10.0.0.0/8"])
    ///     .client_address_header(ClientAddressHeader::Named(HeaderName::from_static("x-real-ip")))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn client_address_header(mut self, header: ClientAddressHeader) -> Self {
        self.client_header = header;
        self
    }

    /// Where the peer address is found in the request extensions. Defaults to a
    /// `std::net::SocketAddr` or `std::net::IpAddr` extension, or (with the `axum` feature)
    /// axum's `ConnectInfo<SocketAddr>`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// #[derive(Clone)]
    /// struct Peer(IpAddr);
    ///
    /// let limit = RateLimitLayer::builder(MemoryStore::new())
    ///     .rule(Rule::fixed_window("api", "5/m", Key::client_ip()))
    ///     .peer_address(|ext| ext.get::<Peer>().map(|p| p.0))
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn peer_address(
        mut self,
        peer: impl Fn(&Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.peer = Arc::new(peer);
        self
    }

    /// The layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidOption`] for no rule, a bad rate or pattern (naming the rule), a
    /// duplicate or unusable rule name (one with a `:` too, unless the rule has its own
    /// [`store_key`](super::Rule::store_key)), or a bad proxy network.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::RateLimitLayer;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// assert!(RateLimitLayer::builder(MemoryStore::new()).build().is_err());
    /// ```
    pub fn build(self) -> Result<RateLimitLayer, ConfigError> {
        let invalid = |option, reason: String| ConfigError::InvalidOption { option, reason };
        if self.rules.is_empty() {
            return Err(invalid("rule", "at least one rule is needed".to_owned()));
        }
        let mut rules = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            if !valid_name(&rule.name) {
                return Err(invalid(
                    "rule",
                    format!(
                        "`{}` is not a printable ASCII name without quotes or backslashes",
                        rule.name
                    ),
                ));
            }
            // `rl:<name>:<key>` reads back unambiguously only if the name holds no `:`: rule
            // `a` keyed `b:x` and rule `a:b` keyed `x` would both count in `rl:a:b:x`
            if rule.store_key.is_none() && rule.name.contains(':') {
                return Err(invalid(
                    "rule",
                    format!(
                        "`{}` holds a `:`, so its store keys could be another rule's",
                        rule.name
                    ),
                ));
            }
            if rules.iter().any(|r: &CompiledRule| r.name == rule.name) {
                return Err(invalid(
                    "rule",
                    format!("two rules are named `{}`", rule.name),
                ));
            }
            // each rule's keys have a room of their own in a memory store's rate-limit
            // share, so one rule's flood never fills the others'
            let room = std::hash::BuildHasher::hash_one(
                &foldhash::fast::FixedState::with_seed(0x726c_726f_6f6d),
                &*rule.name,
            );
            let on_store_error = rule.failure_policy(self.on_store_error);
            let mut policy = rule.policy()?.in_room(room);
            if on_store_error == FailurePolicy::Open {
                // the request goes on whatever the store says: a hit a replica missed stays
                // counted on the master, or the rule would let every request through
                policy = policy.keeping_unreplicated_hits();
            }
            let (key_before, key_after) = rule.store_key_parts()?;
            let key = rule.key.compile()?;
            let key_making =
                CompiledRule::key_making(&key, &key_before, &key_after, self.store.key_scheme());
            rules.push(CompiledRule {
                name: Arc::clone(&rule.name),
                policy_item: policy_item(&rule.name, &policy),
                policy,
                key,
                on_store_error,
                applies: rule.applies.clone(),
                commit: rule.commit.unwrap_or(self.commit),
                key_before,
                key_after,
                key_making,
            });
        }
        let trusted = crate::peer::networks(&self.trusted)?;
        let needs_ip = rules.iter().any(|rule| {
            !matches!(
                rule.key,
                CompiledKey::Global
                    | CompiledKey::PathSegment(_)
                    | CompiledKey::Header(_)
                    | CompiledKey::Query(_)
                    | CompiledKey::Principal { .. }
            )
        });
        let all_policies = policy_field(rules.iter().map(|rule| rule.policy_item.as_str()));
        let holds_hits = rules.iter().any(|rule| rule.commit == Commit::OnSuccess);
        Ok(RateLimitLayer {
            config: Arc::new(Config {
                all_policies,
                holds_hits,
                store: self.store.for_rate_limits(),
                rules,
                missing_key: self.missing_key,
                commit: self.commit,
                informational: self.informational,
                trusted,
                client_header: self.client_header,
                peer: self.peer,
                needs_ip,
                misconfiguration_reported: std::sync::atomic::AtomicBool::new(false),
            }),
            rejection: JsonLimited {
                status: self.status,
            },
        })
    }
}
