//! Per-key rate limiting and send flags, atomic in the store.
//!
//! The founding case: `GET /sms_codes/{mobile}/` sends a verification code, and one phone
//! number may receive one only every 60 seconds. The usual Django code reads a
//! `send_flag_<mobile>` key and then writes it, a race that lets two concurrent requests both
//! send. Here each check is one atomic store step.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_redis_http::ratelimit::{Commit, Key, RateLimitLayer, Rule};
//! use tower_redis_http::store::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limit = RateLimitLayer::builder(MemoryStore::new())
//!     .rule(Rule::cooldown("sms", Duration::from_secs(60), Key::path_segment("/sms_codes/{mobile}/", "mobile")))
//!     .rule(Rule::fixed_window("sms_ip", "10/h", Key::client_ip()))
//!     .commit(Commit::OnSuccess)
//!     .build()?;
//! let app = ServiceBuilder::new().layer(limit).service_fn(|_req: Request<String>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from(r#"{"message":"ok"}"#))))
//! });
//!
//! // the server leaves the peer address in the extensions (see `Key::client_ip`)
//! let send = || {
//!     Request::get("/sms_codes/13800138000/")
//!         .extension(std::net::SocketAddr::from(([203, 0, 113, 9], 4711)))
//!         .body(String::new())
//!         .unwrap()
//! };
//! assert_eq!(app.clone().oneshot(send()).await?.status(), StatusCode::OK);
//! let again = app.oneshot(send()).await?;
//! assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert!(again.headers().contains_key("retry-after"));
//! # Ok(()) }
//! ```
//!
//! # Policies
//!
//! - [`Rule::cooldown`]: at most one hit per interval (`SET NX PX`), the send flag.
//! - [`Rule::fixed_window`]: `5/m`, `100/h`, `1000/d`, `100/5m` as django-ratelimit writes
//!   them; the window starts with the first hit.
//! - [`Rule::gcra`]: a rate with a burst, redis-cell's GCRA, as a Lua script loaded once and
//!   called by SHA (reloaded by itself after a Redis restart).
//!
//! On Redis every decision uses the server's clock (`TIME`), so instances with skewed clocks
//! share one limit. The memory store applies the same policies with the same results.
//!
//! # Keys
//!
//! [`Key`]: a named path segment, a header, a query parameter, the authenticated principal, the
//! client address, a closure, or one global counter. Store keys are `rl:<rule>:<key>` inside
//! the store's namespace (a rule name holds no `:`, so one rule's keys are never another's,
//! unless [`Rule::store_key`] gives a rule its own template); key text over 128 bytes, and any
//! that starts with `sha256:`, is counted as `sha256:<hex>` of itself, so a client cannot send
//! a long key's hashed form to share its counter. A request without a key passes or gets 400
//! ([`MissingKey`]).
//!
//! # Answers
//!
//! A limited request gets `429 Too Many Requests` (configurable) with DRF's `{"detail":
//! "Request was throttled. Expected available in N seconds."}`, `Retry-After` in whole seconds
//! (rounded up), and the IETF `RateLimit-Policy` (`"sms";q=1;w=60`) and `RateLimit`
//! (`"sms";r=0;t=42`) fields. Allowed responses carry the `RateLimit` fields too unless turned
//! off. [`RateLimitLayer::with_rejection_response`] replaces the whole answer.
//!
//! # Commit on success
//!
//! With [`Commit::OnSuccess`], a hit counts unless the inner service answers with a failure
//! (a non-2xx response or an error). A request dropped after the inner service was called
//! keeps its hit: the side effect may have happened. A cooldown is given back only by the hit
//! that set it, so a release never lets two requests through at once; a fixed-window hit on
//! Redis only to the window it was counted in, so a handler that fails after its window ended
//! never buys the next window an extra hit.
//!
//! # Several rules
//!
//! A request must pass every rule of a layer, checked in order; when one refuses, the hits the
//! earlier ones counted are given back. Layers stack as well.
//!
//! # Security
//!
//! The client address is the peer's (from a `SocketAddr` or `IpAddr` request extension, or
//! [`RateLimitBuilder::peer_address`]). `Forwarded` and `X-Forwarded-For` count only when the
//! peer is a configured trusted proxy, and then the nearest hop that is not a trusted proxy is
//! the client: a client cannot pick its own key by sending those headers. IPv6 clients count by
//! their /64, except those whose address embeds an IPv4 one (IPv4-mapped, NAT64's
//! `64:ff9b::/96`, 6to4's `2002::/16`, Teredo), which count as that IPv4 client.
//!
//! # Failures
//!
//! Each rule has a failure policy ([`Rule::on_store_error`]), applied within the store's command
//! timeout and logged at `WARN`:
//!
//! - a **cooldown fails closed** by default: a store error or timeout answers 503, since
//!   letting requests through would send a code for each of them while Redis is away;
//! - a **fixed window or GCRA fails open** by default: the request goes on, uncounted by that
//!   rule, while the layer's other rules still apply.
//!
//! On Redis a dropped connection is retried once on a new connection before any policy
//! applies; the cooldown's `SET NX` carries a value naming the request, so its retry recognises
//! a first attempt that landed. On the memory store, a full rate-limit share
//! ([`MemoryStoreBuilder::max_rate_limit_keys`](crate::store::MemoryStoreBuilder::max_rate_limit_keys))
//! is a store failure for new keys: live entries are never evicted to make room.
//!
//! # Keys and spellings
//!
//! A [`Key::path_segment`] is the percent-decoded value the handler will see (axum's `Path`
//! decodes), so every spelling of one phone number shares one flag. A path of the rule's route
//! that is not in normal form (`%2E`, `%2F`, `%25`, `;`, `//`, dot segments), or whose value is
//! not UTF-8, is answered `400 Bad Request`: letting it pass uncounted would let a router that
//! reads a value out of it call the handler for free.

// The folder reads bottom-up: `client_ip` and `headers` are leaves (who the client is, the
// fields of an answer); `key` is what a rule counts by, `rule` the rule, and `rejection` the
// answer to a refused request; `config` is the hub the layer shares (the compiled rules);
// `check` runs the rules against the store; `future` and `service` carry a request through,
// and `layer` builds them.
mod check;
mod client_ip;
mod config;
mod future;
mod headers;
mod key;
mod layer;
mod rejection;
mod rule;
mod service;
#[cfg(any(fuzzing, test))]
pub(crate) use self::client_ip::{client_key_text, resolve};

pub use self::client_ip::ClientAddressHeader;
pub use self::config::MissingKey;
pub use self::future::ResponseFuture;
pub use self::key::{Key, RequestHead};
pub use self::layer::{RateLimitBuilder, RateLimitLayer};
pub use self::rejection::{JsonLimited, Limited, LimitedResponse, Refusal};
pub use self::rule::{Commit, Rate, Rule};
pub use self::service::RateLimit;
