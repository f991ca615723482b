//! The caching proxy example between a real HTTP client and a real origin on loopback, storing
//! in a real Redis: what the origin's headers say is what the proxy does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tower_redis_http::store::RedisStore;

use crate::caching_proxy_example as proxy;
use crate::support::TestRedis;
use crate::{Http, Reply, listener};

#[path = "proxy_rules.rs"]
mod rules;

#[path = "proxy_gateway.rs"]
mod gateway;

/// What the origin saw: requests per method and path, and the headers of each.
#[derive(Clone, Default)]
struct OriginLog(Arc<Mutex<Vec<(Method, String, HeaderMap)>>>);

impl OriginLog {
    fn count(&self, method: &Method, path: &str) -> usize {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .filter(|(m, p, _)| m == method && p == path)
            .count()
    }

    /// The requests for `path` that carried a `Range`.
    fn ranged(&self, path: &str) -> usize {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .filter(|(_, p, headers)| p == path && headers.contains_key("range"))
            .count()
    }

    fn last_headers(&self, path: &str) -> HeaderMap {
        let seen = self.0.lock().unwrap();
        let (_, _, headers) = seen.iter().rev().find(|(_, p, _)| p == path).unwrap();
        headers.clone()
    }
}

/// An origin whose paths each exercise one rule of the proxy's cache.
fn origin_answer(log: &OriginLog, request: &Request<()>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    log.0.lock().unwrap().push((
        request.method().clone(),
        path.clone(),
        request.headers().clone(),
    ));
    let runs = log.count(request.method(), &path);
    let response = |cache_control: &str, body: String| {
        Response::builder()
            .header("cache-control", cache_control)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let hop_fields = |answer: &mut Response<Full<Bytes>>| {
        let headers = answer.headers_mut();
        headers.insert("connection", "x-hop".parse().unwrap());
        headers.insert("x-hop", "secret".parse().unwrap());
        headers.insert("proxy-authenticate", "Basic".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
    };
    match (request.method().clone(), path.as_str()) {
        // a new item, at the URL the origin builds from the Host it got, as frameworks do
        (Method::POST, "/items/new") => {
            let host = request.headers()["host"].to_str().unwrap();
            let mut answer = response("no-store", "created".to_owned());
            *answer.status_mut() = StatusCode::CREATED;
            answer
                .headers_mut()
                .insert("location", format!("http://{host}/items").parse().unwrap());
            answer
        }
        (Method::POST, _) => response("no-store", "updated".to_owned()),
        (_, "/items") => response("max-age=60", format!("items {runs}")),
        (_, "/sie") => response("max-age=1, stale-if-error=60", format!("sie {runs}")),
        (_, "/swr") => response(
            "max-age=1, stale-while-revalidate=60",
            format!("swr {runs}"),
        ),
        (_, "/vary-echo") => {
            let language = request
                .headers()
                .get("accept-language")
                .map_or("none", |value| value.to_str().unwrap());
            let mut answer = response("max-age=60", format!("lang={language}"));
            answer
                .headers_mut()
                .insert("vary", "accept-language".parse().unwrap());
            answer
        }
        (_, "/hop/validated") => {
            // stale at once, revalidated on every use, its stale copy served on an error
            let matches = request
                .headers()
                .get("if-none-match")
                .is_some_and(|tag| tag == "\"h\"");
            let mut answer = response(
                "max-age=0, stale-if-error=60",
                format!("validated hop {runs}"),
            );
            answer
                .headers_mut()
                .insert("etag", "\"h\"".parse().unwrap());
            if matches {
                *answer.status_mut() = StatusCode::NOT_MODIFIED;
                *answer.body_mut() = Full::new(Bytes::new());
            }
            hop_fields(&mut answer);
            answer
        }
        (_, "/fresh") => response("max-age=60", format!("fresh {runs}")),
        (_, "/hop") => {
            let mut answer = response("max-age=60", format!("hop {runs}"));
            hop_fields(&mut answer);
            answer
        }
        (_, "/validated") => {
            let matches = request
                .headers()
                .get("if-none-match")
                .is_some_and(|tag| tag == "\"v1\"");
            let mut answer = response("no-cache", format!("validated {runs}"));
            answer
                .headers_mut()
                .insert("etag", "\"v1\"".parse().unwrap());
            if matches {
                *answer.status_mut() = StatusCode::NOT_MODIFIED;
                *answer.body_mut() = Full::new(Bytes::new());
            }
            answer
        }
        (_, "/private") => response("private, max-age=60", format!("private {runs}")),
        (_, odd) if odd.starts_with("/age/odd/") => {
            let which: usize = odd["/age/odd/".len()..].parse().unwrap();
            let mut answer = response("max-age=60", format!("aged {runs}"));
            answer
                .headers_mut()
                .insert("age", ODD_AGES[which].parse().unwrap());
            answer
        }
        (_, "/age/ten") => {
            let mut answer = response("max-age=60", format!("ten {runs}"));
            answer.headers_mut().insert("age", "10".parse().unwrap());
            answer
        }
        (_, "/max-age/twice") => response("max-age=3600, max-age=0", format!("twice {runs}")),
        (_, "/max-age/decimal") => response("max-age=1.5", format!("decimal {runs}")),
        (_, "/max-age/spaced") => response("max-age = 3600", format!("spaced {runs}")),
        (_, "/etag/comma") => {
            let mut answer = response("max-age=60", format!("tagged {runs}"));
            answer
                .headers_mut()
                .insert("etag", "\"a,b\"".parse().unwrap());
            answer
        }
        (_, "/cookie") => {
            let mut answer = response("max-age=60", format!("cookie {runs}"));
            answer.headers_mut().insert(
                "set-cookie",
                format!("banner={runs}; Path=/").parse().unwrap(),
            );
            answer
        }
        (_, "/cookie/per-user") => {
            let mut answer = response(
                "max-age=60, no-cache=\"Set-Cookie\"",
                format!("per-user {runs}"),
            );
            answer
                .headers_mut()
                .insert("set-cookie", format!("session={runs}").parse().unwrap());
            answer
        }
        (_, vary) if vary.starts_with("/vary/") => {
            let field = &vary["/vary/".len()..];
            let mut answer = response("max-age=60", format!("{field} {runs}"));
            answer.headers_mut().insert("vary", field.parse().unwrap());
            answer
        }
        (_, heuristic) if heuristic.starts_with("/heuristic/") => {
            // no explicit freshness: a day since the last change
            let status: u16 = heuristic["/heuristic/".len()..].parse().unwrap();
            let a_day_ago = std::time::SystemTime::now() - Duration::from_secs(86_400);
            let body = if status == 204 {
                String::new()
            } else {
                format!("status {status} {runs}")
            };
            Response::builder()
                .status(status)
                .header("last-modified", httpdate::fmt_http_date(a_day_ago))
                .header("x-run", runs)
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        }
        (_, targeted) if targeted.starts_with("/targeted/") => {
            // (CDN-Cache-Control, Cache-Control, Acme-Cache-Control) per case
            let (cdn, general, acme) = match &targeted["/targeted/".len()..] {
                "short" => ("max-age=30", "max-age=3600", ""),
                "long" => ("max-age=3600", "max-age=5", ""),
                "zero" => ("max-age=0", "", ""),
                "no-store" => ("no-store", "max-age=3600", ""),
                "private" => ("private", "public, max-age=3600", ""),
                "no-cache" => ("no-cache, max-age=3600", "max-age=3600", ""),
                "s-maxage" => ("s-maxage=40", "max-age=5", ""),
                "upper" => ("MAX-AGE=50", "max-age=5", ""),
                "over-no-store" => ("max-age=60", "no-store", ""),
                "invalid" => ("max-age=ten", "max-age=20", ""),
                "acme" => ("max-age=3600", "max-age=5", "max-age=70"),
                "private-page" => ("max-age=60", "private", ""),
                "cookie-private" => ("max-age=60", "private=\"Set-Cookie\"", ""),
                "cookie-no-cache" => ("max-age=60", "no-cache=\"set-cookie\"", ""),
                "credentialed" => ("public, max-age=60", "", ""),
                other => panic!("no targeted case {other}"),
            };
            let user = request
                .headers()
                .get("x-user")
                .map_or("", |user| user.to_str().unwrap())
                .to_owned();
            let mut answer = Response::builder()
                .header("content-type", "text/plain")
                .header("etag", "\"t\"")
                .header("x-run", runs);
            if targeted.contains("/cookie-") {
                answer = answer.header("set-cookie", format!("session={user}"));
            }
            if targeted.ends_with("/zero") {
                answer = answer.header("expires", in_an_hour("lowercase"));
            }
            for (name, value) in [
                ("cdn-cache-control", cdn),
                ("cache-control", general),
                ("acme-cache-control", acme),
            ] {
                if !value.is_empty() {
                    answer = answer.header(name, value);
                }
            }
            if targeted.ends_with("/zero") {
                // no validator: a stale response is not worth storing
                let mut answer = answer.body(Full::new(Bytes::from("zero"))).unwrap();
                answer.headers_mut().remove("etag");
                return answer;
            }
            let conditional = request
                .headers()
                .get("if-none-match")
                .is_some_and(|t| t == "\"t\"");
            let status = if conditional { 304 } else { 200 };
            let body = if conditional {
                String::new()
            } else {
                format!("targeted {runs}{user}")
            };
            answer
                .status(status)
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        }
        (method, head) if head.starts_with("/head/") => {
            // (GET status, HEAD status, HEAD's ETag) per case
            let case = &head["/head/".len()..];
            let (get_status, head_status, head_etag) = match case {
                "fresh" => (200, 200, "\"h\""),
                "gone" => (410, 410, "\"h\""),
                "changed" => (200, 200, "\"other\""),
                "now-gone" => (200, 410, "\"h\""),
                other => panic!("no HEAD case {other}"),
            };
            let is_head = method == Method::HEAD;
            Response::builder()
                .status(if is_head { head_status } else { get_status })
                .header("etag", if is_head { head_etag } else { "\"h\"" })
                .header(
                    "cache-control",
                    if is_head {
                        "max-age=3600"
                    } else {
                        "max-age=60"
                    },
                )
                .header(
                    "x-version",
                    format!("{}-{runs}", if is_head { "head" } else { "get" }),
                )
                .body(Full::new(Bytes::from("head body")))
                .unwrap()
        }
        (_, ranged) if ranged.starts_with("/ranged/") => ranged_answer(request, ranged, runs),
        (_, "/no-content") => {
            let mut answer = response("max-age=60", String::new());
            *answer.status_mut() = StatusCode::NO_CONTENT;
            answer.headers_mut().insert("x-run", runs.into());
            answer
        }
        (_, expires) if expires.starts_with("/expires/") => {
            let format = &expires["/expires/".len()..];
            Response::builder()
                .header("expires", in_an_hour(format))
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from(format!("{format} {runs}"))))
                .unwrap()
        }
        _ => {
            let mut answer = response("no-store", "not found".to_owned());
            *answer.status_mut() = StatusCode::NOT_FOUND;
            answer
        }
    }
}

/// The 100 bytes every `/ranged/` path serves: the alphabet over and over.
const RANGED_BODY: &[u8; 100] = b"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuv";

/// A `/ranged/` path: the whole of [`RANGED_BODY`], or the single byte range a `Range` asks
/// (`206`, with `x-first` on the piece that starts the body; `416` past the end). `/ranged/changing` has a new
/// `ETag` on every answer, so its pieces never combine; `/ranged/varied` varies on
/// `Accept-Language`.
fn ranged_answer(request: &Request<()>, path: &str, runs: usize) -> Response<Full<Bytes>> {
    let etag = if path.ends_with("/changing") {
        format!("\"v{runs}\"")
    } else {
        "\"r1\"".to_owned()
    };
    let mut answer = Response::builder()
        .header("cache-control", "max-age=60")
        .header("content-type", "text/plain")
        .header("etag", etag)
        .header("x-piece", runs);
    if path.ends_with("/varied") {
        answer = answer.header("vary", "accept-language");
    }
    let wanted = request
        .headers()
        .get("range")
        .and_then(|range| range.to_str().ok()?.strip_prefix("bytes=")?.split_once('-'))
        .and_then(|(first, last)| {
            let last = if last.is_empty() {
                Ok(99)
            } else {
                last.parse()
            };
            Some((first.parse::<usize>().ok()?, last.ok()?))
        });
    match wanted {
        // unsatisfiable, still with the path's max-age=60, as origins send it
        Some((first, _)) if first >= RANGED_BODY.len() => answer
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header("content-range", "bytes */100")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        Some((first, last)) => {
            let last = last.min(RANGED_BODY.len() - 1);
            let answer = if first == 0 {
                answer.header("x-first", "yes")
            } else {
                answer
            };
            answer
                .status(StatusCode::PARTIAL_CONTENT)
                .header("content-range", format!("bytes {first}-{last}/100"))
                .body(Full::new(Bytes::copy_from_slice(
                    &RANGED_BODY[first..=last],
                )))
                .unwrap()
        }
        None => answer
            .body(Full::new(Bytes::from_static(RANGED_BODY)))
            .unwrap(),
    }
}

/// An hour from now as an HTTP date in `format`: `lowercase` (IMF-fixdate in lower case),
/// `rfc850` or `asctime` (RFC 9110 §5.6.7's obsolete formats).
fn in_an_hour(format: &str) -> String {
    let fixdate = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let (weekday, day, month, year, time) = (
        &fixdate[0..3],
        &fixdate[5..7],
        &fixdate[8..11],
        &fixdate[12..16],
        &fixdate[17..25],
    );
    let long_weekday = match weekday {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    match format {
        "lowercase" => fixdate.to_ascii_lowercase(),
        "rfc850" => format!("{long_weekday}, {day}-{month}-{} {time} GMT", &year[2..]),
        "asctime" => format!(
            "{weekday} {month} {:>2} {time} {year}",
            day.trim_start_matches('0')
        ),
        other => panic!("no date format {other}"),
    }
}

fn cache_status(reply: &Reply) -> &str {
    reply.headers["cache-status"].to_str().unwrap()
}

fn text(reply: &Reply) -> &str {
    reply.json.as_str().unwrap_or_default()
}

/// Sends GETs of `path` until `done` holds for one, which it returns.
async fn get_until(http: &Http, path: &str, done: impl Fn(&Reply) -> bool) -> Reply {
    for _ in 0..500 {
        let reply = http.send(Method::GET, path, &[], None).await;
        if done(&reply) {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{path} never reached the awaited state");
}

type Proxy = tokio::task::JoinHandle<Result<(), proxy::ServeError>>;

/// The example's proxy for the origin at `origin`, storing in `redis`, and a client for it.
async fn start_proxy(redis: &TestRedis, origin: SocketAddr) -> (Proxy, Http) {
    let store = RedisStore::builder(redis.url()).build().await.unwrap();
    start_proxy_on(store.into(), origin).await
}

/// The example's proxy for the origin at `origin`, storing in `store`, and a client for it.
async fn start_proxy_on(
    store: tower_redis_http::store::AnyStore,
    origin: SocketAddr,
) -> (Proxy, Http) {
    start_proxy_with(store, origin, proxy::Options::default()).await
}

/// [`start_proxy_on`] with the example's `options`.
async fn start_proxy_with(
    store: tower_redis_http::store::AnyStore,
    origin: SocketAddr,
    options: proxy::Options,
) -> (Proxy, Http) {
    let (listener, addr) = listener().await;
    let server = tokio::spawn(async move {
        proxy::serve(
            listener,
            format!("http://{origin}").parse().unwrap(),
            store,
            &options,
        )
        .await
    });
    (server, Http::new(addr))
}

/// The origin of [`origin_answer`] on loopback, and the log of what it saw.
/// `Age` values RFC 9111 §5.1 has a cache read as 0 on a `max-age=60` response: a list's
/// first member, or an invalid value ignored.
const ODD_AGES: [&str; 5] = ["0, 0", "abc", "-7200", "7200.0", "0, 7200"];

async fn start_origin() -> (
    tokio::task::JoinHandle<std::io::Result<()>>,
    SocketAddr,
    OriginLog,
) {
    let log = OriginLog::default();
    let (origin_listener, origin_addr) = listener().await;
    let origin_log = log.clone();
    let origin = tokio::spawn(proxy::common::serve_tower(
        origin_listener,
        tower::service_fn(move |request: Request<Incoming>| {
            let origin_log = origin_log.clone();
            async move {
                // read the request body whole before answering, as an application does: an
                // answer sent over a body still coming races the proxy's client sending it
                let (parts, body) = request.into_parts();
                let _ = http_body_util::BodyExt::collect(body).await;
                let request = Request::from_parts(parts, ());
                Ok::<_, Infallible>(origin_answer(&origin_log, &request))
            }
        }),
        Duration::from_secs(10),
    ));
    (origin, origin_addr, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caching_proxy_caches_revalidates_and_invalidates_what_the_origin_allows() {
    let redis = TestRedis::start();
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy(&redis, origin_addr).await;

    // max-age: a stored miss, then hits the origin never sees
    let miss = http.send(Method::GET, "/fresh", &[], None).await;
    assert_eq!((miss.status, text(&miss)), (StatusCode::OK, "fresh 1"));
    assert!(
        cache_status(&miss).contains("fwd=uri-miss; detail=storing"),
        "{}",
        cache_status(&miss)
    );
    let hit = get_until(&http, "/fresh", |reply| reply.headers["x-cache"] == "HIT").await;
    assert_eq!(text(&hit), "fresh 1");
    assert!(hit.headers.contains_key("age"));
    assert_eq!(log.count(&Method::GET, "/fresh"), 1);

    // no-cache with an ETag: stored, and revalidated with the origin before every use
    let revalidated = get_until(&http, "/validated", |reply| {
        cache_status(reply).contains("fwd=stale; fwd-status=304")
    })
    .await;
    assert_eq!(revalidated.status, StatusCode::OK);
    assert!(text(&revalidated).starts_with("validated"));
    assert_eq!(log.last_headers("/validated")["if-none-match"], "\"v1\"");

    // private: passed through, never stored
    for run in 1..=2 {
        let private = http.send(Method::GET, "/private", &[], None).await;
        assert_eq!(text(&private), format!("private {run}"));
        assert!(!cache_status(&private).contains("storing"));
    }

    // an unsafe method's success invalidates the URL it went to
    let posted = http.send(Method::POST, "/fresh", &[], None).await;
    assert_eq!(posted.status, StatusCode::OK);
    let after = http.send(Method::GET, "/fresh", &[], None).await;
    assert_eq!(text(&after), "fresh 2");
    assert!(cache_status(&after).contains("fwd=uri-miss"));

    server.abort();
    origin.abort();
}

/// RFC 9111 §4.4 for methods the crate has no name for: an extension method that is not
/// known to be safe (`M-SEARCH`, a custom `PURGE`) invalidates the URL it went to as POST
/// does, and one the IANA registry marks safe (`PROPFIND`) does not. Through the proxy
/// example, on Redis and on the memory store.
async fn unsafe_extension_methods_invalidate_and_safe_ones_do_not(
    store: tower_redis_http::store::AnyStore,
) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store, origin_addr).await;
    let is_hit = |reply: &Reply| reply.headers["x-cache"] == "HIT";

    get_until(&http, "/fresh", is_hit).await;
    let propfind = Method::from_bytes(b"PROPFIND").unwrap();
    assert_eq!(
        http.send(propfind.clone(), "/fresh", &[], None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(log.count(&propfind, "/fresh"), 1, "passed to the origin");
    let after_safe = http.send(Method::GET, "/fresh", &[], None).await;
    assert!(is_hit(&after_safe), "a safe method invalidated");

    for method in ["M-SEARCH", "PURGE"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        get_until(&http, "/fresh", is_hit).await;
        let runs = log.count(&Method::GET, "/fresh");
        assert_eq!(
            http.send(method.clone(), "/fresh", &[], None).await.status,
            StatusCode::OK
        );
        let after = http.send(Method::GET, "/fresh", &[], None).await;
        assert!(
            cache_status(&after).contains("fwd=uri-miss"),
            "{method} left /fresh stored: {}",
            cache_status(&after)
        );
        assert_eq!(log.count(&Method::GET, "/fresh"), runs + 1, "{method}");
    }
    server.abort();
    origin.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_extension_methods_invalidate_on_redis() {
    let redis = TestRedis::start();
    let store = RedisStore::builder(redis.url()).build().await.unwrap();
    unsafe_extension_methods_invalidate_and_safe_ones_do_not(store.into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_extension_methods_invalidate_on_the_memory_store() {
    let store = tower_redis_http::store::MemoryStore::new();
    unsafe_extension_methods_invalidate_and_safe_ones_do_not(store.into()).await;
}

/// RFC 9111 §5.1, §4.2.1 and RFC 9110 §5.6.7 as origins really send them: of an `Age` list
/// the first member counts, an invalid `Age` is ignored (the five values the public HTTP
/// cache test suite requires), a valid one is counted; of two `max-age`s the smaller counts, a decimal one is
/// invalid (stale), spaces around `=` are read; `Expires` in the two obsolete formats, or in
/// lower case, gives the freshness it says. Through the proxy example, on Redis and on the
/// memory store.
async fn odd_but_valid_age_and_expires_are_read_as_the_rfcs_say(
    store: tower_redis_http::store::AnyStore,
) {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(store, origin_addr).await;
    let is_hit = |reply: &Reply| reply.headers["x-cache"] == "HIT";

    // a list uses its first member, an invalid value is ignored: each is fresh for a minute
    for (which, age) in ODD_AGES.iter().enumerate() {
        let path = format!("/age/odd/{which}");
        let first = http.send(Method::GET, &path, &[], None).await;
        assert!(
            cache_status(&first).contains("storing"),
            "Age: {age} -> {}",
            cache_status(&first)
        );
        let hit = get_until(&http, &path, is_hit).await;
        assert_eq!(text(&hit), text(&first), "Age: {age}");
    }
    let hit = get_until(&http, "/age/ten", is_hit).await;
    let age: u64 = hit.headers["age"].to_str().unwrap().parse().unwrap();
    assert!(age >= 10, "the origin's Age is counted: {age}");

    // a repeated max-age: the most restrictive; a decimal one: invalid, so stale; spaces
    // around `=`: read
    for (path, reused) in [
        ("/max-age/twice", false),
        ("/max-age/decimal", false),
        ("/max-age/spaced", true),
    ] {
        http.send(Method::GET, path, &[], None).await;
        let second = http.send(Method::GET, path, &[], None).await;
        if reused {
            get_until(&http, path, is_hit).await;
            assert_eq!(log.count(&Method::GET, path), 1, "{path}");
        } else {
            assert!(!is_hit(&second), "{path} was reused");
            assert_eq!(log.count(&Method::GET, path), 2, "{path}");
        }
    }

    for format in ["lowercase", "rfc850", "asctime"] {
        let path = format!("/expires/{format}");
        let hit = get_until(&http, &path, is_hit).await;
        assert_eq!(text(&hit), format!("{format} 1"), "{format}");
        assert_eq!(log.count(&Method::GET, &path), 1, "{format}");
    }
    server.abort();
    origin.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_age_and_expires_on_redis() {
    let redis = TestRedis::start();
    let store = RedisStore::builder(redis.url()).build().await.unwrap();
    odd_but_valid_age_and_expires_are_read_as_the_rfcs_say(store.into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_age_and_expires_on_the_memory_store() {
    let store = tower_redis_http::store::MemoryStore::new();
    odd_but_valid_age_and_expires_are_read_as_the_rfcs_say(store.into()).await;
}

#[tokio::test]
async fn the_caching_proxy_answers_502_when_the_origin_is_down() {
    let redis = TestRedis::start();
    // a port bound and never listened on: connections to it are refused, and no other test
    // can take it meanwhile (a port freed again went to another test's silent origin, 1 run
    // in 10, and the proxy answered that one's read timeout, 504)
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed_addr = closed.local_addr().unwrap();
    let (server, http) = start_proxy(&redis, closed_addr).await;
    let reply = http.send(Method::GET, "/anything", &[], None).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        reply.json,
        serde_json::json!({"detail": "The origin did not answer."})
    );
    drop(closed);
    server.abort();
}

/// An origin that reflects every poisoning vector into a page it lets shared caches keep for a
/// minute: the forwarding headers frameworks build links from, and the request body.
async fn reflecting_origin(
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    use http_body_util::BodyExt;
    let mut page = String::new();
    for name in REFLECTED {
        if let Some(value) = request.headers().get(*name) {
            page.push_str(&format!("{name}={} ", value.to_str().unwrap_or("?")));
        }
    }
    let body = request.into_body().collect().await.map(|b| b.to_bytes());
    if let Ok(body) = body {
        page.push_str(&String::from_utf8_lossy(&body));
    }
    Ok(Response::builder()
        .header("cache-control", "public, max-age=60")
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(page)))
        .unwrap())
}

const REFLECTED: &[&str] = &[
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "forwarded",
    "x-host",
    "x-original-host",
    "x-forwarded-host",
    "x-original-url",
    "x-real-ip",
    "x-scheme",
    "x-script-name",
    "x-http-method-override",
];

/// The fields that speak for a proxy (issue 35, finding 6, and the adversary's review after
/// it): the ones the proxy writes itself, and the other claims frameworks read the original
/// host, path or client from. A client's own never reach the origin, from a peer that is not
/// a trusted proxy. A method override is the client's own: it reaches the origin, and its
/// answer is not stored.
const OWNED_BY_THE_PROXY: &[&str] = &[
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "forwarded",
    "x-forwarded-host",
    "x-host",
    "x-original-host",
    "x-original-url",
    "x-real-ip",
    "x-scheme",
    "x-script-name",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflected_unkeyed_headers_and_fat_gets_never_reach_the_next_client() {
    let redis = TestRedis::start();
    let (origin_listener, origin_addr) = listener().await;
    let origin = tokio::spawn(proxy::common::serve_tower(
        origin_listener,
        tower::service_fn(reflecting_origin),
        Duration::from_secs(10),
    ));
    let (server, http) = start_proxy(&redis, origin_addr).await;

    // (path, request headers, request body): one poisoning vector each
    type Vector<'a> = (String, &'a [(&'a str, &'a str)], Option<serde_json::Value>);
    let headers: Vec<[(&str, &str); 1]> = REFLECTED.iter().map(|name| [(*name, "evil")]).collect();
    let mut vectors: Vec<Vector<'_>> = headers
        .iter()
        .enumerate()
        .map(|(i, header)| (format!("/page/{i}"), &header[..], None))
        .collect();
    vectors.push(("/page/fat".to_owned(), &[], Some(serde_json::json!("evil"))));

    for (path, headers, body) in &vectors {
        let poisoned = http.send(Method::GET, path, headers, body.clone()).await;
        if headers
            .first()
            .is_some_and(|(name, _)| OWNED_BY_THE_PROXY.contains(name))
        {
            // dropped before the cache: the origin never sees it, the page is clean
            assert!(
                !text(&poisoned).contains("evil"),
                "{path}: {:?}",
                poisoned.json
            );
            continue;
        }
        assert!(
            text(&poisoned).contains("evil"),
            "{path}: the origin did not reflect the vector: {:?}",
            poisoned.json
        );
        assert!(!cache_status(&poisoned).contains("storing"), "{path}");
        // the next clean clients get a clean page, stored for everyone after them
        let clean = http.send(Method::GET, path, &[], None).await;
        assert!(!text(&clean).contains("evil"), "{path} was poisoned");
        let hit = get_until(&http, path, |reply| reply.headers["x-cache"] == "HIT").await;
        assert!(!text(&hit).contains("evil"), "{path} was poisoned");
    }
    server.abort();
    origin.abort();
}
