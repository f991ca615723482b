//! The auth layer against a real Redis: sources, rejections, allow-lists and bypass attempts,
//! sliding expiry, token issuing and revoking, and store failures.

#[path = "../support/mod.rs"]
mod support;

mod frameworks;
mod layer;
mod tokens;
#[cfg(feature = "axum")]
mod with_axum;

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use tower::{Service, ServiceExt};
use tower_redis_http::auth::Authenticated;
use tower_redis_http::store::RedisStore;

use support::TestRedis;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub username: String,
    pub is_active: bool,
}

pub fn alice() -> User {
    User {
        id: 1,
        username: "alice".into(),
        is_active: true,
    }
}

/// The handler behind the layer: tells who it saw.
pub async fn whoami(request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let who = match request.extensions().get::<Authenticated<User>>() {
        Some(auth) => format!("user:{}", auth.principal.username),
        None => match request.extensions().get::<Authenticated<u64>>() {
            Some(auth) => format!("id:{}", auth.principal),
            None => "anonymous".to_owned(),
        },
    };
    Ok(Response::new(Full::new(Bytes::from(who))))
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub extensions: http::Extensions,
}

pub async fn send<S, B>(service: &S, request: Request<Full<Bytes>>) -> Reply
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = service.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
        extensions: parts.extensions,
    }
}

pub fn get(uri: &str) -> http::request::Builder {
    Request::get(uri)
}

pub fn empty(builder: http::request::Builder) -> Request<Full<Bytes>> {
    builder.body(Full::new(Bytes::new())).unwrap()
}

pub async fn redis_store(redis: &TestRedis) -> RedisStore {
    RedisStore::builder(redis.url()).build().await.unwrap()
}
