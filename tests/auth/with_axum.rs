//! The layer in an axum app, with `layer` and `route_layer`, and the extractors.

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_redis_http::auth::{OptionalPrincipal, Principal, TokenAuthLayer, Tokens};
use tower_redis_http::store::MemoryStore;

use crate::support::TestRedis;
use crate::{User, alice, redis_store};

async fn me(Principal(user): Principal<User>) -> String {
    user.username
}

async fn articles(OptionalPrincipal(user): OptionalPrincipal<User>) -> String {
    user.map_or_else(|| "public".to_owned(), |u| format!("for {}", u.username))
}

async fn call(app: &Router, uri: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn router_layer_with_required_and_optional_extractors() {
    let redis = TestRedis::start();
    let store = redis_store(&redis).await;
    let token = Tokens::new(store.clone(), |u: &User| u.id.to_string())
        .issue(&alice())
        .await
        .unwrap();
    let app = Router::new()
        .route("/me/", get(me))
        .route("/articles/", get(articles))
        .route("/login/", get(|| async { "login page" }))
        .layer(
            TokenAuthLayer::<User>::bearer(store)
                .allow("/login/")
                .optional("/articles/")
                .build()
                .unwrap(),
        );
    assert_eq!(
        call(&app, "/me/", Some(&token)).await,
        (StatusCode::OK, "alice".into())
    );
    assert_eq!(call(&app, "/me/", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&app, "/articles/", None).await,
        (StatusCode::OK, "public".into())
    );
    assert_eq!(
        call(&app, "/articles/", Some(&token)).await,
        (StatusCode::OK, "for alice".into())
    );
    assert_eq!(
        call(&app, "/login/", None).await,
        (StatusCode::OK, "login page".into())
    );
}

#[tokio::test]
async fn route_layer_guards_only_the_routes_it_wraps_and_extractors_reject_without_it() {
    let store = MemoryStore::new();
    let token = Tokens::new(store.clone(), |u: &User| u.id.to_string())
        .issue(&alice())
        .await
        .unwrap();
    let app = Router::new()
        .route("/me/", get(me))
        .route_layer(TokenAuthLayer::<User>::bearer(store).build().unwrap())
        .route("/health/", get(|| async { "ok" }))
        .route("/unguarded-me/", get(me));
    assert_eq!(
        call(&app, "/me/", Some(&token)).await,
        (StatusCode::OK, "alice".into())
    );
    assert_eq!(call(&app, "/me/", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&app, "/health/", None).await,
        (StatusCode::OK, "ok".into())
    );
    // an extractor on a route the layer does not guard answers like the layer would
    let (status, body) = call(&app, "/unguarded-me/", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        r#"{"detail":"Authentication credentials were not provided."}"#
    );
    // unknown routes are still 404 for authenticated users
    assert_eq!(
        call(&app, "/nowhere/", Some(&token)).await.0,
        StatusCode::NOT_FOUND
    );
    let _ = Full::new(Bytes::new());
}
