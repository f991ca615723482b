//! A tiny axum app on tower-redis-http's stores.
//!
//! Runs on the embedded memory store, or on Redis when `REDIS_URL` is set, and listens on
//! `127.0.0.1:3000` unless `ADDR` names another address.
//!
//! ```text
//! cargo run --example axum
//! REDIS_URL=redis://127.0.0.1:6379/0 cargo run --example axum
//!
//! curl http://127.0.0.1:3000/
//! curl http://127.0.0.1:3000/visits/        # counts up, in the store
//! curl -i http://127.0.0.1:3000/ping/alice/ # 200, then 429 with Retry-After for 10 s
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use tower_redis_http::FailurePolicy;
use tower_redis_http::store::{
    AnyStore, Expiry, MemoryStore, RatePolicy, RedisStore, Store, Stores,
};

#[derive(Clone)]
struct App {
    stores: Stores,
    backend: &'static str,
}

impl App {
    fn store(&self) -> AnyStore {
        self.stores
            .get("default")
            .expect("`default` is configured at start-up")
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let (default, backend): (AnyStore, _) = match std::env::var("REDIS_URL") {
        Ok(url) => (
            RedisStore::builder(url)
                .key_prefix("demo")
                .command_timeout(Duration::from_millis(250))
                .build()
                .await?
                .into(),
            "redis",
        ),
        Err(_) => (
            MemoryStore::builder().key_prefix("demo").build()?.into(),
            "memory",
        ),
    };
    let app = App {
        stores: Stores::builder().store("default", default).build(),
        backend,
    };

    let router = Router::new()
        .route("/", get(index))
        .route("/visits/", get(visits))
        .route("/ping/{name}/", get(ping))
        .with_state(app);

    let addr: SocketAddr = std::env::var("ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".to_owned())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "listening on http://{} (store: {backend})",
        listener.local_addr()?
    );
    axum::serve(listener, router).await?;
    Ok(())
}

async fn index(State(app): State<App>) -> Json<serde_json::Value> {
    Json(json!({
        "service": "tower-redis-http demo",
        "store": app.backend,
        "routes": ["/visits/", "/ping/{name}/"],
    }))
}

/// Counts visits in the store; `set_if_absent` then `increment`, each atomic.
async fn visits(State(app): State<App>) -> Response {
    let store = app.store();
    let count = async {
        store
            .set_if_absent("visits", Bytes::from_static(b"0"), Expiry::Never)
            .await?;
        store.increment("visits", 1).await
    };
    match count.await {
        Ok(Some(visits)) => Json(json!({ "visits": visits })).into_response(),
        // deleted between the two calls: count this visit as the first
        Ok(None) => Json(json!({ "visits": 1 })).into_response(),
        Err(err) => store_unavailable(&err),
    }
}

/// One ping per name every 10 seconds: the send-flag pattern, atomic in the store.
async fn ping(State(app): State<App>, Path(name): Path<String>) -> Response {
    let policy = RatePolicy::cooldown(Duration::from_secs(10)).expect("10 s is a valid interval");
    match app
        .store()
        .rate_limit(&format!("ping:{name}"), &policy)
        .await
    {
        Ok(decision) if decision.allowed => Json(json!({ "message": "ok" })).into_response(),
        Ok(decision) => {
            let wait = decision.retry_after.unwrap_or_default();
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({ "message": format!("try again in {seconds} s") })),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
        Err(err) if FailurePolicy::Open.handle("demo", &err) => {
            Json(json!({ "message": "ok" })).into_response()
        }
        Err(err) => store_unavailable(&err),
    }
}

fn store_unavailable(err: &(dyn std::error::Error + 'static)) -> Response {
    let _ = FailurePolicy::Closed.handle("demo", err);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "detail": "store unavailable" })),
    )
        .into_response()
}
