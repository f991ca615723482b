//! The finer RFC 9110 / 9111 / 9213 rules of the HTTP-cache mode, each through the caching
//! proxy example against the loopback origin of [`origin_answer`](super::origin_answer), on
//! Redis and on the memory store.

use http::{Method, StatusCode};
use tower_redis_http::store::AnyStore;

use super::{
    Http, Reply, cache_status, get_until, proxy, start_origin, start_proxy_on, start_proxy_with,
    text,
};

/// Runs the rule `$rule(store)` once on a fresh Redis and once on a memory store.
macro_rules! on_each_store {
    ($rule:ident) => {
        mod $rule {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_redis() {
                let redis = crate::support::TestRedis::start();
                let store = tower_redis_http::store::RedisStore::builder(redis.url())
                    .build()
                    .await
                    .unwrap();
                super::$rule(store.into()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_the_memory_store() {
                super::$rule(tower_redis_http::store::MemoryStore::new().into()).await;
            }
        }
    };
}

fn is_hit(reply: &Reply) -> bool {
    reply.headers["x-cache"] == "HIT"
}

/// The first hit on `path` (sent with `headers`), and how many GETs of it the origin had
/// answered by then: the last of them is the stored one. A test counts from here, since a
/// store write may end after the next request was sent.
async fn first_hit(
    http: &Http,
    log: &super::OriginLog,
    path: &str,
    headers: &[(&str, &str)],
) -> (Reply, usize) {
    let hit = send_until(http, path, headers, is_hit).await;
    (hit, log.count(&Method::GET, path))
}

/// Sends GETs of `path` with `headers` until `done` holds for one, which it returns: a
/// store write ends after the response that announced it.
async fn send_until(
    http: &Http,
    path: &str,
    headers: &[(&str, &str)],
    done: impl Fn(&Reply) -> bool,
) -> Reply {
    for _ in 0..500 {
        let reply = http.send(Method::GET, path, headers, None).await;
        if done(&reply) {
            return reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{path} with {headers:?} never reached the awaited state");
}

/// RFC 9110 §13.1.2: `If-None-Match` holds a list of entity tags compared weakly, and an
/// opaque tag may hold a comma, so the list is read tag by tag, not split at commas. A tag
/// without quotes is no entity tag: the condition cannot be read and the full response is
/// the answer.
async fn entity_tag_lists(store: AnyStore) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store, origin_addr).await;
    let (_, runs) = first_hit(&http, &log, "/etag/comma", &[]).await;

    for (condition, not_modified) in [
        ("\"x\", \"a,b\"", true),
        ("W/\"a,b\"", true),
        ("\"x\",W/\"a,b\"", true),
        ("*", true),
        ("\"a\", \"b\"", false),
        ("a,b", false),
        ("\"a,b", false),
    ] {
        let reply = http
            .send(
                Method::GET,
                "/etag/comma",
                &[("if-none-match", condition)],
                None,
            )
            .await;
        let expected = if not_modified {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        };
        assert_eq!(reply.status, expected, "If-None-Match: {condition}");
        assert!(is_hit(&reply), "{condition}: {}", cache_status(&reply));
    }
    assert_eq!(log.count(&Method::GET, "/etag/comma"), runs);
    server.abort();
    origin.abort();
}
on_each_store!(entity_tag_lists);

/// RFC 9110 §15.3.5 and RFC 9111 §3: a `204` with explicit freshness is stored and reused
/// like any other response, with no body.
async fn fresh_204_is_reused(store: AnyStore) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store, origin_addr).await;
    let first = http.send(Method::GET, "/no-content", &[], None).await;
    assert_eq!(first.status, StatusCode::NO_CONTENT);
    assert!(
        cache_status(&first).contains("storing"),
        "{}",
        cache_status(&first)
    );
    let (hit, runs) = first_hit(&http, &log, "/no-content", &[]).await;
    assert_eq!(hit.status, StatusCode::NO_CONTENT);
    assert_eq!(text(&hit), "");
    assert_eq!(hit.headers["x-run"], runs.to_string());
    let again = http.send(Method::GET, "/no-content", &[], None).await;
    assert!(is_hit(&again));
    assert_eq!(log.count(&Method::GET, "/no-content"), runs);
    server.abort();
    origin.abort();
}
on_each_store!(fresh_204_is_reused);

/// RFC 9111 lets a shared cache store and replay `Set-Cookie`; the proxy does not unless
/// told to (`REPLAY_SET_COOKIE=1`): by default such a response is never stored, so one
/// client's cookie never reaches another. Told to, it stores the response with its cookie
/// and replays it, but still drops a cookie the origin marks `no-cache="Set-Cookie"`.
async fn set_cookie_is_replayed_only_when_asked(store: AnyStore) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store.clone(), origin_addr).await;
    for run in 1..=2 {
        let reply = http.send(Method::GET, "/cookie", &[], None).await;
        assert_eq!(reply.headers["set-cookie"], format!("banner={run}; Path=/"));
        // the second is passed on the unstorable-URL memo, without a detail
        assert!(
            !cache_status(&reply).contains("storing")
                && (run == 2 || cache_status(&reply).contains("detail=set-cookie")),
            "{}",
            cache_status(&reply)
        );
    }
    server.abort();

    let replaying = proxy::Options {
        replay_set_cookie: true,
        ..proxy::Options::default()
    };
    let (server, http) = start_proxy_with(store, origin_addr, replaying).await;
    let (hit, runs) = first_hit(&http, &log, "/cookie", &[]).await;
    assert!(runs >= 3);
    assert_eq!(
        hit.headers["set-cookie"],
        format!("banner={runs}; Path=/"),
        "replayed"
    );
    assert_eq!(text(&hit), format!("cookie {runs}"));

    let (hit, _) = first_hit(&http, &log, "/cookie/per-user", &[]).await;
    assert!(
        !hit.headers.contains_key("set-cookie"),
        "a per-user cookie was replayed"
    );
    server.abort();
    origin.abort();
}
on_each_store!(set_cookie_is_replayed_only_when_asked);

/// RFC 9111 §4.1: selecting fields match when they differ only in whitespace, in how they
/// are split over lines, or in what their syntax makes insignificant. `Accept-Language` is
/// keyed on its lowercased members sorted by weight; any other selecting field on its
/// trimmed lines. A different preference is still another variant.
async fn vary_keys_normalised_values(store: AnyStore) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store, origin_addr).await;
    let language = "/vary/accept-language";
    let (hit, runs) = first_hit(
        &http,
        &log,
        language,
        &[("accept-language", "en-US, fr;q=0.5")],
    )
    .await;
    for same in [
        &[("accept-language", "fr;q=0.50,EN-us")][..],
        &[
            ("accept-language", " en-us "),
            ("accept-language", "fr ; q=0.5"),
        ],
        &[("accept-language", "en-US;q=1.0, FR;q=0.5")],
    ] {
        let reply = http.send(Method::GET, language, same, None).await;
        assert!(is_hit(&reply), "{same:?}: {}", cache_status(&reply));
        assert_eq!(text(&reply), text(&hit), "{same:?}");
    }
    // French first is another preference
    let other = http
        .send(
            Method::GET,
            language,
            &[("accept-language", "fr, en-US;q=0.5")],
            None,
        )
        .await;
    assert!(!is_hit(&other));
    assert_eq!(log.count(&Method::GET, language), runs + 1);

    let tenant = "/vary/x-tenant";
    let (_, runs) = first_hit(&http, &log, tenant, &[("x-tenant", "acme")]).await;
    let spaced = http
        .send(Method::GET, tenant, &[("x-tenant", "  acme ")], None)
        .await;
    assert!(is_hit(&spaced), "{}", cache_status(&spaced));
    let other = http
        .send(Method::GET, tenant, &[("x-tenant", "globex")], None)
        .await;
    assert!(!is_hit(&other));
    assert_eq!(log.count(&Method::GET, tenant), runs + 1);
    server.abort();
    origin.abort();
}
on_each_store!(vary_keys_normalised_values);

/// RFC 9111 §4.2.2 with RFC 9110 §15.1: with heuristic freshness on
/// (`HEURISTIC_FRESHNESS_SECS`), a response without explicit freshness whose status is
/// heuristically cacheable is reused for a share of the time since its `Last-Modified`;
/// other statuses are not. Without the option, such a response is revalidated every time.
async fn heuristic_statuses_are_reused(store: AnyStore) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store.clone(), origin_addr).await;
    for run in 1..=2 {
        let reply = http.send(Method::GET, "/heuristic/200", &[], None).await;
        assert_eq!(
            reply.headers["x-run"],
            run.to_string(),
            "reused without the option"
        );
    }
    server.abort();

    let heuristic = proxy::Options {
        heuristic_freshness: Some(std::time::Duration::from_secs(300)),
        ..proxy::Options::default()
    };
    let (server, http) = start_proxy_with(store, origin_addr, heuristic).await;
    for status in [203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
        let path = format!("/heuristic/{status}");
        let (hit, runs) = first_hit(&http, &log, &path, &[]).await;
        assert_eq!(hit.status.as_u16(), status);
        assert_eq!(hit.headers["x-run"], runs.to_string(), "{status}");
        assert!(
            (290..=300).contains(&ttl(&hit)),
            "{status}: {}, bounded by the option",
            cache_status(&hit)
        );
    }
    for status in [201, 302, 500] {
        let path = format!("/heuristic/{status}");
        for run in 1..=2 {
            let reply = http.send(Method::GET, &path, &[], None).await;
            assert_eq!(
                reply.headers["x-run"],
                run.to_string(),
                "{status} was reused"
            );
        }
    }
    server.abort();
    origin.abort();
}
on_each_store!(heuristic_statuses_are_reused);

/// The seconds of freshness left that `reply`'s `Cache-Status` announces.
fn ttl(reply: &Reply) -> i64 {
    cache_status(reply)
        .rsplit("ttl=")
        .next()
        .and_then(|ttl| ttl.parse().ok())
        .unwrap_or_else(|| panic!("no ttl in {}", cache_status(reply)))
}

/// RFC 9213: `CDN-Cache-Control` decides storing and reuse for this cache whatever
/// `Cache-Control` and `Expires` say, directive names in any case; a field that does not
/// parse is ignored; it is forwarded downstream; a deployment's own targeted field
/// (`TARGETED_CACHE_CONTROL`) takes precedence over it.
async fn targeted_cache_control_takes_precedence(store: AnyStore) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store.clone(), origin_addr).await;
    // (case, freshness the hit announces)
    for (case, fresh_for) in [
        ("short", 30),
        ("long", 3600),
        ("s-maxage", 40),
        ("upper", 50),
        ("over-no-store", 60),
        ("invalid", 20),
    ] {
        let path = format!("/targeted/{case}");
        let (hit, runs) = first_hit(&http, &log, &path, &[]).await;
        assert!(
            (fresh_for - 5..=fresh_for).contains(&ttl(&hit)),
            "{case}: {}",
            cache_status(&hit)
        );
        assert_eq!(hit.headers["x-run"], runs.to_string(), "{case}");
        assert!(
            hit.headers.contains_key("cdn-cache-control"),
            "{case}: not forwarded"
        );
    }
    // not stored, whatever Cache-Control and Expires say
    for case in ["zero", "no-store", "private"] {
        let path = format!("/targeted/{case}");
        for run in 1..=2 {
            let reply = http.send(Method::GET, &path, &[], None).await;
            assert!(!cache_status(&reply).contains("storing"), "{case}");
            assert!(!is_hit(&reply), "{case}");
            assert_eq!(log.count(&Method::GET, &path), run, "{case}");
        }
    }
    // targeted no-cache: stored, and revalidated before every use
    let revalidated = get_until(&http, "/targeted/no-cache", |reply| {
        cache_status(reply).contains("fwd-status=304")
    })
    .await;
    assert!(
        text(&revalidated).starts_with("targeted "),
        "the stored body"
    );
    assert_eq!(
        log.last_headers("/targeted/no-cache")["if-none-match"],
        "\"t\""
    );
    server.abort();

    let acme = proxy::Options {
        targeted_cache_control: Some(vec![
            http::HeaderName::from_static("acme-cache-control"),
            http::HeaderName::from_static("cdn-cache-control"),
        ]),
        ..proxy::Options::default()
    };
    let (server, http) = start_proxy_with(store, origin_addr, acme).await;
    let hit = get_until(&http, "/targeted/acme", is_hit).await;
    assert!((65..=70).contains(&ttl(&hit)), "{}", cache_status(&hit));
    server.abort();
    origin.abort();
}
on_each_store!(targeted_cache_control_takes_precedence);

/// Issue 28, finding 1: a targeted field sets freshness, but what `Cache-Control` says to
/// keep a response from other users holds: alice's page marked `private`, her cookie named
/// by `private="Set-Cookie"` or `no-cache="set-cookie"`, and the answer to her credentialed
/// request never reach bob, unless the deployment opts in to the full RFC 9213 override.
async fn targeted_fields_keep_pages_private(store: AnyStore) {
    let (origin, origin_addr, log) = start_origin().await;
    let replaying = proxy::Options {
        replay_set_cookie: true,
        ..proxy::Options::default()
    };
    let (server, http) = start_proxy_with(store.clone(), origin_addr, replaying).await;
    let alice = [("x-user", "alice")];
    let bob = [("x-user", "bob")];

    for _ in 0..2 {
        for user in [&alice, &bob] {
            let reply = http
                .send(Method::GET, "/targeted/private-page", user, None)
                .await;
            let runs = log.count(&Method::GET, "/targeted/private-page");
            assert_eq!(
                text(&reply),
                format!("targeted {runs}{}", user[0].1),
                "another user's private page"
            );
            assert!(!is_hit(&reply), "{}", cache_status(&reply));
        }
    }

    for case in ["cookie-private", "cookie-no-cache"] {
        let path = format!("/targeted/{case}");
        let first = http.send(Method::GET, &path, &alice, None).await;
        assert_eq!(first.headers["set-cookie"], "session=alice", "{case}");
        // stored from a task once the body has gone by: alice is served from the cache first,
        // so bob cannot ask before her page is there
        let alice_hit = send_until(&http, &path, &alice, is_hit).await;
        let hit = send_until(&http, &path, &bob, is_hit).await;
        assert!(
            !hit.headers.contains_key("set-cookie"),
            "{case}: alice's cookie replayed to bob: {:?}",
            hit.headers.get("set-cookie")
        );
        assert!(text(&alice_hit).ends_with("alice"), "{}", text(&alice_hit));
        assert_eq!(
            text(&hit),
            text(&alice_hit),
            "{case}: the page itself is shared"
        );
    }

    let credentialed = [("x-user", "alice"), ("authorization", "Bearer alice")];
    for run in 1..=2 {
        let reply = http
            .send(Method::GET, "/targeted/credentialed", &credentialed, None)
            .await;
        assert!(
            !cache_status(&reply).contains("storing"),
            "{}",
            cache_status(&reply)
        );
        assert_eq!(log.count(&Method::GET, "/targeted/credentialed"), run);
    }
    server.abort();

    // opted in: RFC 9213 in full, and the private page is shared
    let overriding = proxy::Options {
        targeted_cache_control_overrides_private: true,
        ..proxy::Options::default()
    };
    let (server, http) = start_proxy_with(store, origin_addr, overriding).await;
    let runs = log.count(&Method::GET, "/targeted/private-page");
    let stored = http
        .send(Method::GET, "/targeted/private-page", &alice, None)
        .await;
    assert!(
        cache_status(&stored).contains("storing"),
        "{}",
        cache_status(&stored)
    );
    // alice's page is stored once its body has gone by, from a task of its own: wait until
    // alice herself is served from the cache, so bob cannot ask before it is there (a miss
    // of his would store his own page over hers)
    let alice_hit = send_until(&http, "/targeted/private-page", &alice, is_hit).await;
    assert!(
        text(&alice_hit).ends_with("alice")
            && log.count(&Method::GET, "/targeted/private-page") > runs,
        "{}",
        text(&alice_hit)
    );
    let hit = send_until(&http, "/targeted/private-page", &bob, is_hit).await;
    assert_eq!(
        text(&hit),
        text(&alice_hit),
        "bob is served alice's shared page"
    );
    server.abort();
    origin.abort();
}
on_each_store!(targeted_fields_keep_pages_private);

/// RFC 9111 §4.3.5: a `HEAD` that reaches the origin over a stored `GET` response (here, one
/// the client asked to revalidate) updates the stored fields and freshness when its `200` or
/// `410` matches the stored status and validators; when it does not, the stored response is
/// no longer used.
async fn head_answers_freshen_the_stored_get(store: AnyStore) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store, origin_addr).await;
    let revalidate = [("cache-control", "no-cache")];
    for (case, status) in [("fresh", 200), ("gone", 410)] {
        let path = format!("/head/{case}");
        let (hit, runs) = first_hit(&http, &log, &path, &[]).await;
        assert!(ttl(&hit) <= 60, "{case}");
        let head = http.send(Method::HEAD, &path, &revalidate, None).await;
        assert_eq!(head.status.as_u16(), status, "{case}");
        assert!(
            cache_status(&head).contains("fwd=stale; detail=storing"),
            "{case}: {}",
            cache_status(&head)
        );
        assert_eq!(log.count(&Method::HEAD, &path), 1, "{case}");
        let freshened =
            get_until(&http, &path, |reply| reply.headers["x-version"] == "head-1").await;
        assert!(is_hit(&freshened), "{case}");
        assert_eq!(freshened.status.as_u16(), status, "{case}");
        assert!(
            ttl(&freshened) > 3500,
            "{case}: {}",
            cache_status(&freshened)
        );
        assert_eq!(text(&freshened), "head body");
        assert_eq!(log.count(&Method::GET, &path), runs, "{case}");
    }
    for case in ["changed", "now-gone"] {
        let path = format!("/head/{case}");
        let (_, runs) = first_hit(&http, &log, &path, &[]).await;
        http.send(Method::HEAD, &path, &revalidate, None).await;
        let fetched = get_until(&http, &path, |reply| !is_hit(reply)).await;
        assert_eq!(
            fetched.headers["x-version"],
            format!("get-{}", runs + 1),
            "{case}"
        );
    }
    server.abort();
    origin.abort();
}
on_each_store!(head_answers_freshen_the_stored_get);

/// An origin that precedes every final response with `103 Early Hints` (with a `Link`) and
/// `102 Processing`, written by hand since hyper's server cannot send them; the final
/// response may be stored for a minute. Answers on each connection until it closes.
async fn start_interim_origin() -> (tokio::task::JoinHandle<()>, std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (listener, addr) = super::listener().await;
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let served = std::sync::Arc::clone(&served);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buffer = [0; 4096];
                loop {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    seen.drain(..end);
                    let run = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    let body = format!("final {run}");
                    let reply = format!(
                        "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
                         HTTP/1.1 102 Processing\r\n\r\n\
                         HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-type: text/plain\r\n\
                         content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (task, addr)
}

/// Interim responses: the final response after a `103` and a `102` is stored and reused as
/// usual, without the `Link` the `103` carried; neither interim response is stored. (hyper's
/// server sends no 1xx but `100 Continue`, so the proxy cannot pass a `103` on; see
/// [`a_client_expecting_100_continue_gets_it`].)
async fn interim_responses_are_never_stored(store: AnyStore) {
    let (origin, origin_addr) = start_interim_origin().await;
    let (server, http) = start_proxy_on(store, origin_addr).await;
    let first = http.send(Method::GET, "/early", &[], None).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(text(&first), "final 1");
    assert!(
        cache_status(&first).contains("storing"),
        "{}",
        cache_status(&first)
    );
    let hit = get_until(&http, "/early", is_hit).await;
    assert_eq!((hit.status, text(&hit)), (StatusCode::OK, "final 1"));
    assert!(
        !hit.headers.contains_key("link"),
        "a field of the 103 was stored"
    );
    server.abort();
    origin.abort();
}
on_each_store!(interim_responses_are_never_stored);

/// `100 Continue` reaches a client that waits for it before sending its body, through the
/// cache (here an unsafe request it passes on): the proxy's server sends it as soon as the
/// request body is read to go on to the origin.
async fn a_client_expecting_100_continue_gets_it(store: AnyStore) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store, origin_addr).await;
    let mut socket = tokio::net::TcpStream::connect(http.base).await.unwrap();
    socket
        .write_all(
            b"POST /fresh HTTP/1.1\r\nhost: proxy\r\nexpect: 100-continue\r\n\
              content-type: text/plain\r\ncontent-length: 4\r\n\r\n",
        )
        .await
        .unwrap();
    let mut interim = [0; 25];
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        socket.read_exact(&mut interim),
    )
    .await
    .expect("100 Continue within 5 s")
    .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    socket.write_all(b"body").await.unwrap();
    let mut status = [0; 12];
    socket.read_exact(&mut status).await.unwrap();
    assert_eq!(
        &status,
        b"HTTP/1.1 200",
        "{}",
        String::from_utf8_lossy(&status)
    );
    assert_eq!(log.count(&Method::POST, "/fresh"), 1);
    server.abort();
    origin.abort();
}
on_each_store!(a_client_expecting_100_continue_gets_it);

fn slice(range: std::ops::Range<usize>) -> String {
    String::from_utf8(super::RANGED_BODY[range].to_vec()).unwrap()
}

/// RFC 9110 §14 from a stored complete response: byte, open-ended and suffix ranges are
/// answered `206` with their `Content-Range`, several ranges as `multipart/byteranges`, an
/// unsatisfiable one `416`; `If-Range` with the stored strong `ETag` gets the range, any
/// other the whole; all without the origin.
async fn ranges_from_a_stored_response(store: AnyStore) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store, origin_addr).await;
    let path = "/ranged/whole";
    let (_, runs) = first_hit(&http, &log, path, &[]).await;
    let ranged = |range: &'static str| [("range", range)];
    for (range, content_range, body) in [
        ("bytes=0-9", "bytes 0-9/100", slice(0..10)),
        ("bytes=90-", "bytes 90-99/100", slice(90..100)),
        ("bytes=-5", "bytes 95-99/100", slice(95..100)),
        ("bytes=95-200", "bytes 95-99/100", slice(95..100)),
    ] {
        let reply = http.send(Method::GET, path, &ranged(range), None).await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert!(is_hit(&reply), "{range}: {}", cache_status(&reply));
        assert_eq!(reply.headers["content-range"], content_range, "{range}");
        assert_eq!(text(&reply), body, "{range}");
    }
    let none = http
        .send(Method::GET, path, &ranged("bytes=100-"), None)
        .await;
    assert_eq!(none.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(none.headers["content-range"], "bytes */100");
    let two = http
        .send(Method::GET, path, &ranged("bytes=0-1, 10-11"), None)
        .await;
    assert_eq!(two.status, StatusCode::PARTIAL_CONTENT);
    let content_type = two.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("multipart/byteranges; boundary="),
        "{content_type}"
    );
    assert!(text(&two).contains("content-range: bytes 10-11/100\r\n\r\nkl\r\n"));
    // a range unit this cache does not know, or a range of a non-200, is not a range
    let other_unit = http
        .send(Method::GET, path, &ranged("items=0-1"), None)
        .await;
    assert_eq!(other_unit.status, StatusCode::OK);
    for (condition, status) in [
        ("\"r1\"", StatusCode::PARTIAL_CONTENT),
        ("W/\"r1\"", StatusCode::OK),
        ("\"r2\"", StatusCode::OK),
    ] {
        let headers = [("range", "bytes=0-9"), ("if-range", condition)];
        let reply = http.send(Method::GET, path, &headers, None).await;
        assert_eq!(reply.status, status, "If-Range: {condition}");
        assert!(is_hit(&reply));
    }
    assert_eq!(log.count(&Method::GET, path), runs);

    // an entry to revalidate is revalidated whole, without the client's Range
    let headers = [("range", "bytes=0-9"), ("cache-control", "no-cache")];
    let revalidated = http.send(Method::GET, path, &headers, None).await;
    assert_eq!(log.count(&Method::GET, path), runs + 1);
    let sent = log.last_headers(path);
    assert!(!sent.contains_key("range"), "{sent:?}");
    assert_eq!(sent["if-none-match"], "\"r1\"");
    assert_eq!(
        revalidated.status,
        StatusCode::OK,
        "the origin's whole answer"
    );
    assert_eq!(text(&revalidated), slice(0..100));
    server.abort();
    origin.abort();
}
on_each_store!(ranges_from_a_stored_response);

/// Issue 28, finding 2 (cache-poisoned denial of service): the origin's `416` to an
/// attacker's `Range: bytes=999999-`, fresh for a minute, is passed on but never stored as
/// the URL's response; the next plain `GET` gets the whole `200`, which is stored.
async fn an_unsatisfiable_range_never_becomes_the_page(store: AnyStore) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store, origin_addr).await;
    let path = "/ranged/cpdos";
    for _ in 0..2 {
        let attack = http
            .send(Method::GET, path, &[("range", "bytes=999999-")], None)
            .await;
        assert_eq!(attack.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert!(
            !cache_status(&attack).contains("storing"),
            "{}",
            cache_status(&attack)
        );
    }
    let page = http.send(Method::GET, path, &[], None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", cache_status(&page));
    assert!(
        !is_hit(&page),
        "the 416 was stored: {}",
        cache_status(&page)
    );
    let (hit, runs) = first_hit(&http, &log, path, &[]).await;
    assert_eq!(
        (hit.status, text(&hit)),
        (StatusCode::OK, slice(0..100).as_str())
    );
    assert_eq!(runs, 3);
    server.abort();
    origin.abort();
}
on_each_store!(an_unsatisfiable_range_never_becomes_the_page);

/// RFC 9111 §3.3-3.4: partial responses are stored, reused for the ranges they cover, and
/// combined with the pieces of the same representation (same strong `ETag`); a new piece's
/// fields replace the stored ones, the others are kept; once the pieces make up the whole,
/// it is a complete entry that answers a plain `GET`. Pieces of different representations
/// never combine.
async fn partial_responses_are_stored_and_combined(store: AnyStore) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store, origin_addr).await;
    let path = "/ranged/pieces";
    let first = http
        .send(Method::GET, path, &[("range", "bytes=0-49")], None)
        .await;
    assert_eq!(first.status, StatusCode::PARTIAL_CONTENT);
    assert!(
        cache_status(&first).contains("storing"),
        "{}",
        cache_status(&first)
    );
    let covered = send_until(&http, path, &[("range", "bytes=10-19")], is_hit).await;
    assert_eq!(covered.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(covered.headers["content-range"], "bytes 10-19/100");
    assert_eq!(text(&covered), slice(10..20));
    let asked = log.ranged(path);

    // not covered: the origin's piece, combined with the first
    let second = http
        .send(Method::GET, path, &[("range", "bytes=40-59")], None)
        .await;
    assert_eq!(text(&second), slice(40..60));
    assert_eq!(log.ranged(path), asked + 1);
    let combined = send_until(&http, path, &[("range", "bytes=5-55")], is_hit).await;
    assert_eq!(text(&combined), slice(5..56));

    // the last piece makes up the whole: a complete entry, for plain GETs too
    http.send(Method::GET, path, &[("range", "bytes=60-99")], None)
        .await;
    let whole = send_until(&http, path, &[], is_hit).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(text(&whole), slice(0..100));
    assert_eq!(whole.headers["content-length"], "100");
    assert_eq!(
        whole.headers["x-first"], "yes",
        "a field of an earlier piece was lost"
    );
    assert_eq!(
        whole.headers["x-piece"],
        log.count(&Method::GET, path).to_string(),
        "the newest piece's fields win"
    );
    assert_eq!(
        log.count(&Method::GET, path),
        log.ranged(path),
        "no plain GET reached the origin"
    );

    // a new ETag on every answer: the pieces never make a whole
    let changing = "/ranged/changing";
    http.send(Method::GET, changing, &[("range", "bytes=0-49")], None)
        .await;
    send_until(&http, changing, &[("range", "bytes=0-9")], is_hit).await;
    http.send(Method::GET, changing, &[("range", "bytes=50-99")], None)
        .await;
    send_until(&http, changing, &[("range", "bytes=50-59")], is_hit).await;
    let plain = http.send(Method::GET, changing, &[], None).await;
    assert!(
        !is_hit(&plain),
        "pieces of two representations were combined"
    );
    // and the first piece was replaced by the second
    let replaced = http
        .send(Method::GET, changing, &[("range", "bytes=0-9")], None)
        .await;
    assert!(!is_hit(&replaced) || replaced.headers["etag"] != "\"v1\"");
    server.abort();
    origin.abort();
}
on_each_store!(partial_responses_are_stored_and_combined);

/// Issue 28, finding 3: an unsafe request's success invalidates the pieces of every variant
/// of its URL at once, those this process wrote in the last seconds included: the next
/// range request of each variant goes to the origin.
async fn invalidation_drops_the_pieces_of_every_variant(store: AnyStore) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store, origin_addr).await;
    let path = "/ranged/varied";
    let languages = ["en", "fr"];
    for language in languages {
        let piece = [("range", "bytes=0-49"), ("accept-language", language)];
        let first = http.send(Method::GET, path, &piece, None).await;
        assert!(
            cache_status(&first).contains("storing"),
            "{}",
            cache_status(&first)
        );
        let covered = [("range", "bytes=2-5"), ("accept-language", language)];
        send_until(&http, path, &covered, is_hit).await;
    }
    let asked = log.ranged(path);
    let update = http.send(Method::POST, path, &[], None).await;
    assert_eq!(update.status, StatusCode::OK);
    for (n, language) in languages.into_iter().enumerate() {
        let covered = [("range", "bytes=2-5"), ("accept-language", language)];
        let reply = http.send(Method::GET, path, &covered, None).await;
        assert!(
            !is_hit(&reply),
            "{language}: invalidated pieces were served: {}",
            cache_status(&reply)
        );
        assert_eq!(log.ranged(path), asked + n + 1, "{language}");
    }
    server.abort();
    origin.abort();
}
on_each_store!(invalidation_drops_the_pieces_of_every_variant);

/// Issue 28, finding 3, across instances: pieces one instance wrote are no longer served by
/// it once another instance sharing the Redis invalidated the URL; its own copy stands only
/// while its write may not have landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_invalidation_drops_the_pieces() {
    let redis = crate::support::TestRedis::start();
    let store = tower_redis_http::store::RedisStore::builder(redis.url())
        .build()
        .await
        .unwrap();
    let (origin, origin_addr, log) = start_origin().await;
    let (server_a, a) = start_proxy_on(store.clone().into(), origin_addr).await;
    let (server_b, b) = start_proxy_on(store.into(), origin_addr).await;
    let path = "/ranged/shared";
    // one host for both, as behind one name: one URL key
    let host = ("host", "shop.example");
    a.send(Method::GET, path, &[host, ("range", "bytes=0-49")], None)
        .await;
    let covered = [host, ("range", "bytes=2-5")];
    send_until(&a, path, &covered, is_hit).await;
    send_until(&b, path, &covered, is_hit).await;
    let asked = log.ranged(path);
    let update = b.send(Method::POST, path, &[host], None).await;
    assert_eq!(update.status, StatusCode::OK);
    let reply = a.send(Method::GET, path, &covered, None).await;
    assert!(
        !is_hit(&reply),
        "pieces another instance invalidated were served: {}",
        cache_status(&reply)
    );
    assert_eq!(log.ranged(path), asked + 1);
    server_a.abort();
    server_b.abort();
    origin.abort();
}

/// RFC 9110 §7.6.1, for the proxy example (the adversary's review of issue 28): the fields
/// of one connection reach neither the origin nor the client.
async fn hop_by_hop_fields_stay_on_their_hop(store: AnyStore) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store, origin_addr).await;
    let reply = http
        .send(
            Method::GET,
            "/hop",
            &[
                ("connection", "x-secret"),
                ("x-secret", "s3"),
                ("proxy-authorization", "Basic eDp5"),
                ("te", "trailers"),
            ],
            None,
        )
        .await;
    let sent = log.last_headers("/hop");
    for name in ["x-secret", "proxy-authorization", "te"] {
        assert!(!sent.contains_key(name), "{name} reached the origin");
    }
    for name in ["x-hop", "proxy-authenticate", "keep-alive"] {
        assert!(
            !reply.headers.contains_key(name),
            "{name} reached the client"
        );
    }
    assert_eq!(text(&reply), "hop 1");
    server.abort();
    origin.abort();
}
on_each_store!(hop_by_hop_fields_stay_on_their_hop);
