//! The same layer under plain hyper 1 (over real TCP) and around a warp 0.4 filter.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{ServiceBuilder, ServiceExt};
use tower_redis_http::auth::{Authenticated, TokenAuthLayer, Tokens};
use warp::Filter;

use crate::support::TestRedis;
use crate::{User, alice, redis_store};

async fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8(response).unwrap()
}

#[tokio::test]
async fn hyper_serves_the_layer_over_tcp() {
    let redis = TestRedis::start();
    let store = redis_store(&redis).await;
    let token = Tokens::new(store.clone(), |u: &User| u.id.to_string())
        .issue(&alice())
        .await
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(
            TokenAuthLayer::<User>::bearer(store)
                .allow("/health/")
                .build()
                .unwrap(),
        )
        .service_fn(|request: Request<hyper::body::Incoming>| async move {
            let who = request
                .extensions()
                .get::<Authenticated<User>>()
                .map_or("anonymous".to_owned(), |auth| {
                    auth.principal.username.clone()
                });
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who))))
        });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let ok = raw_http(
        addr,
        &format!("GET /me/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
    assert!(ok.ends_with("alice"), "{ok}");
    let denied = raw_http(
        addr,
        "GET /me/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(denied.starts_with("HTTP/1.1 401 Unauthorized"), "{denied}");
    assert!(
        denied.contains("www-authenticate: Bearer realm=\"api\""),
        "{denied}"
    );
    assert!(
        denied.ends_with(r#"{"detail":"Authentication credentials were not provided."}"#),
        "{denied}"
    );
    let bypass = raw_http(
        addr,
        "GET /health/../me/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(bypass.starts_with("HTTP/1.1 400 Bad Request"), "{bypass}");
    let open = raw_http(
        addr,
        "GET /health/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(open.ends_with("anonymous"), "{open}");
    server.abort();
}

#[tokio::test]
async fn warp_filters_run_behind_the_layer_and_read_the_principal() {
    let redis = TestRedis::start();
    let store = redis_store(&redis).await;
    let token = Tokens::new(store.clone(), |u: &User| u.id.to_string())
        .issue(&alice())
        .await
        .unwrap();
    let me = warp::path!("me")
        .and(warp::ext::get::<Authenticated<User>>())
        .map(|auth: Authenticated<User>| auth.principal.username);
    let service = ServiceBuilder::new()
        .layer(TokenAuthLayer::<User>::bearer(store).build().unwrap())
        .service(warp::service(me));

    let request = Request::get("/me")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "alice");

    let response = service
        .oneshot(Request::get("/me").body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[cfg(feature = "warp")]
#[tokio::test]
async fn warp_filters_hand_over_the_principal_or_answer_401() {
    use tower_redis_http::auth;
    let store = tower_redis_http::store::MemoryStore::new();
    let token = Tokens::new(store.clone(), |u: &User| u.id.to_string())
        .issue(&alice())
        .await
        .unwrap();
    let me = warp::path!("me")
        .and(auth::warp::principal::<User>())
        .map(|user: User| user.username);
    let articles = warp::path!("articles")
        .and(auth::warp::optional_principal::<User>())
        .map(|user: Option<User>| {
            user.map_or("public".to_owned(), |u| format!("for {}", u.username))
        });
    let routes = me.or(articles).unify().recover(auth::warp::recover);
    let layered = ServiceBuilder::new()
        .layer(
            TokenAuthLayer::<User>::bearer(store)
                .optional("/articles/")
                .build()
                .unwrap(),
        )
        .service(warp::service(routes.clone()));
    let bare = warp::service(routes);

    let send = |request: Request<Full<Bytes>>| {
        let layered = layered.clone();
        async move {
            let response = layered.oneshot(request).await.unwrap();
            let status = response.status();
            (
                status,
                response.into_body().collect().await.unwrap().to_bytes(),
            )
        }
    };
    let with = |uri: &str| {
        Request::get(uri)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let without = |uri: &str| Request::get(uri).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(
        send(with("/me/")).await,
        (StatusCode::OK, Bytes::from("alice"))
    );
    assert_eq!(
        send(with("/articles/")).await,
        (StatusCode::OK, Bytes::from("for alice"))
    );
    assert_eq!(
        send(without("/articles/")).await,
        (StatusCode::OK, Bytes::from("public"))
    );

    // without the layer in front, the filter answers the layer's 401
    let response = bare.oneshot(without("/me")).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"api\""
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body,
        r#"{"detail":"Authentication credentials were not provided."}"#
    );
}
