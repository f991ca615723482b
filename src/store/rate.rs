//! The rate-limit policies (send flag, fixed window, GCRA) and the decisions both backends make from their state.

use std::time::Duration;

use super::Durability;
use crate::ConfigError;

/// What [`Store::rate_limit`](super::Store::rate_limit) enforces on one key.
///
/// Every policy is decided in one atomic step, in one Redis round trip:
///
/// - **cooldown** (the SMS send flag): at most one hit per interval, Redis `SET NX PX`;
/// - **fixed window**: at most `limit` hits in a window that starts with the first hit (the
///   django-ratelimit rates `5/m`, `100/h`);
/// - **GCRA**: `limit` hits per `period`, with bursts of up to `burst` extra hits, the way
///   redis-cell's `CL.THROTTLE key burst limit period` counts them.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_redis_http::store::RatePolicy;
///
/// let sms = RatePolicy::cooldown(Duration::from_secs(60))?;
/// let api = RatePolicy::fixed_window(100, Duration::from_secs(3600))?;
/// let smooth = RatePolicy::gcra(30, Duration::from_secs(60), 15)?;
/// assert_eq!(smooth.limit(), 16);
/// # Ok::<(), tower_redis_http::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RatePolicy {
    kind: PolicyKind,
    /// The room of the memory store's rate-limit share its keys are counted in: one per
    /// rule, so that one rule's keys never fill another's (see `MemoryStore`).
    room: Option<u64>,
    /// What an allowed hit's write must reach before it counts.
    durability: Durability,
    /// Whether a hit that did not reach a replica stays counted on the master (the request
    /// goes on whatever the store says) rather than being given back.
    keep_unreplicated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PolicyKind {
    Cooldown {
        interval_ms: u64,
    },
    FixedWindow {
        limit: u64,
        window_ms: u64,
    },
    /// Times in microseconds: the emission interval `T` and the tolerance `tau = T * (burst + 1)`.
    Gcra {
        emission_us: u64,
        tolerance_us: u64,
        burst: u64,
    },
}

fn millis(option: &'static str, duration: Duration) -> Result<u64, ConfigError> {
    if duration > super::MAX_EXPIRY {
        return Err(ConfigError::InvalidOption {
            option,
            reason: format!(
                "{duration:?} is past the longest a store keeps a key, a hundred years"
            ),
        });
    }
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(ConfigError::InvalidOption {
            option,
            reason: format!("must be at least 1ms, got {duration:?}"),
        });
    }
    Ok(ms)
}

impl RatePolicy {
    /// This policy with its keys counted in `room` of the memory store's rate-limit share.
    pub(crate) fn in_room(self, room: u64) -> Self {
        Self {
            room: Some(room),
            ..self
        }
    }

    /// The room its keys are counted in, when one was given.
    pub(crate) fn room(&self) -> Option<u64> {
        self.room
    }

    /// At most one hit per `interval`: the send flag.
    ///
    /// # Errors
    ///
    /// When `interval` is shorter than a millisecond.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::store::RatePolicy;
    ///
    /// assert!(RatePolicy::cooldown(Duration::ZERO).is_err());
    /// ```
    pub fn cooldown(interval: Duration) -> Result<Self, ConfigError> {
        Ok(Self {
            kind: PolicyKind::Cooldown {
                interval_ms: millis("interval", interval)?,
            },
            room: None,
            // a send flag lost in a failover lets a second code out inside the cooldown
            durability: Durability::ReplicaIfAny,
            keep_unreplicated: false,
        })
    }

    /// At most `limit` hits per `window`, the window starting at the first hit. A limit of 0
    /// refuses every hit.
    ///
    /// # Errors
    ///
    /// When `window` is shorter than a millisecond.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::store::RatePolicy;
    ///
    /// let five_a_minute = RatePolicy::fixed_window(5, Duration::from_secs(60))?;
    /// assert_eq!(five_a_minute.window(), Duration::from_secs(60));
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    pub fn fixed_window(limit: u64, window: Duration) -> Result<Self, ConfigError> {
        Ok(Self {
            kind: PolicyKind::FixedWindow {
                limit,
                window_ms: millis("window", window)?,
            },
            room: None,
            durability: Durability::Master,
            keep_unreplicated: false,
        })
    }

    /// `limit` hits per `period` on average, with up to `burst` hits beyond the steady rate at
    /// once (so `burst + 1` hits in a row from rest).
    ///
    /// # Errors
    ///
    /// When `limit` is 0, `period` is shorter than a microsecond per hit, or the tolerance
    /// overflows.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::store::RatePolicy;
    ///
    /// assert!(RatePolicy::gcra(0, Duration::from_secs(1), 0).is_err());
    /// ```
    pub fn gcra(limit: u64, period: Duration, burst: u64) -> Result<Self, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::InvalidOption {
                option: "limit",
                reason: "a GCRA rate needs at least one hit per period".to_owned(),
            });
        }
        let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
        let emission_us = period_us / limit;
        if emission_us == 0 {
            return Err(ConfigError::InvalidOption {
                option: "period",
                reason: format!("{limit} hits per {period:?} is more than one per microsecond"),
            });
        }
        // Lua numbers are doubles: keep every time below 2^53 µs (285 years) so the script and
        // the memory store compute the same integers.
        let tolerance_us = burst
            .checked_add(1)
            .and_then(|hits| hits.checked_mul(emission_us))
            .filter(|&tau| tau < 1 << 52)
            .ok_or_else(|| ConfigError::InvalidOption {
                option: "burst",
                reason: format!("burst {burst} at this rate spans more than a century"),
            })?;
        Ok(Self {
            kind: PolicyKind::Gcra {
                emission_us,
                tolerance_us,
                burst,
            },
            room: None,
            durability: Durability::Master,
            keep_unreplicated: false,
        })
    }

    pub(crate) fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// This policy with its allowed hits under `durability`: see [`Durability`]. A cooldown
    /// waits for a replica when the server has one ([`Durability::ReplicaIfAny`]); a fixed
    /// window and GCRA do not ([`Durability::Master`]).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::store::{Durability, RatePolicy};
    ///
    /// let sms = RatePolicy::cooldown(Duration::from_secs(60))?;
    /// assert_eq!(sms.durability(), Durability::ReplicaIfAny);
    /// let strict = sms.with_durability(Durability::Replica);
    /// assert_eq!(strict.durability(), Durability::Replica);
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    #[must_use]
    pub fn with_durability(self, durability: Durability) -> Self {
        Self { durability, ..self }
    }

    /// What an allowed hit's write must reach before it counts.
    #[must_use]
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// This policy for a rule whose requests go on when the store fails (it fails open): an
    /// allowed hit that no replica acknowledged stays counted on the master and is answered
    /// as allowed, since giving it back would let the next request through uncounted, and
    /// the rule would stop limiting whenever a replica lags.
    pub(crate) fn keeping_unreplicated_hits(self) -> Self {
        Self {
            keep_unreplicated: true,
            ..self
        }
    }

    /// See [`keeping_unreplicated_hits`](Self::keeping_unreplicated_hits).
    pub(crate) fn keeps_unreplicated_hits(&self) -> bool {
        self.keep_unreplicated
    }

    /// How many hits the policy allows at once: 1 for a cooldown, the window's limit, or
    /// `burst + 1` for GCRA (what `RateLimit-Policy`'s `q` reports).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::store::RatePolicy;
    ///
    /// assert_eq!(RatePolicy::cooldown(Duration::from_secs(60))?.limit(), 1);
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    #[must_use]
    pub fn limit(&self) -> u64 {
        match self.kind {
            PolicyKind::Cooldown { .. } => 1,
            PolicyKind::FixedWindow { limit, .. } => limit,
            PolicyKind::Gcra { burst, .. } => burst + 1,
        }
    }

    /// The policy's window: the interval, the window, or the time to earn the whole burst back.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::store::RatePolicy;
    ///
    /// let policy = RatePolicy::gcra(1, Duration::from_secs(2), 4)?;
    /// assert_eq!(policy.window(), Duration::from_secs(10));
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    #[must_use]
    pub fn window(&self) -> Duration {
        match self.kind {
            PolicyKind::Cooldown { interval_ms } => Duration::from_millis(interval_ms),
            PolicyKind::FixedWindow { window_ms, .. } => Duration::from_millis(window_ms),
            PolicyKind::Gcra { tolerance_us, .. } => Duration::from_micros(tolerance_us),
        }
    }
}

/// The answer of [`Store::rate_limit`](super::Store::rate_limit).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_redis_http::store::{MemoryStore, RatePolicy, Store};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// let policy = RatePolicy::cooldown(Duration::from_secs(60))?;
/// assert!(store.rate_limit("sms:13800138000", &policy).await?.allowed);
///
/// let again = store.rate_limit("sms:13800138000", &policy).await?;
/// assert!(!again.allowed);
/// assert!(again.retry_after.unwrap() <= Duration::from_secs(60));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RateDecision {
    /// Whether this hit is allowed (and was counted).
    pub allowed: bool,
    /// The policy's [`limit`](RatePolicy::limit).
    pub limit: u64,
    /// Hits still allowed right now after this one.
    pub remaining: u64,
    /// For a denied hit, how long until a hit would be allowed.
    pub retry_after: Option<Duration>,
    /// How long until the key is back at rest (the full quota available again).
    pub reset: Duration,
    /// For an allowed cooldown hit, the value its flag holds, so only it can release the flag.
    pub(crate) ticket: Option<std::sync::Arc<str>>,
    /// For an allowed fixed-window hit, when the window it was counted in ends, in ms on the
    /// store's clock (Unix time on the Redis server), so that giving it back never takes a
    /// hit off a later window. `None` when the store does not say: then it is given back to
    /// whatever window is current.
    pub(crate) window_end_ms: Option<u64>,
}

/// A value no other hit in any process holds: a per-process random prefix and a counter.
pub(crate) fn new_ticket() -> std::sync::Arc<str> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PROCESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        let mut random = [0u8; 8];
        // a failed OS RNG only makes tickets guessable, never shared within this process
        let _ = getrandom::fill(&mut random);
        crate::hex::hex_digest(&random)
    });
    // written on the stack and copied once: a send flag's hit makes one of these
    let mut digits = itoa::Buffer::new();
    let count = digits.format(NEXT.fetch_add(1, Ordering::Relaxed));
    let mut ticket = smallvec::SmallVec::<[u8; 48]>::new();
    ticket.extend_from_slice(process.as_bytes());
    ticket.push(b'-');
    ticket.extend_from_slice(count.as_bytes());
    std::sync::Arc::from(std::str::from_utf8(&ticket).expect("hex digits, a dash and digits"))
}

/// A cooldown decision, given the remaining life of an existing flag (`None` when absent).
pub(crate) fn cooldown_decision(
    interval_ms: u64,
    existing_ttl_ms: Option<u64>,
    ticket: std::sync::Arc<str>,
) -> RateDecision {
    match existing_ttl_ms {
        None => RateDecision {
            allowed: true,
            limit: 1,
            remaining: 0,
            retry_after: None,
            reset: Duration::from_millis(interval_ms),
            ticket: Some(ticket),
            window_end_ms: None,
        },
        Some(ttl_ms) => RateDecision {
            allowed: false,
            limit: 1,
            remaining: 0,
            retry_after: Some(Duration::from_millis(ttl_ms)),
            reset: Duration::from_millis(ttl_ms),
            ticket: None,
            window_end_ms: None,
        },
    }
}

/// A fixed-window decision: `count` is the counter after this hit if allowed, or as found if
/// denied; `ttl_ms` the window's remaining time.
pub(crate) fn window_decision(limit: u64, allowed: bool, count: u64, ttl_ms: u64) -> RateDecision {
    let ttl = Duration::from_millis(ttl_ms);
    RateDecision {
        allowed,
        limit,
        remaining: limit.saturating_sub(count),
        retry_after: (!allowed).then_some(ttl),
        reset: ttl,
        ticket: None,
        window_end_ms: None,
    }
}

/// The outcome of one GCRA step: the decision and, when allowed, the new theoretical arrival
/// time to store with a TTL of `new_tat - now`.
pub(crate) struct GcraStep {
    pub(crate) decision: RateDecision,
    pub(crate) new_tat_us: Option<u64>,
}

/// One GCRA step at `now_us` against the stored theoretical arrival time, redis-cell's
/// arithmetic (`src/cell/mod.rs`) with quantity 1. `gcra.lua` computes the same.
pub(crate) fn gcra_step(
    emission_us: u64,
    tolerance_us: u64,
    burst: u64,
    now_us: u64,
    stored_tat_us: Option<u64>,
) -> GcraStep {
    let tat = stored_tat_us.unwrap_or(now_us).max(now_us);
    let new_ttl = tat + emission_us - now_us;
    if new_ttl > tolerance_us {
        GcraStep {
            decision: gcra_decision(emission_us, tolerance_us, burst, false, tat - now_us),
            new_tat_us: None,
        }
    } else {
        GcraStep {
            decision: gcra_decision(emission_us, tolerance_us, burst, true, new_ttl),
            new_tat_us: Some(now_us + new_ttl),
        }
    }
}

/// The decision of a GCRA step from what it left behind: whether the hit was allowed and the
/// key's TTL after it (`tat - now`). A hit is allowed once `now >= tat + T - tau`.
pub(crate) fn gcra_decision(
    emission_us: u64,
    tolerance_us: u64,
    burst: u64,
    allowed: bool,
    ttl_us: u64,
) -> RateDecision {
    RateDecision {
        allowed,
        limit: burst + 1,
        // (tau - ttl) / T, floored, never negative
        remaining: tolerance_us.saturating_sub(ttl_us) / emission_us,
        retry_after: (!allowed)
            .then(|| Duration::from_micros((ttl_us + emission_us).saturating_sub(tolerance_us))),
        reset: Duration::from_micros(ttl_us),
        ticket: None,
        window_end_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(policy: RatePolicy, hits: usize, now_us: u64) -> Vec<RateDecision> {
        let PolicyKind::Gcra {
            emission_us,
            tolerance_us,
            burst,
        } = policy.kind()
        else {
            panic!("not a GCRA policy");
        };
        let mut tat = None;
        (0..hits)
            .map(|_| {
                let step = gcra_step(emission_us, tolerance_us, burst, now_us, tat);
                tat = step.new_tat_us.or(tat);
                step.decision
            })
            .collect()
    }

    #[test]
    fn gcra_matches_redis_cell_readme_example() {
        // CL.THROTTLE user123 15 30 60 -> 0, 16, 15, -1, 2
        let policy = RatePolicy::gcra(30, Duration::from_secs(60), 15).unwrap();
        let first = run(policy, 1, 1_000_000_000).remove(0);
        assert!(first.allowed);
        assert_eq!(first.limit, 16);
        assert_eq!(first.remaining, 15);
        assert_eq!(first.retry_after, None);
        assert_eq!(first.reset, Duration::from_secs(2));
    }

    #[test]
    fn gcra_allows_burst_plus_one_then_denies() {
        let policy = RatePolicy::gcra(1, Duration::from_secs(10), 2).unwrap();
        let decisions = run(policy, 4, 5_000_000);
        let allowed: Vec<_> = decisions.iter().map(|d| d.allowed).collect();
        assert_eq!(allowed, [true, true, true, false]);
        assert_eq!(
            decisions.iter().map(|d| d.remaining).collect::<Vec<_>>(),
            [2, 1, 0, 0]
        );
        assert_eq!(decisions[3].retry_after, Some(Duration::from_secs(10)));
        assert_eq!(decisions[3].reset, Duration::from_secs(30));
    }

    #[test]
    fn gcra_refills_at_the_emission_interval() {
        let policy = RatePolicy::gcra(1, Duration::from_secs(1), 0).unwrap();
        let PolicyKind::Gcra {
            emission_us,
            tolerance_us,
            burst,
        } = policy.kind()
        else {
            unreachable!()
        };
        let first = gcra_step(emission_us, tolerance_us, burst, 0, None);
        let tat = first.new_tat_us;
        assert!(
            !gcra_step(emission_us, tolerance_us, burst, 999_999, tat)
                .decision
                .allowed
        );
        assert!(
            gcra_step(emission_us, tolerance_us, burst, 1_000_000, tat)
                .decision
                .allowed
        );
    }

    #[test]
    fn policies_refuse_degenerate_parameters() {
        assert!(RatePolicy::cooldown(Duration::from_micros(999)).is_err());
        assert!(RatePolicy::fixed_window(1, Duration::ZERO).is_err());
        assert!(RatePolicy::gcra(2_000_000, Duration::from_secs(1), 0).is_err());
        assert!(RatePolicy::gcra(1, Duration::from_secs(1), u64::MAX).is_err());
        assert!(RatePolicy::fixed_window(0, Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn window_decision_reports_remaining_and_retry() {
        let allowed = window_decision(5, true, 2, 30_000);
        assert_eq!((allowed.remaining, allowed.retry_after), (3, None));
        let denied = window_decision(5, false, 5, 1_500);
        assert_eq!(denied.retry_after, Some(Duration::from_millis(1_500)));
        assert_eq!(denied.remaining, 0);
    }
}
