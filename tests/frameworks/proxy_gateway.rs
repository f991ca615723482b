//! What a reverse proxy owes both sides (issue 35, findings 3, 5, 6 and 8), through the caching
//! proxy example between a real client and an origin on loopback: timeouts on the origin, the
//! hop-by-hop fields on every path, one host for the key and the origin, the forwarded fields,
//! and upgrades and `CONNECT`.
//!
//! The timeouts are a second here; every bound a test asserts is a multiple of them
//! ([`within`]), far above what a loaded machine needs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_redis_http::store::{AnyStore, MemoryStore};

use super::{
    OriginLog, cache_status, get_until, origin_answer, proxy, start_origin, start_proxy_on,
    start_proxy_with, text,
};
use crate::{Http, Reply, listener};

/// The timeouts the proxy runs with here.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Five times `timeouts` of the configured length: the bound a test allows for what the
/// proxy must do within them.
fn within(timeouts: u32) -> Duration {
    TIMEOUT * timeouts * 5
}

fn short_timeouts() -> proxy::Options {
    proxy::Options {
        timeouts: proxy::Timeouts {
            connect: TIMEOUT,
            send: TIMEOUT,
            read: TIMEOUT,
            body_idle: TIMEOUT,
            client_body_idle: TIMEOUT,
        },
        ..proxy::Options::default()
    }
}

fn memory() -> AnyStore {
    MemoryStore::new().into()
}

fn is_hit(reply: &Reply) -> bool {
    reply.headers["x-cache"] == "HIT"
}

/// Sends GETs of `path` with `headers` until one is a hit, which it returns.
async fn first_hit(http: &Http, path: &str, headers: &[(&str, &str)]) -> Reply {
    for _ in 0..500 {
        let reply = http.send(Method::GET, path, headers, None).await;
        if is_hit(&reply) {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{path} with {headers:?} never became a hit");
}

/// Polls `done` every 20 ms until it holds or `bound` has passed; whether it held.
async fn eventually(bound: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

/// What the origin of [`start_switched_origin`] does with the next requests.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Mode {
    /// As [`origin_answer`] says.
    Answer,
    /// Reads the request and never answers.
    Hang,
    /// Answers `200` with `Content-Length: 100`, sends ten bytes, and stalls.
    StallBody,
    /// Answers `503`.
    Fail,
}

/// The switch of an origin: its mode, and how many of its requests hang right now (a
/// request's handler is dropped when the proxy closes its connection).
#[derive(Clone, Default)]
struct Switch {
    mode: Arc<AtomicU8>,
    hanging: Arc<AtomicUsize>,
}

impl Switch {
    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Hang,
            2 => Mode::StallBody,
            3 => Mode::Fail,
            _ => Mode::Answer,
        }
    }

    fn hanging(&self) -> usize {
        self.hanging.load(Ordering::SeqCst)
    }
}

/// Counts a hanging request for as long as its handler lives.
struct Hanging(Arc<AtomicUsize>);

impl Hanging {
    fn enter(switch: &Switch) -> Self {
        switch.hanging.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(&switch.hanging))
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A body that sends ten bytes and then nothing, ever.
struct Stalling {
    sent: bool,
}

impl http_body::Body for Stalling {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.sent {
            return Poll::Pending;
        }
        self.sent = true;
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            b"0123456789",
        )))))
    }
}

type SwitchedBody = http_body_util::Either<Full<Bytes>, Stalling>;

/// The origin of [`origin_answer`], logging every request, that does what its [`Switch`]
/// says.
async fn start_switched_origin() -> (
    tokio::task::JoinHandle<std::io::Result<()>>,
    SocketAddr,
    OriginLog,
    Switch,
) {
    let (log, switch) = (OriginLog::default(), Switch::default());
    let (origin_listener, origin_addr) = listener().await;
    let (origin_log, origin_switch) = (log.clone(), switch.clone());
    let origin = tokio::spawn(proxy::common::serve_tower(
        origin_listener,
        tower::service_fn(move |request: Request<Incoming>| {
            let (log, switch) = (origin_log.clone(), origin_switch.clone());
            async move {
                let (parts, body) = request.into_parts();
                let _ = body.collect().await;
                let request = Request::from_parts(parts, ());
                let answer = match switch.mode() {
                    Mode::Answer => origin_answer(&log, &request).map(SwitchedBody::Left),
                    mode => {
                        log.0.lock().unwrap().push((
                            request.method().clone(),
                            request.uri().path().to_owned(),
                            request.headers().clone(),
                        ));
                        match mode {
                            Mode::Hang => {
                                let _hanging = Hanging::enter(&switch);
                                std::future::pending::<()>().await;
                                unreachable!("a pending future never ends")
                            }
                            Mode::StallBody => Response::builder()
                                .header("cache-control", "max-age=60")
                                .header("content-length", "100")
                                .body(SwitchedBody::Right(Stalling { sent: false }))
                                .unwrap(),
                            _ => {
                                let mut answer = Response::builder()
                                    .status(StatusCode::SERVICE_UNAVAILABLE)
                                    .header("connection", "x-hop")
                                    .header("x-hop", "secret")
                                    .header("keep-alive", "timeout=5")
                                    .body(SwitchedBody::Left(Full::new(Bytes::from("down"))))
                                    .unwrap();
                                answer
                                    .headers_mut()
                                    .insert("proxy-authenticate", "Basic".parse().unwrap());
                                answer
                            }
                        }
                    }
                };
                Ok::<_, Infallible>(answer)
            }
        }),
        Duration::from_secs(10),
    ));
    (origin, origin_addr, log, switch)
}

/// An origin that accepts connections, reads what comes and never answers; it counts the
/// connections accepted and those the proxy has not closed yet.
async fn start_silent_origin() -> (
    tokio::task::JoinHandle<()>,
    SocketAddr,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
) {
    let (listener, addr) = listener().await;
    let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counted, still_open) = (Arc::clone(&accepted), Arc::clone(&open));
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            still_open.fetch_add(1, Ordering::SeqCst);
            let still_open = Arc::clone(&still_open);
            tokio::spawn(async move {
                let mut buffer = [0; 4096];
                while let Ok(1..) = socket.read(&mut buffer).await {}
                still_open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (task, addr, accepted, open)
}

/// Sends `bytes` to `addr` on a new connection and reads a response head (through the blank
/// line), within `bound`; the head and the connection. An empty head when the connection
/// closed first.
async fn raw_head(
    addr: SocketAddr,
    bytes: &[u8],
    bound: Duration,
) -> (String, tokio::net::TcpStream) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0; 1];
    let reading = async {
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
    };
    tokio::time::timeout(bound, reading)
        .await
        .expect("a response head, or the connection closed, in time");
    (String::from_utf8_lossy(&head).into_owned(), stream)
}

// Finding 3: the proxy never timed out on the origin.

/// A connected origin that never answers: three clients on three URLs each get `504` at the
/// read timeout, and the proxy closes every connection it opened to the origin. Three on one
/// URL (nothing stored): the first gets it at the timeout; the two that waited on it then try
/// the origin themselves, as after any unstorable answer, and get theirs at twice the
/// timeout, never later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_origin_is_answered_504_within_the_read_timeout_and_let_go() {
    let (origin, origin_addr, accepted, open) = start_silent_origin().await;
    let (server, http) = start_proxy_with(memory(), origin_addr, short_timeouts()).await;
    for same_url in [false, true] {
        let started = Instant::now();
        let mut clients = tokio::task::JoinSet::new();
        for n in 0..3 {
            let http = http.clone();
            let path = if same_url {
                "/hung/same".to_owned()
            } else {
                format!("/hung/{n}")
            };
            clients.spawn(async move {
                let reply =
                    tokio::time::timeout(within(2), http.send(Method::GET, &path, &[], None))
                        .await
                        .unwrap_or_else(|_| panic!("{path} unanswered after {:?}", within(2)));
                (reply, started.elapsed())
            });
        }
        for (reply, took) in clients.join_all().await {
            eprintln!("hung origin, same URL {same_url}: 504 after {took:?}");
            assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.json);
            assert_eq!(
                reply.json,
                serde_json::json!({"detail": "The origin did not answer within 1s."})
            );
            assert!(took >= TIMEOUT, "504 before the timeout: {took:?}");
            let bound = if same_url { within(2) } else { within(1) };
            assert!(took < bound, "{took:?}");
        }
    }
    assert!(accepted.load(Ordering::SeqCst) >= 4);
    assert!(
        eventually(within(1), || open.load(Ordering::SeqCst) == 0).await,
        "{} connections to the hung origin left open",
        open.load(Ordering::SeqCst)
    );
    server.abort();
    origin.abort();
}

/// An origin whose listen queue is full (it never accepts, so the kernel drops the proxy's
/// SYN): `504` within the connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_takes_no_connection_is_answered_504_within_the_connect_timeout() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(1).unwrap();
    let origin_addr = full.local_addr().unwrap();
    // fill the accept queue: once it is full, a connection attempt waits, unanswered
    let mut queued = Vec::new();
    loop {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(origin_addr),
        )
        .await
        {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(err)) => panic!("the listener refused instead of queueing: {err}"),
            Err(_) => break,
        }
        assert!(queued.len() < 64, "the accept queue never filled");
    }
    let (server, http) = start_proxy_with(memory(), origin_addr, short_timeouts()).await;
    let started = Instant::now();
    let reply = tokio::time::timeout(within(1), http.send(Method::GET, "/", &[], None))
        .await
        .expect("answered within the bound");
    eprintln!("full listen queue: 504 after {:?}", started.elapsed());
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.json);
    assert_eq!(
        reply.json,
        serde_json::json!({"detail": "The origin did not accept a connection within 1s."})
    );
    server.abort();
    drop((full, queued));
}

/// A response body that stalls mid-way fails within the body idle timeout: the client sees
/// it cut short (never a shorter body passed off as whole), and it is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_fails_within_the_idle_timeout_and_is_not_stored() {
    let (origin, origin_addr, log, switch) = start_switched_origin().await;
    let (server, http) = start_proxy_with(memory(), origin_addr, short_timeouts()).await;
    switch.set(Mode::StallBody);
    let request = Request::get(format!("http://{}/fresh", http.base))
        .body(Full::default())
        .unwrap();
    let started = Instant::now();
    let response = tokio::time::timeout(within(1), http.client.request(request))
        .await
        .expect("a head within the bound")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-length"], "100");
    let body = tokio::time::timeout(within(1), response.into_body().collect())
        .await
        .expect("the body ended within the bound");
    eprintln!("stalled body: ended after {:?}", started.elapsed());
    assert!(body.is_err(), "a cut body was passed off as whole");

    switch.set(Mode::Answer);
    let next = http.send(Method::GET, "/fresh", &[], None).await;
    assert!(!is_hit(&next), "the cut body was stored");
    assert_eq!(text(&next), "fresh 2", "the origin's second answer");
    assert_eq!(log.count(&Method::GET, "/fresh"), 2);
    server.abort();
    origin.abort();
}

/// A client whose request body stalls on its way to the origin is answered `408` within the
/// client body timeout (the origin, waiting for the rest, is not blamed); an asterisk-form
/// target (`OPTIONS *`) is answered too, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_answered_408_within_the_timeout() {
    let (origin, origin_addr, _) = start_origin().await;
    let (server, http) = start_proxy_with(memory(), origin_addr, short_timeouts()).await;
    let started = Instant::now();
    // the connection is kept open: the body is late, not cut
    let (head, _open) = raw_head(
        http.base,
        b"POST /fresh HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
        within(1),
    )
    .await;
    eprintln!("stalled upload: answered after {:?}", started.elapsed());
    assert!(head.starts_with("HTTP/1.1 408"), "{head:?}");
    let (head, _) = raw_head(
        http.base,
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        within(1),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 "), "{head:?}");
    server.abort();
    origin.abort();
}

/// An origin that accepts connections and never reads from them, holding them open.
async fn start_deaf_origin() -> (tokio::task::JoinHandle<()>, SocketAddr) {
    let (listener, addr) = listener().await;
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (task, addr)
}

/// An upload to an origin that stops reading it (its buffers full): `504` within the send
/// timeout, not a client and an upstream socket held for ever; the client's own pace is never
/// blamed on the origin (see the stalled upload above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_origin_never_reads_is_answered_504_within_the_send_timeout() {
    let (origin, origin_addr) = start_deaf_origin().await;
    let (server, http) = start_proxy_with(memory(), origin_addr, short_timeouts()).await;
    const LENGTH: usize = 64 << 20;
    let stream = tokio::net::TcpStream::connect(http.base).await.unwrap();
    let (mut reads, mut writes) = stream.into_split();
    let uploading = tokio::spawn(async move {
        let head = format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {LENGTH}\r\n\r\n");
        writes.write_all(head.as_bytes()).await?;
        let chunk = vec![b'u'; 64 << 10];
        for _ in 0..LENGTH / chunk.len() {
            writes.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let started = Instant::now();
    let mut head = Vec::new();
    let mut byte = [0; 1];
    let reading = async {
        while !head.ends_with(b"\r\n\r\n") {
            match reads.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
    };
    tokio::time::timeout(within(2), reading)
        .await
        .expect("an answer while the origin does not read");
    let head = String::from_utf8_lossy(&head);
    eprintln!(
        "deaf origin: {:?} after {:?}",
        head.lines().next(),
        started.elapsed()
    );
    assert!(head.starts_with("HTTP/1.1 504"), "{head:?}");
    assert!(started.elapsed() >= TIMEOUT, "{:?}", started.elapsed());
    let mut body = vec![0; 64];
    let read = tokio::time::timeout(within(1), reads.read(&mut body))
        .await
        .unwrap()
        .unwrap();
    let body = String::from_utf8_lossy(&body[..read]);
    assert!(body.contains("took none of the request"), "{body}");
    uploading.abort();
    server.abort();
    origin.abort();
}

/// RFC 5861 through the proxy: once `/sie` (`max-age=1, stale-if-error=60`) is stale and
/// the origin hangs, the read timeout's `504` is replaced by the stored copy, within the
/// timeout; within `stale-while-revalidate` (`/swr`) the stale copy is served at once, the
/// refresh gives up on the hung origin within the timeout too, and the copy is still served
/// at once after that.
async fn stale_copies_stand_in_for_a_hung_origin(store: AnyStore) {
    let (origin, origin_addr, log, switch) = start_switched_origin().await;
    let (server, http) = start_proxy_with(store, origin_addr, short_timeouts()).await;
    for path in ["/sie", "/swr"] {
        get_until(&http, path, is_hit).await;
    }
    let runs = log.count(&Method::GET, "/sie");
    switch.set(Mode::Hang);
    // hits while fresh, then the first revalidation meets the hung origin
    let stale = loop {
        let started = Instant::now();
        let reply = tokio::time::timeout(within(1), http.send(Method::GET, "/sie", &[], None))
            .await
            .expect("answered within the bound");
        if !is_hit(&reply) || log.count(&Method::GET, "/sie") > runs {
            eprintln!("stale-if-error: served after {:?}", started.elapsed());
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stale.status, StatusCode::OK, "{}", stale.json);
    assert_eq!(text(&stale), format!("sie {runs}"));
    assert!(
        cache_status(&stale).contains("fwd-status=504"),
        "{}",
        cache_status(&stale)
    );

    // served from the cache while the refresh meets the hung origin: a reply that had waited
    // for it would be its 504 (`/swr` has no stale-if-error)
    let refreshes = log.count(&Method::GET, "/swr");
    let served = loop {
        let started = Instant::now();
        let reply = http.send(Method::GET, "/swr", &[], None).await;
        if log.count(&Method::GET, "/swr") > refreshes {
            eprintln!(
                "stale-while-revalidate: served after {:?}",
                started.elapsed()
            );
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(served.status, StatusCode::OK, "{}", served.json);
    assert!(is_hit(&served), "{}", cache_status(&served));
    assert_eq!(text(&served), format!("swr {refreshes}"));
    assert!(
        eventually(within(1), || switch.hanging() == 0).await,
        "the refresh still holds a connection to the hung origin"
    );
    // the refresh timed out: the next request in the window is still served the stale copy
    // at once (and refreshes again), not sent to wait on the hung origin for a 504
    let again = http.send(Method::GET, "/swr", &[], None).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.json);
    assert!(is_hit(&again), "{}", cache_status(&again));
    server.abort();
    origin.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_copies_stand_in_for_a_hung_origin_on_the_memory_store() {
    stale_copies_stand_in_for_a_hung_origin(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_copies_stand_in_for_a_hung_origin_on_redis() {
    let redis = crate::support::TestRedis::start();
    let store = tower_redis_http::store::RedisStore::builder(redis.url())
        .build()
        .await
        .unwrap();
    stale_copies_stand_in_for_a_hung_origin(store.into()).await;
}

/// Three clients at once on a stale `/sie` while the origin hangs: one revalidates, the
/// others wait for it (the flight deadline is past the read timeout), and when its call
/// times out all three get the stale copy, none a `504`. One call reaches the origin: the
/// followers do not lead new flights one after another, each waiting out the timeout again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_clients_get_the_stale_copy_too() {
    let (origin, origin_addr, log, switch) = start_switched_origin().await;
    let (server, http) = start_proxy_with(memory(), origin_addr, short_timeouts()).await;
    get_until(&http, "/sie", is_hit).await;
    let runs = log.count(&Method::GET, "/sie");
    // stale after its second of freshness: the first request past it goes to the origin
    switch.set(Mode::Fail);
    loop {
        let reply = http.send(Method::GET, "/sie", &[], None).await;
        if !is_hit(&reply) {
            assert_eq!(text(&reply), format!("sie {runs}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    switch.set(Mode::Hang);
    let asked = log.count(&Method::GET, "/sie");
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (http, barrier) = (http.clone(), Arc::clone(&barrier));
        clients.spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let reply = tokio::time::timeout(within(2), http.send(Method::GET, "/sie", &[], None))
                .await
                .expect("answered within the bound");
            (reply, started.elapsed())
        });
    }
    for (reply, took) in clients.join_all().await {
        eprintln!("a waiting client: {} after {took:?}", reply.status);
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
        assert_eq!(text(&reply), format!("sie {runs}"));
    }
    assert_eq!(
        log.count(&Method::GET, "/sie"),
        asked + 1,
        "one revalidation for the three"
    );
    server.abort();
    origin.abort();
}

// Finding 5: hop-by-hop fields, both ways, on every path.

/// The fields of one connection a client sends on every request here.
const CLIENT_HOP: [(&str, &str); 6] = [
    ("connection", "x-secret"),
    ("x-secret", "s3"),
    ("proxy-authorization", "Basic eDp5"),
    ("te", "trailers"),
    ("keep-alive", "300"),
    ("proxy-connection", "keep-alive"),
];

/// The fields a client must never get from the proxy (the origin sends the first four).
const ORIGIN_HOP: [&str; 8] = [
    "x-hop",
    "keep-alive",
    "proxy-authenticate",
    "connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// The field names of `reply` that do not depend on how it was served.
fn stable_names(reply: &Reply) -> Vec<String> {
    let mut names: Vec<String> = reply
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| {
            ![
                "age",
                "cache-status",
                "x-cache",
                "date",
                "content-length",
                "transfer-encoding",
            ]
            .contains(&name.as_str())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// RFC 9110 §7.6.1 on every path the proxy answers by: a miss, a hit, a `HEAD`, a
/// revalidation's `304`, a stale copy in place of an error. The client never gets the
/// origin's hop-by-hop fields, the origin never gets the client's, and one URL answers the
/// same fields however it was served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_stay_on_their_hop_on_every_path() {
    let (origin, origin_addr, log, switch) = start_switched_origin().await;
    let (server, http) = start_proxy_on(memory(), origin_addr).await;
    let send = |method: Method, path: &'static str| {
        let http = http.clone();
        async move { http.send(method, path, &CLIENT_HOP, None).await }
    };
    let mut replies = Vec::new();
    // /hop: fresh for a minute
    let miss = send(Method::GET, "/hop").await;
    assert!(cache_status(&miss).contains("fwd=uri-miss"));
    replies.push(("/hop miss", miss));
    let mut hit = send(Method::GET, "/hop").await;
    while !is_hit(&hit) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        hit = send(Method::GET, "/hop").await;
    }
    replies.push(("/hop hit", hit));
    let head = send(Method::HEAD, "/hop").await;
    assert!(is_hit(&head));
    replies.push(("/hop HEAD hit", head));
    // /hop/validated: stale at once, so every use revalidates; then a stale copy on a 503
    let miss = send(Method::GET, "/hop/validated").await;
    replies.push(("/hop/validated miss", miss));
    let mut revalidated = send(Method::GET, "/hop/validated").await;
    while !cache_status(&revalidated).contains("fwd-status=304") {
        tokio::time::sleep(Duration::from_millis(10)).await;
        revalidated = send(Method::GET, "/hop/validated").await;
    }
    replies.push(("/hop/validated 304", revalidated));
    let head = send(Method::HEAD, "/hop/validated").await;
    replies.push(("/hop/validated HEAD", head));
    switch.set(Mode::Fail);
    let stale = send(Method::GET, "/hop/validated").await;
    assert!(
        cache_status(&stale).contains("fwd-status=503"),
        "{}",
        cache_status(&stale)
    );
    replies.push(("/hop/validated stale-if-error", stale));

    for (case, reply) in &replies {
        for name in ORIGIN_HOP {
            assert!(
                !reply.headers.contains_key(name),
                "{case}: {name} reached the client: {:?}",
                reply.headers
            );
        }
    }
    for path in ["/hop", "/hop/validated"] {
        let mut sets = replies
            .iter()
            .filter(|(case, reply)| {
                case.split(' ').next() == Some(path) && reply.status == StatusCode::OK
            })
            .map(|(case, reply)| (case, stable_names(reply)));
        let (first_case, first) = sets.next().unwrap();
        for (case, names) in sets {
            assert_eq!(names, first, "{case} and {first_case} differ");
        }
    }
    let seen = log.0.lock().unwrap().clone();
    assert!(
        seen.len() >= 5,
        "{} requests reached the origin",
        seen.len()
    );
    for (method, path, headers) in &seen {
        for (name, _) in CLIENT_HOP {
            assert!(
                !headers.contains_key(name),
                "{method} {path}: {name} reached the origin"
            );
        }
    }
    // and `Via` names this proxy on every path alike
    for (case, reply) in &replies {
        let via = reply.headers.get("via").map(|via| via.to_str().unwrap());
        assert_eq!(via, Some("1.1 tower-redis-http"), "{case}");
    }
    server.abort();
    origin.abort();
}

/// A field the client's `Connection` names belongs to the client's hop, so it is removed
/// before the cache: were it keyed and not forwarded, the origin's answer for a request
/// without it (here its English page) would be stored as the answer for one with it, and
/// served to the next French reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_the_client_s_connection_names_is_neither_keyed_nor_forwarded() {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(memory(), origin_addr).await;
    let attack = [("accept-language", "fr"), ("connection", "accept-language")];
    let attacked = http.send(Method::GET, "/vary-echo", &attack, None).await;
    assert_eq!(text(&attacked), "lang=none");
    // the next French reader, once any write of the attack's answer has landed
    let french = [("accept-language", "fr")];
    get_until(&http, "/vary-echo", is_hit).await;
    let reader = http.send(Method::GET, "/vary-echo", &french, None).await;
    assert_eq!(text(&reader), "lang=fr", "{}", cache_status(&reader));
    assert!(log.count(&Method::GET, "/vary-echo") >= 2);
    server.abort();
    origin.abort();
}

// Finding 6: the key and the origin see one host; the forwarded fields.

/// With one public host (the default: the origin's authority), every `Host` a client sends
/// is that host: fifty of them make no second fetch, and the origin gets the public host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_values_neither_bust_the_cache_nor_reach_the_origin() {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(memory(), origin_addr).await;
    get_until(&http, "/fresh", is_hit).await;
    let fetched = log.count(&Method::GET, "/fresh");
    for n in 0..50 {
        let host = format!("h{n}.example");
        let reply = http
            .send(Method::GET, "/fresh", &[("host", &host)], None)
            .await;
        assert!(is_hit(&reply), "{host}: {}", cache_status(&reply));
    }
    let absolute = raw_head(
        http.base,
        b"GET http://evil.example/fresh HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        within(1),
    )
    .await
    .0;
    assert!(absolute.contains("x-cache: HIT"), "{absolute}");
    assert_eq!(log.count(&Method::GET, "/fresh"), fetched);
    assert_eq!(
        log.last_headers("/fresh")["host"],
        origin_addr.to_string().as_str()
    );
    server.abort();
    origin.abort();
}

/// RFC 9111 §4.4 behind the proxy: the origin builds the `Location` of what a `POST`
/// created from the `Host` it got, which is the host the cache keys, so the page it names
/// is invalidated; with one public host and with `PROXY_HOSTS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_the_origin_builds_invalidates_the_page_behind_the_proxy() {
    let (origin, origin_addr, log) = start_origin().await;
    for (hosts, host) in [
        (vec![], origin_addr.to_string()),
        (vec!["shop.example".to_owned()], "shop.example".to_owned()),
    ] {
        let options = proxy::Options {
            hosts,
            ..proxy::Options::default()
        };
        let (server, http) = start_proxy_with(memory(), origin_addr, options).await;
        let sent_host = [("host", "shop.example")];
        let hit = first_hit(&http, "/items", &sent_host).await;
        let runs = log.count(&Method::GET, "/items");
        assert_eq!(text(&hit), format!("items {runs}"));
        let created = http
            .send(Method::POST, "/items/new", &sent_host, None)
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
        assert_eq!(
            created.headers["location"],
            format!("http://{host}/items").as_str()
        );
        let after = http.send(Method::GET, "/items", &sent_host, None).await;
        assert!(
            !is_hit(&after),
            "{host}: the page the Location names is still served: {}",
            cache_status(&after)
        );
        assert_eq!(text(&after), format!("items {}", runs + 1));
        server.abort();
    }
    origin.abort();
}

/// `PROXY_HOSTS`: a listed host in any spelling is served, keyed and forwarded as listed;
/// another host (in `Host` or in an absolute-form target) is `421`, two `Host` fields `400`,
/// and neither reaches the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_listed_hosts_are_served() {
    let (origin, origin_addr, log) = start_origin().await;
    let options = proxy::Options {
        hosts: vec!["shop.example".to_owned(), "www.shop.example".to_owned()],
        ..proxy::Options::default()
    };
    let (server, http) = start_proxy_with(memory(), origin_addr, options).await;
    let refused = http
        .send(Method::GET, "/fresh", &[("host", "evil.example")], None)
        .await;
    assert_eq!(refused.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(
        refused.json,
        serde_json::json!({"detail": "This proxy does not serve that host."})
    );
    let absolute = raw_head(
        http.base,
        b"GET http://evil.example/fresh HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
        within(1),
    )
    .await
    .0;
    assert!(absolute.starts_with("HTTP/1.1 421"), "{absolute}");
    let two = raw_head(
        http.base,
        b"GET /fresh HTTP/1.1\r\nHost: shop.example\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        within(1),
    )
    .await
    .0;
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
    assert_eq!(log.count(&Method::GET, "/fresh"), 0);

    let first = http
        .send(Method::GET, "/fresh", &[("host", "SHOP.example:80")], None)
        .await;
    assert_eq!(text(&first), "fresh 1");
    let sent = log.last_headers("/fresh");
    assert_eq!(sent["host"], "shop.example");
    assert_eq!(sent["x-forwarded-host"], "shop.example");
    let hit = first_hit(&http, "/fresh", &[("host", "shop.example")]).await;
    assert_eq!(text(&hit), "fresh 1", "one entry for both spellings");
    let other = http
        .send(Method::GET, "/fresh", &[("host", "www.shop.example")], None)
        .await;
    assert!(!is_hit(&other), "another listed host is another page");
    assert_eq!(log.last_headers("/fresh")["host"], "www.shop.example");
    server.abort();
    origin.abort();
}

/// The origin learns the client's address, the scheme and the host from this proxy alone:
/// `X-Forwarded-For` gets the peer appended (or, with `FORWARDED_FOR=replace`, is the peer),
/// `X-Forwarded-Proto`, `X-Forwarded-Host` and `Via` are the proxy's, a client's own
/// `Forwarded` and `X-Forwarded-Host` / `-Proto` (any spelling) never arrive. Pages are still
/// stored, though the cache refuses requests that carry forwarding fields from a peer it does
/// not trust: the proxy adds its own after the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_is_told_who_asked_by_this_proxy_alone() {
    let (origin, origin_addr, log) = start_origin().await;
    let claims = [
        ("x-forwarded-for", "198.51.100.7"),
        ("x_forwarded_for", "198.51.100.8"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=198.51.100.9;host=evil.example"),
        ("via", "1.0 somewhere"),
    ];
    for (mode, chain, path) in [
        (
            proxy::ForwardedFor::Append,
            "198.51.100.7, 127.0.0.1",
            "/fresh",
        ),
        (proxy::ForwardedFor::Replace, "127.0.0.1", "/items"),
    ] {
        let options = proxy::Options {
            forwarded_for: mode,
            ..proxy::Options::default()
        };
        let (server, http) = start_proxy_with(memory(), origin_addr, options).await;
        let first = http.send(Method::GET, path, &claims, None).await;
        assert!(
            cache_status(&first).contains("detail=storing"),
            "{mode:?}: {}",
            cache_status(&first)
        );
        assert_eq!(first.headers["via"], "1.1 tower-redis-http");
        let sent = log.last_headers(path);
        assert_eq!(sent["x-forwarded-for"], chain, "{mode:?}");
        assert_eq!(sent["x-forwarded-proto"], "http");
        assert_eq!(sent["x-forwarded-host"], origin_addr.to_string().as_str());
        assert_eq!(sent["via"], "1.0 somewhere, 1.1 tower-redis-http");
        for name in ["forwarded", "x_forwarded_for"] {
            assert!(
                !sent.contains_key(name),
                "{mode:?}: {name} reached the origin"
            );
        }
        let hit = get_until(&http, path, is_hit).await;
        assert_eq!(text(&hit), text(&first));
        server.abort();
    }

    // behind a trusted proxy (127.0.0.2): its host and scheme are the request's, its list
    // is appended to; the same fields from another peer (127.0.0.3) are not believed
    let options = proxy::Options {
        trusted_proxies: vec!["127.0.0.2".to_owned()],
        hosts: vec!["shop.example".to_owned()],
        forwarded_for: proxy::ForwardedFor::Replace,
        ..proxy::Options::default()
    };
    let (server, http) = start_proxy_with(memory(), origin_addr, options).await;
    let front = Http::from_address(http.base, "127.0.0.2");
    let forwarded = [
        ("host", "proxy.internal"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-host", "shop.example"),
        ("x-forwarded-proto", "https"),
    ];
    let first = front.send(Method::GET, "/items", &forwarded, None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.json);
    assert!(cache_status(&first).contains("detail=storing"));
    let sent = log.last_headers("/items");
    assert_eq!(sent["host"], "shop.example");
    assert_eq!(sent["x-forwarded-host"], "shop.example");
    assert_eq!(sent["x-forwarded-proto"], "https");
    assert_eq!(sent["x-forwarded-for"], "203.0.113.7, 127.0.0.2");
    let hit = first_hit(&front, "/items", &forwarded).await;
    assert_eq!(text(&hit), text(&first));
    let stranger = Http::from_address(http.base, "127.0.0.3");
    let refused = stranger.send(Method::GET, "/items", &forwarded, None).await;
    assert_eq!(refused.status, StatusCode::MISDIRECTED_REQUEST);
    server.abort();
    origin.abort();
}

// Finding 8: upgrades and CONNECT.

/// An origin that switches every WebSocket handshake to a connection that says `hello` and
/// then echoes what it reads, prefixed with `echo:`; it logs every request.
async fn start_websocket_origin() -> (
    tokio::task::JoinHandle<std::io::Result<()>>,
    SocketAddr,
    OriginLog,
) {
    let log = OriginLog::default();
    let (origin_listener, origin_addr) = listener().await;
    let origin_log = log.clone();
    let origin = tokio::spawn(proxy::common::serve_tower(
        origin_listener,
        tower::service_fn(move |mut request: Request<Incoming>| {
            let log = origin_log.clone();
            async move {
                log.0.lock().unwrap().push((
                    request.method().clone(),
                    request.uri().path().to_owned(),
                    request.headers().clone(),
                ));
                let upgrading = hyper::upgrade::on(&mut request);
                tokio::spawn(async move {
                    let Ok(upgraded) = upgrading.await else {
                        return;
                    };
                    let mut io = hyper_util::rt::TokioIo::new(upgraded);
                    io.write_all(b"hello").await.unwrap();
                    let mut buffer = [0; 64];
                    while let Ok(n @ 1..) = io.read(&mut buffer).await {
                        let mut echo = b"echo:".to_vec();
                        echo.extend_from_slice(&buffer[..n]);
                        if io.write_all(&echo).await.is_err() {
                            return;
                        }
                    }
                });
                let response = Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                Ok::<_, Infallible>(response)
            }
        }),
        Duration::from_secs(10),
    ));
    (origin, origin_addr, log)
}

/// Reads exactly `expected.len()` bytes from `stream` within `bound`.
async fn read_exactly(stream: &mut tokio::net::TcpStream, expected: &[u8], bound: Duration) {
    let mut got = vec![0; expected.len()];
    tokio::time::timeout(bound, stream.read_exact(&mut got))
        .await
        .expect("bytes through the tunnel in time")
        .expect("the tunnel stayed open");
    assert_eq!(got, expected, "{}", String::from_utf8_lossy(&got));
}

const HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: shop.example\r\n\
    Connection: Upgrade, X-Secret\r\nX-Secret: s3\r\nUpgrade: websocket\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A WebSocket handshake goes past the cache to the origin, which gets the upgrade and not
/// the client's other hop-by-hop fields; after the `101` the connection carries bytes both
/// ways, each time anew (never from the cache); once both sides are silent for the body idle
/// timeout, the tunnel is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_is_tunnelled_both_ways_past_the_cache() {
    let (origin, origin_addr, log) = start_websocket_origin().await;
    let (server, http) = start_proxy_with(memory(), origin_addr, short_timeouts()).await;
    for run in 1..=2 {
        let (head, mut stream) = raw_head(http.base, HANDSHAKE, within(1)).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("upgrade: websocket"), "{head}");
        assert!(lower.contains("connection: upgrade"), "{head}");
        assert!(!lower.contains("cache-status"), "{head}");
        read_exactly(&mut stream, b"hello", within(1)).await;
        stream.write_all(b"ping").await.unwrap();
        read_exactly(&mut stream, b"echo:ping", within(1)).await;
        assert_eq!(log.count(&Method::GET, "/ws"), run);
        let sent = log.last_headers("/ws");
        assert_eq!(sent["upgrade"], "websocket");
        assert_eq!(sent["connection"], "upgrade");
        assert_eq!(sent["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert!(!sent.contains_key("x-secret"));
        if run == 2 {
            // silent both ways: closed within the idle timeout
            let mut rest = Vec::new();
            let closed = tokio::time::timeout(within(1), stream.read_to_end(&mut rest)).await;
            assert!(closed.is_ok(), "an idle tunnel stayed open");
        }
    }
    server.abort();
    origin.abort();
}

/// `CONNECT` is refused with `501` and a JSON detail, and never reaches the origin; an
/// `Upgrade` to anything but WebSocket (`h2c`) is ignored and the request served as a plain
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_and_other_upgrades_ignored() {
    let (origin, origin_addr, log) = start_origin().await;
    let (server, http) = start_proxy_on(memory(), origin_addr).await;
    let (head, mut stream) = raw_head(
        http.base,
        b"CONNECT internal.example:22 HTTP/1.1\r\nHost: internal.example:22\r\n\r\n",
        within(1),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 501"), "{head:?}");
    let mut body = vec![0; 77];
    let read = tokio::time::timeout(within(1), stream.read(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&body[..read]).contains("CONNECT is not supported"),
        "{}",
        String::from_utf8_lossy(&body[..read])
    );
    assert!(
        log.0.lock().unwrap().is_empty(),
        "CONNECT reached the origin"
    );

    let h2c = [
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAAQAAP__"),
    ];
    let reply = http.send(Method::GET, "/fresh", &h2c, None).await;
    assert_eq!((reply.status, text(&reply)), (StatusCode::OK, "fresh 1"));
    let sent = log.last_headers("/fresh");
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(!sent.contains_key(name), "{name} reached the origin");
    }
    server.abort();
    origin.abort();
}

/// At most `MAX_TUNNELS` WebSocket tunnels are open at once: one more handshake is answered
/// `503` with `Retry-After`, and a closed tunnel makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_are_capped() {
    let (origin, origin_addr, log) = start_websocket_origin().await;
    let options = proxy::Options {
        max_tunnels: 1,
        ..short_timeouts()
    };
    let (server, http) = start_proxy_with(memory(), origin_addr, options).await;
    let (head, mut first) = raw_head(http.base, HANDSHAKE, within(1)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    read_exactly(&mut first, b"hello", within(1)).await;
    let (head, _) = raw_head(http.base, HANDSHAKE, within(1)).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert_eq!(
        log.count(&Method::GET, "/ws"),
        1,
        "the refused one reached the origin"
    );
    drop(first);
    let deadline = Instant::now() + within(1);
    loop {
        let (head, _) = raw_head(http.base, HANDSHAKE, within(1)).await;
        if head.starts_with("HTTP/1.1 101") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after the tunnel closed: {head}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();
    origin.abort();
}

/// An origin that answers every request `101 Switching Protocols` to `h2c`, asked or not.
async fn start_switching_origin() -> (tokio::task::JoinHandle<()>, SocketAddr) {
    let (listener, addr) = listener().await;
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match socket.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                          Upgrade: h2c\r\n\r\n",
                    )
                    .await;
                let mut rest = [0; 1024];
                while let Ok(1..) = socket.read(&mut rest).await {}
            });
        }
    });
    (task, addr)
}

/// A `101` the request never asked for (RFC 9110 §15.2.2) is the origin's error: `502`, and
/// the client's connection goes on serving its next request instead of being switched away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_switch_of_protocols_is_a_bad_gateway() {
    let (origin, origin_addr) = start_switching_origin().await;
    let (server, http) = start_proxy_with(memory(), origin_addr, short_timeouts()).await;
    let (head, mut stream) = raw_head(
        http.base,
        b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n",
        within(1),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|n| n.trim().parse().unwrap())
        })
        .expect("a length");
    let mut body = vec![0; length];
    tokio::time::timeout(within(1), stream.read_exact(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&body).contains("switched protocols unasked"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // the same connection: still HTTP, still answered
    stream
        .write_all(b"GET /again HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(within(1), stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(
        rest.starts_with(b"HTTP/1.1 502"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    server.abort();
    origin.abort();
}

/// The built `caching_proxy` example (`cargo test` builds the examples beside the tests).
fn example_binary() -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap();
    let binary = deps
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("examples/caching_proxy");
    let built = std::fs::metadata(&binary)
        .and_then(|meta| meta.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: `cargo test` builds the examples, `cargo build --examples` too",
                binary.display()
            )
        });
    // a targeted `cargo test --test frameworks` does not build the examples: a binary older
    // than its sources would test yesterday's code
    let sources = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let newest_source = ["caching_proxy", "common"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(sources.join(dir)).unwrap())
        .filter_map(|entry| entry.ok()?.metadata().ok()?.modified().ok())
        .max()
        .unwrap();
    assert!(
        built >= newest_source,
        "{} is older than its sources: run `cargo build --all-features --examples` (or the \
         whole `cargo test`) first",
        binary.display()
    );
    binary
}

/// Out of file descriptors, `accept` fails (`EMFILE`): the server logs it, waits and goes on
/// accepting once connections close, rather than end (the adversary's review of issue 35: the
/// accept loop returned on the first error, and the process exited). The example runs as its
/// own process under `ulimit -n 64`, holding more connections than it has descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_out_of_descriptors_goes_on_accepting_once_they_are_free() {
    let (origin, origin_addr, _) = start_origin().await;
    let port = crate::support::unused_port();
    let mut proxy = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$1\"")
        .arg(example_binary())
        .arg(format!("http://{origin_addr}"))
        .env("ADDR", format!("127.0.0.1:{port}"))
        .env_remove("REDIS_URL")
        .env_remove("REDIS_CLUSTER")
        .env_remove("REDIS_SENTINELS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        eventually(within(5), || std::net::TcpStream::connect(addr).is_ok()).await,
        "the proxy never listened"
    );
    // more connections than the process has descriptors: the rest wait in the backlog
    let mut held = Vec::new();
    for _ in 0..100 {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        proxy.try_wait().unwrap().is_none(),
        "the proxy exited when it ran out of descriptors"
    );
    drop(held);
    let answered = eventually(within(5), || {
        std::net::TcpStream::connect(addr).is_ok_and(|mut stream| {
            use std::io::{Read, Write};
            let _ = stream.set_read_timeout(Some(TIMEOUT));
            stream
                .write_all(b"GET /fresh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .is_ok()
                && {
                    let mut reply = Vec::new();
                    let _ = stream.read_to_end(&mut reply);
                    reply.starts_with(b"HTTP/1.1 200")
                }
        })
    })
    .await;
    let _ = proxy.kill();
    let _ = proxy.wait();
    origin.abort();
    assert!(answered, "no answer once the descriptors were free again");
}

/// The environment's names for the proxy's options, and their bounds.
#[test]
fn the_proxy_reads_its_options_from_the_environment() {
    let options = |vars: &[(&str, &str)]| {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        proxy::Options::from_vars(move |name| {
            vars.iter()
                .find(|(n, _)| n == name)
                .map(|(_, value)| value.clone())
        })
    };
    let defaults = options(&[]).unwrap();
    assert_eq!(defaults.timeouts.connect, Duration::from_secs(60));
    assert_eq!(defaults.timeouts.read, Duration::from_secs(60));
    assert_eq!(defaults.timeouts.body_idle, Duration::from_secs(60));
    assert_eq!(defaults.timeouts.send, Duration::from_secs(60));
    assert_eq!(defaults.max_tunnels, 1024);
    assert_eq!(defaults.forwarded_for, proxy::ForwardedFor::Append);
    let set = options(&[
        ("ORIGIN_CONNECT_TIMEOUT_SECS", "5"),
        ("ORIGIN_READ_TIMEOUT_SECS", " 30 "),
        ("ORIGIN_BODY_IDLE_TIMEOUT_SECS", "86400"),
        ("ORIGIN_SEND_TIMEOUT_SECS", "7"),
        ("MAX_TUNNELS", "10"),
        ("PROXY_HOSTS", "shop.example, api.example:8080"),
        ("FORWARDED_FOR", "Replace"),
    ])
    .unwrap();
    assert_eq!(set.timeouts.connect, Duration::from_secs(5));
    assert_eq!(set.timeouts.read, Duration::from_secs(30));
    assert_eq!(set.timeouts.body_idle, Duration::from_secs(86400));
    assert_eq!(set.timeouts.send, Duration::from_secs(7));
    assert_eq!(set.max_tunnels, 10);
    assert_eq!(set.hosts, ["shop.example", "api.example:8080"]);
    assert_eq!(set.forwarded_for, proxy::ForwardedFor::Replace);
    for bad in [
        ("ORIGIN_READ_TIMEOUT_SECS", "0"),
        ("ORIGIN_READ_TIMEOUT_SECS", "86401"),
        ("ORIGIN_CONNECT_TIMEOUT_SECS", "-1"),
        ("ORIGIN_BODY_IDLE_TIMEOUT_SECS", "1.5"),
        ("ORIGIN_BODY_IDLE_TIMEOUT_SECS", "18446744073709551616"),
        ("FORWARDED_FOR", "both"),
        ("ORIGIN_SEND_TIMEOUT_SECS", "0"),
        ("MAX_TUNNELS", "0"),
        ("MAX_TUNNELS", "many"),
    ] {
        let err = options(&[bad]).unwrap_err();
        assert!(err.contains(bad.0), "{bad:?}: {err}");
    }
}
