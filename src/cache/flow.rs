//! A request the cache could not answer within `call`, top to bottom: the lookup (the URL's
//! Vary list, then its variant's entry), the entry's freshness, the single flight, the
//! cross-process lock, and the call to the inner service. What the inner service answers is
//! stored and served by [`Pending`](super::origin::Pending) as the response goes by.
//!
//! The flow is one `async` function, boxed once per request that takes it; the response
//! future polls it, then the inner service's future in place. The paths that pay for being
//! unboxed never come here: pass-through, memory-store hits and the unstorable-URL memo are
//! decided in `call`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::answer::Served;
use super::entry::Entry;
use super::flight::{FlightGuard, Role, WaitLimits, Waited, Waiter};
use super::key;
use super::lock::{LockAttempt, Locked, StoreLock};
use super::origin::{PartialMiss, Pending};
use super::policy::{self, Verdict};
use super::ranges;
use super::request::{Ctx, Found, Miss, Url};
use super::status::Fwd;
use crate::store::{Backend, Store, StoreError};

/// Where a request's flow starts.
// Made once per request and moved straight into its flow: boxing the entry would cost the
// memory store's stale and unreadable entries an allocation for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Start {
    /// At the lookup: the URL's Vary list first, unless it is known (with the variant's
    /// entry key it gives).
    Lookup {
        known: Option<(Arc<Vec<HeaderName>>, String)>,
    },
    /// With the variant's entry already read (the memory store answers within `call`).
    Found {
        vary: Arc<Vec<HeaderName>>,
        key: String,
        found: Found,
    },
    /// At the miss: nothing to look up, with the flight's key when it may join one.
    Miss {
        fwd: Fwd,
        flight_key: Option<String>,
    },
}

/// What a flow ends with: an answer of the cache's own, or the call to the inner service
/// with what its answer needs.
// The flow's output, moved once into the response future's state.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Flowed<F> {
    Answer(Response<Bytes>),
    Call(F, Pending),
}

/// A flow under way, as the response future keeps it.
pub(crate) type Flow<F> = Pin<Box<dyn Future<Output = Flowed<F>> + Send>>;

/// The flow of one request, from `start` to an answer or the inner service's call.
pub(crate) async fn flow<S, ReqBody, ResBody>(
    ctx: Ctx<S, ReqBody>,
    start: Start,
) -> Flowed<S::Future>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    let config = Arc::clone(&ctx.config);
    let prefix = config.prefix().into_owned();
    let (vary, key, found) = match start {
        Start::Miss { fwd, flight_key } => return miss(ctx, fwd, flight_key).await,
        Start::Found { vary, key, found } => (vary, key, found),
        Start::Lookup { known } => {
            let (vary, key) = match known {
                Some(known) => known,
                None => {
                    let list = match config.store.get(&key::vary_key(&prefix, &ctx.url)).await {
                        Ok(list) => list,
                        Err(err) => return store_failed(ctx, &err),
                    };
                    // no Vary list: a URL never stored, or stored under a list since expired
                    let Some(list) = list else {
                        let flight_key = key::entry_key(&prefix, &ctx.url, "-");
                        return miss(ctx, Fwd::UriMiss, Some(flight_key)).await;
                    };
                    let Some(vary) = key::decode_vary(&list) else {
                        tracing::warn!(url = %crate::failure::Digest(&ctx.url), "stored Vary list is unreadable; treating as a miss");
                        config.discard(key::vary_key(&prefix, &ctx.url));
                        let flight_key = key::entry_key(&prefix, &ctx.url, "-");
                        return miss(ctx, Fwd::UriMiss, Some(flight_key)).await;
                    };
                    let vary = Arc::new(vary);
                    config
                        .state
                        .vary_lists
                        .insert(ctx.url.clone(), Arc::clone(&vary));
                    let variant = key::variant_hash(&vary, ctx.request.headers());
                    (vary, key::entry_key(&prefix, &ctx.url, &variant))
                }
            };
            let stored = match config.store.get(&key).await {
                Ok(stored) => stored,
                Err(err) => return store_failed(ctx, &err),
            };
            let found = Found::read(stored, &vary, &config.state.heads);
            (vary, key, found)
        }
    };
    match found {
        Found::Entry(entry) => match config.verdict(&entry, &ctx.rules) {
            Verdict::Fresh | Verdict::StaleAccepted => served(&ctx, entry),
            // the cache_page mode keeps entries no longer than they are fresh: it fetches anew
            Verdict::Refresh { .. } if config.http.is_none() => {
                miss(ctx, Fwd::Stale, Some(key)).await
            }
            // a HEAD's answer has no body to share: no flight, but its fields freshen (or
            // invalidate) the stored GET response (RFC 9111 §4.3.5)
            Verdict::Refresh { .. } if ctx.head => {
                if ctx.rules.only_if_cached {
                    return Flowed::Answer(config.gateway_timeout());
                }
                call(ctx, Fwd::Stale, None, Some(Box::new(entry)), None)
            }
            Verdict::Refresh {
                serve_stale_meanwhile,
            } => refresh(ctx, key, Box::new(entry), serve_stale_meanwhile).await,
        },
        Found::Missing if vary.is_empty() => miss(ctx, Fwd::UriMiss, Some(key)).await,
        Found::Missing => miss(ctx, Fwd::VaryMiss, Some(key)).await,
        Found::Outdated => {
            config.state.vary_lists.invalidate(&ctx.url);
            miss(ctx, Fwd::VaryMiss, Some(key)).await
        }
        Found::Unreadable(err) => {
            tracing::warn!(key = %crate::failure::Digest(&key), error = %crate::failure::ErrorChain(&err), "unreadable cache entry; deleting it");
            config.discard(key.clone());
            miss(ctx, Fwd::UriMiss, Some(key)).await
        }
    }
}

/// The store failed a lookup: the handler answers when the layer fails open, else 503.
fn store_failed<S, ReqBody>(ctx: Ctx<S, ReqBody>, err: &StoreError) -> Flowed<S::Future>
where
    S: Service<Request<ReqBody>>,
{
    crate::observe::cache("store_error");
    if ctx.config.on_store_error.handle("cache", err) {
        return call(ctx, Fwd::Miss, None, None, None);
    }
    Flowed::Answer(ctx.config.unavailable())
}

/// The miss: join the single flight when storing is possible, else call the handler.
async fn miss<S, ReqBody>(
    ctx: Ctx<S, ReqBody>,
    fwd: Fwd,
    flight_key: Option<String>,
) -> Flowed<S::Future>
where
    S: Service<Request<ReqBody>>,
{
    if (ctx.ranged || ctx.head)
        && ctx.follows_flights()
        && let (Some(patience), Some(key)) = (ctx.config.flight_wait, &flight_key)
        && let Some(waiter) = ctx.config.state.flights.follow(key)
    {
        // a whole response is on its way for a GET: wait for it rather than call the
        // origin beside it (boxed: rare, and every miss's future would carry it)
        return Box::pin(follow_only(ctx, fwd, waiter, patience)).await;
    }
    if ctx.ranged && ctx.store_allowed && ctx.config.http.is_some() {
        return ranged_miss(ctx, fwd, flight_key).await;
    }
    if ctx.rules.only_if_cached {
        return Flowed::Answer(ctx.config.gateway_timeout());
    }
    let (Some(patience), Some(key)) = (ctx.config.flight_wait, flight_key) else {
        return call(ctx, fwd, None, None, None);
    };
    if !ctx.joins_flights() || ctx.head {
        return call(ctx, fwd, None, None, None);
    }
    let waiting = std::time::Instant::now();
    let limits = ctx.config.wait_limits();
    // a leader that goes away unfinished hands the flight on: every follower joins again,
    // one leads, the others follow it
    loop {
        match ctx.config.state.flights.join(&key) {
            Role::Leader(guard) => {
                return lead(ctx, fwd, guard, key, None, false, limits).await;
            }
            Role::Follower(waiter) => match waiter.wait(patience, limits).await {
                Waited::Done(shared) => {
                    crate::observe::cache("collapsed");
                    crate::observe::cache_lock_wait(waiting.elapsed());
                    return followed(ctx, fwd, shared);
                }
                // nothing stored to fall back on: as when the leader's answer was unstorable
                Waited::Failed(_) => return call(ctx, fwd, None, None, None),
                Waited::Abandoned => {}
                Waited::TimedOut => return gave_up(&ctx, None),
            },
            Role::Pass => return call(ctx, fwd, None, None, None),
        }
    }
}

/// A `HEAD` or range request waiting on the flight a GET leads: answered from the leader's
/// entry (its range, or its head), else by the inner service as before; never a leader.
async fn follow_only<S, ReqBody>(
    ctx: Ctx<S, ReqBody>,
    fwd: Fwd,
    waiter: Waiter,
    patience: std::time::Duration,
) -> Flowed<S::Future>
where
    S: Service<Request<ReqBody>>,
{
    match waiter.wait(patience, ctx.config.wait_limits()).await {
        Waited::Done(shared) => {
            crate::observe::cache("collapsed");
            followed(ctx, fwd, shared)
        }
        Waited::TimedOut => gave_up(&ctx, None),
        Waited::Failed(_) | Waited::Abandoned => call(ctx, fwd, None, None, None),
    }
}

/// The flight's leader in this process fell silent for the flight deadline while still at
/// work: the stale copy where `stale-if-error` allows it (a slow origin is an error to this
/// client, RFC 5861 §4), else 504. Never a handler call beside the leader's.
fn gave_up<S, ReqBody>(ctx: &Ctx<S, ReqBody>, stale: Option<Box<Entry>>) -> Flowed<S::Future>
where
    S: Service<Request<ReqBody>>,
{
    crate::observe::cache("flight_timeout");
    tracing::debug!(
        url = %crate::failure::Digest(&ctx.url),
        "a single flight's leader was silent for the flight deadline"
    );
    if let Some(stale) = stale
        && policy::stale_if_error(
            stale.age(std::time::SystemTime::now()),
            stale.freshness,
            &stale.reuse,
        )
    {
        return Flowed::Answer(ctx.config.serve(
            *stale,
            ctx.request.headers(),
            ctx.head,
            Served::StaleOnError(Some(http::StatusCode::GATEWAY_TIMEOUT)),
        ));
    }
    Flowed::Answer(ctx.config.origin_too_slow())
}

/// A range request with no complete entry to answer it (RFC 9111 §3.3-3.4): the stored
/// pieces of the representation answer it when they cover it and are fresh; else it goes on
/// as it came, in no flight (its answer is not the whole), and a partial answer is kept to
/// combine with them.
async fn ranged_miss<S, ReqBody>(
    ctx: Ctx<S, ReqBody>,
    fwd: Fwd,
    entry_key: Option<String>,
) -> Flowed<S::Future>
where
    S: Service<Request<ReqBody>>,
{
    let config = Arc::clone(&ctx.config);
    let partial_key = entry_key.as_deref().map(key::partial_key);
    // seen before the store read: a write still pending then may land after it
    let sighting = partial_key
        .as_ref()
        .and_then(|partial_key| config.state.recent_pieces.look(&ctx.url, partial_key));
    let stored = match &partial_key {
        Some(partial_key) => match config.store.get(partial_key).await {
            Ok(stored) => stored,
            Err(err) => return store_failed(ctx, &err),
        },
        None => None,
    };
    // pieces that cannot be read are replaced by the next ones
    let stored = stored.and_then(|stored| Entry::decode_partial(&stored).ok());
    let recent = sighting
        .and_then(|sighting| sighting.beside(stored.is_some()))
        .map(|recent| (recent.entry.clone(), recent.pieces.clone()));
    let partial = ranges::newest_pieces(stored, recent).filter(|(entry, _)| {
        key::variant_hash(&entry.vary, ctx.request.headers()) == entry.variant
    });
    if let Some((entry, pieces)) = &partial
        && matches!(
            config.verdict(entry, &ctx.rules),
            Verdict::Fresh | Verdict::StaleAccepted
        )
        && let Some(response) = config.serve_pieces(entry, pieces, ctx.request.headers())
    {
        return Flowed::Answer(response);
    }
    if ctx.rules.only_if_cached {
        return Flowed::Answer(config.gateway_timeout());
    }
    let mut call = call(ctx, fwd, None, None, None);
    if let Flowed::Call(_, pending) = &mut call {
        pending.partial = Some(PartialMiss {
            stored: partial.map(|(entry, pieces)| (Box::new(entry), pieces)),
        });
    }
    call
}

/// A stale entry: one request revalidates it; the others wait for the result, or are served
/// the stale copy within `stale-while-revalidate`. Within that window the revalidation runs
/// in a task of its own and its request too is served the stale copy (RFC 5861 §3).
async fn refresh<S, ReqBody, ResBody>(
    ctx: Ctx<S, ReqBody>,
    key: String,
    entry: Box<Entry>,
    serve_stale_meanwhile: bool,
) -> Flowed<S::Future>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    if ctx.rules.only_if_cached {
        return Flowed::Answer(ctx.config.gateway_timeout());
    }
    let Some(patience) = ctx.config.flight_wait else {
        return call(ctx, Fwd::Stale, None, Some(entry), None);
    };
    if !ctx.joins_flights() {
        return call(ctx, Fwd::Stale, None, Some(entry), None);
    }
    let limits = ctx.config.wait_limits();
    loop {
        match ctx.config.state.flights.join(&key) {
            Role::Leader(guard) => {
                if serve_stale_meanwhile && let Ok(runtime) = tokio::runtime::Handle::try_current()
                {
                    let response = ctx.config.serve(
                        Entry::clone(&entry),
                        ctx.request.headers(),
                        ctx.head,
                        Served::Hit,
                    );
                    let refresh = lead(ctx, Fwd::Stale, guard, key, Some(entry), true, limits);
                    runtime.spawn(refresh_to_its_end::<S, ReqBody, ResBody>(refresh));
                    return Flowed::Answer(response);
                }
                return lead(
                    ctx,
                    Fwd::Stale,
                    guard,
                    key,
                    Some(entry),
                    serve_stale_meanwhile,
                    limits,
                )
                .await;
            }
            Role::Follower(_) if serve_stale_meanwhile => return served(&ctx, *entry),
            Role::Follower(waiter) => match waiter.wait(patience, limits).await {
                Waited::Done(shared) => return followed_refresh(ctx, entry, shared),
                Waited::Failed(status) => return failed_with(ctx, entry, status),
                Waited::Abandoned => {}
                Waited::TimedOut => return gave_up(&ctx, Some(entry)),
            },
            Role::Pass => return call(ctx, Fwd::Stale, None, Some(entry), None),
        }
    }
}

/// Drives a stale entry's refresh to its end (a store, when its answer is storable, happens
/// once the body has gone by) while the client that found the entry stale is already served.
async fn refresh_to_its_end<S, ReqBody, ResBody>(refresh: impl Future<Output = Flowed<S::Future>>)
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    let Flowed::Call(future, pending) = refresh.await else {
        return;
    };
    let Ok(response) = pending.answer(future.await) else {
        // the stale copy stays until the next request tries again
        tracing::debug!("the inner service failed a background refresh");
        return;
    };
    let mut body = std::pin::pin!(response.into_body());
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        if frame.is_err() {
            tracing::debug!("the body of a background refresh failed; not stored");
            break;
        }
    }
}

/// The in-process leader of a flight: with a shared store, it takes the cross-process lock
/// before running the handler, or finds another instance's entry meanwhile.
async fn lead<S, ReqBody>(
    ctx: Ctx<S, ReqBody>,
    fwd: Fwd,
    flight: FlightGuard,
    key: String,
    stale: Option<Box<Entry>>,
    serve_stale_meanwhile: bool,
    limits: WaitLimits,
) -> Flowed<S::Future>
where
    S: Service<Request<ReqBody>>,
{
    let config = Arc::clone(&ctx.config);
    let Some(lock_ttl) = config.lock_ttl else {
        return call(ctx, fwd, Some(flight), stale, None);
    };
    let prefix = config.prefix().into_owned();
    let attempt = LockAttempt {
        store: config.store.clone(),
        vary_key: key::vary_key(&prefix, &ctx.url),
        entry_key: key,
        lock_ttl,
        prefix,
        url: ctx.url.clone(),
        request_headers: ctx.request.headers().clone(),
        rules: ctx.rules,
        serve_stale_meanwhile: serve_stale_meanwhile && stale.is_some(),
        progress: Arc::clone(flight.progress()),
        silence: config.flight_deadline,
        gives_up_at: limits.gives_up_at,
    };
    // a memory store is this process's own: the in-process flight is all there is. A flight
    // that ended between this request's lookup and its joining has stored its entry by now
    // (the memory store's writes land at once): served, not rendered again.
    if config.store.answers_at_once() {
        if stale.is_none()
            && let Some(entry) = attempt.fresh_entry().await
        {
            let entry = Arc::new(entry);
            flight.complete(Arc::clone(&entry));
            return served(&ctx, Arc::unwrap_or_clone(entry));
        }
        return call(ctx, fwd, Some(flight), stale, None);
    }
    match (attempt.run().await, stale) {
        (Locked::Lead(lock), stale) => call(ctx, fwd, Some(flight), stale, lock),
        (Locked::Entry(entry), _) => {
            let entry = Arc::new(entry);
            flight.complete(Arc::clone(&entry));
            served(&ctx, Arc::unwrap_or_clone(entry))
        }
        (Locked::ServeStale, Some(stale)) => served(&ctx, *stale),
        (Locked::ServeStale, None) => call(ctx, fwd, Some(flight), None, None),
        // another instance found the key unstorable: release this process's waiters too, and
        // go to the handler without the lock
        (Locked::Uncacheable, stale) => {
            flight.uncacheable();
            call(ctx, fwd, None, stale, None)
        }
        // another instance still works on it after the longest wait: this process's
        // followers reach their own bound too (the guard ends as abandoned)
        (Locked::TimedOut, stale) => gave_up(&ctx, stale),
    }
}

/// A follower whose flight's leader finished: the leader's entry, or the inner service when
/// there is none for this request's variant.
fn followed<S, ReqBody>(
    ctx: Ctx<S, ReqBody>,
    fwd: Fwd,
    shared: Option<Arc<Entry>>,
) -> Flowed<S::Future>
where
    S: Service<Request<ReqBody>>,
{
    match shared {
        // the leader's request may have differed in the headers it varies on
        Some(entry) if key::variant_hash(&entry.vary, ctx.request.headers()) == entry.variant => {
            served(&ctx, Entry::clone(&entry))
        }
        _ => call(ctx, fwd, None, None, None),
    }
}

/// A follower of a stale entry's refresh whose leader finished: the leader's entry, or the
/// follower's own revalidation, which keeps the stale `entry` to fall back on (a failure of
/// its own may still be answered with it).
fn followed_refresh<S, ReqBody>(
    ctx: Ctx<S, ReqBody>,
    entry: Box<Entry>,
    shared: Option<Arc<Entry>>,
) -> Flowed<S::Future>
where
    S: Service<Request<ReqBody>>,
{
    match shared {
        Some(shared)
            if key::variant_hash(&shared.vary, ctx.request.headers()) == shared.variant =>
        {
            served(&ctx, Entry::clone(&shared))
        }
        _ => call(ctx, Fwd::Stale, None, Some(entry), None),
    }
}

/// A follower of a stale entry's refresh whose leader's call failed just now (`status`, or an
/// error): the stale copy where `stale-if-error` allows it, as the leader got (RFC 5861 §4),
/// else its own revalidation.
fn failed_with<S, ReqBody>(
    ctx: Ctx<S, ReqBody>,
    entry: Box<Entry>,
    status: Option<http::StatusCode>,
) -> Flowed<S::Future>
where
    S: Service<Request<ReqBody>>,
{
    if policy::stale_if_error(
        entry.age(std::time::SystemTime::now()),
        entry.freshness,
        &entry.reuse,
    ) {
        crate::observe::cache("collapsed");
        return Flowed::Answer(ctx.config.serve(
            *entry,
            ctx.request.headers(),
            ctx.head,
            Served::StaleOnError(status),
        ));
    }
    call(ctx, Fwd::Stale, None, Some(entry), None)
}

/// A response from `entry`, for the request in `ctx`.
fn served<S, ReqBody>(ctx: &Ctx<S, ReqBody>, entry: Entry) -> Flowed<S::Future>
where
    S: Service<Request<ReqBody>>,
{
    Flowed::Answer(
        ctx.config
            .serve(entry, ctx.request.headers(), ctx.head, Served::Hit),
    )
}

/// The call to the inner service, with what its answer needs to be stored or to refresh
/// `stale` (made a conditional request for it).
fn call<S, ReqBody>(
    mut ctx: Ctx<S, ReqBody>,
    fwd: Fwd,
    flight: Option<FlightGuard>,
    stale: Option<Box<Entry>>,
    lock: Option<StoreLock>,
) -> Flowed<S::Future>
where
    S: Service<Request<ReqBody>>,
{
    let miss = Miss {
        fwd,
        store_allowed: ctx.store_allowed,
        head: ctx.head,
        remembered_unstorable: false,
        ranged: ctx.ranged,
        credentialed: ctx.credentialed,
    };
    let url = Url {
        key: ctx.url,
        id: ctx.url_id,
    };
    let mut pending = Pending::new(ctx.config, url, ctx.request.headers(), miss, stale);
    pending.flight = flight;
    pending.lock = lock;
    if let Some(entry) = &pending.stale {
        make_conditional(ctx.request.headers_mut(), entry);
    }
    Flowed::Call(ctx.inner.call(ctx.request), pending)
}

/// Turns a request into the conditional request that revalidates `entry` (RFC 9111 §4.3.1):
/// its validators replace the client's own. A range request revalidates the whole entry (it
/// is at most the layer's body bound), whose `304` or `200` then answers the range or the
/// whole.
fn make_conditional(headers: &mut HeaderMap, entry: &Entry) {
    headers.remove(header::IF_NONE_MATCH);
    headers.remove(header::IF_MODIFIED_SINCE);
    headers.remove(header::RANGE);
    headers.remove("request-range");
    headers.remove(header::IF_RANGE);
    if let Some(etag) = entry.headers.get(header::ETAG) {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = entry.headers.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
}
