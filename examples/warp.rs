//! The demo service on warp 0.4: warp filters turned into a tower service with
//! `warp::service` and wrapped by the same layers; a warp filter hands handlers the principal.
//!
//! Runs on the embedded memory store, or on Redis when `REDIS_URL` is set; listens on
//! `127.0.0.1:3000` unless `ADDR` names another address.
//!
//! ```text
//! cargo run --example warp
//!
//! curl -s -X POST localhost:3000/login/ -H 'content-type: application/json' \
//!      -d '{"username": "alice", "password": "wonderland"}'            # {"token": "..."}
//! curl -s localhost:3000/me/ -H "authorization: Bearer $TOKEN"           # alice's JSON
//! curl -si localhost:3000/articles/                                      # Cache-Status: ...
//! curl -si localhost:3000/sms_codes/13800138000/                         # 200, then 429
//! curl -s -X POST localhost:3000/logout/ -H "authorization: Bearer $TOKEN"
//! curl -s localhost:3000/healthz                                         # {"status": "ok", ...}
//! ```

pub mod common;

use bytes::Bytes;
use common::{Answer, Demo, User};
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_redis_http::auth::{self, Authenticated};
use warp::Filter;
use warp::http::{HeaderValue, Response, header};

fn reply(answer: Answer) -> Response<warp::hyper::body::Bytes> {
    let (status, cache_control) = (answer.status, answer.cache_control);
    let mut response = Response::new(answer.into_bytes());
    *response.status_mut() = status;
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

/// GET, and HEAD wherever GET is answered (hyper leaves the body out).
fn get_or_head() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

/// The authenticated request's extension, for the token (the crate's filter gives the user).
fn authenticated() -> impl Filter<Extract = (Authenticated<User>,), Error = warp::Rejection> + Clone
{
    warp::ext::get::<Authenticated<User>>()
}

/// Passes only paths spelled with (or without) a trailing slash, exactly as the layers'
/// allow-list and rules name them: `warp::path!` alone answers `/login` and `/login/` alike,
/// and the route a rule does not name is a way past it.
fn slash(trailing: bool) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::path::full()
        .and_then(move |full: warp::path::FullPath| async move {
            if full.as_str().ends_with('/') == trailing {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
}

pub fn routes(
    demo: Demo,
) -> impl Filter<Extract = (Response<Bytes>,), Error = warp::Rejection> + Clone {
    let with_demo = warp::any().map(move || demo.clone());
    let login = warp::post()
        .and(warp::path!("login"))
        .and(slash(true))
        .and(with_demo.clone())
        .and(warp::body::bytes())
        .then(|demo: Demo, body: Bytes| async move { reply(demo.login(&body).await) });
    let logout = warp::post()
        .and(warp::path!("logout"))
        .and(slash(true))
        .and(with_demo.clone())
        .and(authenticated())
        .then(|demo: Demo, auth: Authenticated<User>| async move {
            reply(demo.logout(auth.token.as_str()).await)
        });
    let register = warp::post()
        .and(warp::path!("register"))
        .and(slash(true))
        .and(with_demo.clone())
        .and(warp::body::bytes())
        .map(|demo: Demo, body: Bytes| reply(demo.register(&body)));
    let me = get_or_head()
        .and(warp::path!("me"))
        .and(slash(true))
        .and(with_demo.clone())
        .and(auth::warp::principal::<User>())
        .map(|demo: Demo, user: User| reply(demo.me(&user)));
    let articles = get_or_head()
        .and(warp::path!("articles"))
        .and(slash(true))
        .and(with_demo.clone())
        .map(|demo: Demo| reply(demo.articles()));
    let healthz = get_or_head()
        .and(warp::path!("healthz"))
        .and(slash(false))
        .and(with_demo.clone())
        .then(|demo: Demo| async move { reply(demo.healthz().await) });
    let sms = get_or_head()
        .and(warp::path!("sms_codes" / String))
        .and(slash(true))
        .and(with_demo)
        .then(|mobile: String, demo: Demo| async move {
            // warp hands the raw segment over; decode it as axum does
            let mobile = common::path_value(&mobile).unwrap_or_default();
            reply(demo.sms_code(&mobile).await)
        });
    login
        .or(logout)
        .unify()
        .or(register)
        .unify()
        .or(me)
        .unify()
        .or(articles)
        .unify()
        .or(sms)
        .unify()
        .or(healthz)
        .unify()
}

pub async fn serve(listener: tokio::net::TcpListener, demo: Demo) -> std::io::Result<()> {
    let limits = demo.limits;
    let service = ServiceBuilder::new()
        // outermost: an oversized or stalled body costs no store round trip
        .layer(RequestBodyLimitLayer::new(limits.max_body))
        .layer(RequestBodyTimeoutLayer::new(limits.body_read))
        .layer(demo.auth_layer())
        .layer(demo.rate_limit_layer())
        .layer(demo.cache_layer())
        .service(warp::service(routes(demo)));
    common::serve_tower(listener, service, limits.header_read).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run(serve).await
}
