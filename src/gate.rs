//! The gate that auth and rate limiting share: decide about a request (with the store's
//! answer), then call the inner service or answer by itself. tower-http's
//! `AsyncRequireAuthorization` is the model; what differs per layer is the [`Gatekeeper`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::ResponseBody;

/// What a layer decides about one request once its check (a store call) has answered.
pub(crate) trait Gatekeeper {
    /// What the check answers.
    type Checked;
    /// What the layer keeps while the inner service works, to finish its answer.
    type Pass;

    /// Lets the request through (after adding what the handler needs to its extensions), or
    /// answers it.
    fn decide<B>(&self, checked: Self::Checked, request: &mut Request<B>) -> Verdict<Self::Pass>;

    /// Finishes the inner service's answer, or sees that it failed.
    fn finish<ResBody, E>(pass: Self::Pass, answer: &mut Result<Response<ResBody>, E>);
}

/// Where a checked request goes.
pub(crate) enum Verdict<P> {
    /// To the inner service.
    Call(P),
    /// Nowhere: the layer answers by itself.
    Answer(Response<Bytes>),
}

/// A check under way: the store call, and what the request needs once it answers.
pub(crate) type Check<C> = Pin<Box<dyn Future<Output = C> + Send>>;

/// A request waiting for its check: the service polled ready is kept for it.
pub(crate) struct Waiting<S, ReqBody, K> {
    inner: S,
    request: Request<ReqBody>,
    keeper: K,
    /// The layer's decision span, entered while the check runs and the keeper decides.
    span: tracing::Span,
}

pin_project! {
    /// One request through the gate: waiting for its check, in the inner service, or
    /// answered by the layer. `C` and `P` are the keeper's `Checked` and `Pass`.
    #[project = GateProj]
    pub(crate) enum Gate<S, ReqBody, K, C, P>
    where
        S: Service<Request<ReqBody>>,
    {
        // boxed: a request waits for a round trip here anyway, and the gate stays small for
        // the paths that never wait (memory store, open paths, answers)
        Checking { check: Check<C>, waiting: Option<Box<Waiting<S, ReqBody, K>>> },
        Inner { #[pin] future: S::Future, pass: Option<P> },
        Answered { response: Option<Response<Bytes>> },
    }
}

// The constructors are inlined into each layer's `call`, so that the gate is built in place
// on the paths that decide at once: not inlined, the memory-store rate limiter cost about 400
// instructions more per request (bench/instructions.sh).
impl<S, ReqBody, K, C, P> Gate<S, ReqBody, K, C, P>
where
    S: Service<Request<ReqBody>>,
{
    /// A request the layer lets through without a check.
    #[inline(always)]
    pub(crate) fn open(future: S::Future) -> Self {
        Self::Inner { future, pass: None }
    }

    /// A request the layer answers without a check.
    #[inline(always)]
    pub(crate) fn answer(response: Response<Bytes>) -> Self {
        Self::Answered {
            response: Some(response),
        }
    }

    /// A request whose check needs the store's round trip; `inner` is the service polled
    /// ready (the caller swaps a clone in its place).
    pub(crate) fn checking(
        check: Check<C>,
        inner: S,
        request: Request<ReqBody>,
        keeper: K,
        span: tracing::Span,
    ) -> Self {
        Self::Checking {
            check,
            waiting: Some(Box::new(Waiting {
                inner,
                request,
                keeper,
                span,
            })),
        }
    }

    /// A request decided at once (its check answered without a round trip): no future.
    #[inline(always)]
    pub(crate) fn decided(verdict: Verdict<P>, inner: &mut S, request: Request<ReqBody>) -> Self {
        match verdict {
            Verdict::Call(pass) => Self::Inner {
                future: inner.call(request),
                pass: Some(pass),
            },
            Verdict::Answer(response) => Self::answer(response),
        }
    }

    pub(crate) fn state(&self) -> &'static str {
        match self {
            Self::Checking { .. } => "Checking",
            Self::Inner { .. } => "Inner",
            Self::Answered { .. } => "Answered",
        }
    }
}

impl<S, ReqBody, ResBody, K, C, P> Future for Gate<S, ReqBody, K, C, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    K: Gatekeeper<Checked = C, Pass = P>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                GateProj::Checking { check, waiting } => {
                    let checked = {
                        let _in_span = waiting.as_ref().map(|waiting| waiting.span.enter());
                        ready!(check.as_mut().poll(cx))
                    };
                    let Waiting {
                        mut inner,
                        mut request,
                        keeper,
                        span,
                    } = *waiting.take().expect("a check is polled until it moves on");
                    let verdict = span.in_scope(|| keeper.decide(checked, &mut request));
                    self.set(Self::decided(verdict, &mut inner, request));
                }
                GateProj::Inner { future, pass } => {
                    let mut answer = ready!(future.poll(cx));
                    if let Some(pass) = pass.take() {
                        K::finish(pass, &mut answer);
                    }
                    return Poll::Ready(answer.map(|response| response.map(ResponseBody::inner)));
                }
                GateProj::Answered { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
            }
        }
    }
}
