//! A cacheable request as the flow carries it: its context, its URL key, how it goes to the
//! inner service, and what its lookup found.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http::header::{self, HeaderName};
use tower_service::Service;

use super::config::Config;
use super::entry::Entry;
use super::policy::RequestRules;
use super::status::Fwd;
use crate::principal::Credentialed;

/// A cacheable request on its way through the layer.
pub(crate) struct Ctx<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) inner: S,
    pub(crate) request: Request<ReqBody>,
    pub(crate) url: String,
    /// The URL's identity in the unstorable-URL memo.
    pub(crate) url_id: u64,
    pub(crate) store_allowed: bool,
    pub(crate) head: bool,
    /// A `GET` with a `Range`: its answer may be a part, never shared as the whole.
    pub(crate) ranged: bool,
    /// With credentials: `Authorization`, or a token the auth layer accepted.
    pub(crate) credentialed: bool,
    pub(crate) rules: RequestRules,
    pub(crate) config: Arc<Config>,
}

impl<S, ReqBody> Ctx<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    /// Whether this request's answer may be shared with the others for its key, so that it
    /// may lead or follow a single flight. A request with `Authorization` never waits on
    /// another: its answer is not shared unless it says `public` (RFC 9111 §3.5), and
    /// requests whose answers cannot be shared must not queue behind one another.
    pub(crate) fn joins_flights(&self) -> bool {
        self.store_allowed && !self.ranged && !self.credentialed
    }

    /// Whether this request may wait on a flight another request leads, though it may not
    /// lead one: a `HEAD` or a range request, answered from the whole entry the leader stores
    /// (nginx's cache lock holds them too). Without it, `Range: bytes=0-` on every request
    /// would stampede a slow origin past single flight.
    pub(crate) fn follows_flights(&self) -> bool {
        self.store_allowed && !self.credentialed
    }
}

/// What a lookup of a variant's entry found.
// Short-lived on the stack: boxing the entry would cost every hit an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Found {
    Entry(Entry),
    Missing,
    /// Stored under another Vary list.
    Outdated,
    Unreadable(super::entry::EntryError),
}

impl Found {
    pub(crate) fn read(stored: Option<Bytes>, vary: &[HeaderName]) -> Self {
        let Some(stored) = stored else {
            return Self::Missing;
        };
        match Entry::decode(&stored) {
            Ok(entry) if entry.vary == vary => Self::Entry(entry),
            Ok(_) => Self::Outdated,
            Err(err) => Self::Unreadable(err),
        }
    }
}

/// A request's URL key, and its identity in the unstorable-URL memo.
pub(crate) struct Url {
    /// Empty when the request went to the handler on the memo, which needs no key.
    pub(crate) key: String,
    pub(crate) id: u64,
}

/// How a request that goes to the inner service got there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Miss {
    pub(crate) fwd: Fwd,
    pub(crate) store_allowed: bool,
    pub(crate) head: bool,
    pub(crate) remembered_unstorable: bool,
    /// A `GET` with a `Range`: an answer other than a whole `200` says nothing of the URL.
    pub(crate) ranged: bool,
    /// With credentials (see [`credentialed`]).
    pub(crate) credentialed: bool,
}

/// Whether a request carries credentials a shared cache must respect (RFC 9111 §3.5):
/// `Authorization`, or a token the auth layer accepted from any source (a cookie, another
/// header, a query parameter), which it marks.
pub(crate) fn credentialed<B>(request: &Request<B>) -> bool {
    request.headers().contains_key(header::AUTHORIZATION)
        || request.extensions().get::<Credentialed>().is_some()
}
