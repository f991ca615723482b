//! `Retry-After` and the IETF `RateLimit` / `RateLimit-Policy` fields.
//!
//! The fields are those of draft-ietf-httpapi-ratelimit-headers-10.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::store::{RateDecision, RatePolicy};

pub(crate) const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub(crate) const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Whole seconds, rounded up (a client told 0 would retry at once and be refused again).
pub(crate) fn seconds_ceil(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// A rule's `RateLimit-Policy` item, `"name";q=limit;w=window`: fixed at build time, so the
/// hot path only copies it.
pub(crate) fn policy_item(name: &str, policy: &RatePolicy) -> String {
    let mut item = String::with_capacity(name.len() + 32);
    item.push('"');
    item.push_str(name);
    item.push_str("\";q=");
    item.push_str(itoa::Buffer::new().format(policy.limit()));
    item.push_str(";w=");
    item.push_str(itoa::Buffer::new().format(seconds_ceil(policy.window()).max(1)));
    item
}

/// `RateLimit-Policy` for every rule of a layer, joined once at build time.
pub(crate) fn policy_field<'a>(items: impl IntoIterator<Item = &'a str>) -> Option<HeaderValue> {
    let joined = items.into_iter().collect::<Vec<_>>().join(", ");
    HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).ok()
}

/// One rule's state for the headers.
pub(crate) struct Reported<'a> {
    pub(crate) name: &'a str,
    pub(crate) policy_item: &'a str,
    pub(crate) decision: &'a RateDecision,
}

/// The `RateLimit` value for `rules`: `"name";r=remaining;t=reset`, comma-separated.
fn limit_field(rules: &[Reported<'_>]) -> Option<HeaderValue> {
    // written on the stack and copied once into the value: one allocation per response
    let mut value = smallvec::SmallVec::<[u8; 128]>::new();
    let mut numbers = itoa::Buffer::new();
    for (i, rule) in rules.iter().enumerate() {
        if i > 0 {
            value.extend_from_slice(b", ");
        }
        // names are checked at build time to be valid sf-strings without escapes
        value.push(b'"');
        value.extend_from_slice(rule.name.as_bytes());
        value.extend_from_slice(b"\";r=");
        value.extend_from_slice(numbers.format(rule.decision.remaining).as_bytes());
        value.extend_from_slice(b";t=");
        value.extend_from_slice(numbers.format(seconds_ceil(rule.decision.reset)).as_bytes());
    }
    HeaderValue::from_bytes(&value).ok()
}

/// The `RateLimit-Policy` and `RateLimit` values for `rules`, or `None` for no rules.
/// `all_policies` is the precomputed policy field, used when `rules` are all of the layer's.
pub(crate) fn fields(
    rules: &[Reported<'_>],
    all_policies: Option<&HeaderValue>,
) -> Option<(HeaderValue, HeaderValue)> {
    if rules.is_empty() {
        return None;
    }
    let policy = match all_policies {
        Some(all) => all.clone(),
        None => policy_field(rules.iter().map(|rule| rule.policy_item))?,
    };
    Some((policy, limit_field(rules)?))
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
    if let Some((policy, limit)) = fields(rules, None) {
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
    fn fields_follow_the_draft_syntax() {
        let sms = RatePolicy::cooldown(Duration::from_secs(60)).unwrap();
        let api = RatePolicy::fixed_window(100, Duration::from_millis(1500)).unwrap();
        let (sms_item, api_item) = (policy_item("sms", &sms), policy_item("api", &api));
        assert_eq!(sms_item, "\"sms\";q=1;w=60");
        assert_eq!(api_item, "\"api\";q=100;w=2");
        let decision = |remaining, reset_ms| RateDecision {
            allowed: true,
            limit: 100,
            remaining,
            retry_after: None,
            reset: Duration::from_millis(reset_ms),
            ticket: None,
            window_end_ms: None,
        };
        let (first, second) = (decision(0, 59_001), decision(42, 1000));
        let rules = [
            Reported {
                name: "sms",
                policy_item: &sms_item,
                decision: &first,
            },
            Reported {
                name: "api",
                policy_item: &api_item,
                decision: &second,
            },
        ];
        let (policy, limit) = fields(&rules, None).unwrap();
        assert_eq!(policy, "\"sms\";q=1;w=60, \"api\";q=100;w=2");
        assert_eq!(limit, "\"sms\";r=0;t=60, \"api\";r=42;t=1");
        // the precomputed field is used as given
        let all = HeaderValue::from_static("precomputed");
        assert_eq!(fields(&rules, Some(&all)).unwrap().0, "precomputed");
        assert!(fields(&[], None).is_none());
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
