//! Token authentication with path allow-lists, the way Django teams do it with Redis.
//!
//! A login handler stores the user's data under a random token with a TTL
//! ([`Tokens::issue`]); every later request carries the token; [`TokenAuthLayer`] looks it up
//! in one store round trip, puts the decoded principal into the request's extensions
//! ([`Authenticated`]), and turns everyone else away, except on the paths that must stay open.
//!
//! # Example
//!
//! ```
//! use http::{Method, Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_redis_http::auth::{Authenticated, TokenAuthLayer, Tokens};
//! use tower_redis_http::store::MemoryStore;
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct User { id: u64, username: String }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let tokens = Tokens::new(store.clone(), |user: &User| user.id.to_string());
//! let auth = TokenAuthLayer::<User>::bearer(store)
//!     .allow_for([Method::POST], "/login/")
//!     .allow_method(Method::OPTIONS)
//!     .build()?;
//!
//! let app = ServiceBuilder::new().layer(auth).service_fn(|req: Request<String>| async move {
//!     let user = req.extensions().get::<Authenticated<User>>().map(|a| a.principal.username.clone());
//!     Ok::<_, std::convert::Infallible>(Response::new(user.unwrap_or_default()))
//! });
//!
//! let token = tokens.issue(&User { id: 1, username: "alice".into() }).await?;
//! let request = Request::get("/me/").header("authorization", format!("Bearer {token}")).body(String::new())?;
//! let response = app.clone().oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! let anonymous = app.oneshot(Request::get("/me/").body(String::new())?).await?;
//! assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
//! # Ok(()) }
//! ```
//!
//! # Tokens
//!
//! [`TokenSource`]s are tried in order; the first that holds anything decides.
//! `Authorization: Bearer <token>` is the default ([`TokenAuthLayer::bearer`]);
//! [`TokenAuthLayer::drf`] reads `Authorization: Token <token>` as Django REST framework does;
//! query parameters, cookies and custom headers can be added. Tokens must be RFC 6750
//! `b64token`s and at most 256 bytes (configurable); a longer one is refused before the store
//! is asked.
//!
//! The stored value is JSON decoded into the application's type `P` with serde. A bare user id
//! (what Django's `cache.set(token, user.id, timeout)` writes) is JSON too: use `P = u64` or a
//! newtype. [`TokenAuthBuilder::sliding_expiration`] pushes the TTL out on every request in the
//! same round trip; [`TokenAuthBuilder::validate`] rejects principals such as inactive users.
//!
//! # Rejections
//!
//! | situation | status | `detail` | Bearer challenge |
//! |---|---|---|---|
//! | no token | 401 | Authentication credentials were not provided. | `Bearer realm="api"` |
//! | keyword alone | 401 | Invalid token header. No credentials provided. | `error="invalid_token"` |
//! | spaces in token | 401 | Invalid token header. Token string should not contain spaces. | `error="invalid_token"` |
//! | bad characters | 401 | Invalid token header. Token string should not contain invalid characters. | `error="invalid_token"` |
//! | token too long | 401 | Invalid token header. Token string is too long. | `error="invalid_token"` |
//! | unknown or expired | 401 | Invalid token. | `error="invalid_token"` |
//! | validation failed | 401 | the validator's message | `error="invalid_token"` |
//! | two tokens | 400 | Invalid request. More than one token was provided. | `error="invalid_request"` |
//! | path not normalized | 400 | The request was rejected because the URL was not normalized. | none |
//! | store down, fail closed | 503 | Authentication is temporarily unavailable. | none |
//!
//! In DRF mode every 401 carries `WWW-Authenticate: Token`. The body is `{"detail": ...}`; the
//! whole response can be replaced ([`TokenAuthLayer::with_rejection_response`]), and the
//! [`AuthErrorKind`] is in its extensions either way. A store failure answers 503 by default;
//! with [`FailurePolicy::Open`](crate::FailurePolicy::Open) the token counts as unknown (401).
//! Nothing passes silently.
//!
//! # Path normalization
//!
//! Allow-list entries are matched against the request's path **exactly as received** (still
//! percent-encoded), which is the string axum's router matches too. Before any matching, the
//! path must be in normal form, or the request is answered `400 Bad Request`
//! ([`AmbiguousPaths::Protect`] instead makes it match no entry). A path is in normal form
//! when:
//!
//! - it starts with `/`;
//! - it has no `.` or `..` segment and no empty segment (`//`), except one trailing slash;
//! - it has no `\`, no `;` (path parameters), and only printable ASCII;
//! - every `%` starts a valid escape, and no escape encodes `/`, `\`, `.`, `%`, `;` or a
//!   control character (`%2F`, `%5C`, `%2E`, `%25`, `%3B`, `%00`, in either case).
//!
//! Matching then compares whole strings, case-sensitively and with trailing slashes
//! significant, unless [`Case::Insensitive`] or [`TrailingSlash::Ignore`] say otherwise. A
//! prefix matches only at a segment boundary (`/static` allows `/static/x`, never
//! `/static-admin`); a `{name}` pattern segment matches one non-empty segment; a final
//! `{*rest}` matches the rest.
//!
//! # Security
//!
//! These requests never reach a protected route without a valid token: `//login/../admin`
//! and `/login/%2e%2e/admin` (400: not normalized), `/LOGIN/` and `/login` when `/login/` is
//! allowed (401: not on the list), `/login-admin/` when `/login` is a prefix (401). Routers
//! that decode or fold case before matching must be paired with the matching [`Case`] and
//! [`TrailingSlash`] options, so the layer never allows more than the router routes to an open
//! handler. Allow-listed paths ignore tokens entirely; put handlers that need the user on
//! "optional" paths instead.
//!
//! Tokens from [`Tokens::issue`] carry 256 bits from the operating system's CSPRNG. With
//! [`TokenStorage::Sha256`] the store holds only digests, so a leaked dump holds no usable
//! token.

// The folder reads bottom-up: `paths`, `principal` and `rejection` are leaves (what a path
// allows, how a token becomes a store key, how a refusal reads); `source` finds a request's
// token and `tokens` issues them; `config` is the hub the layer shares; `future` decides once
// a lookup answers, `service` decides what it can before, and `layer` builds them. `extract`
// and `warp` hand the principal to handlers.
mod config;
mod future;
mod layer;
mod paths;
mod principal;
mod rejection;
mod service;
mod source;
#[cfg(any(fuzzing, test))]
pub(crate) use self::source::extract_token;
mod tokens;

#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "warp")]
#[cfg_attr(docsrs, doc(cfg(feature = "warp")))]
pub mod warp;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use self::extract::{OptionalPrincipal, Principal};
pub use self::future::ResponseFuture;
pub use self::layer::{TokenAuthBuilder, TokenAuthLayer};
pub use self::paths::{AmbiguousPaths, Case, TrailingSlash};
pub use self::principal::{TokenKeys, TokenStorage};
pub use self::rejection::{AuthError, AuthErrorKind, Challenge, JsonRejection, RejectionResponse};
pub use self::service::TokenAuth;
pub use self::source::TokenSource;
pub use self::tokens::{TokenError, TokenInfo, Tokens};
pub use crate::principal::{Authenticated, Token};
