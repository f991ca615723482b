//! Checking a request's rules against the store, in order; a refusal gives back earlier hits.

use std::sync::Arc;

use smallvec::SmallVec;

use super::config::{Config, StoreKey};
use crate::store::{Backend, RateDecision, StoreError};

/// One hit a rule counted.
pub(crate) struct Counted {
    pub(crate) rule: usize,
    /// The full store key (key scheme applied).
    pub(crate) key: StoreKey,
    pub(crate) decision: RateDecision,
}

/// The hits of one request: one per applicable rule, and most layers have one rule, so they
/// stay inline.
pub(crate) type Hits = SmallVec<[Counted; 1]>;

/// The rules that apply to a request, each with its full store key.
pub(crate) type Checks = SmallVec<[(usize, StoreKey); 1]>;

/// What checking the rules found.
pub(crate) enum Outcome {
    Allowed(Hits),
    Denied {
        rule: usize,
        decision: RateDecision,
    },
    /// The store failed on a rule that fails closed: answer 503.
    Unavailable,
}

/// Checking the rules against a store that needs a round trip.
pub(crate) type Check = crate::gate::Check<Outcome>;

/// Gives back `hits`, best effort: a failure to release only leaves a hit counted.
pub(crate) async fn release_all(config: &Config, hits: &[Counted]) {
    give_back(config, &config.store, hits).await;
}

async fn give_back<B: Backend>(config: &Config, store: &B, hits: &[Counted]) {
    for hit in hits {
        let rule = &config.rules[hit.rule];
        match store
            .release_full(rule.key_text(&hit.key), &rule.policy, &hit.decision)
            .await
        {
            Ok(true) => crate::observe::ratelimit(&rule.name, "released"),
            Ok(false) => {}
            Err(err) => {
                crate::observe::ratelimit(&rule.name, "store_error");
                let _ = crate::FailurePolicy::Open.handle("ratelimit", &err);
            }
        }
    }
}

/// Checks every applicable rule in order on `store`; a refusal gives back what earlier rules
/// counted. A rule whose store call fails is skipped when it fails open, and ends the check
/// when it fails closed. Generic over the backend so that the memory store's check, decided
/// at its first poll, carries no Redis future inside it.
async fn check_rules<B: Backend>(config: &Config, store: &B, checks: Checks) -> Outcome {
    let mut counted = Hits::new();
    for (rule, key) in checks {
        let compiled = &config.rules[rule];
        let (policy, name) = (&compiled.policy, &compiled.name);
        let decision = match store.rate_limit_full(compiled.key_text(&key), policy).await {
            Ok(decision) => decision,
            Err(err) => {
                crate::observe::ratelimit(name, "store_error");
                if config.survives(rule, &err) {
                    continue;
                }
                give_back(config, store, &counted).await;
                return Outcome::Unavailable;
            }
        };
        if !decision.allowed {
            crate::observe::ratelimit(name, "limited");
            give_back(config, store, &counted).await;
            return Outcome::Denied { rule, decision };
        }
        crate::observe::ratelimit(name, "allowed");
        counted.push(Counted {
            rule,
            key,
            decision,
        });
    }
    Outcome::Allowed(counted)
}

impl Config {
    /// Whether a request goes on after the store failed on `rule`: the rule's failure
    /// policy, logged.
    pub(crate) fn survives(&self, rule: usize, err: &StoreError) -> bool {
        self.rules[rule].on_store_error.handle("ratelimit", err)
    }

    /// Checks the rules against a store that needs a round trip.
    pub(crate) fn check(self: &Arc<Self>, checks: Checks) -> Check {
        let config = Arc::clone(self);
        Box::pin(async move { check_rules(&config, &config.store, checks).await })
    }

    /// Checks the rules within `call` when the store decides at once (the memory store): the
    /// request then needs neither a boxed future nor a second poll. `None`, with `checks`
    /// untouched, on a store that needs a round trip.
    pub(crate) fn check_now(&self, checks: &mut Checks) -> Option<Outcome> {
        self.store
            .now(|store| check_rules(self, store, std::mem::take(checks)))
    }
}
