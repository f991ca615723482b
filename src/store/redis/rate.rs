//! The rate-limit scripts on Redis, with the replica wait of durable rules.

use std::sync::Arc;
use std::time::Duration;

use crate::store::rate::{
    PolicyKind, cooldown_decision, gcra_decision, new_ticket, window_decision,
};
use crate::store::{RateDecision, RatePolicy, StoreError, StoreErrorKind};

use super::classify::Retry;
use super::classify::unexpected_reply;
use super::handle::RedisStore;
use super::replicated::{Acknowledged, GIVE_BACK_FOR, not_replicated, wait_unanswered};
use super::request::Request;
use super::scripts::{FIXED_WINDOW, GCRA, RELEASE};

impl RedisStore {
    /// One rate-limit step under `policy`: a cooldown's flag, a window's count or GCRA's
    /// time, set or refused in one atomic call.
    pub(super) async fn rate_limit_step(
        &self,
        key: &str,
        policy: &RatePolicy,
    ) -> Result<RateDecision, StoreError> {
        match policy.kind() {
            PolicyKind::Cooldown { interval_ms } => self.cooldown(key, policy, interval_ms).await,
            PolicyKind::FixedWindow { limit, window_ms } => {
                self.fixed_window(key, policy, limit, window_ms).await
            }
            PolicyKind::Gcra {
                emission_us,
                tolerance_us,
                burst,
            } => {
                self.gcra(key, policy, emission_us, tolerance_us, burst)
                    .await
            }
        }
    }

    /// A send flag: set when absent, for `interval_ms`.
    async fn cooldown(
        &self,
        key: &str,
        policy: &RatePolicy,
        interval_ms: u64,
    ) -> Result<RateDecision, StoreError> {
        // A flag that waits for a replica is set over the store's lane, which a `WAIT`
        // blocks while a replica is slow: a hit the flag already refuses is answered
        // from the pool first, so refusals never queue behind another hit's wait.
        if self.may_wait_for_replica(policy) {
            // the pool's connection, never the lane, whatever the store's durability
            let held = Request::from(redis::cmd("PTTL").arg(key));
            let held_ms: i64 = self
                .transport
                .send("cooldown flag", Retry::OnDroppedConnection, |conn| {
                    held.send(conn)
                })
                .await?;
            if let Ok(held_ms) = u64::try_from(held_ms)
                && held_ms > 0
            {
                return Ok(cooldown_decision(interval_ms, Some(held_ms), new_ticket()));
            }
        }
        let ticket = new_ticket();
        let ticket_text: &str = &ticket;
        // A transaction, not a script: SET NX, PTTL and GET are all a send flag
        // needs, and MULTI/EXEC costs Redis a fraction of a script call. The GET makes
        // the step safe to send twice: when a dropped connection lost the reply to a
        // SET that landed, the retry finds the flag holding this hit's own ticket and
        // answers "allowed" instead of refusing the request its own flag.
        let step = self
            .run_step::<(Option<String>, i64, Option<String>)>(
                policy,
                "cooldown flag",
                Retry::OnDroppedConnection,
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(key)
                    .arg(ticket_text)
                    .arg("NX")
                    .arg("PX")
                    .arg(interval_ms)
                    .cmd("PTTL")
                    .arg(key)
                    .cmd("GET")
                    .arg(key),
                |(set, _, holder)| set.is_some() || holder.as_deref() == Some(ticket_text),
            )
            .await?;
        let (set, ttl_ms, holder) = &step.value;
        if set.is_some() || holder.as_deref() == Some(ticket_text) {
            let mut decision = cooldown_decision(interval_ms, None, Arc::clone(&ticket));
            if let Ok(ttl_ms) = u64::try_from(*ttl_ms) {
                decision.reset = Duration::from_millis(ttl_ms);
            }
            return self.kept(key, policy, decision, step.acknowledged).await;
        }
        let ttl_ms = *ttl_ms;
        let ttl_ms = match u64::try_from(ttl_ms) {
            Ok(ttl_ms) => ttl_ms,
            // -1: a flag someone stored without expiry would block forever; -2: it
            // expired between the two commands. Either way: one interval from now.
            Err(_) => {
                if ttl_ms == -1 {
                    self.call::<i64>(
                        "cooldown flag expiry",
                        Retry::OnDroppedConnection,
                        redis::cmd("PEXPIRE").arg(key).arg(interval_ms),
                    )
                    .await?;
                }
                interval_ms
            }
        };
        Ok(cooldown_decision(interval_ms, Some(ttl_ms), ticket))
    }

    /// A fixed window's count, taken when below `limit`.
    async fn fixed_window(
        &self,
        key: &str,
        policy: &RatePolicy,
        limit: u64,
        window_ms: u64,
    ) -> Result<RateDecision, StoreError> {
        let step = self
            .run_step::<WindowStep>(
                policy,
                "fixed window script",
                Retry::Never,
                FIXED_WINDOW.key(key).arg(limit).arg(window_ms),
                |step| step.count > 0,
            )
            .await?;
        let WindowStep {
            count,
            ttl_ms,
            window_end_ms,
        } = step.value;
        // the count after an allowed hit, or minus the count a denied one found
        let allowed = count > 0;
        let mut decision = window_decision(
            limit,
            allowed,
            count.unsigned_abs(),
            u64::try_from(ttl_ms).unwrap_or(window_ms),
        );
        decision.window_end_ms = allowed.then(|| u64::try_from(window_end_ms).ok()).flatten();
        self.kept(key, policy, decision, step.acknowledged).await
    }

    /// GCRA's theoretical arrival time, moved on when the hit conforms.
    async fn gcra(
        &self,
        key: &str,
        policy: &RatePolicy,
        emission_us: u64,
        tolerance_us: u64,
        burst: u64,
    ) -> Result<RateDecision, StoreError> {
        let step = self
            .run_step::<i64>(
                policy,
                "GCRA script",
                Retry::Never,
                GCRA.key(key).arg(emission_us).arg(tolerance_us),
                |ttl_us| *ttl_us > 0,
            )
            .await?;
        // the new TTL of an allowed hit, or minus the current TTL for a denied one
        let ttl_us = step.value;
        let decision = gcra_decision(
            emission_us,
            tolerance_us,
            burst,
            ttl_us > 0,
            ttl_us.unsigned_abs(),
        );
        self.kept(key, policy, decision, step.acknowledged).await
    }
}

impl RedisStore {
    /// `decision`, unless its hit was allowed and did not reach a replica in time. A policy
    /// whose requests go on whatever the store says
    /// ([`keeps_unreplicated_hits`](RatePolicy::keeps_unreplicated_hits)) keeps the hit on the
    /// master and answers the decision: limiting as strict as [`Durability::Master`], never
    /// less. Otherwise the hit is given back (a send flag a failover may lose is not one to
    /// rely on, and the client may try again) and the call fails: as not replicated when the
    /// master answered the wait, as a timeout when it did not, whose give-back goes on in the
    /// background rather than cost the request a second timeout.
    pub(super) async fn kept(
        &self,
        key: &str,
        policy: &RatePolicy,
        decision: RateDecision,
        acknowledged: Acknowledged,
    ) -> Result<RateDecision, StoreError> {
        if acknowledged == Acknowledged::Yes {
            return Ok(decision);
        }
        if policy.keeps_unreplicated_hits() {
            crate::observe::store_error("rate-limit step", StoreErrorKind::NotReplicated.label());
            return Ok(decision);
        }
        if acknowledged == Acknowledged::Short {
            if let Err(err) = self.give_back(key, policy, &decision).await {
                tracing::warn!(error = %err, "an unreplicated rate-limit hit could not be given back");
            }
            return Err(not_replicated("rate-limit step"));
        }
        self.give_back_later(key, policy, decision);
        Err(wait_unanswered("rate-limit step"))
    }

    /// Gives `decision`'s hit back in the background, trying again while the master does not
    /// answer (a stall outlasts one timeout), for as long as the hit itself would count.
    pub(super) fn give_back_later(&self, key: &str, policy: &RatePolicy, decision: RateDecision) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, key, policy) = (self.clone(), key.to_owned(), *policy);
        runtime.spawn(async move {
            let gives_up = tokio::time::Instant::now() + decision.reset.min(GIVE_BACK_FOR);
            loop {
                match store.give_back(&key, &policy, &decision).await {
                    Ok(_) => return,
                    Err(err) if tokio::time::Instant::now() >= gives_up => {
                        tracing::warn!(error = %err, "an unreplicated rate-limit hit could not be given back");
                        return;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        });
    }

    /// [`rate_limit_full`](Backend::rate_limit_full) for a hit that may wait for a replica:
    /// run in a task of its own, so that a request dropped during the wait (its client gone,
    /// an outer timeout) does not leave its hit counted for a request that never went on: the
    /// task gives it back.
    pub(super) async fn rate_limit_durably(
        &self,
        key: &str,
        policy: &RatePolicy,
    ) -> Result<RateDecision, StoreError> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Box::pin(self.rate_limit_step(key, policy)).await;
        };
        let (store, owned_key, owned_policy) = (self.clone(), key.to_owned(), *policy);
        let (answer, answered) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let decided = store.rate_limit_step(&owned_key, &owned_policy).await;
            if let Err(Ok(decision)) = answer.send(decided)
                && decision.allowed
            {
                tracing::debug!(
                    "a request went away while its hit waited for a replica; given back"
                );
                let _ = store.give_back(&owned_key, &owned_policy, &decision).await;
            }
        });
        answered.await.unwrap_or_else(|_| {
            Err(unexpected_reply(
                "rate-limit step",
                "no answer from its task",
            ))
        })
    }

    /// Gives `decision`'s hit back ([`Store::release`](crate::store::Store::release) on a
    /// full key): the flag taken, the count or the time added, as the policy counted it.
    pub(super) async fn give_back(
        &self,
        key: &str,
        policy: &RatePolicy,
        decision: &RateDecision,
    ) -> Result<bool, StoreError> {
        if !decision.allowed {
            return Ok(false);
        }
        let (kind, argument, window_ms) = match policy.kind() {
            PolicyKind::Cooldown { .. } => match &decision.ticket {
                Some(ticket) => ("cooldown", ticket.to_string(), 0),
                None => return Ok(false),
            },
            // the window the hit was counted in, so a give-back never lands in a later one
            PolicyKind::FixedWindow { window_ms, .. } => (
                "window",
                decision
                    .window_end_ms
                    .map(|end| end.to_string())
                    .unwrap_or_default(),
                window_ms,
            ),
            PolicyKind::Gcra { emission_us, .. } => ("gcra", emission_us.to_string(), 0),
        };
        let argument = argument.as_str();
        let released: i64 = self
            .call(
                "release script",
                Retry::Never,
                RELEASE.key(key).arg(kind).arg(argument).arg(window_ms),
            )
            .await?;
        Ok(released == 1)
    }
}

/// The fixed-window script's reply, `"count ttl end"` (see `fixed_window.lua`).
struct WindowStep {
    count: i64,
    ttl_ms: i64,
    window_end_ms: i64,
}

impl redis::FromRedisValue for WindowStep {
    fn from_redis_value(value: redis::Value) -> Result<Self, redis::ParsingError> {
        Self::from_redis_value_ref(&value)
    }

    fn from_redis_value_ref(value: &redis::Value) -> Result<Self, redis::ParsingError> {
        let redis::Value::BulkString(text) = value else {
            return Err(format!("the fixed window script answered {value:?}").into());
        };
        let unexpected = || format!("the fixed window script answered {text:?}");
        let text = std::str::from_utf8(text).map_err(|_| unexpected())?;
        let mut numbers = text.split(' ').map(str::parse::<i64>);
        match (
            numbers.next(),
            numbers.next(),
            numbers.next(),
            numbers.next(),
        ) {
            (Some(Ok(count)), Some(Ok(ttl_ms)), Some(Ok(window_end_ms)), None) => Ok(Self {
                count,
                ttl_ms,
                window_end_ms,
            }),
            _ => Err(unexpected().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use redis::{FromRedisValue, Value};

    use super::WindowStep;

    #[test]
    fn the_window_reply_is_three_integers_in_one_string() {
        let parse = |value: Value| {
            WindowStep::from_redis_value(value)
                .map(|step| (step.count, step.ttl_ms, step.window_end_ms))
                .map_err(|_| ())
        };
        let text = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        assert_eq!(
            parse(text("3 59000 1765000000000")),
            Ok((3, 59_000, 1_765_000_000_000))
        );
        assert_eq!(parse(text("-4 10 20")), Ok((-4, 10, 20)));
        for wrong in ["", "1 2", "1 2 3 4", "1  2 3", "a 2 3", "1 2 3.5"] {
            assert_eq!(parse(text(wrong)), Err(()), "{wrong:?}");
        }
        let array = Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)]);
        assert_eq!(parse(array), Err(()));
    }
}
