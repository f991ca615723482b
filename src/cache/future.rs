//! The response future: a request's flow, then the inner service's future, or an unsafe
//! request's answer held until what it invalidates is gone.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::config::Config;
use super::flow::{Flow, Flowed};
use super::origin::Pending;
use super::status::{CACHE_STATUS, X_CACHE};
use super::{ResponseBody, invalidate};

/// What an unsafe request's success invalidates (RFC 9111 §4.4).
pub(crate) struct Invalidation {
    config: Arc<Config>,
    target: http::Uri,
    request: HeaderMap,
    /// Whether the request came from a trusted proxy, whose forwarding headers are keyed.
    forwarded: bool,
}

pin_project! {
    /// The response future of [`ResponseCache`](super::ResponseCache).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{Service, ServiceBuilder, ServiceExt};
    /// use tower_redis_http::cache::{ResponseCacheLayer, ResponseFuture};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut service = ServiceBuilder::new()
    ///     .layer(ResponseCacheLayer::cache_page(MemoryStore::new(), Duration::from_secs(30)).build()?)
    ///     .service_fn(|_req: http::Request<String>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("hi"))))
    ///     });
    /// let ready = service.ready().await?;
    /// let future: ResponseFuture<_, _> = ready.call(http::Request::new(String::new()));
    /// assert_eq!(future.await?.status(), 200);
    /// # Ok(()) }
    /// ```
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        // a request that needs the store or a flight: its flow, to an answer or a call
        Flow { flow: Flow<S::Future> },
        Inner { #[pin] future: S::Future, pending: Option<Pending> },
        // a URL remembered as unstorable: the inner answer with the cache's `Cache-Status`
        Passed { #[pin] future: S::Future, status: Option<HeaderValue>, x_cache: bool },
        Unsafe { #[pin] future: S::Future, invalidation: Option<Invalidation> },
        Invalidating { call: Pin<Box<dyn Future<Output = ()> + Send>>, response: Option<S::Response> },
        Done { response: Option<Response<Bytes>> },
    }
}

impl<S, ReqBody> std::fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Flow { .. } => "Flow",
            State::Inner { .. } => "Inner",
            State::Passed { .. } => "Passed",
            State::Unsafe { .. } => "Unsafe",
            State::Invalidating { .. } => "Invalidating",
            State::Done { .. } => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn passthrough(future: S::Future) -> Self {
        Self {
            state: State::Inner {
                future,
                pending: None,
            },
        }
    }

    pub(crate) fn invalidating(
        future: S::Future,
        config: Arc<Config>,
        target: http::Uri,
        request: HeaderMap,
        forwarded: bool,
    ) -> Self {
        Self {
            state: State::Unsafe {
                future,
                invalidation: Some(Invalidation {
                    config,
                    target,
                    request,
                    forwarded,
                }),
            },
        }
    }

    /// A request that went to the inner service from `call` itself, without a lookup or a
    /// flight: the service polled ready is called there, with no clone of it kept.
    pub(crate) fn forwarded(future: S::Future, pending: Pending) -> Self {
        Self {
            state: State::Inner {
                future,
                pending: Some(pending),
            },
        }
    }

    /// A request passed to the inner service on the unstorable-URL memo, without a check of
    /// its answer: only `Cache-Status` (and `X-Cache`) is added to it.
    pub(crate) fn passed(future: S::Future, status: HeaderValue, x_cache: bool) -> Self {
        Self {
            state: State::Passed {
                future,
                status: Some(status),
                x_cache,
            },
        }
    }

    pub(crate) fn hit(response: Response<Bytes>) -> Self {
        Self {
            state: State::Done {
                response: Some(response),
            },
        }
    }

    /// A request on its [flow](super::flow): the lookup, the flight and the lock.
    pub(crate) fn flowing(flow: Flow<S::Future>) -> Self {
        Self {
            state: State::Flow { flow },
        }
    }
}

impl Invalidation {
    /// What an unsafe request's answer invalidates, as the store calls that do it; `None`
    /// when nothing is.
    fn calls(
        self,
        status: http::StatusCode,
        headers: &HeaderMap,
    ) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let Self {
            config,
            target,
            request,
            forwarded,
        } = self;
        let urls =
            invalidate::invalidated_urls(&config, &target, &request, forwarded, status, headers);
        if urls.is_empty() {
            return None;
        }
        Some(Box::pin(async move {
            for url in urls {
                if let Err(err) = config.invalidate_url_key(&url).await {
                    let _ = crate::FailurePolicy::Open.handle("cache", &err);
                }
            }
        }))
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Flow { flow } => match ready!(flow.as_mut().poll(cx)) {
                    Flowed::Answer(response) => State::Done {
                        response: Some(response),
                    },
                    Flowed::Call(future, pending) => State::Inner {
                        future,
                        pending: Some(pending),
                    },
                },
                StateProj::Inner { future, pending } => {
                    let result = ready!(future.poll(cx));
                    return Poll::Ready(match pending.take() {
                        Some(pending) => pending.answer(result),
                        None => result.map(|response| response.map(ResponseBody::inner)),
                    });
                }
                StateProj::Passed {
                    future,
                    status,
                    x_cache,
                } => {
                    let mut response = ready!(future.poll(cx))?;
                    let headers = response.headers_mut();
                    if let Some(status) = status.take() {
                        headers.append(CACHE_STATUS, status);
                    }
                    if *x_cache {
                        headers.insert(X_CACHE, HeaderValue::from_static("MISS"));
                    }
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Unsafe {
                    future,
                    invalidation,
                } => {
                    let response = ready!(future.poll(cx))?;
                    let invalidation = invalidation.take().expect("polled until it moves on");
                    // awaited before the response goes out: the client's next read must not
                    // find what it just changed
                    match invalidation.calls(response.status(), response.headers()) {
                        Some(call) => State::Invalidating {
                            call,
                            response: Some(response),
                        },
                        None => return Poll::Ready(Ok(response.map(ResponseBody::inner))),
                    }
                }
                StateProj::Invalidating { call, response } => {
                    ready!(call.as_mut().poll(cx));
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Done { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
            };
            state.set(next);
        }
    }
}
