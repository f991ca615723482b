//! What the inner service answered, made the client's response: a miss stored or not, a
//! revalidation, a stale copy in place of a failure, a partial response kept.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::Body;

use super::answer::{Served, http_date};
use super::config::Config;
use super::entry::{Entry, Pieces};
use super::flight::FlightGuard;
use super::lock::StoreLock;
use super::policy::{self, NotStored};
use super::recorder::Recorder;
use super::request::{Miss, Url};
use super::status::{CACHE_STATUS, Fwd, X_CACHE};
use super::{directives, key, ranges};
use crate::body::ResponseBody;
use crate::principal::Credentialed;

/// What the miss path needs to decide about storing the response.
pub(crate) struct Pending {
    config: Arc<Config>,
    url: Url,
    request_headers: HeaderMap,
    fwd: Fwd,
    pub(crate) flight: Option<FlightGuard>,
    store_allowed: bool,
    head: bool,
    /// Whether the request carried `Authorization`.
    credentialed: bool,
    /// Whether the request went to the handler on the unstorable-URL memo, without its
    /// headers kept: a storable answer that varies on them ends the memo but is not stored.
    remembered_unstorable: bool,
    /// A range request (see [`Miss::ranged`]).
    ranged: bool,
    /// When the request went to the inner service (`request_time` of RFC 9111 §4.2.3).
    request_time: SystemTime,
    /// The stale entry being revalidated: a 304 refreshes it, a failure may serve it.
    pub(crate) stale: Option<Box<Entry>>,
    /// The cross-process lock, released with the entry's write or when dropped.
    pub(crate) lock: Option<StoreLock>,
    /// A range request of the HTTP-cache mode: a `206` is kept, with the pieces stored so far.
    pub(crate) partial: Option<PartialMiss>,
}

/// A range request that found no complete entry, and the stored pieces of its variant (the
/// entry that holds their fields, and the pieces), when there were any.
pub(crate) struct PartialMiss {
    pub(crate) stored: Option<(Box<Entry>, Pieces)>,
}

impl Pending {
    /// What a request about to go to the inner service leaves for its response. Call the
    /// inner service right after: `request_time` is now.
    pub(crate) fn new(
        config: Arc<Config>,
        url: Url,
        request: &HeaderMap,
        miss: Miss,
        stale: Option<Box<Entry>>,
    ) -> Self {
        // the varied request headers are only known from the response, and a revalidated
        // entry answers the client's own conditions: keep the client's headers
        let keep_headers = miss.store_allowed && !miss.head && !miss.remembered_unstorable;
        Self {
            config,
            url,
            request_headers: if keep_headers || stale.is_some() {
                request.clone()
            } else {
                HeaderMap::new()
            },
            fwd: miss.fwd,
            flight: None,
            store_allowed: miss.store_allowed,
            head: miss.head,
            credentialed: miss.credentialed,
            remembered_unstorable: miss.remembered_unstorable,
            ranged: miss.ranged,
            request_time: SystemTime::now(),
            stale,
            lock: None,
            partial: None,
        }
    }

    /// Adds the miss's `Cache-Status`, and a recorder when the response is to be stored.
    fn decide(self, parts: &mut http::response::Parts, body_len: Option<u64>) -> Option<Recorder> {
        let config = Arc::clone(&self.config);
        let fwd = self.fwd;
        let (recorder, unstored) = match self.recorder(parts, body_len) {
            Ok(recorder) => (Some(recorder), None),
            Err(unstored) => (None, unstored),
        };
        // `detail=storing` announces a write handed to the store; the write itself ends after the
        // header has gone, so a store that just refused one is not announced to take this one
        let stored = recorder.is_some() && body_len.is_some() && !config.writes_refused();
        crate::observe::cache("miss");
        if stored {
            crate::observe::cache_stored(
                usize::try_from(body_len.unwrap_or(0)).unwrap_or(usize::MAX),
            );
        }
        let status = match unstored {
            Some(unstored) => {
                crate::observe::cache_not_stored(unstored.as_str());
                config.unstored_status(fwd, unstored)
            }
            None => config.forwarded_status(fwd, stored),
        };
        mark_forwarded(&config, &mut parts.headers, status);
        recorder
    }

    fn facts(&self) -> policy::RequestFacts {
        policy::RequestFacts {
            has_authorization: self.credentialed,
        }
    }

    /// The recorder of a response to store, or why the response is not stored (`None` when
    /// the request itself ruled storing out).
    fn recorder(
        mut self,
        parts: &mut http::response::Parts,
        body_len: Option<u64>,
    ) -> Result<Recorder, Option<NotStored>> {
        if !self.store_allowed || self.head {
            return Err(None);
        }
        let config = Arc::clone(&self.config);
        let storable = self.storage(parts, body_len);
        if self.remembered_unstorable {
            // a request on the memo kept neither its key nor its headers: a storable answer
            // ends the memo, and the next request stores it
            return match storable {
                Ok(_) => {
                    config.state.unstorable.forget(self.url.id);
                    Err(None)
                }
                Err(unstored) => Err(Some(unstored)),
            };
        }
        let flight = self.flight.take();
        let unstored = match storable {
            Ok((storage, vary)) => {
                config.state.unstorable.forget(self.url.id);
                return Ok(self.record(parts, storage, vary).led(flight));
            }
            Err(unstored) => unstored,
        };
        if self.fwd == Fwd::UriMiss && !self.ranged {
            // nothing stored and nothing storable: the next requests skip the lookup
            config
                .state
                .unstorable
                .remember(self.url.id, self.credentialed);
        }
        // the key skips the flight for a while, here and (through the store) in the other
        // instances
        if let Some(flight) = flight {
            config.remember_uncacheable(flight.key());
            flight.uncacheable();
        }
        Err(Some(unstored))
    }

    /// How the response may be stored, and the request headers it varies on; or why it may
    /// not be.
    fn storage(
        &self,
        parts: &mut http::response::Parts,
        body_len: Option<u64>,
    ) -> Result<(policy::Storage, Vec<HeaderName>), NotStored> {
        let config = &self.config;
        // an interim response is never a response to store, whatever the statuses allowed
        // (a service that returns one as final has already broken the exchange)
        // nor is a part of one: partial responses are kept as pieces (`partial_recorder`)
        if parts.status.is_informational()
            || parts.status == http::StatusCode::PARTIAL_CONTENT
            || (!config.statuses.is_empty() && !config.statuses.contains(&parts.status))
        {
            return Err(NotStored::Status);
        }
        // the answer to a range request stands for the whole representation only when it is
        // the whole: a `200`, or a status listed for whole responses. A `416` (or any error)
        // answers the client's range, not the URL: stored, `Range: bytes=999999-` would make
        // every plain GET a `416` hit (cache-poisoned denial of service)
        if self.ranged
            && parts.status != http::StatusCode::OK
            && (parts.status == http::StatusCode::RANGE_NOT_SATISFIABLE
                || !config.statuses.contains(&parts.status))
        {
            return Err(NotStored::Status);
        }
        if body_len.is_some_and(|len| len > config.max_body as u64) {
            return Err(NotStored::TooLarge);
        }
        let storage = match &config.http {
            Some(rules) => {
                let now = SystemTime::now();
                // RFC 9110 §6.6.1: a cache adds the Date a response lacks
                if !parts.headers.contains_key(header::DATE) {
                    parts.headers.insert(header::DATE, http_date(now));
                }
                policy::storable_http(
                    self.facts(),
                    parts.status,
                    &parts.headers,
                    rules,
                    &config.targeted,
                    now,
                )
            }
            None => policy::storable(
                self.facts(),
                &parts.headers,
                config.timeout,
                config.store_cookies,
                &config.targeted,
            )
            .map(|ttl| policy::Storage {
                freshness: ttl,
                keep: ttl,
                reuse: policy::Reuse::default(),
                strip: Vec::new(),
            }),
        };
        let storage = match storage {
            Ok(storage) => storage,
            Err(reason) => {
                tracing::debug!(?reason, "response not stored");
                return Err(reason);
            }
        };
        // the HTTP-cache mode counts an entry's life from the response's generation: one
        // that arrives older than all of it (stale, no validator, no stale window) would
        // only ever be served stale, so it is not stored
        if config.http.is_some()
            && policy::initial_age(&parts.headers, self.request_time, SystemTime::now())
                >= storage.keep
        {
            tracing::debug!("response arrived older than it may be kept; not stored");
            return Err(NotStored::StaleOnArrival);
        }
        let vary = directives::vary(&parts.headers).map_err(|()| NotStored::VaryUnreadable)?;
        Ok((storage, vary))
    }

    /// The recorder that stores a storable answer (without its flight) once its body has
    /// gone by.
    fn record(
        mut self,
        parts: &mut http::response::Parts,
        mut storage: policy::Storage,
        vary: Vec<HeaderName>,
    ) -> Recorder {
        let config = &self.config;
        let response_time = SystemTime::now();
        let initial_age = policy::initial_age(&parts.headers, self.request_time, response_time);
        if config.http.is_none() {
            // cache_page counts its timeout from the moment of storing, whatever the age
            storage.freshness += initial_age;
            if config.patch_headers {
                patch_response_headers(&mut parts.headers, storage.keep);
            }
        }
        let mut stored_headers = parts.headers.clone();
        policy::strip_unstorable(&mut stored_headers, config.replays_cookies());
        for name in &storage.strip {
            stored_headers.remove(name);
        }
        // a response from the entry carries its current age instead
        stored_headers.remove(header::AGE);
        let variant = key::variant_hash(&vary, &self.request_headers);
        let url = std::mem::take(&mut self.url.key);
        config
            .state
            .vary_lists
            .insert(url.clone(), Arc::new(vary.clone()));
        let entry = Entry {
            status: parts.status,
            headers: stored_headers,
            body: Bytes::new(),
            stored_at: response_time,
            initial_age,
            freshness: storage.freshness,
            keep: storage.keep,
            reuse: storage.reuse,
            vary,
            variant: variant.into_owned(),
        };
        Recorder::new(Arc::clone(config), entry, url, None, self.lock.take())
    }

    /// The inner service answered 304 to the conditional request: the stored headers are
    /// updated from it (RFC 9111 §4.3.4), freshness computed anew, and the entry served and
    /// stored again.
    fn revalidated(mut self, update: HeaderMap) -> Response<Bytes> {
        let stale = self.stale.take().expect("only a revalidation gets here");
        let config = Arc::clone(&self.config);
        let (entry, storable) = self.updated(*stale, update);
        if !storable {
            // no longer storable (or no rules to store it by): served this once
            return config.serve(entry, &self.request_headers, self.head, Served::Revalidated);
        }
        let entry = Arc::new(entry);
        // stored before the flight ends: a request that finds no flight finds the entry
        if self.store_allowed {
            config.put(Arc::clone(&entry), &self.url.key, self.lock.take());
        }
        if let Some(flight) = self.flight.take() {
            flight.complete(Arc::clone(&entry));
        }
        let entry = Arc::unwrap_or_clone(entry);
        config.serve(entry, &self.request_headers, self.head, Served::Revalidated)
    }

    /// RFC 9111 §4.3.5: the inner service answered a `HEAD` for a stored `GET` response. A
    /// `200` or `410`, like the stored status, whose validators and `Content-Length` match the
    /// stored ones updates the stored fields and freshness as a `304` would; any other answer
    /// but a server error means the stored response no longer describes the resource, and it
    /// is deleted. The `HEAD`'s own answer passes through.
    fn freshen_with_head(mut self, parts: &mut http::response::Parts) {
        let stale = self
            .stale
            .take()
            .expect("only a HEAD over a stored entry gets here");
        let config = Arc::clone(&self.config);
        let entry_key = key::entry_key(&config.prefix(), &self.url.key, &stale.variant);
        let same = |name: HeaderName| {
            parts
                .headers
                .get(&name)
                .is_none_or(|new| stale.headers.get(&name) == Some(new))
        };
        let length_matches =
            parts.headers.get(header::CONTENT_LENGTH).is_none_or(|new| {
                match stale.headers.get(header::CONTENT_LENGTH) {
                    Some(stored) => stored == new,
                    None => new.to_str().ok() == Some(&stale.body.len().to_string()),
                }
            });
        let describes_the_entry = matches!(parts.status.as_u16(), 200 | 410)
            && parts.status == stale.status
            && same(header::ETAG)
            && same(header::LAST_MODIFIED)
            && length_matches;
        let mut stored = false;
        if describes_the_entry && self.store_allowed {
            let (entry, storable) = self.updated(*stale, parts.headers.clone());
            if storable {
                config.put(Arc::new(entry), &self.url.key, self.lock.take());
                stored = true;
            }
        }
        if !stored && !parts.status.is_server_error() {
            config.discard(entry_key);
        }
        mark_forwarded(
            &config,
            &mut parts.headers,
            config.forwarded_status(Fwd::Stale, stored),
        );
    }

    /// A partial response to a range request: its `Cache-Status`, and the recorder that adds
    /// it to the `stored` pieces when it may be kept.
    fn decide_partial(
        self,
        parts: &mut http::response::Parts,
        stored: Option<(Box<Entry>, Pieces)>,
    ) -> Option<Recorder> {
        let config = Arc::clone(&self.config);
        let fwd = self.fwd;
        crate::observe::cache("miss");
        let recorder = self.partial_recorder(parts, stored);
        let status = match &recorder {
            Ok(_) => config.forwarded_status(fwd, !config.writes_refused()),
            Err(unstored) => {
                tracing::debug!(reason = ?unstored, "partial response not stored");
                crate::observe::cache_not_stored(unstored.as_str());
                config.unstored_status(fwd, *unstored)
            }
        };
        mark_forwarded(&config, &mut parts.headers, status);
        recorder.ok()
    }

    /// How a partial response is kept (RFC 9111 §3.3): under the rules of the complete
    /// response it is part of, when its `Content-Range` gives its place and the whole's
    /// length, and the whole fits the body bound. It joins the `stored` pieces only when
    /// both come from the same representation (§3.4: the same strong validator); its fields
    /// replace the stored ones of the same name, and the others are kept (§3.2).
    fn partial_recorder(
        mut self,
        parts: &mut http::response::Parts,
        stored: Option<(Box<Entry>, Pieces)>,
    ) -> Result<Recorder, NotStored> {
        let config = Arc::clone(&self.config);
        let Some(rules) = config.http.as_ref() else {
            return Err(NotStored::Status);
        };
        let Some((range, complete_len)) = ranges::parse_content_range(&parts.headers) else {
            return Err(NotStored::Status);
        };
        if complete_len > config.max_body as u64 {
            return Err(NotStored::TooLarge);
        }
        let now = SystemTime::now();
        if !parts.headers.contains_key(header::DATE) {
            parts.headers.insert(header::DATE, http_date(now));
        }
        let storage = policy::storable_http(
            self.facts(),
            http::StatusCode::OK,
            &parts.headers,
            rules,
            &config.targeted,
            now,
        )?;
        let initial_age = policy::initial_age(&parts.headers, self.request_time, now);
        if initial_age >= storage.keep {
            return Err(NotStored::StaleOnArrival);
        }
        let vary = directives::vary(&parts.headers).map_err(|()| NotStored::VaryUnreadable)?;
        let variant = key::variant_hash(&vary, &self.request_headers).into_owned();
        let same_representation = |(entry, pieces): &(Box<Entry>, Pieces)| {
            pieces.complete_len == complete_len
                && entry.vary == vary
                && entry.variant == variant
                && ranges::same_strong_validator(&entry.headers, &parts.headers)
        };
        let (mut headers, pieces) = match stored.filter(same_representation) {
            Some((entry, pieces)) => (entry.headers, pieces),
            None => (
                HeaderMap::new(),
                Pieces {
                    complete_len,
                    held: Vec::new(),
                },
            ),
        };
        let mut update = parts.headers.clone();
        policy::strip_unstorable(&mut update, config.replays_cookies());
        replace_fields(&mut headers, &update);
        for name in [header::CONTENT_RANGE, header::CONTENT_LENGTH, header::AGE] {
            headers.remove(name);
        }
        for name in &storage.strip {
            headers.remove(name);
        }
        let url = std::mem::take(&mut self.url.key);
        config
            .state
            .vary_lists
            .insert(url.clone(), Arc::new(vary.clone()));
        let entry = Entry {
            status: http::StatusCode::OK,
            headers,
            body: Bytes::new(),
            stored_at: now,
            initial_age,
            freshness: storage.freshness,
            keep: storage.keep,
            reuse: storage.reuse,
            vary,
            variant,
        };
        Ok(Recorder::partial(config, entry, url, pieces, range))
    }

    /// `stale` with the fields of a response that describes it (a `304`, or a `HEAD`'s `200`)
    /// in place of its own, and its age and freshness computed anew (RFC 9111 §3.2); and
    /// whether it may still be stored.
    fn updated(&self, stale: Entry, mut update: HeaderMap) -> (Entry, bool) {
        let config = &self.config;
        let response_time = SystemTime::now();
        policy::strip_unstorable(&mut update, config.replays_cookies());
        update.remove(header::CONTENT_LENGTH);
        let mut headers = stale.headers.clone();
        replace_fields(&mut headers, &update);
        if !update.contains_key(header::DATE) {
            headers.insert(header::DATE, http_date(response_time));
        }
        let initial_age = policy::initial_age(&headers, self.request_time, response_time);
        headers.remove(header::AGE);
        let storage = config.http.as_ref().map(|rules| {
            policy::storable_http(
                self.facts(),
                stale.status,
                &headers,
                rules,
                &config.targeted,
                response_time,
            )
        });
        let mut entry = Entry {
            headers,
            stored_at: response_time,
            initial_age,
            ..stale
        };
        let Some(Ok(storage)) = storage else {
            return (entry, false);
        };
        for name in &storage.strip {
            entry.headers.remove(name);
        }
        entry.freshness = storage.freshness;
        entry.keep = storage.keep;
        entry.reuse = storage.reuse;
        (entry, true)
    }

    /// The stale entry in place of a failure (`status`, or an error), when `stale-if-error`
    /// allows it (RFC 5861 §4).
    fn stale_on_error(&mut self, status: Option<http::StatusCode>) -> Option<Response<Bytes>> {
        let stale = self.stale.as_ref()?;
        if !policy::stale_if_error(stale.age(SystemTime::now()), stale.freshness, &stale.reuse) {
            return None;
        }
        let stale = self.stale.take()?;
        // the followers waiting on this call serve their stale copies too, at once
        if let Some(flight) = self.flight.take() {
            flight.failed(status);
        }
        Some(self.config.serve(
            *stale,
            &self.request_headers,
            self.head,
            Served::StaleOnError(status),
        ))
    }
}

/// A stored response's fields updated from a newer response's (RFC 9111 §3.2): each field
/// `update` holds replaces every stored line of its name; the others are kept.
fn replace_fields(stored: &mut HeaderMap, update: &HeaderMap) {
    for name in update.keys() {
        stored.remove(name);
    }
    for (name, value) in update {
        stored.append(name.clone(), value.clone());
    }
}

/// The `Cache-Status` member of an answer from the inner service, and `X-Cache: MISS` when
/// the layer adds it.
fn mark_forwarded(config: &Config, headers: &mut HeaderMap, status: HeaderValue) {
    headers.append(CACHE_STATUS, status);
    if config.x_cache {
        headers.insert(X_CACHE, HeaderValue::from_static("MISS"));
    }
}

/// Django's `patch_response_headers`: `max-age` no longer than `ttl`, `Expires` if absent.
fn patch_response_headers(headers: &mut HeaderMap, ttl: std::time::Duration) {
    let existing = directives::cache_control(headers).max_age;
    let max_age = existing.map_or(ttl.as_secs(), |m| m.min(ttl.as_secs()));
    let others: Vec<String> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            v.split(',')
                .map(|d| d.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty() && !d.to_ascii_lowercase().starts_with("max-age"))
        .collect();
    let mut value = others.join(", ");
    if !value.is_empty() {
        value.push_str(", ");
    }
    value.push_str(&format!("max-age={max_age}"));
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    if !headers.contains_key(header::EXPIRES) {
        headers.insert(header::EXPIRES, http_date(SystemTime::now() + ttl));
    }
}

impl Pending {
    /// The client's response once the inner service answered: a revalidated or stale entry,
    /// or the inner response, recorded on its way out when it is to be stored.
    pub(crate) fn answer<ResBody, E>(
        mut self,
        result: Result<Response<ResBody>, E>,
    ) -> Result<Response<ResponseBody<ResBody>>, E>
    where
        ResBody: Body<Data = Bytes>,
    {
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                return match self.stale_on_error(None) {
                    Some(stale) => Ok(stale.map(ResponseBody::full)),
                    None => Err(err),
                };
            }
        };
        // an auth layer inside this one let the request through on a token this layer could
        // not see (a cookie, a header of its own, a query parameter): RFC 9111 §3.5 applies
        if response.extensions().get::<Credentialed>().is_some() {
            self.credentialed = true;
        }
        if self.stale.is_some() {
            let status = response.status();
            if status == http::StatusCode::NOT_MODIFIED {
                let (parts, _) = response.into_parts();
                return Ok(self.revalidated(parts.headers).map(ResponseBody::full));
            }
            if status.is_server_error() {
                if let Some(stale) = self.stale_on_error(Some(status)) {
                    return Ok(stale.map(ResponseBody::full));
                }
                // the entry stands: a failed revalidation says nothing of whether the URL's
                // answers can be stored, and a hit-for-miss memo would send every request in
                // its `stale-while-revalidate` window to wait on the failing origin
                if let Some(flight) = self.flight.take() {
                    flight.failed(Some(status));
                }
            }
        }
        if let Some(partial) = self.partial.take()
            && response.status() == http::StatusCode::PARTIAL_CONTENT
        {
            let (mut parts, body) = response.into_parts();
            let body = match self.decide_partial(&mut parts, partial.stored) {
                Some(recorder) => ResponseBody::tapped(body, Box::new(recorder)),
                None => ResponseBody::inner(body),
            };
            return Ok(Response::from_parts(parts, body));
        }
        let (mut parts, body) = response.into_parts();
        if self.head && self.stale.is_some() {
            self.freshen_with_head(&mut parts);
            return Ok(Response::from_parts(parts, ResponseBody::inner(body)));
        }
        let recorder = self.decide(&mut parts, body.size_hint().exact());
        let body = match recorder {
            Some(recorder) => ResponseBody::tapped(body, Box::new(recorder)),
            None => ResponseBody::inner(body),
        };
        Ok(Response::from_parts(parts, body))
    }
}
