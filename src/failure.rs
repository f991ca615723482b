//! What a layer does when its store fails.

use std::fmt;

/// How a layer behaves when the store errors or times out.
///
/// Every layer takes one (`.on_store_error(FailurePolicy::Closed)`); the defaults differ per
/// layer: authentication fails closed, the cache fails open, and the rate
/// limiter decides per rule (cooldowns, which guard a costly side effect, fail closed; fixed
/// windows and GCRA fail open; see
/// [`Rule::on_store_error`](crate::ratelimit::Rule::on_store_error)). Either way the error is logged through [`tracing`] at `WARN` with the layer's name, so a
/// Redis outage is visible even while requests keep flowing.
///
/// # Example
///
/// ```
/// use tower_redis_http::FailurePolicy;
///
/// let policy = FailurePolicy::default();
/// assert_eq!(policy, FailurePolicy::Open);
/// assert!(policy.is_open());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Log the error and carry on as if the store held nothing: an unknown token, a cache miss,
    /// a request under its limit. This is django-redis's `IGNORE_EXCEPTIONS`, bounded by the
    /// command timeout so that it never hangs.
    #[default]
    Open,
    /// Log the error and answer `503 Service Unavailable` without calling the inner service.
    Closed,
}

impl FailurePolicy {
    /// Whether requests go on when the store fails.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::FailurePolicy;
    ///
    /// assert!(!FailurePolicy::Closed.is_open());
    /// ```
    #[must_use]
    pub fn is_open(self) -> bool {
        matches!(self, Self::Open)
    }

    /// Logs a store error on behalf of `layer` and tells whether the request may go on.
    ///
    /// Layers call this at the one place where a store call failed, so every layer logs store
    /// failures with the same fields (`layer`, `policy`, `error`).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::FailurePolicy;
    /// use tower_redis_http::store::{StoreError, StoreErrorKind};
    ///
    /// let err = StoreError::new(StoreErrorKind::Timeout, "GET took too long");
    /// assert!(FailurePolicy::Open.handle("cache", &err));
    /// assert!(!FailurePolicy::Closed.handle("auth", &err));
    /// ```
    #[must_use]
    pub fn handle(self, layer: &'static str, error: &(dyn std::error::Error + 'static)) -> bool {
        tracing::warn!(layer, policy = %self, error = %ErrorChain(error), "store call failed");
        self.is_open()
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "fail open",
            Self::Closed => "fail closed",
        })
    }
}

/// Formats an error with its `source()` chain, `outer: inner: root`.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}
