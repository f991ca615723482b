//! The demo service on axum 0.8: token authentication, a cached page and an SMS send flag.
//!
//! Runs on the embedded memory store, or on Redis when `REDIS_URL` is set; listens on
//! `127.0.0.1:3000` unless `ADDR` names another address.
//!
//! ```text
//! cargo run --example axum
//!
//! curl -s -X POST localhost:3000/login/ -H 'content-type: application/json' \
//!      -d '{"username": "alice", "password": "wonderland"}'            # {"token": "..."}
//! curl -s localhost:3000/me/ -H "authorization: Bearer $TOKEN"           # alice's JSON
//! curl -si localhost:3000/articles/                                      # Cache-Status: ...
//! curl -si localhost:3000/sms_codes/13800138000/                         # 200, then 429
//! curl -s -X POST localhost:3000/logout/ -H "authorization: Bearer $TOKEN"
//! curl -s localhost:3000/healthz                                         # {"status": "ok", ...}
//! curl -s localhost:3000/metrics            # with --features metrics: the layers' counters, to anyone
//! ```

pub mod common;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use common::{Answer, Demo, User};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_redis_http::auth::{Authenticated, Principal};

fn reply(answer: Answer) -> Response {
    let cache_control = answer.cache_control;
    let mut response = (answer.status, answer.into_bytes()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(cache_control) = cache_control {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        );
    }
    response
}

async fn login(State(demo): State<Demo>, body: Bytes) -> Response {
    reply(demo.login(&body).await)
}

async fn logout(
    State(demo): State<Demo>,
    Extension(auth): Extension<Authenticated<User>>,
) -> Response {
    reply(demo.logout(auth.token.as_str()).await)
}

async fn register(State(demo): State<Demo>, body: Bytes) -> Response {
    reply(demo.register(&body))
}

async fn me(State(demo): State<Demo>, Principal(user): Principal<User>) -> Response {
    reply(demo.me(&user))
}

async fn articles(State(demo): State<Demo>) -> Response {
    reply(demo.articles())
}

async fn healthz(State(demo): State<Demo>) -> Response {
    reply(demo.healthz().await)
}

/// The layers' counters and histograms in Prometheus's text format (the `metrics` feature).
///
/// Served to anyone, without a token (the auth layer allows `/metrics`): the series hold no
/// keys or tokens, but they tell who can reach them the request rates, the share of 429s and
/// whether the store fails. A deployment serves this on an address only its scraper reaches
/// (another listener, or a proxy rule), not beside the public routes as this demo does.
#[cfg(feature = "metrics")]
async fn metrics() -> Response {
    let mut response = common::prometheus().render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

async fn sms_code(State(demo): State<Demo>, Path(mobile): Path<String>) -> Response {
    reply(demo.sms_code(&mobile).await)
}

/// The whole app: the body limits around everything, auth around every route (`layer`), the
/// send flag on matched routes only (`route_layer`), the cache on `/articles/` alone. `get`
/// answers HEAD too.
pub fn app(demo: Demo) -> Router {
    let limits = demo.limits;
    #[cfg(feature = "metrics")]
    common::prometheus();
    let router = Router::new();
    #[cfg(feature = "metrics")]
    let router = router.route("/metrics", get(metrics));
    router
        .route("/login/", post(login))
        .route("/logout/", post(logout))
        .route("/register/", post(register))
        .route("/me/", get(me))
        .route("/articles/", get(articles).layer(demo.cache_layer()))
        .route("/sms_codes/{mobile}/", get(sms_code))
        .route("/healthz", get(healthz))
        .route_layer(demo.rate_limit_layer())
        .layer(demo.auth_layer())
        // outermost: an oversized or stalled body costs no store round trip
        .layer(RequestBodyTimeoutLayer::new(limits.body_read))
        .layer(RequestBodyLimitLayer::new(limits.max_body))
        .with_state(demo)
}

/// Serves the app with a header read timeout, which `axum::serve` does not offer.
pub async fn serve(listener: tokio::net::TcpListener, demo: Demo) -> std::io::Result<()> {
    let header_read = demo.limits.header_read;
    common::serve_tower(listener, app(demo), header_read).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run(serve).await
}
