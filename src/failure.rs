//! What a layer does when its store fails, and how the log tells of it without drowning.

use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use crate::observe::SUMMARY_EVERY;
use crate::store::{StoreError, StoreErrorKind};

/// How a layer behaves when the store errors or times out.
///
/// Every layer takes one (`.on_store_error(FailurePolicy::Closed)`); the defaults differ per
/// layer: authentication fails closed, the cache fails open, and the rate
/// limiter decides per rule (cooldowns, which guard a costly side effect, fail closed; fixed
/// windows and GCRA fail open; see
/// [`Rule::on_store_error`](crate::ratelimit::Rule::on_store_error)). Either way the error is logged through [`tracing`] at `WARN` with the layer's name, so a
/// Redis outage is visible even while requests keep flowing.
///
/// An outage does not flood the log: per layer and kind of error, the first failure is logged
/// at once, then one summary at most every 5 seconds says how many failed meanwhile (with
/// the latest error), and a Redis store logs one `INFO` line when its calls succeed again.
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
    /// command timeout so that it never hangs. An outage ends; a configuration the server
    /// refuses ([`StoreErrorKind::Unsupported`](crate::store::StoreErrorKind::Unsupported),
    /// such as a database it does not have) does not, so it is answered as `Closed` is,
    /// whatever the policy: a rate limit or a cache must not be switched off for good by a
    /// typo, with a log line as the only sign.
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

    /// Logs a store error on behalf of `layer` and tells whether the request may go on: never
    /// for a configuration the server refuses
    /// ([`StoreErrorKind::Unsupported`](crate::store::StoreErrorKind::Unsupported)).
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
    /// let misconfigured = StoreError::new(StoreErrorKind::Unsupported, "no database 99");
    /// assert!(!FailurePolicy::Open.handle("ratelimit", &misconfigured));
    /// ```
    #[must_use]
    pub fn handle(self, layer: &'static str, error: &(dyn std::error::Error + 'static)) -> bool {
        let misconfigured = error
            .downcast_ref::<crate::store::StoreError>()
            .is_some_and(|err| err.kind() == crate::store::StoreErrorKind::Unsupported);
        let policy = if misconfigured { Self::Closed } else { self };
        log_store_failure(layer, "store call failed", Some(policy), error);
        policy.is_open()
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

/// The failures of one layer and kind of error, since the latest line about them.
struct Episode {
    layer: &'static str,
    what: &'static str,
    kind: Option<StoreErrorKind>,
    started: Instant,
    last_logged: Instant,
    last_failed: Instant,
    unlogged: u64,
}

/// The episodes under way. A handful at most (layers times kinds), so a list; the lock is
/// taken only when a store call failed, never on the way of a healthy request.
static EPISODES: Mutex<Vec<Episode>> = Mutex::new(Vec::new());

/// Logs a store failure of `layer` at `WARN`: the first of an episode at once, the others as
/// a count in one summary line at most every [`SUMMARY_EVERY`].
pub(crate) fn log_store_failure(
    layer: &'static str,
    what: &'static str,
    policy: Option<FailurePolicy>,
    error: &(dyn std::error::Error + 'static),
) {
    let kind = error.downcast_ref::<StoreError>().map(StoreError::kind);
    let now = Instant::now();
    let summary = {
        let Ok(mut episodes) = EPISODES.lock() else {
            return;
        };
        let found = episodes
            .iter_mut()
            .find(|e| e.layer == layer && e.what == what && e.kind == kind);
        match found {
            Some(episode) if now.duration_since(episode.last_failed) < SUMMARY_EVERY => {
                episode.last_failed = now;
                episode.unlogged += 1;
                if now.duration_since(episode.last_logged) < SUMMARY_EVERY {
                    return;
                }
                episode.last_logged = now;
                let failed = std::mem::take(&mut episode.unlogged);
                Some((failed, now.duration_since(episode.started)))
            }
            found => {
                let fresh = Episode {
                    layer,
                    what,
                    kind,
                    started: now,
                    last_logged: now,
                    last_failed: now,
                    unlogged: 0,
                };
                match found {
                    Some(episode) => *episode = fresh,
                    None => episodes.push(fresh),
                }
                None
            }
        }
    };
    let policy = policy.map(tracing::field::display);
    match summary {
        None => tracing::warn!(layer, policy, error = %ErrorChain(error), "{what}"),
        Some((failed, lasting)) => tracing::warn!(
            layer,
            policy,
            failed,
            for_s = lasting.as_secs(),
            error = %ErrorChain(error),
            "{what}: {failed} more times in the last {}s (the latest error shown)",
            SUMMARY_EVERY.as_secs()
        ),
    }
}

/// A URL or store key as the log shows it: a short digest, never the text, which may carry a
/// token in its query or name a user's page. The same text always gives the same digest, so
/// log lines about one URL can still be matched.
pub(crate) struct Digest<'a>(pub(crate) &'a str);

impl fmt::Display for Digest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.0.as_bytes());
        write!(f, "#")?;
        for byte in &digest[..6] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Digest;

    #[test]
    fn a_digest_shows_no_part_of_the_text_and_is_stable() {
        let url = "http://shop.example/orders?token=s3cret";
        let shown = Digest(url).to_string();
        assert_eq!(shown.len(), 13);
        assert!(shown.starts_with('#'));
        assert!(!shown.contains("s3cret") && !shown.contains("shop"));
        assert_eq!(shown, Digest(url).to_string());
        assert_ne!(shown, Digest("http://shop.example/orders").to_string());
    }
}
