//! The rate-limit scripts on Redis, with the replica wait of durable rules.

use std::sync::Arc;
use std::time::Duration;

use crate::store::rate::{
    PolicyKind, cooldown_decision, gcra_decision, new_ticket, window_decision,
};
use crate::store::{RateDecision, RatePolicy, StoreError};

use super::classify::Retry;
use super::handle::RedisStore;
use super::scripts::{FIXED_WINDOW, GCRA};

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
            let held_ms: i64 = self
                .transport
                .call(
                    "cooldown flag",
                    Retry::OnDroppedConnection,
                    redis::cmd("PTTL").arg(key),
                )
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
            .run_step::<(i64, i64, i64)>(
                policy,
                "fixed window script",
                Retry::Never,
                FIXED_WINDOW.key(key).arg(limit).arg(window_ms),
                |(count, _, _)| *count > 0,
            )
            .await?;
        let (count, ttl_ms, window_end_ms) = step.value;
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
