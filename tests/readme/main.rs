//! The README's Rust snippets, compiled: each sits below verbatim (between `readme-snippet`
//! markers) inside what it needs around it, and `the_readme_shows_the_compiled_snippets`
//! fails when the README and this file tell different code.

#![allow(dead_code, unused_variables, clippy::unused_async)]

use std::convert::Infallible;
use std::error::Error;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::ServiceBuilder;
use tower_redis_http::auth::TokenAuthLayer;
use tower_redis_http::cache::ResponseCacheLayer;
use tower_redis_http::ratelimit::RateLimitLayer;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    is_active: bool,
}

/// Holds for what a server can run: a `Service` of HTTP requests.
fn served<S, B>(service: S) -> S
where
    S: tower::Service<Request<B>>,
{
    service
}

mod axum_app {
    use super::*;
    use axum::extract::Path;
    use axum::routing::get;
    use axum::{Json, Router};
    use tower_redis_http::auth::Principal;

    async fn articles() -> &'static str {
        "[]"
    }

    async fn sms_code(Path(mobile): Path<String>) -> &'static str {
        "sent"
    }

    #[rustfmt::skip]
    fn app(auth: TokenAuthLayer<User>, cache: ResponseCacheLayer, rate_limit: RateLimitLayer) -> Router {
        // readme-snippet
        let app = Router::new()
            .route("/me/", get(|Principal(user): Principal<User>| async move { Json(user) }))
            .route("/articles/", get(articles).layer(cache))
            .route("/sms_codes/{mobile}/", get(sms_code))
            .route_layer(rate_limit)
            .layer(auth);
        // readme-snippet
        app
    }
}

mod hyper_service {
    use super::*;

    async fn route(
        request: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(Response::new(Full::new(Bytes::from_static(b"hi"))))
    }

    #[rustfmt::skip]
    fn service(auth: TokenAuthLayer<User>, cache: ResponseCacheLayer, rate_limit: RateLimitLayer) {
        // readme-snippet
        let service = ServiceBuilder::new()
            .layer(auth)
            .layer(rate_limit)
            .layer(cache)
            .service_fn(route);       // reads Authenticated<User> from the request extensions
        // readme-snippet
        served::<_, hyper::body::Incoming>(service);
    }
}

mod warp_service {
    use super::*;
    use warp::Filter;

    #[rustfmt::skip]
    fn service(auth: TokenAuthLayer<User>, cache: ResponseCacheLayer, rate_limit: RateLimitLayer) {
        // readme-snippet
        let me = warp::path!("me")
            .and(tower_redis_http::auth::warp::principal::<User>())
            .map(|user: User| warp::reply::json(&user));
        let service = ServiceBuilder::new().layer(auth).layer(rate_limit).layer(cache).service(warp::service(me));
        // readme-snippet
        served::<_, warp::hyper::body::Incoming>(service);
    }
}

#[rustfmt::skip]
async fn near_cache() -> Result<(), Box<dyn Error>> {
    // readme-snippet
    use std::time::Duration;
    use tower_redis_http::store::{NearCache, RedisStore};

    let store = RedisStore::builder("redis://127.0.0.1:6379")
        .near_cache(NearCache::new().max_entries(50_000).max_bytes(64 << 20).max_age(Duration::from_secs(30)))
        .build()
        .await?;
    // readme-snippet
    Ok(())
}

#[rustfmt::skip]
async fn building_blocks(user: User) -> Result<(), Box<dyn Error>> {
    // readme-snippet
    use std::time::Duration;
    use http::Method;
    use tower_redis_http::auth::{TokenAuthLayer, Tokens};
    use tower_redis_http::cache::ResponseCacheLayer;
    use tower_redis_http::ratelimit::{Commit, Key, RateLimitLayer, Rule};
    use tower_redis_http::store::RedisStore;

    // inside an async fn returning Result<_, Box<dyn std::error::Error>>
    let store = RedisStore::builder("redis://127.0.0.1:6379/1")
        .max_connections(256)
        .command_timeout(Duration::from_millis(250))
        .build()
        .await?;

    // login handler: a 256-bit token stored with the user's JSON for 72 h
    let tokens = Tokens::new(store.clone(), |user: &User| user.id.to_string());
    let token = tokens.issue(&user).await?;

    let auth = TokenAuthLayer::<User>::bearer(store.clone())
        .allow_for([Method::POST], "/login/")
        .allow("/sms_codes/{mobile}/")
        .allow_method(Method::OPTIONS)
        .validate(|u: &User| if u.is_active { Ok(()) } else { Err("User inactive or deleted.".into()) })
        .build()?;

    // Django's @cache_page(30), one round trip per hit
    let cache = ResponseCacheLayer::cache_page(store.clone(), Duration::from_secs(30))
        .compute_etag(true)
        .build()?;

    // one SMS code per phone number per minute; a failed send does not count
    let rate_limit = RateLimitLayer::builder(store)
        .rule(Rule::cooldown("sms", Duration::from_secs(60), Key::path_segment("/sms_codes/{mobile}/", "mobile")))
        .trusted_proxies(["10.0.0.0/8"])
        .commit(Commit::OnSuccess)
        .build()?;
    // readme-snippet
    Ok(())
}

#[rustfmt::skip]
async fn stores(text: &str) -> Result<(), Box<dyn Error>> {
    // readme-snippet
    use tower_redis_http::store::{Stores, StoresConfig};

    let config: StoresConfig = toml::from_str(text)?;
    let stores = Stores::from_config(&config).await?;
    let codes = stores.get("verify_codes")?;
    // readme-snippet
    Ok(())
}

/// The Rust blocks of `text` (```rust fences), each without its fences.
fn readme_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```rust") => current = Some(Vec::new()),
            Some(lines) if line.trim_start().starts_with("```") => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            Some(lines) => lines.push(line),
            None => {}
        }
    }
    blocks
}

/// The snippets of this file, dedented by the indentation of their markers.
fn compiled_snippets(text: &str) -> Vec<String> {
    let mut snippets = Vec::new();
    let mut current: Option<(usize, Vec<String>)> = None;
    for line in text.lines() {
        if line.trim() == "// readme-snippet" {
            let indent = line.len() - line.trim_start().len();
            match current.take() {
                None => current = Some((indent, Vec::new())),
                Some((_, lines)) => snippets.push(lines.join("\n")),
            }
        } else if let Some((indent, lines)) = &mut current {
            lines.push(line.get(*indent..).unwrap_or("").to_owned());
        }
    }
    snippets
}

#[test]
fn the_readme_shows_the_compiled_snippets() {
    let readme = include_str!("../../README.md");
    let compiled = compiled_snippets(include_str!("main.rs"));
    let shown = readme_blocks(readme);
    assert_eq!(
        shown.len(),
        6,
        "the README has 6 Rust blocks; update this test with it"
    );
    assert_eq!(
        shown, compiled,
        "the README's Rust blocks differ from the snippets compiled in tests/readme/main.rs"
    );
}
