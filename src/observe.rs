//! What the layers count, through the [`metrics`](https://docs.rs/metrics) facade (the
//! `metrics` feature): the application installs the exporter it already uses (Prometheus,
//! StatsD, OpenTelemetry) and these appear beside its own. Without the feature every function
//! here is empty and inlined away.
//!
//! Labels take values from small fixed sets (outcomes, reasons, operation names) or from the
//! configuration (rule names), never from requests: no token, key, path or user id becomes a
//! label, so the number of series stays bounded whatever the traffic.
//!
//! Each decision (auth outcome, cache outcome and reason, rate-limit outcome per rule) is also
//! a `DEBUG` event on the target `tower_redis_http::decision` with the same fields, with or
//! without the feature, inside a `decision` span per layer and request (field `layer`) that
//! covers the layer's store call.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `tower_redis_http_auth_requests_total` | counter | `outcome`: `authenticated`, `open_path`, `anonymous`, `missing`, `malformed`, `invalid`, `rejected`, `store_error` |
//! | `tower_redis_http_cache_requests_total` | counter | `outcome`: `hit`, `stale`, `revalidated`, `miss`, `collapsed`, `store_error`, `flight_slow` (a follower still waiting after the flight wait), `flight_timeout` (one answered at the flight deadline) |
//! | `tower_redis_http_cache_stores_total` | counter | `outcome`: `stored`, `not_stored`; `reason` for `not_stored` (the `Cache-Status` detail, or `remembered`) |
//! | `tower_redis_http_cache_entry_bytes` | histogram | |
//! | `tower_redis_http_cache_lock_wait_seconds` | histogram | |
//! | `tower_redis_http_ratelimit_requests_total` | counter | `rule`; `outcome`: `allowed`, `limited`, `released`, `store_error` |
//! | `tower_redis_http_store_call_seconds` | histogram | `operation` (`GET`, `GCRA script`, ...) |
//! | `tower_redis_http_store_errors_total` | counter | `operation`; `kind`: `timeout`, `connection`, `server`, ... |
//! | `tower_redis_http_store_connections_opened_total` | counter | |
//! | `tower_redis_http_store_script_reloads_total` | counter | |
//! | `tower_redis_http_near_cache_reads_total` | counter | `outcome`: `hit`, `miss` |
//! | `tower_redis_http_near_cache_flushes_total` | counter | (each loss of the tracking connection) |

use std::time::Duration;

#[cfg(feature = "metrics")]
mod on {
    use std::time::Duration;

    pub(crate) fn auth(outcome: &'static str) {
        metrics::counter!("tower_redis_http_auth_requests_total", "outcome" => outcome)
            .increment(1);
    }

    pub(crate) fn cache(outcome: &'static str) {
        metrics::counter!("tower_redis_http_cache_requests_total", "outcome" => outcome)
            .increment(1);
    }

    pub(crate) fn cache_stored(bytes: usize) {
        metrics::counter!("tower_redis_http_cache_stores_total", "outcome" => "stored")
            .increment(1);
        #[allow(clippy::cast_precision_loss)]
        metrics::histogram!("tower_redis_http_cache_entry_bytes").record(bytes as f64);
    }

    pub(crate) fn cache_not_stored(reason: &'static str) {
        metrics::counter!(
            "tower_redis_http_cache_stores_total",
            "outcome" => "not_stored",
            "reason" => reason
        )
        .increment(1);
    }

    pub(crate) fn cache_lock_wait(waited: Duration) {
        metrics::histogram!("tower_redis_http_cache_lock_wait_seconds")
            .record(waited.as_secs_f64());
    }

    pub(crate) fn ratelimit(rule: &str, outcome: &'static str) {
        metrics::counter!(
            "tower_redis_http_ratelimit_requests_total",
            "rule" => rule.to_owned(),
            "outcome" => outcome
        )
        .increment(1);
    }

    pub(crate) fn store_call(operation: &'static str, took: Duration) {
        metrics::histogram!("tower_redis_http_store_call_seconds", "operation" => operation)
            .record(took.as_secs_f64());
    }

    pub(crate) fn store_reconnect() {
        metrics::counter!("tower_redis_http_store_connections_opened_total").increment(1);
    }

    pub(crate) fn script_reload() {
        metrics::counter!("tower_redis_http_store_script_reloads_total").increment(1);
    }

    pub(crate) fn near_cache(outcome: &'static str) {
        metrics::counter!("tower_redis_http_near_cache_reads_total", "outcome" => outcome)
            .increment(1);
    }

    pub(crate) fn near_cache_flush() {
        metrics::counter!("tower_redis_http_near_cache_flushes_total").increment(1);
    }

    pub(crate) fn store_error(operation: &'static str, kind: &'static str) {
        metrics::counter!(
            "tower_redis_http_store_errors_total",
            "operation" => operation,
            "kind" => kind
        )
        .increment(1);
    }
}

#[cfg(not(feature = "metrics"))]
#[allow(clippy::inline_always)]
mod on {
    use std::time::Duration;

    #[inline(always)]
    pub(crate) fn auth(_: &'static str) {}
    #[inline(always)]
    pub(crate) fn cache(_: &'static str) {}
    #[inline(always)]
    pub(crate) fn cache_stored(_: usize) {}
    #[inline(always)]
    pub(crate) fn cache_not_stored(_: &'static str) {}
    #[inline(always)]
    pub(crate) fn cache_lock_wait(_: Duration) {}
    #[inline(always)]
    pub(crate) fn ratelimit(_: &str, _: &'static str) {}
    #[inline(always)]
    pub(crate) fn store_call(_: &'static str, _: Duration) {}
    #[inline(always)]
    pub(crate) fn store_reconnect() {}
    #[inline(always)]
    pub(crate) fn script_reload() {}
    #[inline(always)]
    pub(crate) fn near_cache(_: &'static str) {}
    #[inline(always)]
    pub(crate) fn near_cache_flush() {}
    #[inline(always)]
    pub(crate) fn store_error(_: &'static str, _: &'static str) {}
}

pub(crate) use on::{
    cache_lock_wait, cache_stored, near_cache, near_cache_flush, script_reload, store_call,
    store_error, store_reconnect,
};

/// The decisions are also `DEBUG` events (target `tower_redis_http::decision`) with the same
/// bounded fields, for a tracing subscriber; one level check when nobody listens.
const DECISION: &str = "tower_redis_http::decision";

/// The span a layer's decision about one request runs in: its store call and the decision
/// event (`DEBUG`, target `tower_redis_http::decision`, field `layer`). Disabled, it costs a
/// level check.
pub(crate) fn span(layer: &'static str) -> tracing::Span {
    // nobody listening (no subscriber, or none below INFO): no span at all, which costs a
    // load and a compare; a disabled span still costs about 250 instructions per request
    if tracing::level_filters::LevelFilter::current() < tracing::Level::DEBUG {
        return tracing::Span::none();
    }
    tracing::debug_span!(target: DECISION, "decision", layer)
}

pub(crate) fn auth(outcome: &'static str) {
    tracing::debug!(target: DECISION, layer = "auth", outcome);
    on::auth(outcome);
}

pub(crate) fn cache(outcome: &'static str) {
    tracing::debug!(target: DECISION, layer = "cache", outcome);
    on::cache(outcome);
}

pub(crate) fn cache_not_stored(reason: &'static str) {
    tracing::debug!(target: DECISION, layer = "cache", outcome = "not_stored", reason);
    on::cache_not_stored(reason);
}

pub(crate) fn ratelimit(rule: &str, outcome: &'static str) {
    tracing::debug!(target: DECISION, layer = "ratelimit", rule, outcome);
    on::ratelimit(rule, outcome);
}

/// How often a failure that keeps happening is summed up in the log, per layer and kind; also
/// how long without a failure ends an episode, after which the next failure is logged at once.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// Whether the store's calls are timed: reading the clock twice per call is left out of
/// builds that count nothing.
pub(crate) const TIMES_STORE_CALLS: bool = cfg!(feature = "metrics");
