//! `Retry-After` and the IETF `RateLimit` / `RateLimit-Policy` fields
//! (draft-ietf-httpapi-ratelimit-headers-10).

use std::fmt::Write;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::store::{RateDecision, RatePolicy};

pub(crate) const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub(crate) const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Whole seconds, rounded up (a client told 0 would retry at once and be refused again).
pub(crate) fn seconds_ceil(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// One rule's state for the headers.
pub(crate) struct Reported<'a> {
    pub(crate) name: &'a str,
    pub(crate) policy: &'a RatePolicy,
    pub(crate) decision: &'a RateDecision,
}

/// The `RateLimit-Policy` and `RateLimit` values for `rules`, or `None` for no rules.
pub(crate) fn fields(rules: &[Reported<'_>]) -> Option<(HeaderValue, HeaderValue)> {
    if rules.is_empty() {
        return None;
    }
    // sized up front: these are built on every allowed request
    let capacity = rules.iter().map(|rule| rule.name.len() + 32).sum();
    let (mut policy, mut limit) = (
        String::with_capacity(capacity),
        String::with_capacity(capacity),
    );
    for (i, rule) in rules.iter().enumerate() {
        let separator = if i == 0 { "" } else { ", " };
        // names are checked at build time to be valid sf-strings without escapes
        let _ = write!(
            policy,
            "{separator}\"{}\";q={};w={}",
            rule.name,
            rule.policy.limit(),
            seconds_ceil(rule.policy.window()).max(1)
        );
        let _ = write!(
            limit,
            "{separator}\"{}\";r={};t={}",
            rule.name,
            rule.decision.remaining,
            seconds_ceil(rule.decision.reset)
        );
    }
    Some((
        HeaderValue::from_str(&policy).ok()?,
        HeaderValue::from_str(&limit).ok()?,
    ))
}

/// Adds `RateLimit-Policy` and `RateLimit` for `rules`, and `Retry-After` when given.
pub(crate) fn apply(
    headers: &mut HeaderMap,
    rules: &[Reported<'_>],
    retry_after: Option<Duration>,
) {
    if let Some(wait) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds_ceil(wait).max(1)));
    }
    if let Some((policy, limit)) = fields(rules) {
        headers.insert(RATELIMIT_POLICY, policy);
        headers.insert(RATELIMIT, limit);
    }
}

/// Whether `name` can stand in a structured-field string as is.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(seconds_ceil(Duration::ZERO), 0);
        assert_eq!(seconds_ceil(Duration::from_millis(1)), 1);
        assert_eq!(seconds_ceil(Duration::from_millis(59_001)), 60);
        assert_eq!(seconds_ceil(Duration::from_secs(60)), 60);
    }

    #[test]
    fn names_must_be_plain_sf_strings() {
        assert!(valid_name("sms per phone"));
        assert!(!valid_name(""));
        assert!(!valid_name("a\"b"));
        assert!(!valid_name("a\\b"));
        assert!(!valid_name("é"));
    }
}
