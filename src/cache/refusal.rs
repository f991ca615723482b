//! Why the cache answers a request by itself, and the answer it gives by default.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};

/// A replacement for the answers the cache gives by itself.
pub(crate) type RefusalFn = Arc<dyn Fn(&CacheRefusal) -> Response<Bytes> + Send + Sync>;

/// Why the cache answers a request by itself instead of forwarding it.
///
/// # Example
///
/// ```
/// use tower_redis_http::cache::CacheRefusal;
///
/// assert_eq!(CacheRefusal::OnlyIfCached.status(), 504);
/// assert_eq!(CacheRefusal::StoreUnavailable.response().status(), 503);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheRefusal {
    /// The store failed and the layer fails closed ([`FailurePolicy::Closed`](crate::FailurePolicy::Closed)): 503.
    StoreUnavailable,
    /// The request said `only-if-cached` and nothing stored satisfies it (RFC 9111
    /// §5.2.1.7): 504.
    OnlyIfCached,
    /// Another request for the same page was still waiting on the origin when the
    /// [single flight's deadline](super::ResponseCacheBuilder::single_flight_deadline) passed, and no
    /// stale copy may be served: 504.
    OriginTooSlow,
}

impl CacheRefusal {
    /// The status of the default answer.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::cache::CacheRefusal;
    ///
    /// assert_eq!(CacheRefusal::StoreUnavailable.status(), 503);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::OnlyIfCached | Self::OriginTooSlow => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The message of the default answer.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::cache::CacheRefusal;
    ///
    /// assert_eq!(CacheRefusal::StoreUnavailable.detail(), "The cache is temporarily unavailable.");
    /// ```
    #[must_use]
    pub fn detail(&self) -> &'static str {
        match self {
            Self::StoreUnavailable => "The cache is temporarily unavailable.",
            Self::OnlyIfCached => "No stored response satisfies only-if-cached.",
            Self::OriginTooSlow => "The origin did not answer this page in time.",
        }
    }

    /// The default answer: [`status`](Self::status) and `{"detail": "<detail>"}`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::cache::CacheRefusal;
    ///
    /// let response = CacheRefusal::OnlyIfCached.response();
    /// assert_eq!(response.headers()["content-type"], "application/json");
    /// ```
    #[must_use]
    pub fn response(&self) -> Response<Bytes> {
        crate::json::detail(self.status(), self.detail())
    }
}
