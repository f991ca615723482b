use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use tokio::sync::Barrier;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};
use tower_redis_http::FailurePolicy;
use tower_redis_http::cache::{
    CacheRefusal, QueryOrder, RequestDirectives, ResponseCacheBuilder, ResponseCacheLayer,
};
use tower_redis_http::store::{Expiry, MemoryStore, RedisStore, Store, Ttl};

use crate::support::{Backend, TestRedis, command_calls};
use crate::{App, ReqBody, TestBody, app, get, ok, req, send, stored_entries, until_hit};

fn cache(backend: &Backend) -> ResponseCacheBuilder {
    ResponseCacheLayer::cache_page(backend.store(), Duration::from_secs(60))
}

/// The cache on a Redis-only case's own server.
async fn cache_on(redis: &TestRedis) -> ResponseCacheBuilder {
    ResponseCacheLayer::cache_page(crate::redis_store(redis).await, Duration::from_secs(60))
}

async fn a_miss_is_stored_and_then_served_with_age_and_cache_status(backend: &Backend) {
    let (app, runs) = app(cache(backend).x_cache_header(true), |_, run| {
        let mut response = ok(&format!("articles, run {run}"));
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        response
    });
    let miss = send(&app, req(get("/articles/"))).await;
    assert_eq!(miss.status, StatusCode::OK);
    assert_eq!(miss.body, "articles, run 1");
    assert_eq!(
        miss.cache_status(),
        "tower-redis-http; fwd=uri-miss; detail=storing"
    );
    assert_eq!(miss.headers["x-cache"], "MISS");
    crate::stored(backend, 1).await;

    let hit = send(&app, req(get("/articles/"))).await;
    assert_eq!(hit.body, "articles, run 1");
    assert_eq!(hit.headers["content-type"], "application/json");
    assert_eq!(hit.headers["x-cache"], "HIT");
    assert_eq!(hit.headers["age"], "0");
    let status = hit.cache_status();
    assert!(
        status.starts_with("tower-redis-http; hit; ttl="),
        "{status}"
    );
    let ttl: u64 = status.rsplit('=').next().unwrap().parse().unwrap();
    assert!(ttl > 50 && ttl <= 60, "{status}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

async fn head_is_answered_from_the_get_entry_and_never_stored_itself(backend: &Backend) {
    let (app, runs) = app(cache(backend), |request, _| {
        let body = if request.method() == Method::HEAD {
            ""
        } else {
            "page"
        };
        let mut response = ok(body);
        response
            .headers_mut()
            .insert("content-length", "4".parse().unwrap());
        response
    });
    let head = send(&app, req(get("/p").method(Method::HEAD))).await;
    assert!(head.cache_status().contains("fwd=uri-miss"));
    assert!(!head.cache_status().contains("storing"));
    let miss = send(&app, req(get("/p"))).await;
    assert!(
        miss.cache_status().contains("fwd=uri-miss; detail=storing"),
        "HEAD stored nothing"
    );
    crate::stored(backend, 1).await;
    let head = send(&app, req(get("/p").method(Method::HEAD))).await;
    assert!(head.is_hit());
    assert_eq!(head.body, "");
    assert_eq!(head.headers["content-length"], "4");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// Two requests for a response that must never be stored: both run the handler.
async fn assert_never_stored<F>(
    builder: ResponseCacheBuilder,
    respond: F,
    request: fn() -> Request<ReqBody>,
    case: &str,
) where
    F: Fn(&Request<ReqBody>, usize) -> Response<TestBody> + Clone + Send + Sync + 'static,
{
    let (app, runs) = app(builder, respond);
    let first = send(&app, request()).await;
    assert!(
        !first.cache_status().contains("storing"),
        "{case}: {}",
        first.cache_status()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = send(&app, request()).await;
    assert!(!second.is_hit(), "{case} was served from the cache");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "{case}");
}

/// A handler answering with one extra response header.
fn with(
    name: &'static str,
    value: &'static str,
) -> impl Fn(&Request<ReqBody>, usize) -> Response<TestBody> + Clone + Send + Sync + 'static {
    move |_, _| {
        let mut response = ok("page");
        response.headers_mut().insert(name, value.parse().unwrap());
        response
    }
}

fn cc(value: &'static str) -> Response<TestBody> {
    let mut response = ok("page");
    response
        .headers_mut()
        .insert("cache-control", value.parse().unwrap());
    response
}

async fn responses_that_must_not_be_shared_are_never_stored(backend: &Backend) {
    let plain = || req(get("/x"));
    // each case starts from an empty Redis: an unstorable answer leaves its hit-for-miss memo
    // (`:hfm`) there, which is not an entry
    let flush = || {
        if let Some(redis) = backend.server() {
            redis.command(&["FLUSHALL"]);
        }
    };
    for (name, value) in [
        ("cache-control", "private"),
        ("cache-control", "PRIVATE, max-age=60"),
        ("cache-control", "private=\"Set-Cookie\""),
        ("cache-control", "no-store"),
        ("cache-control", "No-Store"),
        ("cache-control", "no-cache"),
        ("cache-control", "no-cache=\"x-a\""),
        ("cache-control", "max-age=0"),
        ("set-cookie", "sessionid=abc"),
        ("vary", "*"),
        ("vary", "Accept, *"),
    ] {
        flush();
        assert_never_stored(
            cache(backend),
            with(name, value),
            plain,
            &format!("{name}: {value}"),
        )
        .await;
    }
    flush();
    assert_never_stored(
        cache(backend),
        |_, _| {
            let mut response = ok("not found");
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        },
        plain,
        "404",
    )
    .await;
    flush();
    assert_never_stored(
        cache(backend),
        |_, _| ok("secret"),
        || req(get("/x").header("authorization", "Bearer t")),
        "Authorization",
    )
    .await;
    flush();
    assert_never_stored(
        cache(backend),
        |_, _| ok("post"),
        || req(get("/x").method(Method::POST)),
        "POST",
    )
    .await;
    assert!(backend.is_empty(), "something was stored");
}

/// A response that is not stored says why, with RFC 9211's `detail`; the layer can leave it
/// out.
async fn a_response_not_stored_says_why_in_cache_status(backend: &Backend) {
    type Respond = Box<dyn Fn() -> Response<TestBody> + Send + Sync>;
    let cases: Vec<(&str, Respond, bool, &str)> = vec![
        ("private", Box::new(|| cc("private")), false, "private"),
        ("no-store", Box::new(|| cc("no-store")), false, "no-store"),
        ("no-cache", Box::new(|| cc("no-cache")), false, "no-cache"),
        ("zero-ttl", Box::new(|| cc("max-age=0")), false, "zero-ttl"),
        (
            "cookie",
            Box::new(|| with("set-cookie", "a=b")(&req(get("/")), 0)),
            false,
            "set-cookie",
        ),
        (
            "vary",
            Box::new(|| with("vary", "*")(&req(get("/")), 0)),
            false,
            "vary-star",
        ),
        (
            "missing",
            Box::new(|| {
                let mut response = ok("not found");
                *response.status_mut() = StatusCode::NOT_FOUND;
                response
            }),
            false,
            "status",
        ),
        ("secret", Box::new(|| ok("secret")), true, "authorization"),
    ];
    for (path, respond, credentialed, detail) in cases {
        let respond = Arc::new(respond);
        let (app, _) = app(cache(backend), move |_, _| respond());
        let mut request = get(&format!("/why/{path}"));
        if credentialed {
            request = request.header("authorization", "Bearer t");
        }
        let reply = send(&app, req(request)).await;
        assert_eq!(
            reply.cache_status(),
            format!("tower-redis-http; fwd=uri-miss; detail={detail}"),
            "{path}"
        );
    }
    let (quiet, _) = app(cache(backend).cache_status_detail(false), |_, _| {
        cc("private")
    });
    let reply = send(&quiet, req(get("/why/quiet"))).await;
    assert_eq!(reply.cache_status(), "tower-redis-http; fwd=uri-miss");
}

async fn authorized_requests_are_stored_when_the_response_says_public(backend: &Backend) {
    let (app, runs) = app(cache(backend), |_, _| cc("public, max-age=60"));
    send(&app, req(get("/pub").header("authorization", "Bearer t"))).await;
    crate::stored(backend, 1).await;
    assert!(send(&app, req(get("/pub"))).await.is_hit());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

async fn cookies_are_stored_only_on_request_and_never_replayed(backend: &Backend) {
    let (app, _) = app(
        cache(backend).store_responses_setting_cookies(true),
        with("set-cookie", "sessionid=abc"),
    );
    let miss = send(&app, req(get("/c"))).await;
    assert_eq!(
        miss.headers["set-cookie"], "sessionid=abc",
        "the miss itself keeps its cookie"
    );
    crate::stored(backend, 1).await;
    let hit = send(&app, req(get("/c"))).await;
    assert!(hit.is_hit());
    assert!(!hit.headers.contains_key("set-cookie"));
}

async fn the_handlers_max_age_shortens_the_ttl_and_expired_entries_are_misses(backend: &Backend) {
    let (app, runs) = app(cache(backend), |_, _| cc("max-age=1"));
    send(&app, req(get("/short"))).await;
    crate::stored(backend, 1).await;
    let store = backend.cache_store();
    let ttl = store.ttl(&crate::entry_key("/short")).await.unwrap();
    let left = ttl.remaining().expect("the entry expires");
    assert!(
        left > Duration::ZERO && left <= Duration::from_secs(1),
        "{ttl:?}"
    );
    backend.advance(Duration::from_millis(1100)).await;
    assert_eq!(
        store.ttl(&crate::entry_key("/short")).await.unwrap(),
        Ttl::Missing
    );
    assert!(!send(&app, req(get("/short"))).await.is_hit());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

async fn patched_headers_carry_max_age_and_expires(backend: &Backend) {
    let (app, _) = app(cache(backend).patch_response_headers(true), |_, _| {
        cc("max-age=3600, must-revalidate")
    });
    let miss = send(&app, req(get("/patched"))).await;
    assert_eq!(miss.headers["cache-control"], "must-revalidate, max-age=60");
    assert!(httpdate::parse_http_date(miss.headers["expires"].to_str().unwrap()).is_ok());
    crate::stored(backend, 1).await;
    let hit = send(&app, req(get("/patched"))).await;
    assert_eq!(hit.headers["cache-control"], "must-revalidate, max-age=60");
}

async fn vary_keys_each_variant_by_the_varied_request_headers(backend: &Backend) {
    let (app, runs) = app(cache(backend), |request, _| {
        let language = request
            .headers()
            .get("accept-language")
            .map_or("none", |v| v.to_str().unwrap())
            .to_owned();
        let mut response = ok(&format!("hello in {language}"));
        response
            .headers_mut()
            .insert("vary", "Accept-Language".parse().unwrap());
        response
    });
    let en = || req(get("/greet").header("accept-language", "en"));
    let fr = || req(get("/greet").header("accept-language", "fr"));
    assert!(
        send(&app, en())
            .await
            .cache_status()
            .contains("fwd=uri-miss")
    );
    crate::stored(backend, 1).await;
    let fr_miss = send(&app, fr()).await;
    assert!(
        fr_miss.cache_status().contains("fwd=vary-miss"),
        "{}",
        fr_miss.cache_status()
    );
    assert_eq!(fr_miss.body, "hello in fr");
    crate::stored(backend, 2).await;
    let hit = send(&app, en()).await;
    assert_eq!((hit.is_hit(), hit.body.as_str()), (true, "hello in en"));
    let hit = send(&app, fr()).await;
    assert_eq!((hit.is_hit(), hit.body.as_str()), (true, "hello in fr"));
    // no header at all is a variant of its own
    let none = send(&app, req(get("/greet"))).await;
    assert_eq!(none.body, "hello in none");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    if let Some(redis) = backend.server() {
        assert_eq!(
            redis.command(&["GET", redis.command(&["KEYS", "*:vary"]).trim()]),
            "accept-language"
        );
    }
}

async fn validators_give_304_from_the_entry(backend: &Backend) {
    let (app, runs) = app(cache(backend), |_, _| {
        let mut response = ok("versioned");
        response
            .headers_mut()
            .insert("etag", "\"v1\"".parse().unwrap());
        response.headers_mut().insert(
            "last-modified",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        response
            .headers_mut()
            .insert("cache-control", "max-age=60".parse().unwrap());
        response
    });
    send(&app, req(get("/v"))).await;
    crate::stored(backend, 1).await;
    let not_modified = send(&app, req(get("/v").header("if-none-match", "W/\"v1\""))).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.body, "");
    assert_eq!(not_modified.headers["etag"], "\"v1\"");
    assert_eq!(not_modified.headers["cache-control"], "max-age=60");
    assert!(not_modified.cache_status().contains("hit"));
    let changed = send(&app, req(get("/v").header("if-none-match", "\"v0\""))).await;
    assert_eq!(
        (changed.status, changed.body.as_str()),
        (StatusCode::OK, "versioned")
    );
    let since = send(
        &app,
        req(get("/v").header("if-modified-since", "Thu, 22 Oct 2015 00:00:00 GMT")),
    )
    .await;
    assert_eq!(since.status, StatusCode::NOT_MODIFIED);
    let older = send(
        &app,
        req(get("/v").header("if-modified-since", "Tue, 20 Oct 2015 00:00:00 GMT")),
    )
    .await;
    assert_eq!(older.status, StatusCode::OK);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

async fn a_computed_etag_lets_hits_answer_304(backend: &Backend) {
    let (app, _) = app(cache(backend).compute_etag(true), |_, _| {
        ok("no etag from the handler")
    });
    send(&app, req(get("/e"))).await;
    crate::stored(backend, 1).await;
    let hit = send(&app, req(get("/e"))).await;
    let etag = hit.headers["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    let not_modified = send(&app, req(get("/e").header("if-none-match", etag.as_str()))).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
}

async fn age_adds_the_resident_time_to_the_age_the_handler_sent(backend: &Backend) {
    let (app, _) = app(cache(backend), |_, _| {
        let mut response = ok("aged");
        response.headers_mut().insert("age", "100".parse().unwrap());
        response
    });
    send(&app, req(get("/aged"))).await;
    crate::stored(backend, 1).await;
    let hit = send(&app, req(get("/aged"))).await;
    let age: u64 = hit.headers["age"].to_str().unwrap().parse().unwrap();
    assert!((100..110).contains(&age), "{age}");
    assert_eq!(hit.headers.get_all("age").iter().count(), 1);
}

async fn an_unkeyed_forwarded_host_cannot_poison_the_entry_for_others(backend: &Backend) {
    // an application that (wrongly) trusts X-Forwarded-Host when building links
    let (app, _) = app(cache(backend), |request, _| {
        let host = request
            .headers()
            .get("x-forwarded-host")
            .or_else(|| request.headers().get("host"))
            .map_or("?", |v| v.to_str().unwrap())
            .to_owned();
        ok(&format!("<a href=\"https://{host}/login\">"))
    });
    let attack = || req(get("/home").header("x-forwarded-host", "evil.example"));
    let poisoned = send(&app, attack()).await;
    assert!(poisoned.body.contains("evil.example"));
    assert!(!poisoned.cache_status().contains("storing"));
    // the spellings CGI and WSGI servers read as the same field (the adversary's review of
    // issue 28): not stored either
    for spelling in ["x_forwarded_host", "X_Forwarded-Host", "x-forwarded_host"] {
        let underscored = send(&app, req(get("/home").header(spelling, "evil.example"))).await;
        assert!(
            !underscored.cache_status().contains("storing"),
            "{spelling}: {}",
            underscored.cache_status()
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let victim = send(&app, req(get("/home"))).await;
    assert!(
        !victim.body.contains("evil"),
        "the victim got the attacker's page"
    );
    crate::stored(backend, 1).await;
    let victim = send(&app, req(get("/home"))).await;
    assert!(victim.is_hit());
    assert!(victim.body.contains("shop.example"));
    // the attacker now gets the clean entry too
    assert!(!send(&app, attack()).await.body.contains("evil"));
    // a forged Host keys an entry of its own
    let other_host = send(
        &app,
        req(Request::get("/home").header("host", "evil.example")),
    )
    .await;
    assert!(!other_host.is_hit());
    let victim = send(&app, req(get("/home"))).await;
    assert!(victim.body.contains("shop.example"));
}

/// The other names frameworks read the scheme, host or path from (issue 35, finding 4):
/// Rack's `X-Forwarded-Ssl` and `X-Url-Scheme`, Traefik's and nginx's `X-Forwarded-Uri`,
/// `X-Original-Uri`, the CGI mapping's `X-Forwarded-Protocol`. An answer to a request that
/// carries one (in either spelling) is not stored for everyone else.
async fn every_name_frameworks_read_the_origin_from_keeps_an_answer_unstored(backend: &Backend) {
    let (app, _) = app(cache(backend), |_, _| ok("page"));
    for name in [
        "x-forwarded-ssl",
        "x-url-scheme",
        "front-end-https",
        "x-forwarded-uri",
        "x-forwarded-method",
        "x-forwarded-protocol",
        "x-forwarded-path",
        "x-original-uri",
        "x-original-method",
        "X_Forwarded_Ssl",
        "x_url_scheme",
    ] {
        let reply = send(&app, req(get("/framework").header(name, "https"))).await;
        assert!(
            !reply.cache_status().contains("storing"),
            "{name}: {}",
            reply.cache_status()
        );
    }
}

/// A body that sends half of what its `Content-Length` says, then fails: an origin that
/// truncates its answer.
struct TruncatedBody {
    sent: bool,
}

impl http_body::Body for TruncatedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if self.sent {
            return std::task::Poll::Ready(Some(Err(std::io::Error::other("origin hung up"))));
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            b"half of it",
        )))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(20)
    }
}

/// The miss's `Cache-Status` leaves before the body has gone by, so it cannot say the response
/// was stored (issue 35, finding 10): it says the response is being stored, and a body that
/// then fails leaves nothing behind.
async fn a_truncated_body_is_announced_as_storing_and_never_stored(backend: &Backend) {
    use http_body_util::BodyExt;

    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let service = ServiceBuilder::new()
        .layer(cache(backend).build().unwrap())
        .service_fn(move |_request: Request<ReqBody>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                let mut response = Response::new(TruncatedBody { sent: false });
                response
                    .headers_mut()
                    .insert("content-length", "20".parse().unwrap());
                Ok::<_, Infallible>(response)
            }
        });
    for round in 1..=2 {
        let response = service
            .clone()
            .oneshot(req(get("/truncated")))
            .await
            .unwrap();
        let status = response.headers()["cache-status"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(status, "tower-redis-http; fwd=uri-miss; detail=storing");
        assert!(response.into_body().collect().await.is_err());
        // nothing stored: the next request goes to the handler again
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.load(Ordering::SeqCst), round);
    }
}

async fn the_query_is_keyed_as_received_unless_sorting_is_asked_for(backend: &Backend) {
    let (app, runs) = app(cache(backend), |_, _| ok("q"));
    send(&app, req(get("/s?a=1&b=2"))).await;
    crate::stored(backend, 1).await;
    assert!(!send(&app, req(get("/s?b=2&a=1"))).await.is_hit());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // both orders were stored as entries of their own
    crate::stored(backend, 2).await;
    assert!(until_hit(&app, || req(get("/s?b=2&a=1"))).await.is_hit());
    assert!(send(&app, req(get("/s?a=1&b=2"))).await.is_hit());
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    let (app, runs) = crate::app(cache(backend).query_order(QueryOrder::Sorted), |_, _| {
        ok("q")
    });
    send(&app, req(get("/t?a=1&b=2"))).await;
    crate::stored(backend, 3).await;
    assert!(send(&app, req(get("/t?b=2&a=1"))).await.is_hit());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

async fn request_cache_control_is_ignored_by_default_and_honored_on_request(backend: &Backend) {
    let (app, _) = app(cache(backend), |_, _| ok("page"));
    send(&app, req(get("/r"))).await;
    crate::stored(backend, 1).await;
    assert!(
        send(&app, req(get("/r").header("cache-control", "no-cache")))
            .await
            .is_hit()
    );

    let (honoring, runs) = crate::app(
        cache(backend).request_directives(RequestDirectives::Honor),
        |_, _| ok("page"),
    );
    let bypass = send(
        &honoring,
        req(get("/r").header("cache-control", "no-cache")),
    )
    .await;
    assert!(
        bypass.cache_status().contains("fwd=request"),
        "{}",
        bypass.cache_status()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(
        send(&honoring, req(get("/r").header("pragma", "no-cache")))
            .await
            .cache_status()
            .contains("fwd=request")
    );
    let no_store = send(
        &honoring,
        req(get("/fresh").header("cache-control", "no-store")),
    )
    .await;
    assert!(!no_store.cache_status().contains("storing"));
}

async fn oversized_and_long_streaming_bodies_pass_through_unstored(backend: &Backend) {
    let big = "x".repeat(2048);
    let (app, _) = app(
        cache(backend).max_body(1024),
        move |request, _| match request.uri().path() {
            "/big" => ok(&big),
            "/stream-long" => {
                Response::new(TestBody::streaming(vec![Bytes::from(vec![b'a'; 600]); 3]))
            }
            _ => Response::new(TestBody::streaming(vec![
                Bytes::from_static(b"ab"),
                Bytes::from_static(b"cd"),
            ])),
        },
    );
    let reply = send(&app, req(get("/big"))).await;
    assert_eq!(reply.body.len(), 2048);
    assert!(!reply.cache_status().contains("storing"));
    let reply = send(&app, req(get("/stream-long"))).await;
    assert_eq!(
        reply.body.len(),
        1800,
        "the streamed body passes through whole"
    );
    let reply = send(&app, req(get("/stream-short"))).await;
    assert_eq!(reply.body, "abcd");
    let keys = crate::stored(backend, 1).await;
    if backend.server().is_some() {
        assert_eq!(keys.len(), 1, "only the short stream is stored: {keys:?}");
    }
    let hit = send(&app, req(get("/stream-short"))).await;
    assert_eq!((hit.is_hit(), hit.body.as_str()), (true, "abcd"));
    assert!(!send(&app, req(get("/stream-long"))).await.is_hit());
    assert!(!send(&app, req(get("/big"))).await.is_hit());
}

async fn a_corrupt_entry_is_a_miss_and_is_replaced(backend: &Backend) {
    let (app, runs) = app(cache(backend), |_, run| ok(&format!("run {run}")));
    send(&app, req(get("/corrupt"))).await;
    crate::stored(backend, 1).await;
    let store = backend.cache_store();
    for garbage in [
        "garbage",
        "TRHC\u{1}\u{ff}\u{ff}\u{ff}\u{7f}xx",
        "TRHC\u{9}future format",
    ] {
        store
            .set(
                &crate::entry_key("/corrupt"),
                Bytes::from(garbage),
                Expiry::Never,
            )
            .await
            .unwrap();
        let reply = send(&app, req(get("/corrupt"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{garbage:?}");
        assert!(!reply.is_hit());
        crate::stored(backend, 1).await;
    }
    let hit = until_hit(&app, || req(get("/corrupt"))).await;
    assert!(hit.body.starts_with("run "));
    assert!(runs.load(Ordering::SeqCst) >= 4);
}

async fn a_hundred_concurrent_misses_run_the_handler_once(backend: &Backend) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let service = ServiceBuilder::new()
        .layer(cache(backend).build().unwrap())
        .service_fn(move |_request: Request<ReqBody>| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, Infallible>(ok("expensive"))
            }
        });
    let app: App = BoxCloneService::new(service);
    let barrier = Arc::new(Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (app, barrier) = (app.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                send(&app, req(get("/hot"))).await
            })
        })
        .collect();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "expensive")
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_serves_from_the_handler_or_503_when_failing_closed() {
    let mut redis = TestRedis::start();
    let store = RedisStore::builder(redis.url())
        .command_timeout(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let builder = || ResponseCacheLayer::cache_page(store.clone(), Duration::from_secs(60));
    let (open, runs) = app(builder(), |_, _| ok("live"));
    let (closed, _) = app(builder().on_store_error(FailurePolicy::Closed), |_, _| {
        ok("live")
    });
    send(&open, req(get("/d"))).await;
    stored_entries(&redis, 1).await;

    redis.pause();
    let reply = tokio::time::timeout(Duration::from_secs(10), send(&open, req(get("/d"))))
        .await
        .expect("hung on a stalled Redis");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "live")
    );
    assert!(reply.cache_status().contains("fwd=miss"));
    let reply = send(&closed, req(get("/d"))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    // the answer is replaceable, like every answer the layers give by themselves
    let (replaced, _) = app(
        builder()
            .on_store_error(FailurePolicy::Closed)
            .refusal_response(|refusal: &CacheRefusal| {
                let mut response = Response::new(Bytes::from(format!("{refusal:?}")));
                *response.status_mut() = StatusCode::IM_A_TEAPOT;
                response
            }),
        |_, _| ok("live"),
    );
    let reply = send(&replaced, req(get("/d"))).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::IM_A_TEAPOT, "StoreUnavailable")
    );
    redis.resume();

    redis.kill();
    let reply = tokio::time::timeout(Duration::from_secs(10), send(&open, req(get("/d"))))
        .await
        .expect("hung with Redis gone");
    assert_eq!(reply.status, StatusCode::OK);
    assert!(runs.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn a_hit_costs_one_get_and_a_miss_that_stores_three_round_trips() {
    let redis = TestRedis::start();
    let (app, _) = app(cache_on(&redis).await, |_, _| ok("page"));
    // the first store also loads the script
    send(&app, req(get("/warm"))).await;
    stored_entries(&redis, 1).await;
    redis.command(&["CONFIG", "RESETSTAT"]);
    send(&app, req(get("/rt"))).await;
    stored_entries(&redis, 2).await;
    // the miss: a GET for the Vary list, one script taking the stampede lock and reading what
    // is stored now, and one script storing the entry, its Vary list and index and releasing
    // the lock (the scripts' GETs and SETs count in Redis's statistics too: 2 + 1 GETs, 1 + 2
    // SETs)
    assert_eq!(command_calls(&redis, "evalsha"), 2);
    assert_eq!(command_calls(&redis, "get"), 4);
    assert_eq!(command_calls(&redis, "set"), 3);
    redis.command(&["CONFIG", "RESETSTAT"]);
    for _ in 0..10 {
        assert!(send(&app, req(get("/rt"))).await.is_hit());
    }
    assert_eq!(command_calls(&redis, "get"), 10);

    // without the lock, a miss is two round trips
    let (unlocked, _) = crate::app(cache_on(&redis).await.stampede_lock(None), |_, _| {
        ok("page")
    });
    // a new layer rereads the namespace generation on its first request, then once a second
    send(&unlocked, req(get("/warm-unlocked"))).await;
    stored_entries(&redis, 3).await;
    redis.command(&["CONFIG", "RESETSTAT"]);
    send(&unlocked, req(get("/unlocked"))).await;
    stored_entries(&redis, 4).await;
    assert_eq!(command_calls(&redis, "get"), 1);
    assert_eq!(command_calls(&redis, "set"), 2);
    assert_eq!(command_calls(&redis, "evalsha"), 1);
}

#[test]
fn invalid_configurations_fail_at_build_time() {
    let store = MemoryStore::new();
    assert!(
        ResponseCacheLayer::cache_page(store.clone(), Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(
        ResponseCacheLayer::cache_page(store.clone(), Duration::from_secs(1))
            .statuses([])
            .build()
            .is_err()
    );
    assert!(
        ResponseCacheLayer::cache_page(store, Duration::from_secs(1))
            .cache_name("bad name")
            .build()
            .is_err()
    );
}

async fn a_body_read_only_up_to_its_content_length_is_still_stored(backend: &Backend) {
    use http_body::Body as _;
    let (app, runs) = app(cache(backend), |_, _| ok("exact length"));
    // as hyper's server does: stop polling once Content-Length bytes went out, never see `None`
    let response = app.clone().oneshot(req(get("/hyper-like"))).await.unwrap();
    let mut body = std::pin::pin!(response.into_body());
    let length = body.size_hint().exact().expect("a body of known length");
    let mut received = 0;
    while received < length {
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        let frame = frame.expect("data until the length").unwrap();
        received += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    crate::stored(backend, 1).await;
    assert!(send(&app, req(get("/hyper-like"))).await.is_hit());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

async fn compressed_entries_are_smaller_and_readable_whatever_the_setting(backend: &Backend) {
    let page = "<li>an article title</li>\n".repeat(800);
    let body = page.clone();
    let (compressing, runs) = app(cache(backend).compress_above(1024), move |_, _| ok(&body));
    send(&compressing, req(get("/big"))).await;
    crate::stored(backend, 1).await;
    let store = backend.cache_store();
    let stored = store
        .get(&crate::entry_key("/big"))
        .await
        .unwrap()
        .unwrap()
        .len();
    assert!(
        stored * 4 < page.len(),
        "{stored} bytes stored for {}",
        page.len()
    );
    let hit = until_hit(&compressing, || req(get("/big"))).await;
    assert_eq!(hit.body, page);

    // the setting changed: a layer that does not compress still reads the compressed entry
    let body = page.clone();
    let (uncompressing, plain_runs) = app(cache(backend), move |_, _| ok(&body));
    let hit = send(&uncompressing, req(get("/big"))).await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    assert_eq!(hit.body, page);
    assert_eq!(plain_runs.load(Ordering::SeqCst), 0);

    // and an entry stored uncompressed is read by the compressing layer
    send(&uncompressing, req(get("/other"))).await;
    crate::stored(backend, 2).await;
    let stored = store
        .get(&crate::entry_key("/other"))
        .await
        .unwrap()
        .unwrap()
        .len();
    assert!(stored > page.len());
    let hit = send(&compressing, req(get("/other"))).await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    assert_eq!(hit.body, page);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_refusing_writes_is_not_announced_as_stored() {
    let redis = TestRedis::start();
    let (app, runs) = app(cache_on(&redis).await, |_, run| ok(&format!("page {run}")));
    // Redis out of memory, refusing every write (noeviction is the default policy)
    assert_eq!(redis.command(&["CONFIG", "SET", "maxmemory", "1"]), "OK");
    let mut announced_after_refusal = None;
    for n in 0..200 {
        let miss = send(&app, req(get(&format!("/oom/{n}")))).await;
        assert_eq!(
            miss.status,
            StatusCode::OK,
            "a refused write must not fail the request"
        );
        if !miss.cache_status().contains("storing") {
            announced_after_refusal = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        announced_after_refusal.is_some(),
        "every miss announced `stored` while Redis refused every write"
    );
    assert_eq!(redis.command(&["DBSIZE"]), "0");
    // once Redis takes writes again, misses are stored and announced again
    assert_eq!(redis.command(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
    let stored = crate::support::eventually(Duration::from_secs(5), || async {
        send(&app, req(get("/after"))).await.is_hit()
    })
    .await;
    assert!(
        stored,
        "the cache did not store again after Redis recovered"
    );
    assert!(runs.load(Ordering::SeqCst) >= 2);
}

async fn behind_a_trusted_proxy_forwarded_host_and_scheme_are_keyed_not_refused(backend: &Backend) {
    use std::net::SocketAddr;
    // an application that builds its links from the forwarded host and scheme
    let (app, runs) = app(
        cache(backend).trusted_proxies(["10.0.0.1"]),
        |request, run| {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .map_or("-", |v| v.to_str().unwrap())
                    .to_owned()
            };
            ok(&format!(
                "{}://{} run {run}",
                header("x-forwarded-proto"),
                header("x-forwarded-host")
            ))
        },
    );
    let through = |peer: [u8; 4], host: &str| {
        let mut request = req(get("/page")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", host));
        request
            .extensions_mut()
            .insert(SocketAddr::from((peer, 4711)));
        request
    };
    // from the proxy: stored under the URL the page really has, and hit
    let miss = send(&app, through([10, 0, 0, 1], "shop.example")).await;
    assert!(
        miss.cache_status().contains("storing"),
        "{}",
        miss.cache_status()
    );
    crate::stored(backend, 1).await;
    let entry = backend
        .cache_store()
        .get("cache:{https://shop.example/page}:-")
        .await
        .unwrap();
    assert!(
        entry.is_some(),
        "not stored under the forwarded scheme and host"
    );
    let hit = send(&app, through([10, 0, 0, 1], "shop.example")).await;
    assert!(hit.is_hit());
    assert_eq!(hit.body, "https://shop.example run 1");
    // another forwarded host through the same proxy is another page
    let other = send(&app, through([10, 0, 0, 1], "evil.example")).await;
    assert!(!other.is_hit());
    assert_eq!(other.body, "https://evil.example run 2");
    // the same headers from anyone else are a poisoning attempt: answered, never stored
    let attack = send(&app, through([203, 0, 113, 9], "evil.example")).await;
    assert!(!attack.cache_status().contains("storing"));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let direct = send(&app, req(get("/page"))).await;
    assert!(!direct.body.contains("evil"), "{}", direct.body);
}

async fn an_http2_get_with_a_body_but_no_length_is_not_stored(backend: &Backend) {
    use http_body_util::{BodyExt, Full};
    // a handler that (wrongly) reads a GET's body into its page
    let app = ServiceBuilder::new()
        .layer(cache(backend).build().unwrap())
        .service_fn(|request: Request<Full<Bytes>>| async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let page = format!("page {}", String::from_utf8_lossy(&body));
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(page))))
        });
    let h2 = |body: &'static str| {
        Request::get("/fat")
            .version(http::Version::HTTP_2)
            .header("host", "shop.example")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    let status = |response: &Response<_>| {
        response
            .headers()
            .get("cache-status")
            .map_or(String::new(), |v| v.to_str().unwrap().to_owned())
    };
    // DATA frames without a Content-Length: answered, never stored
    let poisoned = app.clone().oneshot(h2("evil")).await.unwrap();
    assert!(
        !status(&poisoned).contains("storing"),
        "{}",
        status(&poisoned)
    );
    let page = poisoned.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&page[..], b"page evil");
    // the same request without a body is stored as usual
    let clean = app.clone().oneshot(h2("")).await.unwrap();
    assert!(status(&clean).contains("storing"), "{}", status(&clean));
}

/// The `cache_page` mode answers ranges from its stored `200` too; a range request that
/// misses goes to the handler as it came, its `206` is never stored as the page, and the
/// URL is not remembered as unstorable: the next plain `GET` is stored.
async fn ranges_are_answered_from_the_page_and_partial_answers_never_stored(backend: &Backend) {
    let (app, runs) = app(cache(backend), |request, run| {
        let mut response = ok(&format!("0123456789 run {run}"));
        if request.headers().contains_key("range") {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            response
                .headers_mut()
                .insert("content-range", "bytes 0-1/16".parse().unwrap());
            *response.body_mut() = TestBody::full("01");
        }
        response
    });
    let ranged = || req(get("/doc").header("range", "bytes=0-1"));
    for _ in 0..2 {
        let partial = send(&app, ranged()).await;
        assert_eq!(partial.status, StatusCode::PARTIAL_CONTENT);
        assert!(
            !partial.cache_status().contains("storing"),
            "{}",
            partial.cache_status()
        );
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the range misses both reach the handler"
    );
    let page = send(&app, req(get("/doc"))).await;
    assert!(
        page.cache_status().contains("storing"),
        "{}",
        page.cache_status()
    );
    until_hit(&app, || req(get("/doc"))).await;
    let hit = send(&app, req(get("/doc").header("range", "bytes=-5"))).await;
    assert_eq!(hit.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(hit.headers["content-range"], "bytes 11-15/16");
    assert_eq!(hit.body, "run 3");
    assert!(hit.cache_status().contains("hit"));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

/// Issue 28, finding 2, in the `cache_page` mode: with `416` among the statuses stored, the
/// `416` a range miss got still never becomes the page; another listed status does.
async fn a_range_miss_stores_only_a_whole_answer(backend: &Backend) {
    let listed = [
        StatusCode::OK,
        StatusCode::NOT_FOUND,
        StatusCode::RANGE_NOT_SATISFIABLE,
    ];
    let (app, runs) = app(cache(backend).statuses(listed), |request, run| {
        let mut response = ok(&format!("run {run}"));
        match request.uri().path() {
            "/gone" => *response.status_mut() = StatusCode::NOT_FOUND,
            _ if request.headers().contains_key("range")
                || request.headers().contains_key("request-range") =>
            {
                *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                response
                    .headers_mut()
                    .insert("content-range", "bytes */5".parse().unwrap());
            }
            _ => {}
        }
        response
    });
    let attack = || req(get("/doc").header("range", "bytes=999999-"));
    for _ in 0..2 {
        let reply = send(&app, attack()).await;
        assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert!(
            !reply.cache_status().contains("storing"),
            "{}",
            reply.cache_status()
        );
    }
    // the pre-standard `Request-Range` some origins (Apache httpd) still answer
    let legacy = send(
        &app,
        req(get("/doc").header("request-range", "bytes=999999-")),
    )
    .await;
    assert_eq!(legacy.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert!(
        !legacy.cache_status().contains("storing"),
        "{}",
        legacy.cache_status()
    );
    let page = send(&app, req(get("/doc"))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.cache_status());
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    // a listed whole-response status answers a range request as it would a plain one
    let gone = send(&app, req(get("/gone").header("range", "bytes=0-1"))).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(
        gone.cache_status().contains("storing"),
        "{}",
        gone.cache_status()
    );
}

crate::on_each_backend!(
    a_range_miss_stores_only_a_whole_answer,
    ranges_are_answered_from_the_page_and_partial_answers_never_stored,
    a_miss_is_stored_and_then_served_with_age_and_cache_status,
    head_is_answered_from_the_get_entry_and_never_stored_itself,
    responses_that_must_not_be_shared_are_never_stored,
    a_response_not_stored_says_why_in_cache_status,
    authorized_requests_are_stored_when_the_response_says_public,
    cookies_are_stored_only_on_request_and_never_replayed,
    the_handlers_max_age_shortens_the_ttl_and_expired_entries_are_misses,
    patched_headers_carry_max_age_and_expires,
    vary_keys_each_variant_by_the_varied_request_headers,
    validators_give_304_from_the_entry,
    a_computed_etag_lets_hits_answer_304,
    age_adds_the_resident_time_to_the_age_the_handler_sent,
    an_unkeyed_forwarded_host_cannot_poison_the_entry_for_others,
    every_name_frameworks_read_the_origin_from_keeps_an_answer_unstored,
    a_truncated_body_is_announced_as_storing_and_never_stored,
    the_query_is_keyed_as_received_unless_sorting_is_asked_for,
    request_cache_control_is_ignored_by_default_and_honored_on_request,
    oversized_and_long_streaming_bodies_pass_through_unstored,
    a_corrupt_entry_is_a_miss_and_is_replaced,
    a_body_read_only_up_to_its_content_length_is_still_stored,
    compressed_entries_are_smaller_and_readable_whatever_the_setting,
    behind_a_trusted_proxy_forwarded_host_and_scheme_are_keyed_not_refused,
    an_http2_get_with_a_body_but_no_length_is_not_stored,
);
crate::on_each_backend!(
    multi_thread: a_hundred_concurrent_misses_run_the_handler_once,
);
