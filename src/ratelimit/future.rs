//! The response future: the verdict on checked rules, and the hits held until the answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::check::{Counted, Hits, Outcome, release_all};
use super::config::Config;
use super::headers::{self, Reported};
use super::rejection::{Limited, LimitedResponse, Refusal, refuse};
use super::rule::Commit;
use crate::body::ResponseBody;
use crate::gate::{Check, Gate, Gatekeeper, Verdict};

/// Hits counted for a request under [`Commit::OnSuccess`], held while the inner service
/// works: given back when it answers with a failure, kept otherwise.
///
/// A request dropped before its answer (a client that reset its connection) keeps its hits:
/// the inner service has been called by then, and its side effect (the SMS) may already be
/// under way. Giving the flag back there would let a client buy a second code for the price
/// of a reset.
pub(crate) struct Hold {
    config: Arc<Config>,
    hits: Hits,
}

impl Hold {
    fn release(mut self) {
        spawn_release(Arc::clone(&self.config), std::mem::take(&mut self.hits));
    }
}

fn spawn_release(config: Arc<Config>, hits: Hits) {
    if hits.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move { release_all(&config, &hits).await });
        }
        Err(_) => {
            tracing::warn!("no Tokio runtime to release rate-limit hits in; they stay counted")
        }
    }
}

/// What an allowed request keeps while the inner service works: the hits to give back if it
/// fails, and the informational fields for its answer.
pub(crate) struct Allowed {
    hold: Option<Hold>,
    fields: Option<(HeaderValue, HeaderValue)>,
}

/// What the layer keeps while the rules are checked: enough to decide once they are.
pub(crate) struct RuleCheck<R> {
    pub(crate) config: Arc<Config>,
    pub(crate) rejection: R,
}

impl<R: LimitedResponse> Gatekeeper for RuleCheck<R> {
    type Checked = Outcome;
    type Pass = Allowed;

    fn decide<B>(&self, outcome: Outcome, _request: &mut Request<B>) -> Verdict<Allowed> {
        verdict(outcome, &self.config, &self.rejection)
    }

    fn finish<ResBody, E>(allowed: Allowed, answer: &mut Result<Response<ResBody>, E>) {
        let failed = answer
            .as_ref()
            .map_or(true, |response| !response.status().is_success());
        if let Some(hold) = allowed.hold
            && failed
        {
            hold.release();
        }
        if let (Ok(response), Some((policy, limit))) = (answer, allowed.fields) {
            response
                .headers_mut()
                .insert(headers::RATELIMIT_POLICY, policy);
            response.headers_mut().insert(headers::RATELIMIT, limit);
        }
    }
}

type RuleGate<S, ReqBody, R> = Gate<S, ReqBody, RuleCheck<R>, Outcome, Allowed>;

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit).
    ///
    /// # Example
    ///
    /// ```
    /// use tower::{Service, ServiceBuilder, ServiceExt};
    /// use tower_redis_http::ratelimit::{Key, RateLimitLayer, ResponseFuture, Rule};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut service = ServiceBuilder::new()
    ///     .layer(RateLimitLayer::builder(MemoryStore::new()).rule(Rule::fixed_window("all", "1/m", Key::global())).build()?)
    ///     .service_fn(|_req: http::Request<String>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("ok"))))
    ///     });
    /// let ready = service.ready().await?;
    /// let future: ResponseFuture<_, _, _> = ready.call(http::Request::new(String::new()));
    /// assert_eq!(future.await?.status(), 200);
    /// # Ok(()) }
    /// ```
    pub struct ResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        gate: RuleGate<S, ReqBody, R>,
    }
}

impl<S, ReqBody, R> std::fmt::Debug for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("state", &self.gate.state())
            .finish()
    }
}

impl<S, ReqBody, R> ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    #[inline(always)]
    pub(crate) fn new(gate: RuleGate<S, ReqBody, R>) -> Self {
        Self { gate }
    }

    pub(crate) fn passthrough(future: S::Future) -> Self {
        Self::new(Gate::open(future))
    }

    pub(crate) fn done(response: Response<Bytes>) -> Self {
        Self::new(Gate::answer(response))
    }

    pub(crate) fn checking(
        check: Check<Outcome>,
        inner: S,
        request: Request<ReqBody>,
        config: Arc<Config>,
        rejection: R,
        span: tracing::Span,
    ) -> Self {
        Self::new(Gate::checking(
            check,
            inner,
            request,
            RuleCheck { config, rejection },
            span,
        ))
    }
}

impl<S, ReqBody, R> ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
    R: LimitedResponse,
{
    /// The future once the rules were checked: the inner service's call, a 429 or a 503.
    #[inline(always)]
    pub(crate) fn decided(
        outcome: Outcome,
        inner: &mut S,
        request: Request<ReqBody>,
        config: &Arc<Config>,
        rejection: &R,
    ) -> Self {
        Self::new(Gate::decided(
            verdict(outcome, config, rejection),
            inner,
            request,
        ))
    }
}

/// Where a request goes once its rules were checked.
#[inline(always)]
fn verdict<R: LimitedResponse>(
    outcome: Outcome,
    config: &Arc<Config>,
    rejection: &R,
) -> Verdict<Allowed> {
    match outcome {
        Outcome::Allowed(counted) => {
            let fields = if config.informational {
                allowed_fields(config, &counted)
            } else {
                None
            };
            // only the hits of commit-on-success rules wait for the answer; the others stay
            let hold = config.holds_hits.then(|| {
                let held: Hits = counted
                    .into_iter()
                    .filter(|hit| config.rules[hit.rule].commit == Commit::OnSuccess)
                    .collect();
                (!held.is_empty()).then(|| Hold {
                    config: Arc::clone(config),
                    hits: held,
                })
            });
            let hold = hold.flatten();
            Verdict::Call(Allowed { hold, fields })
        }
        Outcome::Denied { rule, decision } => {
            let compiled = &config.rules[rule];
            let retry_after = decision.retry_after.unwrap_or(compiled.policy.window());
            let limited = Limited {
                rule: Arc::clone(&compiled.name),
                retry_after,
                limit: decision.limit,
            };
            let mut response = rejection.limited(&limited);
            let mut added = HeaderMap::new();
            let reported = [Reported {
                name: &compiled.name,
                policy_item: &compiled.policy_item,
                decision: &decision,
            }];
            headers::apply(&mut added, &reported, Some(retry_after));
            for (name, value) in &added {
                if !response.headers().contains_key(name) {
                    response.headers_mut().insert(name.clone(), value.clone());
                }
            }
            Verdict::Answer(response)
        }
        Outcome::Unavailable => Verdict::Answer(refuse(rejection, Refusal::StoreUnavailable)),
    }
}

/// The informational headers of an allowed request.
fn allowed_fields(config: &Config, counted: &[Counted]) -> Option<(HeaderValue, HeaderValue)> {
    fn reported<'a>(config: &'a Config, c: &'a Counted) -> Reported<'a> {
        let rule = &config.rules[c.rule];
        Reported {
            name: &rule.name,
            policy_item: &rule.policy_item,
            decision: &c.decision,
        }
    }
    let all = (counted.len() == config.rules.len())
        .then_some(config.all_policies.as_ref())
        .flatten();
    match counted {
        [one] => headers::fields(&[reported(config, one)], all),
        many => headers::fields(
            &many.iter().map(|c| reported(config, c)).collect::<Vec<_>>(),
            all,
        ),
    }
}

impl<S, ReqBody, ResBody, R> Future for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: LimitedResponse,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().gate.poll(cx)
    }
}
