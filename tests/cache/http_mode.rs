//! The HTTP-cache mode (RFC 9111): freshness sources, heuristics, request directives,
//! revalidation, stale-while-revalidate and stale-if-error.
//!
//! Entries are made stale without waiting by an `Age` from the handler: a response with
//! `max-age=60` and `Age: 60` is stale on arrival (RFC 9111 §4.2.3).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use tower_redis_http::cache::{
    CacheRefusal, RequestDirectives, ResponseCacheBuilder, ResponseCacheLayer,
};
use tower_redis_http::store::MemoryStore;

use crate::support::Backend;
use crate::{ReqBody, TestBody, app, get, ok, req, send, until_hit};

fn http_cache(backend: &Backend) -> ResponseCacheBuilder {
    ResponseCacheLayer::http_cache(backend.store())
}

/// A response with `body` and the given headers.
fn page(body: &str, headers: &[(&str, &str)]) -> Response<TestBody> {
    let mut response = ok(body);
    for (name, value) in headers {
        response.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}

fn status(code: u16, headers: &[(&str, &str)]) -> Response<TestBody> {
    let mut response = page("", headers);
    *response.status_mut() = StatusCode::from_u16(code).unwrap();
    response
}

fn date_in(seconds: i64) -> String {
    let now = SystemTime::now();
    let at = if seconds >= 0 {
        now + Duration::from_secs(seconds.unsigned_abs())
    } else {
        now - Duration::from_secs(seconds.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

/// The request headers the handler saw, run by run.
type Seen = Arc<Mutex<Vec<HeaderMap>>>;

fn seen() -> Seen {
    Arc::default()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

async fn freshness_comes_from_s_maxage_max_age_or_expires_and_hits_carry_age(backend: &Backend) {
    let expires = date_in(120);
    type Case = (&'static str, Vec<(&'static str, String)>, u64);
    let cases: Vec<Case> = vec![
        (
            "/s-maxage",
            vec![("cache-control", "max-age=30, s-maxage=300".into())],
            300,
        ),
        (
            "/max-age",
            vec![
                ("cache-control", "max-age=30".into()),
                ("expires", expires.clone()),
            ],
            30,
        ),
        (
            "/expires",
            vec![("date", date_in(0)), ("expires", expires.clone())],
            120,
        ),
    ];
    for (stored, (path, headers, ttl)) in cases.into_iter().enumerate() {
        let headers: Vec<(&str, String)> = headers;
        let (app, runs) = app(http_cache(backend), move |_, run| {
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            page(&format!("run {run}"), &pairs)
        });
        let miss = send(&app, req(get(path))).await;
        assert!(
            miss.cache_status().contains("storing"),
            "{path}: {}",
            miss.cache_status()
        );
        // RFC 9110 §6.6.1: a Date is added when the handler sent none
        assert!(miss.headers.contains_key("date"), "{path}");
        crate::stored(backend, stored + 1).await;
        let hit = until_hit(&app, || req(get(path))).await;
        assert_eq!(hit.body, "run 1", "{path}");
        let left: u64 = hit
            .cache_status()
            .rsplit('=')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            left + 3 >= ttl && left <= ttl,
            "{path}: {}",
            hit.cache_status()
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{path}");
    }
}

async fn an_invalid_or_past_expires_is_stale_and_without_a_validator_not_stored(backend: &Backend) {
    for expires in ["0", "not a date"] {
        let (app, runs) = app(http_cache(backend), move |_, _| {
            page("page", &[("expires", expires)])
        });
        let first = send(&app, req(get("/x"))).await;
        assert!(!first.cache_status().contains("storing"), "{expires}");
        send(&app, req(get("/x"))).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "{expires}");
    }
    // with a validator it is stored, and revalidated on every use
    let seen = seen();
    let log = Arc::clone(&seen);
    let (app, runs) = app(http_cache(backend), move |request, _| {
        log.lock().unwrap().push(request.headers().clone());
        if header(request.headers(), "if-none-match") == Some("\"v1\"") {
            status(304, &[])
        } else {
            page("body v1", &[("expires", "0"), ("etag", "\"v1\"")])
        }
    });
    send(&app, req(get("/y"))).await;
    crate::stored(backend, 1).await;
    let second = send(&app, req(get("/y"))).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body, "body v1");
    assert!(
        second.cache_status().contains("fwd=stale; fwd-status=304"),
        "{}",
        second.cache_status()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        header(&seen.lock().unwrap()[1], "if-none-match"),
        Some("\"v1\"")
    );
}

async fn heuristic_freshness_is_off_by_default_and_limited_to_cacheable_statuses(
    backend: &Backend,
) {
    let modified = date_in(-1000);
    let respond = move |request: &Request<ReqBody>, _| {
        let code = request.uri().path()[1..].parse().unwrap();
        let mut response = status(code, &[("last-modified", &modified)]);
        *response.body_mut() = TestBody::full("x");
        response
    };
    // off: stored for revalidation only (it has Last-Modified), never a plain hit
    let (off, _) = app(http_cache(backend), respond.clone());
    send(&off, req(get("/200"))).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = send(&off, req(get("/200"))).await;
    assert!(!again.is_hit(), "{}", again.cache_status());

    // on: 10% of the 1000 s since Last-Modified, bounded at 60 s
    // (on the same store: the paths carry a query of their own)
    let (app, runs) = app(
        http_cache(backend).heuristic_freshness(Duration::from_secs(60)),
        respond,
    );
    send(&app, req(get("/200?on"))).await;
    crate::stored(backend, 1).await;
    let hit = until_hit(&app, || req(get("/200?on"))).await;
    assert!(
        hit.cache_status().ends_with("ttl=60") || hit.cache_status().ends_with("ttl=59"),
        "{}",
        hit.cache_status()
    );
    send(&app, req(get("/404?on"))).await;
    crate::stored(backend, 2).await;
    until_hit(&app, || req(get("/404?on"))).await;
    // 302 and 500 are not heuristically cacheable
    for path in ["/302?on", "/500?on"] {
        let first = send(&app, req(get(path))).await;
        assert!(!first.cache_status().contains("storing"), "{path}");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}

async fn no_cache_is_stored_only_with_a_validator_and_qualified_fields_are_stripped(
    backend: &Backend,
) {
    let (app, _) = app(http_cache(backend), |request, _| {
        match request.uri().path() {
            "/no-cache" => page("p", &[("cache-control", "no-cache, max-age=60")]),
            _ => page(
                "p",
                &[
                    (
                        "cache-control",
                        r#"private="Set-Cookie", no-cache="X-Debug", max-age=60"#,
                    ),
                    ("set-cookie", "session=1"),
                    ("x-debug", "internal"),
                    ("connection", "x-hop"),
                    ("x-hop", "1"),
                    ("x-kept", "yes"),
                ],
            ),
        }
    });
    let first = send(&app, req(get("/no-cache"))).await;
    assert!(!first.cache_status().contains("storing"));
    send(&app, req(get("/fields"))).await;
    crate::stored(backend, 1).await;
    let hit = until_hit(&app, || req(get("/fields"))).await;
    assert_eq!(header(&hit.headers, "x-kept"), Some("yes"));
    for gone in ["set-cookie", "x-debug", "x-hop", "connection"] {
        assert!(!hit.headers.contains_key(gone), "{gone} was replayed");
    }
}

async fn a_stale_entry_is_revalidated_with_its_etag_or_last_modified(backend: &Backend) {
    let modified = date_in(-3600);
    let seen = seen();
    let log = Arc::clone(&seen);
    let (app, runs) = app(http_cache(backend), move |request, _| {
        log.lock().unwrap().push(request.headers().clone());
        let etag_ok = header(request.headers(), "if-none-match") == Some("\"e1\"");
        let date_ok = header(request.headers(), "if-modified-since") == Some(modified.as_str());
        match request.uri().path() {
            // Age: 60 of max-age=60: stale on arrival
            "/etag" if etag_ok => status(304, &[("cache-control", "max-age=600"), ("x-new", "1")]),
            "/etag" => page(
                "etag body",
                &[
                    ("cache-control", "max-age=60"),
                    ("age", "60"),
                    ("etag", "\"e1\""),
                ],
            ),
            _ if date_ok => status(304, &[("cache-control", "max-age=600")]),
            _ => page(
                "lm body",
                &[
                    ("cache-control", "max-age=60"),
                    ("age", "60"),
                    ("last-modified", &modified),
                ],
            ),
        }
    });
    for path in ["/etag", "/lm"] {
        send(&app, req(get(path))).await;
    }
    crate::stored(backend, 2).await;
    let etag = send(&app, req(get("/etag"))).await;
    assert_eq!(
        (etag.status, etag.body.as_str()),
        (StatusCode::OK, "etag body")
    );
    assert!(
        etag.cache_status().contains("fwd=stale; fwd-status=304"),
        "{}",
        etag.cache_status()
    );
    // the 304's fields update the stored ones
    assert_eq!(header(&etag.headers, "x-new"), Some("1"));
    assert_eq!(header(&etag.headers, "cache-control"), Some("max-age=600"));
    let lm = send(&app, req(get("/lm"))).await;
    assert_eq!(lm.body, "lm body");
    assert!(lm.cache_status().contains("fwd-status=304"));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(header(&seen[2], "if-none-match"), Some("\"e1\""));
        assert_eq!(header(&seen[3], "if-none-match"), None);
        assert!(header(&seen[3], "if-modified-since").is_some());
    }
    // refreshed for 600 s: plain hits from now on
    let hit = until_hit(&app, || req(get("/etag"))).await;
    assert_eq!(hit.body, "etag body");
    assert_eq!(header(&hit.headers, "x-new"), Some("1"));
    until_hit(&app, || req(get("/lm"))).await;
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    // a client's own validator is answered from the refreshed entry
    let conditional = send(&app, req(get("/etag").header("if-none-match", "\"e1\""))).await;
    assert_eq!(conditional.status, StatusCode::NOT_MODIFIED);
}

async fn a_full_response_to_a_revalidation_replaces_the_entry(backend: &Backend) {
    let (app, _) = app(http_cache(backend), |_, run| {
        if run == 1 {
            page(
                "old",
                &[
                    ("cache-control", "max-age=60"),
                    ("age", "60"),
                    ("etag", "\"1\""),
                ],
            )
        } else {
            page("new", &[("cache-control", "max-age=60"), ("etag", "\"2\"")])
        }
    });
    send(&app, req(get("/p"))).await;
    crate::stored(backend, 1).await;
    let replaced = send(&app, req(get("/p"))).await;
    assert_eq!(replaced.body, "new");
    assert!(
        replaced
            .cache_status()
            .contains("fwd=stale; detail=storing"),
        "{}",
        replaced.cache_status()
    );
    assert_eq!(until_hit(&app, || req(get("/p"))).await.body, "new");
}

async fn request_directives_are_honoured(backend: &Backend) {
    let seen = seen();
    let log = Arc::clone(&seen);
    let (app, runs) = app(http_cache(backend), move |request, run| {
        log.lock().unwrap().push(request.headers().clone());
        if header(request.headers(), "if-none-match").is_some() {
            return status(304, &[("cache-control", "max-age=60")]);
        }
        // 20 s old on arrival, fresh for 40 more
        page(
            &format!("run {run}"),
            &[
                ("cache-control", "max-age=60"),
                ("age", "20"),
                ("etag", "\"a\""),
            ],
        )
    });
    let only = send(
        &app,
        req(get("/d").header("cache-control", "only-if-cached")),
    )
    .await;
    assert_eq!(only.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    send(&app, req(get("/d"))).await;
    crate::stored(backend, 1).await;
    until_hit(&app, || req(get("/d"))).await;
    let only = send(
        &app,
        req(get("/d").header("cache-control", "only-if-cached")),
    )
    .await;
    assert!(only.is_hit());

    let revalidates = |value: &'static str, name: &'static str| {
        let app = app.clone();
        async move {
            let reply = send(&app, req(get("/d").header(name, value))).await;
            assert!(
                reply.cache_status().contains("fwd-status=304"),
                "{name}: {value}: {}",
                reply.cache_status()
            );
            assert_eq!(reply.body, "run 1");
        }
    };
    revalidates("no-cache", "cache-control").await;
    revalidates("no-cache", "pragma").await;
    revalidates("max-age=0", "cache-control").await;
    // the refreshed entry is 0 s old: min-fresh beyond its 60 s revalidates, within does not
    revalidates("min-fresh=61", "cache-control").await;
    let within = send(&app, req(get("/d").header("cache-control", "min-fresh=30"))).await;
    assert!(within.is_hit(), "{}", within.cache_status());
    let ok_age = send(&app, req(get("/d").header("cache-control", "max-age=30"))).await;
    assert!(ok_age.is_hit());
    // Pragma counts only without Cache-Control
    let both = send(
        &app,
        req(get("/d")
            .header("pragma", "no-cache")
            .header("cache-control", "max-age=30")),
    )
    .await;
    assert!(both.is_hit());
    let revalidations = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|h| header(h, "if-none-match") == Some("\"a\""))
        .count();
    assert_eq!(revalidations, 4);

    // no-store: the response is not stored
    let fresh = send(&app, req(get("/e").header("cache-control", "no-store"))).await;
    assert!(!fresh.cache_status().contains("storing"));
}

async fn max_stale_accepts_stale_entries_unless_the_response_forbids_it(backend: &Backend) {
    let (app, runs) = app(http_cache(backend), |request, _| {
        match request.uri().path() {
            "/free" => page("free", &[("cache-control", "max-age=60"), ("age", "70")]),
            "/lenient" => page(
                "lenient",
                &[
                    ("cache-control", "max-age=60"),
                    ("age", "70"),
                    ("etag", "\"l\""),
                ],
            ),
            "/strict" => page(
                "strict",
                &[
                    ("cache-control", "max-age=60, must-revalidate"),
                    ("age", "70"),
                    ("etag", "\"s\""),
                ],
            ),
            _ => page(
                "shared",
                &[
                    ("cache-control", "s-maxage=60"),
                    ("age", "70"),
                    ("etag", "\"m\""),
                ],
            ),
        }
    });
    // max-age=60 with Age 70: stale by 10 s, and kept only because of what follows
    let stale = |path: &'static str, value: &'static str| {
        let app = app.clone();
        async move { send(&app, req(get(path).header("cache-control", value))).await }
    };
    for path in ["/strict", "/shared", "/lenient"] {
        send(&app, req(get(path))).await;
    }
    crate::stored(backend, 3).await;
    // kept for revalidation by its validator, and 10 s stale: max-stale takes it as it is
    for value in ["max-stale", "max-stale=15"] {
        let reply = stale("/lenient", value).await;
        assert!(reply.is_hit(), "{value}: {}", reply.cache_status());
        assert!(
            reply.cache_status().contains("ttl=-"),
            "{}",
            reply.cache_status()
        );
    }
    // but not beyond the staleness it accepts
    assert!(!stale("/lenient", "max-stale=5").await.is_hit());
    let before = runs.load(Ordering::SeqCst);
    for path in ["/strict", "/shared"] {
        let reply = stale(path, "max-stale").await;
        assert!(!reply.is_hit(), "{path} was served stale");
    }
    assert_eq!(runs.load(Ordering::SeqCst), before + 2);
    // /free has no validator and no stale window: not stored at all, max-stale or not
    send(&app, req(get("/free"))).await;
    assert!(!stale("/free", "max-stale").await.is_hit());
}

async fn stale_while_revalidate_serves_the_stale_copy_at_once_and_refreshes_in_the_background(
    backend: &Backend,
) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = seen();
    let (counter, opened, log) = (Arc::clone(&runs), Arc::clone(&gate), Arc::clone(&seen));
    let service = tower::ServiceBuilder::new()
        .layer(http_cache(backend).build().unwrap())
        .service_fn(move |request: Request<ReqBody>| {
            let run = counter.fetch_add(1, Ordering::SeqCst) + 1;
            log.lock().unwrap().push(request.headers().clone());
            let gate = Arc::clone(&opened);
            async move {
                if run == 1 {
                    // Age 70 of max-age=60: stale on arrival, within the window
                    return Ok::<_, std::convert::Infallible>(page(
                        "run 1",
                        &[
                            ("cache-control", "max-age=60, stale-while-revalidate=600"),
                            ("age", "70"),
                            ("etag", "\"v1\""),
                        ],
                    ));
                }
                // the refresh waits until the test has seen the stale copies served
                gate.acquire().await.unwrap().forget();
                Ok(status(
                    304,
                    &[("cache-control", "max-age=60"), ("x-refreshed", "yes")],
                ))
            }
        });
    let app: crate::App = tower::util::BoxCloneService::new(service);
    send(&app, req(get("/swr"))).await;
    crate::stored(backend, 1).await;
    // the request that finds the entry stale is not kept waiting for the gated refresh
    let first = tokio::time::timeout(Duration::from_secs(5), send(&app, req(get("/swr"))))
        .await
        .expect("the stale copy is served without waiting for the refresh");
    assert_eq!(first.body, "run 1");
    let refreshing = crate::support::eventually(Duration::from_secs(5), || {
        let runs = Arc::clone(&runs);
        async move { runs.load(Ordering::SeqCst) == 2 }
    })
    .await;
    assert!(refreshing, "the refresh reached the handler");
    for _ in 0..5 {
        let stale = send(&app, req(get("/swr"))).await;
        assert!(stale.is_hit(), "{}", stale.cache_status());
        assert_eq!(stale.body, "run 1");
        assert!(
            stale.cache_status().contains("ttl=-"),
            "{}",
            stale.cache_status()
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2, "only one request refreshes");
    assert_eq!(
        header(&seen.lock().unwrap()[1], "if-none-match"),
        Some("\"v1\""),
        "the refresh is a conditional request"
    );
    gate.add_permits(1);
    // the 304 refreshed the entry: fresh hits with its fields, and no further run
    let mut refreshed = send(&app, req(get("/swr"))).await;
    for _ in 0..500 {
        if refreshed.headers.contains_key("x-refreshed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        refreshed = send(&app, req(get("/swr"))).await;
    }
    assert!(refreshed.is_hit(), "{}", refreshed.cache_status());
    assert_eq!(header(&refreshed.headers, "x-refreshed"), Some("yes"));
    assert_eq!(refreshed.body, "run 1");
    assert!(!refreshed.cache_status().contains("ttl=-"));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

async fn stale_if_error_serves_the_stale_copy_when_the_handler_fails(backend: &Backend) {
    let (app, _) = app(http_cache(backend), |request, run| {
        let path = request.uri().path();
        if run > 2 {
            return status(503, &[]);
        }
        let cc = if path == "/strict" {
            "max-age=60, stale-if-error=600, must-revalidate"
        } else {
            "max-age=60, stale-if-error=600"
        };
        page(
            &format!("{path} ok"),
            &[("cache-control", cc), ("age", "70"), ("etag", "\"x\"")],
        )
    });
    send(&app, req(get("/soft"))).await;
    send(&app, req(get("/strict"))).await;
    crate::stored(backend, 2).await;
    let soft = send(&app, req(get("/soft"))).await;
    assert_eq!(
        (soft.status, soft.body.as_str()),
        (StatusCode::OK, "/soft ok")
    );
    assert!(
        soft.cache_status().contains("fwd=stale; fwd-status=503"),
        "{}",
        soft.cache_status()
    );
    let strict = send(&app, req(get("/strict"))).await;
    assert_eq!(strict.status, StatusCode::SERVICE_UNAVAILABLE);
}

async fn an_age_from_the_handler_and_its_date_count_towards_the_age(backend: &Backend) {
    let past = date_in(-30);
    let (app, _) = app(http_cache(backend), move |_, _| {
        page(
            "p",
            &[
                ("cache-control", "max-age=600"),
                ("date", &past),
                ("age", "5"),
            ],
        )
    });
    send(&app, req(get("/aged"))).await;
    crate::stored(backend, 1).await;
    let hit = until_hit(&app, || req(get("/aged"))).await;
    // the apparent age (now - Date = 30 s) wins over Age 5
    let age: u64 = header(&hit.headers, "age").unwrap().parse().unwrap();
    assert!((30..=32).contains(&age), "{age}");
}

#[test]
fn http_options_on_a_cache_page_layer_are_refused() {
    let store = MemoryStore::new();
    let built = ResponseCacheLayer::cache_page(store.clone(), Duration::from_secs(5))
        .heuristic_freshness(Duration::from_secs(1))
        .build();
    assert!(built.is_err());
    assert!(
        ResponseCacheLayer::http_cache(store)
            .request_directives(RequestDirectives::Ignore)
            .build()
            .is_ok()
    );
}

/// `only-if-cached` with nothing stored is answered 504 by the cache itself, through its
/// replaceable answer, with the cache's `Cache-Status` member added.
async fn only_if_cached_with_nothing_stored_is_a_replaceable_504(backend: &Backend) {
    let only = || req(get("/nothing").header("cache-control", "only-if-cached"));
    let (app, runs) = app(http_cache(backend), |_, _| ok("page"));
    let reply = send(&app, only()).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        reply.body,
        r#"{"detail":"No stored response satisfies only-if-cached."}"#
    );
    let replaced = http_cache(backend).refusal_response(|refusal: &CacheRefusal| {
        let mut response = Response::new(Bytes::from(refusal.detail()));
        *response.status_mut() = StatusCode::IM_A_TEAPOT;
        response
    });
    let (teapot, _) = crate::app(replaced, |_, _| ok("page"));
    let reply = send(&teapot, only()).await;
    assert_eq!(reply.status, StatusCode::IM_A_TEAPOT);
    assert!(
        reply.cache_status().contains("detail=only-if-cached"),
        "{}",
        reply.cache_status()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

crate::on_each_backend!(
    only_if_cached_with_nothing_stored_is_a_replaceable_504,
    freshness_comes_from_s_maxage_max_age_or_expires_and_hits_carry_age,
    an_invalid_or_past_expires_is_stale_and_without_a_validator_not_stored,
    heuristic_freshness_is_off_by_default_and_limited_to_cacheable_statuses,
    no_cache_is_stored_only_with_a_validator_and_qualified_fields_are_stripped,
    a_stale_entry_is_revalidated_with_its_etag_or_last_modified,
    a_full_response_to_a_revalidation_replaces_the_entry,
    request_directives_are_honoured,
    max_stale_accepts_stale_entries_unless_the_response_forbids_it,
    stale_if_error_serves_the_stale_copy_when_the_handler_fails,
    an_age_from_the_handler_and_its_date_count_towards_the_age,
);
crate::on_each_backend!(
    multi_thread: stale_while_revalidate_serves_the_stale_copy_at_once_and_refreshes_in_the_background,
);
