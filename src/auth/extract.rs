//! axum extractors for the authenticated principal (feature `axum`).

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use super::{AuthError, AuthErrorKind, Authenticated, Challenge, JsonRejection, RejectionResponse};

/// The authenticated principal; rejects with the auth layer's default 401 when the request
/// has none (a route the layer does not guard, or an optional path without a token).
///
/// # Example
///
/// ```
/// use axum::{Json, Router, routing::get};
/// use tower_redis_http::auth::{Principal, TokenAuthLayer};
/// use tower_redis_http::store::MemoryStore;
///
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct User { id: u64, username: String }
///
/// async fn me(Principal(user): Principal<User>) -> Json<User> {
///     Json(user)
/// }
///
/// let app: Router = Router::new()
///     .route("/me/", get(me))
///     .layer(TokenAuthLayer::<User>::bearer(MemoryStore::new()).build()?);
/// # Ok::<(), tower_redis_http::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Principal<P>(pub P);

/// The authenticated principal if there is one: for "optional" paths.
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::OptionalPrincipal;
///
/// async fn articles(OptionalPrincipal(user): OptionalPrincipal<u64>) -> String {
///     match user {
///         Some(id) => format!("articles for user {id}"),
///         None => "public articles".to_owned(),
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct OptionalPrincipal<P>(pub Option<P>);

/// The rejection of [`Principal`] when the request carries no principal.
#[derive(Debug, Clone, Copy)]
pub struct MissingPrincipal;

impl IntoResponse for MissingPrincipal {
    fn into_response(self) -> Response {
        let error = AuthError::new(AuthErrorKind::NotAuthenticated, Challenge::bearer("api"));
        let mut response = JsonRejection.rejection(&error);
        response
            .extensions_mut()
            .insert(AuthErrorKind::NotAuthenticated);
        response.map(axum_core::body::Body::from)
    }
}

impl<S, P> FromRequestParts<S> for Principal<P>
where
    S: Send + Sync,
    P: Clone + Send + Sync + 'static,
{
    type Rejection = MissingPrincipal;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Authenticated<P>>()
            .map(|auth| Self(auth.principal.clone()))
            .ok_or(MissingPrincipal)
    }
}

impl<S, P> FromRequestParts<S> for OptionalPrincipal<P>
where
    S: Send + Sync,
    P: Clone + Send + Sync + 'static,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<Authenticated<P>>()
                .map(|auth| auth.principal.clone()),
        ))
    }
}

impl<S, P> OptionalFromRequestParts<S> for Principal<P>
where
    S: Send + Sync,
    P: Clone + Send + Sync + 'static,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Authenticated<P>>()
            .map(|auth| Self(auth.principal.clone())))
    }
}
