//! warp filters for the authenticated principal (feature `warp`).
//!
//! warp applications wrapped by [`TokenAuthLayer`](super::TokenAuthLayer) (through
//! `warp::service`) read the principal with these filters.
//!
//! # Example
//!
//! ```
//! use tower_redis_http::auth;
//! use warp::Filter;
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct User { id: u64, username: String }
//!
//! let me = warp::path!("me")
//!     .and(auth::warp::principal::<User>())
//!     .map(|user: User| warp::reply::json(&user))
//!     .recover(auth::warp::recover);
//! let service = warp::service(me);
//! ```

use std::convert::Infallible;

use ::warp::Filter;
use ::warp::http::{HeaderValue, StatusCode, header};
use ::warp::reject::{Reject, Rejection};

use super::{AuthError, AuthErrorKind, Authenticated, Challenge, JsonRejection, RejectionResponse};

/// The rejection of [`principal`] when the request carries no principal.
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::warp::MissingPrincipal;
///
/// fn is_missing_principal(rejection: &warp::Rejection) -> bool {
///     rejection.find::<MissingPrincipal>().is_some()
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MissingPrincipal;

impl Reject for MissingPrincipal {}

/// The authenticated principal; rejects with [`MissingPrincipal`] when there is none (turn
/// that into the layer's 401 with [`recover`]).
///
/// # Example
///
/// ```
/// use tower_redis_http::auth;
/// use warp::Filter;
///
/// let whoami = warp::path!("me").and(auth::warp::principal::<u64>()).map(|id: u64| format!("user {id}"));
/// ```
pub fn principal<P>() -> impl Filter<Extract = (P,), Error = Rejection> + Clone
where
    P: Clone + Send + Sync + 'static,
{
    ::warp::ext::optional::<Authenticated<P>>().and_then(
        |auth: Option<Authenticated<P>>| async move {
            auth.map(|auth| auth.principal)
                .ok_or_else(|| ::warp::reject::custom(MissingPrincipal))
        },
    )
}

/// The authenticated principal if there is one, for "optional" paths.
///
/// # Example
///
/// ```
/// use tower_redis_http::auth;
/// use warp::Filter;
///
/// let articles = warp::path!("articles")
///     .and(auth::warp::optional_principal::<u64>())
///     .map(|id: Option<u64>| if id.is_some() { "for you" } else { "for everyone" });
/// ```
pub fn optional_principal<P>() -> impl Filter<Extract = (Option<P>,), Error = Infallible> + Clone
where
    P: Clone + Send + Sync + 'static,
{
    ::warp::ext::optional::<Authenticated<P>>()
        .map(|auth: Option<Authenticated<P>>| auth.map(|auth| auth.principal))
}

/// Turns [`MissingPrincipal`] into the 401 the auth layer answers (`{"detail": ...}` with a
/// Bearer challenge); passes every other rejection on.
///
/// # Errors
///
/// The rejection itself, when it is not a [`MissingPrincipal`].
///
/// # Example
///
/// ```
/// use tower_redis_http::auth;
/// use warp::Filter;
///
/// let routes = warp::path!("me").and(auth::warp::principal::<u64>()).map(|id: u64| id.to_string()).recover(auth::warp::recover);
/// ```
pub async fn recover(rejection: Rejection) -> Result<::warp::reply::Response, Rejection> {
    if rejection.find::<MissingPrincipal>().is_none() {
        return Err(rejection);
    }
    let error = AuthError::new(AuthErrorKind::NotAuthenticated, Challenge::bearer("api"));
    let response = JsonRejection.rejection(&error);
    let (parts, body) = response.into_parts();
    let mut reply = ::warp::reply::Response::new(body.into());
    *reply.status_mut() = StatusCode::UNAUTHORIZED;
    for (name, value) in &parts.headers {
        reply.headers_mut().insert(name.clone(), value.clone());
    }
    reply
        .headers_mut()
        .entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
    Ok(reply)
}
