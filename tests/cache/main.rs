//! The cache layer against a real Redis: every storing rule, keys and Vary, hits, 304s,
//! poisoning, single flight, corrupt entries and store failures.

#[path = "../support/mod.rs"]
mod support;

mod http_mode;
mod invalidation;
mod rules;
mod slow_origin;
mod stampede;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};
use tower_redis_http::cache::{ResponseBody, ResponseCacheBuilder, ResponseCacheLayer};

/// A response body of chunks, with an exact length or, like a stream, without one.
#[derive(Debug)]
pub struct TestBody {
    chunks: VecDeque<Bytes>,
    exact: bool,
    /// For a body that trickles: the time between two chunks, and the wait for the next.
    gap: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
}

impl TestBody {
    pub fn full(text: impl Into<Bytes>) -> Self {
        Self {
            chunks: VecDeque::from([text.into()]),
            exact: true,
            gap: None,
        }
    }

    pub fn streaming(chunks: Vec<Bytes>) -> Self {
        Self {
            chunks: chunks.into(),
            exact: false,
            gap: None,
        }
    }

    /// A stream of `chunks`, each `gap` after the one before (the first too), as a slow
    /// origin sends a big page.
    pub fn trickling(chunks: Vec<Bytes>, gap: Duration) -> Self {
        Self {
            gap: Some((gap, Box::pin(tokio::time::sleep(gap)))),
            ..Self::streaming(chunks)
        }
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.chunks.is_empty()
            && let Some((gap, sleep)) = &mut self.gap
        {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let next = tokio::time::Instant::now() + *gap;
            sleep.as_mut().reset(next);
        }
        Poll::Ready(self.chunks.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
        } else {
            SizeHint::default()
        }
    }
}

pub type ReqBody = http_body_util::Empty<Bytes>;
pub type App = BoxCloneService<Request<ReqBody>, Response<ResponseBody<TestBody>>, Infallible>;

/// A cached app whose handler answers with `respond(request, run number)` and counts its runs.
pub fn app<F>(builder: ResponseCacheBuilder, respond: F) -> (App, Arc<AtomicUsize>)
where
    F: Fn(&Request<ReqBody>, usize) -> Response<TestBody> + Clone + Send + Sync + 'static,
{
    app_with_layer(builder.build().unwrap(), respond)
}

/// [`app`] around a layer already built (to keep a handle such as its invalidator).
pub fn app_with_layer<F>(layer: ResponseCacheLayer, respond: F) -> (App, Arc<AtomicUsize>)
where
    F: Fn(&Request<ReqBody>, usize) -> Response<TestBody> + Clone + Send + Sync + 'static,
{
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let service =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(move |request: Request<ReqBody>| {
                let run = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let response = respond(&request, run);
                async move { Ok::<_, Infallible>(response) }
            });
    (BoxCloneService::new(service), runs)
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .map_or("", |v| v.to_str().unwrap())
    }

    pub fn is_hit(&self) -> bool {
        self.cache_status().contains("; hit")
    }
}

/// Sends `request` and collects the reply; the app is cloned first so the future is `Send`.
pub fn send(
    app: &App,
    request: Request<ReqBody>,
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

pub fn get(uri: &str) -> http::request::Builder {
    Request::get(uri).header("host", "shop.example")
}

pub fn req(builder: http::request::Builder) -> Request<ReqBody> {
    builder.body(ReqBody::new()).unwrap()
}

/// Sends `request` until it is a hit (the store is written after the miss's body has gone
/// by, in a background task), returning the hit.
pub async fn until_hit(app: &App, request: impl Fn() -> Request<ReqBody>) -> Reply {
    for _ in 0..500 {
        let reply = send(app, request()).await;
        if reply.is_hit() {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never became a hit");
}

/// Waits until the background store of a miss has landed in Redis: `count` entries under the
/// cache prefix (Vary lists, indexes, locks and the generation excluded).
pub async fn stored_entries(redis: &dyn support::RawRedis, count: usize) -> Vec<String> {
    for _ in 0..500 {
        let keys: Vec<String> = redis
            .command(&["KEYS", "*cache:*"])
            .lines()
            .filter(|k| {
                !(k.is_empty()
                    || k.ends_with(":vary")
                    || k.ends_with(":index")
                    || k.ends_with(":lock")
                    || k.ends_with(":hfm")
                    || k.ends_with("generation"))
            })
            .map(str::to_owned)
            .collect();
        if keys.len() >= count {
            return keys;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("entries were not stored");
}

/// Waits until the background writes of `count` entries have landed, and returns the
/// entries' keys where the backend can list them (Redis; the memory store writes within the
/// task the layer spawns, which has run once the runtime had its turn, and lists nothing).
pub async fn stored(backend: &support::Backend, count: usize) -> Vec<String> {
    match backend.server() {
        Some(redis) => stored_entries(redis, count).await,
        None => {
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            Vec::new()
        }
    }
}

/// The store key of the entry for `path` on `shop.example` when the response has no `Vary`:
/// the layout the cache module documents.
pub fn entry_key(path: &str) -> String {
    format!("cache:{{http://shop.example{path}}}:-")
}

/// A store on `redis` whose commands may take long: on a loaded test machine a slow reply
/// must not turn a hit into a fail-open miss.
pub async fn redis_store(redis: &support::TestRedis) -> tower_redis_http::store::RedisStore {
    tower_redis_http::store::RedisStore::builder(redis.url())
        .command_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap()
}

pub fn ok(body: &str) -> Response<TestBody> {
    Response::new(TestBody::full(body.to_owned()))
}
