//! The demo service on plain hyper 1: the three layers around a `service_fn` that routes by
//! hand, built with `tower::ServiceBuilder`.
//!
//! Runs on the embedded memory store, or on Redis when `REDIS_URL` is set; listens on
//! `127.0.0.1:3000` unless `ADDR` names another address.
//!
//! ```text
//! cargo run --example hyper
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

use std::convert::Infallible;

use bytes::Bytes;
use common::{Answer, Demo, User};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_redis_http::auth::Authenticated;

fn reply(answer: Answer) -> Response<Full<Bytes>> {
    let (status, cache_control) = (answer.status, answer.cache_control);
    let mut response = Response::new(Full::new(answer.into_bytes()));
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

/// Routes a request that got through the layers.
async fn route<B>(demo: Demo, request: Request<B>) -> Response<Full<Bytes>>
where
    B: http_body::Body,
{
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let user = request.extensions().get::<Authenticated<User>>().cloned();
    // bounded by the body limit and the body read timeout of `serve`
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return reply(Answer {
                status: StatusCode::BAD_REQUEST,
                body: json!({"detail": "The body was too large, too slow or unreadable."}),
                cache_control: None,
            });
        }
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // HEAD is answered wherever GET is (hyper leaves the body out)
    let method = if method == Method::HEAD {
        Method::GET
    } else {
        method
    };
    // each path exactly as the layers' allow-list and rules name it, slash included: a route
    // that also answered `/login` would be one the login limit does not name
    let slash = path.ends_with('/');
    match (method, segments.as_slice(), user) {
        (Method::POST, ["login"], _) if slash => reply(demo.login(&body).await),
        (Method::POST, ["logout"], Some(auth)) if slash => {
            reply(demo.logout(auth.token.as_str()).await)
        }
        (Method::POST, ["register"], _) if slash => reply(demo.register(&body)),
        (Method::GET, ["me"], Some(auth)) if slash => reply(demo.me(&auth.principal)),
        (Method::GET, ["articles"], _) if slash => reply(demo.articles()),
        (Method::GET, ["healthz"], _) if !slash => reply(demo.healthz().await),
        (Method::GET, ["sms_codes", mobile], _) if slash => match common::path_value(mobile) {
            Some(mobile) => reply(demo.sms_code(&mobile).await),
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn not_found() -> Response<Full<Bytes>> {
    reply(Answer {
        status: StatusCode::NOT_FOUND,
        body: json!({"detail": "Not found."}),
        cache_control: None,
    })
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
        .service_fn(move |request| {
            let demo = demo.clone();
            async move { Ok::<_, Infallible>(route(demo, request).await) }
        });
    common::serve_tower(listener, service, limits.header_read).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run(serve).await
}
