//! The rate-limit layer against a real Redis (and the same policy tests on the memory store).

#[path = "../support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tokio::sync::Barrier;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};
use tower_redis_http::FailurePolicy;
use tower_redis_http::body::ResponseBody;
use tower_redis_http::ratelimit::{
    Commit, Key, Limited, MissingKey, RateLimitBuilder, RateLimitLayer, Rule,
};
use tower_redis_http::store::{AnyStore, MemoryStore, RedisStore, Store};

use support::{Backend, TestRedis};

type App = BoxCloneService<Request<Empty<Bytes>>, Response<ResponseBody<Full<Bytes>>>, Infallible>;

fn app(builder: RateLimitBuilder) -> App {
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(builder.build().unwrap())
            .service_fn(|_req: Request<Empty<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"{\"message\":\"ok\"}",
                ))))
            }),
    )
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

fn send(
    app: &App,
    request: Request<Empty<Bytes>>,
) -> impl std::future::Future<Output = Reply> + Send + 'static {
    let app = app.clone();
    async move {
        let response = app.oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }
}

fn sms(mobile: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("/sms_codes/{mobile}/"))
        .body(Empty::new())
        .unwrap()
}

fn from(peer: &str, headers: &[(&str, &str)]) -> Request<Empty<Bytes>> {
    let mut request = Request::get("/api/");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Empty::new()).unwrap();
    request
        .extensions_mut()
        .insert(SocketAddr::new(peer.parse::<IpAddr>().unwrap(), 4711));
    request
}

fn sms_rule() -> Rule {
    Rule::cooldown(
        "sms",
        Duration::from_secs(60),
        Key::path_segment("/sms_codes/{mobile}/", "mobile"),
    )
}

async fn redis_store(redis: &TestRedis) -> AnyStore {
    RedisStore::builder(redis.url())
        .build()
        .await
        .unwrap()
        .into()
}

/// The policy boundaries, run against each backend.
async fn policies_hold_their_boundaries(backend: &Backend) {
    let store = backend.store();
    // cooldown: one per phone per minute, 429 with Retry-After and RateLimit fields
    let cooldown = app(RateLimitLayer::builder(store.clone()).rule(sms_rule()));
    let first = send(&cooldown, sms("13800138000")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.headers["ratelimit-policy"], "\"sms\";q=1;w=60");
    assert_eq!(first.headers["ratelimit"], "\"sms\";r=0;t=60");
    let second = send(&cooldown, sms("13800138000")).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = second.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((59..=60).contains(&retry), "{retry}");
    assert_eq!(
        second.body,
        format!(r#"{{"detail":"Request was throttled. Expected available in {retry} seconds."}}"#)
    );
    assert_eq!(
        second.headers["ratelimit"],
        format!("\"sms\";r=0;t={retry}")
    );
    assert_eq!(
        send(&cooldown, sms("13900139000")).await.status,
        StatusCode::OK,
        "another phone"
    );

    // fixed window: exactly the limit, then 429 until the window ends
    let window = app(
        RateLimitLayer::builder(store.clone()).rule(Rule::fixed_window(
            "api",
            "3/m",
            Key::global(),
        )),
    );
    let remaining: Vec<String> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            let reply = send(&window, sms("1")).await;
            assert_eq!(reply.status, StatusCode::OK);
            out.push(reply.headers["ratelimit"].to_str().unwrap().to_owned());
        }
        out
    };
    assert!(
        remaining[0].starts_with("\"api\";r=2;") && remaining[2].starts_with("\"api\";r=0;"),
        "{remaining:?}"
    );
    let limited = send(&window, sms("1")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));

    // GCRA: burst + 1 at once, then one per interval
    let gcra =
        app(RateLimitLayer::builder(store).rule(Rule::gcra("search", "1/10s", 2, Key::global())));
    let statuses: Vec<StatusCode> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(send(&gcra, sms("1")).await.status);
        }
        out
    };
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let limited = send(&gcra, sms("1")).await;
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((5..=10).contains(&retry), "{retry}");
    assert_eq!(limited.headers["ratelimit-policy"], "\"search\";q=3;w=30");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_under_200_concurrent_requests_admit_exactly_the_limit() {
    let redis = TestRedis::start();
    for (rule, limit) in [
        (Rule::fixed_window("window", "10/m", Key::global()), 10),
        (Rule::gcra("gcra", "1/h", 9, Key::global()), 10),
        (
            Rule::cooldown("flag", Duration::from_secs(60), Key::global()),
            1,
        ),
    ] {
        // two application instances: two pools onto one Redis
        let apps = [
            app(RateLimitLayer::builder(redis_store(&redis).await).rule(rule.clone())),
            app(RateLimitLayer::builder(redis_store(&redis).await).rule(rule.clone())),
        ];
        let barrier = Arc::new(Barrier::new(200));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let (app, barrier) = (apps[i % 2].clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    send(&app, sms("1")).await.status
                })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            if task.await.unwrap() == StatusCode::OK {
                admitted += 1;
            }
        }
        assert_eq!(admitted, limit, "{rule:?}");
    }
}

async fn forwarded_headers_count_only_from_trusted_proxies(backend: &Backend) {
    let limit = || {
        RateLimitLayer::builder(backend.store()).rule(Rule::fixed_window(
            "ip",
            "1/m",
            Key::client_ip(),
        ))
    };
    let untrusting = app(limit());
    // a client spoofing X-Forwarded-For gets no fresh quota: its peer address is the key
    assert_eq!(
        send(
            &untrusting,
            from("203.0.113.9", &[("x-forwarded-for", "1.1.1.1")])
        )
        .await
        .status,
        StatusCode::OK
    );
    for spoof in ["2.2.2.2", "3.3.3.3"] {
        let reply = send(
            &untrusting,
            from(
                "203.0.113.9",
                &[("x-forwarded-for", spoof), ("forwarded", "for=4.4.4.4")],
            ),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "spoofed {spoof} got through"
        );
    }

    let behind_proxy = app(limit().trusted_proxies(["10.0.0.0/8"]));
    assert_eq!(
        send(
            &behind_proxy,
            from("10.0.0.2", &[("x-forwarded-for", "198.51.100.1")])
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        send(
            &behind_proxy,
            from("10.0.0.3", &[("x-forwarded-for", "198.51.100.2")])
        )
        .await
        .status,
        StatusCode::OK,
        "another client behind the proxy"
    );
    // the client forges a leftmost entry; the proxy appended the real address
    let forged = from("10.0.0.2", &[("x-forwarded-for", "9.9.9.9, 198.51.100.1")]);
    assert_eq!(
        send(&behind_proxy, forged).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // no peer address known: a server that does not hand it over is a misconfiguration,
    // answered 500 (and logged once), never an unlimited pass
    for layer in [
        behind_proxy,
        app(limit().on_missing_key(MissingKey::Reject)),
    ] {
        let no_peer = Request::get("/api/").body(Empty::new()).unwrap();
        let reply = send(&layer, no_peer).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(reply.body.contains("misconfigured"), "{}", reply.body);
    }
}

async fn commit_on_success_gives_failed_sends_back_without_two_in_flight(backend: &Backend) {
    let store = backend.store();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let succeed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flight, peak, ok) = (
        Arc::clone(&in_flight),
        Arc::clone(&most),
        Arc::clone(&succeed),
    );
    let service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(store)
                .rule(sms_rule())
                .commit(Commit::OnSuccess)
                .build()
                .unwrap(),
        )
        .service_fn(move |_req: Request<Empty<Bytes>>| {
            let (flight, peak, ok) = (Arc::clone(&flight), Arc::clone(&peak), Arc::clone(&ok));
            async move {
                let now = flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                flight.fetch_sub(1, Ordering::SeqCst);
                let status = if ok.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_GATEWAY
                };
                let mut response = Response::new(Full::new(Bytes::from_static(b"gateway")));
                *response.status_mut() = status;
                Ok::<_, Infallible>(response)
            }
        });
    let app: App = BoxCloneService::new(service);

    // a failing SMS gateway: 50 requests in waves, never two sends at once, each failure given back
    let mut sent = 0;
    for _ in 0..5 {
        let tasks: Vec<_> = (0..10)
            .map(|_| tokio::spawn(send(&app, sms("13800138000"))))
            .collect();
        for task in tasks {
            if task.await.unwrap().status == StatusCode::BAD_GATEWAY {
                sent += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "two sends ran at once");
    assert!(
        sent >= 5,
        "failed sends were not given back: only {sent} went through"
    );

    // once a send succeeds, the flag stays
    succeed.store(true, Ordering::SeqCst);
    let mut first_ok = None;
    for _ in 0..200 {
        let reply = send(&app, sms("13800138000")).await;
        if reply.status == StatusCode::OK {
            first_ok = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(first_ok.is_some());
    assert_eq!(
        send(&app, sms("13800138000")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

async fn a_refusal_by_a_later_rule_gives_back_the_earlier_hits(backend: &Backend) {
    let store = backend.store();
    let app = app(RateLimitLayer::builder(store.clone())
        .rule(Rule::fixed_window(
            "per_phone",
            "5/m",
            Key::path_segment("/sms_codes/{mobile}/", "mobile"),
        ))
        .rule(Rule::fixed_window("everyone", "2/m", Key::global())));
    assert_eq!(send(&app, sms("1")).await.status, StatusCode::OK);
    assert_eq!(send(&app, sms("1")).await.status, StatusCode::OK);
    let refused = send(&app, sms("1")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refused.headers["ratelimit-policy"]
            .to_str()
            .unwrap()
            .contains("everyone")
    );
    // per_phone counted 2, not 3: the refused hit was given back
    let counters = match &store {
        AnyStore::Memory(memory) => AnyStore::from(memory.for_rate_limits()),
        other => other.clone(),
    };
    assert_eq!(
        counters.get("rl:per_phone:1").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    if let Some(redis) = backend.server() {
        // the key as Redis holds it, in django-redis's layout
        assert_eq!(redis.command(&["GET", ":1:rl:per_phone:1"]), "2");
    }
}

async fn the_rejection_is_replaceable_and_keeps_retry_after(backend: &Backend) {
    let layer = RateLimitLayer::builder(backend.store())
        .rule(sms_rule())
        .build()
        .unwrap()
        .with_rejection_response(|limited: &Limited| {
            let body = serde_json::json!({"message": "请求次数过于频繁", "rule": limited.rule()});
            let mut response = Response::new(Bytes::from(body.to_string()));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            response
        });
    let app: App = BoxCloneService::new(ServiceBuilder::new().layer(layer).service_fn(
        |_req: Request<Empty<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        },
    ));
    send(&app, sms("1")).await;
    let reply = send(&app, sms("1")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body, r#"{"message":"请求次数过于频繁","rule":"sms"}"#);
    assert!(reply.headers.contains_key("retry-after"));
}

async fn requests_without_a_key_pass_or_get_400(backend: &Backend) {
    let passing = app(RateLimitLayer::builder(backend.store()).rule(sms_rule()));
    for _ in 0..3 {
        let reply = send(
            &passing,
            Request::get("/other/").body(Empty::new()).unwrap(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(!reply.headers.contains_key("ratelimit"));
    }
    let strict = app(RateLimitLayer::builder(backend.store())
        .rule(sms_rule())
        .on_missing_key(MissingKey::Reject));
    let reply = send(
        &strict,
        Request::get("/sms_codes/../x/").body(Empty::new()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

/// Issue 29, finding 8e: a hit given back after its window ended was taken off the next
/// window's count, one more hit in that window than its limit.
async fn a_give_back_after_the_window_ended_leaves_the_next_window_alone(backend: &Backend) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let waiting = Arc::clone(&gate);
    let arrived = Arc::new(tokio::sync::Semaphore::new(0));
    let arriving = Arc::clone(&arrived);
    let service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(backend.store())
                .rule(Rule::fixed_window("api", "1/2s", Key::global()))
                .commit(Commit::OnSuccess)
                .build()
                .unwrap(),
        )
        .service_fn(move |req: Request<Empty<Bytes>>| {
            let waiting = Arc::clone(&waiting);
            let arriving = Arc::clone(&arriving);
            async move {
                let mut response = Response::new(Full::new(Bytes::new()));
                if req.uri().path() == "/slow/" {
                    arriving.add_permits(1);
                    // fails once the test lets it, after its window ended
                    let _ = waiting.acquire().await.unwrap();
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                }
                Ok::<_, Infallible>(response)
            }
        });
    let app: App = BoxCloneService::new(service);
    let get = |path: &str| Request::get(path).body(Empty::new()).unwrap();
    let slow = tokio::spawn(send(&app, get("/slow/")));
    // the slow request holds the first window's only hit once it reached the handler
    let _ = arrived.acquire().await.unwrap();
    assert_eq!(
        send(&app, get("/")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    backend.advance(Duration::from_millis(2100)).await;
    // a new window, its one hit taken
    assert_eq!(send(&app, get("/")).await.status, StatusCode::OK);
    // the first window's hit fails and is given back: not to this window
    gate.add_permits(1);
    assert_eq!(slow.await.unwrap().status, StatusCode::BAD_GATEWAY);
    // the give-back runs in a task of its own: watch the window while it lands (well
    // within the window's 2 s)
    let watch = std::time::Instant::now() + Duration::from_millis(300);
    while std::time::Instant::now() < watch {
        assert_eq!(
            send(&app, get("/")).await.status,
            StatusCode::TOO_MANY_REQUESTS,
            "the give-back landed in the next window"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

crate::on_each_backend!(@module give_back_on_redis, { crate::support::Backend::redis().await }, ();
    a_give_back_after_the_window_ended_leaves_the_next_window_alone);
crate::on_each_backend!(@module give_back_on_redis_cluster, { crate::support::Backend::redis_cluster().await }, ();
    a_give_back_after_the_window_ended_leaves_the_next_window_alone);
crate::on_each_backend!(@module give_back_on_memory, { crate::support::Backend::memory() }, ();
    a_give_back_after_the_window_ended_leaves_the_next_window_alone);

/// Issue 29, finding 8c: every IPv4 client behind NAT64 shared the key of `64:ff9b::/64`.
async fn ipv6_clients_behind_nat64_or_6to4_are_limited_by_their_ipv4(backend: &Backend) {
    let limited = app(
        RateLimitLayer::builder(backend.store()).rule(Rule::fixed_window(
            "login",
            "1/m",
            Key::client_ip(),
        )),
    );
    for peer in [
        "64:ff9b::203.0.113.1",
        "64:ff9b::203.0.113.2",
        "2002:cb00:7103::1",
    ] {
        assert_eq!(
            send(&limited, from(peer, &[])).await.status,
            StatusCode::OK,
            "{peer}"
        );
    }
    // each is the IPv4 client it stands for, in every spelling
    for peer in [
        "203.0.113.1",
        "2002:cb00:7101:1::1",
        "2002:cb00:7103:ffff::2",
    ] {
        assert_eq!(
            send(&limited, from(peer, &[])).await.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{peer}"
        );
    }
}

/// Issue 29, finding 8b: key text over 128 bytes is counted as `sha256:<hex>`; a client that
/// sent that text literally shared the long key's counter.
async fn a_literal_key_never_shares_a_hashed_keys_counter(backend: &Backend) {
    use sha2::{Digest, Sha256};
    let limited = app(
        RateLimitLayer::builder(backend.store()).rule(Rule::cooldown(
            "sms",
            std::time::Duration::from_secs(60),
            Key::header(http::HeaderName::from_static("x-phone")),
        )),
    );
    let ask = |key: &str| {
        Request::get("/sms/")
            .header("x-phone", key)
            .body(Empty::new())
            .unwrap()
    };
    let long = "1".repeat(200);
    let hashed: String = Sha256::digest(long.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let literal = format!("sha256:{hashed}");
    assert_eq!(send(&limited, ask(&long)).await.status, StatusCode::OK);
    assert_eq!(
        send(&limited, ask(&literal)).await.status,
        StatusCode::OK,
        "the literal marker shared the long key's counter"
    );
    // and the other way round: the literal was counted first
    let other = "2".repeat(200);
    let hashed: String = Sha256::digest(other.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        send(&limited, ask(&format!("sha256:{hashed}")))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(send(&limited, ask(&other)).await.status, StatusCode::OK);
    // each is still limited on its own
    assert_eq!(
        send(&limited, ask(&long)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send(&limited, ask(&literal)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// Issue 29, finding 6: `?phone=<random>&phone=<victim>` is refused (400), under the default
/// missing-key policy: the handler's extractor reads the last, a key of the first would send
/// the victim a code on every request. So is a repeated or unreadable key header.
async fn a_key_the_handler_may_read_otherwise_is_refused(backend: &Backend) {
    let by_query = app(
        RateLimitLayer::builder(backend.store()).rule(Rule::cooldown(
            "sms",
            std::time::Duration::from_secs(60),
            Key::query("phone"),
        )),
    );
    let ask = |query: &str| {
        Request::get(format!("/sms/?{query}"))
            .body(Empty::new())
            .unwrap()
    };
    assert_eq!(
        send(&by_query, ask("phone=13800138000")).await.status,
        StatusCode::OK
    );
    for n in 0..3 {
        let query = format!("phone=1390000000{n}&phone=13800138000");
        assert_eq!(
            send(&by_query, ask(&query)).await.status,
            StatusCode::BAD_REQUEST
        );
    }
    let by_header = app(
        RateLimitLayer::builder(backend.store()).rule(Rule::cooldown(
            "sms",
            std::time::Duration::from_secs(60),
            Key::header(http::HeaderName::from_static("x-phone")),
        )),
    );
    let mut twice = Request::get("/sms/").body(Empty::new()).unwrap();
    twice.headers_mut().append("x-phone", "1".parse().unwrap());
    twice.headers_mut().append("x-phone", "2".parse().unwrap());
    assert_eq!(
        send(&by_header, twice).await.status,
        StatusCode::BAD_REQUEST
    );
    let mut bytes = Request::get("/sms/").body(Empty::new()).unwrap();
    bytes
        .headers_mut()
        .insert("x-phone", http::HeaderValue::from_bytes(b"1\xff").unwrap());
    assert_eq!(
        send(&by_header, bytes).await.status,
        StatusCode::BAD_REQUEST
    );
}

/// Issue 29, finding 3: on a memory store, one rule's flood of keys fills that rule's room of
/// the rate-limit share only. 150 phone numbers against a share of 100 keys leave the login
/// limit per address admitting new addresses and refusing the eleventh attempt of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rules_flood_leaves_the_other_rules_room() {
    let store = MemoryStore::builder()
        .max_rate_limit_keys(100)
        .build()
        .unwrap();
    let app = app(RateLimitLayer::builder(store).rule(sms_rule()).rule(
        Rule::fixed_window("login", "10/m", Key::client_ip())
            .when(|request| request.path_is("/api/")),
    ));
    let mut refused = 0;
    for n in 0..150 {
        let reply = send(&app, sms(&format!("1390000{n:04}"))).await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            refused += 1;
        } else {
            assert_eq!(reply.status, StatusCode::OK);
        }
    }
    assert_eq!(refused, 50, "the sms rule's room holds 100 keys");
    for address in ["203.0.113.1", "203.0.113.2"] {
        for attempt in 0..10 {
            assert_eq!(
                send(&app, from(address, &[])).await.status,
                StatusCode::OK,
                "{address} attempt {attempt}"
            );
        }
        assert_eq!(
            send(&app, from(address, &[])).await.status,
            StatusCode::TOO_MANY_REQUESTS,
            "the login limit failed open for {address}"
        );
    }
}

#[tokio::test]
async fn the_gcra_script_reloads_after_a_script_flush() {
    let redis = TestRedis::start();
    let app = app(
        RateLimitLayer::builder(redis_store(&redis).await).rule(Rule::gcra(
            "g",
            "100/s",
            10,
            Key::global(),
        )),
    );
    assert_eq!(send(&app, sms("1")).await.status, StatusCode::OK);
    assert_eq!(redis.command(&["SCRIPT", "FLUSH"]), "OK");
    assert_eq!(send(&app, sms("1")).await.status, StatusCode::OK);
    assert_eq!(redis.command(&["SCRIPT", "EXISTS", "0"]).lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_windows_fail_open_and_cooldowns_fail_closed_by_default() {
    let mut redis = TestRedis::start();
    let store: AnyStore = RedisStore::builder(redis.url())
        .command_timeout(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap()
        .into();
    let window = || Rule::fixed_window("api", "100/m", Key::global());
    let open_window = app(RateLimitLayer::builder(store.clone()).rule(window()));
    let closed_window = app(RateLimitLayer::builder(store.clone())
        .rule(window())
        .on_store_error(FailurePolicy::Closed));
    let closed_cooldown = app(RateLimitLayer::builder(store.clone()).rule(sms_rule()));
    let open_cooldown =
        app(RateLimitLayer::builder(store).rule(sms_rule().on_store_error(FailurePolicy::Open)));
    redis.pause();
    let reply = tokio::time::timeout(Duration::from_secs(10), send(&open_window, sms("1")))
        .await
        .expect("hung");
    assert_eq!(reply.status, StatusCode::OK);
    for (app, expected) in [
        (&closed_window, StatusCode::SERVICE_UNAVAILABLE),
        (&closed_cooldown, StatusCode::SERVICE_UNAVAILABLE),
        (&open_cooldown, StatusCode::OK),
    ] {
        assert_eq!(send(app, sms("2")).await.status, expected);
    }
    redis.resume();
    redis.kill();
    for (app, expected) in [
        (&open_window, StatusCode::OK),
        (&closed_window, StatusCode::SERVICE_UNAVAILABLE),
        (&closed_cooldown, StatusCode::SERVICE_UNAVAILABLE),
        (&open_cooldown, StatusCode::OK),
    ] {
        assert_eq!(send(app, sms("3")).await.status, expected);
    }
}

/// An app whose handler counts the codes it "sends" for every allowed request.
fn counting_app(builder: RateLimitBuilder, sent: &Arc<AtomicUsize>) -> App {
    let sent = Arc::clone(sent);
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(builder.build().unwrap())
            .service_fn(move |_req: Request<Empty<Bytes>>| {
                let sent = Arc::clone(&sent);
                async move {
                    sent.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            }),
    )
}

/// `requests` concurrent sends of one number, behind a barrier; while they run, `disturb`
/// runs once.
async fn burst_with(app: &App, requests: usize, disturb: impl FnOnce()) -> Vec<StatusCode> {
    let barrier = Arc::new(Barrier::new(requests + 1));
    let tasks: Vec<_> = (0..requests)
        .map(|_| {
            let (app, barrier) = (app.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                send(&app, sms("13800138000")).await.status
            })
        })
        .collect();
    barrier.wait().await;
    disturb();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_kill_during_a_burst_of_one_number_sends_exactly_one_code() {
    let redis = TestRedis::start();
    // a retry on a new connection must not meet the timeout because the machine is busy
    // with the other suites (TLS and Sentinel servers among them): that is not what this
    // case is about
    let store: AnyStore = RedisStore::builder(redis.url())
        .command_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap()
        .into();
    for round in 0..5 {
        let sent = Arc::new(AtomicUsize::new(0));
        let rule = Rule::cooldown(
            format!("sms{round}"),
            Duration::from_secs(60),
            Key::path_segment("/sms_codes/{mobile}/", "mobile"),
        );
        let app = counting_app(RateLimitLayer::builder(store.clone()).rule(rule), &sent);
        let statuses = burst_with(&app, 200, || {
            redis.command(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
        })
        .await;
        // never two codes; none only when the one call that set the flag was itself on a
        // killed connection and its retry outlasted the timeout (a loaded machine): it then
        // fails closed, and the flag it set keeps the others out
        let sent = sent.load(Ordering::SeqCst);
        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let unavailable = statuses
            .iter()
            .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
            .count();
        assert!(sent <= 1, "round {round}: {statuses:?}");
        assert_eq!(ok, sent, "round {round}: {statuses:?}");
        assert!(sent == 1 || unavailable >= 1, "round {round}: {statuses:?}");
        // the dropped connection is retried on a new one: nobody is told Redis is away, but
        // for the rare first attempt that redis-rs neither answers nor fails when the kill's
        // EOF reaches it (see tests/store/redis.rs), which times out and fails closed. Its
        // timeout, on a connection known dropped, is not taken for a stall: the next round's
        // calls are sent (issue 28, finding 15)
        // only calls on the killed connections fail, not every call until a probe answers
        // (the stall fast-fail this case once tripped failed about 50 of the 200); a handful
        // are in flight on the pool's connections at the kill
        assert!(unavailable <= 10, "round {round}: {statuses:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_redis_during_a_burst_of_one_number_sends_exactly_one_code() {
    let redis = TestRedis::start();
    let timeout = Duration::from_millis(250);
    let store: AnyStore = RedisStore::builder(redis.url())
        .command_timeout(timeout)
        .build()
        .await
        .unwrap()
        .into();
    let sent = Arc::new(AtomicUsize::new(0));
    let app = counting_app(RateLimitLayer::builder(store).rule(sms_rule()), &sent);
    assert_eq!(send(&app, sms("13800138000")).await.status, StatusCode::OK);
    // the whole burst meets Redis stopped (SIGSTOP)
    redis.pause();
    let statuses = burst_with(&app, 200, || {}).await;
    redis.resume();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "a cooldown let a request through a stalled Redis: {statuses:?}"
    );
    // the store fails calls at once while Redis is stalled, until its ping is answered: the
    // ping in flight at SIGCONT is answered at once, or the next one within a command timeout;
    // then one request's call, itself bounded by a timeout. Twice that for a loaded machine.
    let back_within = 4 * timeout;
    assert!(
        support::eventually(back_within, || async {
            send(&app, sms("13800138000")).await.status == StatusCode::TOO_MANY_REQUESTS
        })
        .await,
        "the flag was not read again within {back_within:?} of SIGCONT"
    );
    let after = burst_with(&app, 50, || {}).await;
    assert_eq!(
        sent.load(Ordering::SeqCst),
        1,
        "{statuses:?} then {after:?}"
    );
    assert!(
        after.iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{after:?}"
    );
}

async fn a_reset_after_the_handler_ran_keeps_the_flag(backend: &Backend) {
    let store = backend.store();
    let started = Arc::new(tokio::sync::Notify::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let (signal, count) = (Arc::clone(&started), Arc::clone(&runs));
    let service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(store)
                .rule(sms_rule())
                .commit(Commit::OnSuccess)
                .build()
                .unwrap(),
        )
        .service_fn(move |_req: Request<Empty<Bytes>>| {
            let (signal, count) = (Arc::clone(&signal), Arc::clone(&count));
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                signal.notify_one();
                // the SMS gateway is slow; the client does not wait for it
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        });
    let app: App = BoxCloneService::new(service);
    // the first request reaches the handler, however long its store call takes (a TLS
    // handshake on a loaded machine can outlast the 20 ms below), and is reset there
    let first = tokio::spawn(send(&app, sms("13800138000")));
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the first request reaches the handler");
    first.abort();
    let _ = first.await;
    for _ in 0..300 {
        let request = tokio::spawn(send(&app, sms("13800138000")));
        // abandon it as soon as the handler runs, or once the layer answered by itself
        tokio::select! {
            () = started.notified() => request.abort(),
            _ = tokio::time::sleep(Duration::from_millis(20)) => request.abort(),
        }
        let _ = request.await;
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "a reset bought another code"
    );
    let after = send(&app, sms("13800138000")).await;
    assert_eq!(after.status, StatusCode::TOO_MANY_REQUESTS);
}

async fn a_principal_key_limits_each_user_behind_the_auth_layer(backend: &Backend) {
    use tower_redis_http::auth::{TokenAuthLayer, Tokens};
    let store = backend.store();
    let tokens = Tokens::new(store.clone(), |id: &u64| id.to_string());
    let (alice, bob) = (
        tokens.issue(&1).await.unwrap(),
        tokens.issue(&2).await.unwrap(),
    );
    let service = ServiceBuilder::new()
        .layer(
            TokenAuthLayer::<u64>::bearer(store.clone())
                .build()
                .unwrap(),
        )
        .layer(
            RateLimitLayer::builder(store)
                .rule(Rule::fixed_window(
                    "user",
                    "1/m",
                    Key::principal(|id: &u64| id.to_string()),
                ))
                .build()
                .unwrap(),
        )
        .service_fn(|_req: Request<Empty<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
    let call = |token: &str| {
        let request = Request::get("/me/")
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::new())
            .unwrap();
        service.clone().oneshot(request)
    };
    assert_eq!(call(&alice).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        call(&alice).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(call(&bob).await.unwrap().status(), StatusCode::OK);
}

#[test]
fn invalid_rules_fail_at_build_time() {
    let store = MemoryStore::new();
    let cases = [
        RateLimitLayer::builder(store.clone()),
        RateLimitLayer::builder(store.clone()).rule(Rule::fixed_window(
            "a",
            "5/week",
            Key::global(),
        )),
        RateLimitLayer::builder(store.clone()).rule(Rule::cooldown(
            "a",
            Duration::ZERO,
            Key::global(),
        )),
        RateLimitLayer::builder(store.clone()).rule(Rule::fixed_window(
            "a\"b",
            "5/m",
            Key::global(),
        )),
        RateLimitLayer::builder(store.clone())
            .rule(sms_rule())
            .rule(sms_rule()),
        RateLimitLayer::builder(store.clone()).rule(Rule::fixed_window(
            "a",
            "5/m",
            Key::path_segment("/x/{m}/", "mobile"),
        )),
        RateLimitLayer::builder(store)
            .rule(sms_rule())
            .trusted_proxies(["10.0.0.0/99"]),
    ];
    for builder in cases {
        assert!(builder.build().is_err());
    }
}

/// Issue 29, finding 8a: rule `a` keyed `b:x` and rule `a:b` keyed `x` both counted in
/// `rl:a:b:x`.
#[test]
fn a_rule_name_with_a_colon_is_refused_as_its_keys_could_be_another_rules() {
    let store = MemoryStore::new();
    let err = RateLimitLayer::builder(store.clone())
        .rule(Rule::fixed_window(
            "a",
            "5/m",
            Key::header(http::HeaderName::from_static("x-k")),
        ))
        .rule(Rule::fixed_window("a:b", "5/m", Key::global()))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("`a:b`"), "{err}");
    // with a store key of its own, the name is not part of any key
    assert!(
        RateLimitLayer::builder(store)
            .rule(Rule::fixed_window("a:b", "5/m", Key::global()).store_key("ab_{key}"))
            .build()
            .is_ok()
    );
}

#[tokio::test]
async fn a_rule_shares_the_send_flag_a_django_app_writes() {
    use tower_redis_http::store::KeyScheme;
    let redis = TestRedis::start();
    // django-redis's `get_redis_connection("verify_codes")` users write raw keys
    let verify_codes: AnyStore = RedisStore::builder(redis.url())
        .key_scheme(KeyScheme::raw())
        .build()
        .await
        .unwrap()
        .into();
    let app =
        app(RateLimitLayer::builder(verify_codes).rule(sms_rule().store_key("send_flag_{key}")));
    // the Django side sent a code to this number: `SETEX send_flag_<mobile> 60 1`
    assert_eq!(
        redis.command(&["SETEX", "send_flag_13800138000", "60", "1"]),
        "OK"
    );
    assert_eq!(
        send(&app, sms("13800138000")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // and the Django side sees the flags the Rust side sets
    assert_eq!(send(&app, sms("13900139000")).await.status, StatusCode::OK);
    assert_eq!(redis.command(&["EXISTS", "send_flag_13900139000"]), "1");
    let ttl: i64 = redis
        .command(&["TTL", "send_flag_13900139000"])
        .parse()
        .unwrap();
    assert!((59..=60).contains(&ttl), "{ttl}");
    for bad in ["send_flag", "{key}_{key}"] {
        let err = RateLimitLayer::builder(MemoryStore::new())
            .rule(sms_rule().store_key(bad))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("{key}"), "{err}");
    }
}

/// Every answer the rate limiter gives by itself goes through its replaceable response: the
/// 429 through `limited`, the 400s and the 500 through `refused`.
#[tokio::test]
async fn every_refusal_goes_through_the_replaceable_response() {
    use tower_redis_http::ratelimit::{Limited, LimitedResponse, Refusal};

    #[derive(Clone)]
    struct Teapot;

    impl LimitedResponse for Teapot {
        fn limited(&self, limited: &Limited) -> Response<Bytes> {
            let mut response = Response::new(Bytes::from(format!("limited by {}", limited.rule())));
            *response.status_mut() = StatusCode::IM_A_TEAPOT;
            response
        }

        fn refused(&self, refusal: &Refusal) -> Response<Bytes> {
            let mut response = Response::new(Bytes::from(format!("refused: {refusal:?}")));
            *response.status_mut() = StatusCode::IM_A_TEAPOT;
            response
        }
    }

    let layer = |builder: RateLimitBuilder| {
        let layer = builder.build().unwrap().with_rejection_response(Teapot);
        let app: App = BoxCloneService::new(ServiceBuilder::new().layer(layer).service_fn(
            |_req: Request<Empty<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            },
        ));
        app
    };
    let strict = layer(
        RateLimitLayer::builder(MemoryStore::new())
            .rule(sms_rule())
            .on_missing_key(MissingKey::Reject),
    );
    let missing = send(&strict, Request::get("/other/").body(Empty::new()).unwrap()).await;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (StatusCode::IM_A_TEAPOT, "refused: MissingKey")
    );
    let malformed = send(
        &strict,
        Request::get("/sms_codes/%2E%2E/")
            .body(Empty::new())
            .unwrap(),
    )
    .await;
    assert_eq!(malformed.status, StatusCode::IM_A_TEAPOT);
    assert!(
        malformed.body.starts_with("refused: MalformedKey"),
        "{}",
        malformed.body
    );
    send(&strict, sms("1")).await;
    let limited = send(&strict, sms("1")).await;
    assert_eq!(
        (limited.status, limited.body.as_str()),
        (StatusCode::IM_A_TEAPOT, "limited by sms")
    );
    // a per-address rule with no address to read: misconfigured
    let blind = layer(
        RateLimitLayer::builder(MemoryStore::new()).rule(Rule::fixed_window(
            "ip",
            "5/m",
            Key::client_ip(),
        )),
    );
    let misconfigured = send(&blind, Request::get("/").body(Empty::new()).unwrap()).await;
    assert_eq!(
        (misconfigured.status, misconfigured.body.as_str()),
        (StatusCode::IM_A_TEAPOT, "refused: Misconfigured")
    );
}

crate::on_each_backend!(
    policies_hold_their_boundaries,
    forwarded_headers_count_only_from_trusted_proxies,
    a_refusal_by_a_later_rule_gives_back_the_earlier_hits,
    the_rejection_is_replaceable_and_keeps_retry_after,
    requests_without_a_key_pass_or_get_400,
    a_key_the_handler_may_read_otherwise_is_refused,
    a_literal_key_never_shares_a_hashed_keys_counter,
    ipv6_clients_behind_nat64_or_6to4_are_limited_by_their_ipv4,
    a_principal_key_limits_each_user_behind_the_auth_layer,
);
crate::on_each_backend!(
    multi_thread: commit_on_success_gives_failed_sends_back_without_two_in_flight,
    a_reset_after_the_handler_ran_keeps_the_flag,
);
