//! A rule: a named policy (cooldown, fixed window, GCRA) over a key, and the rates it takes.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Key, RequestHead};
use crate::store::{Durability, RatePolicy};
use crate::{ConfigError, FailurePolicy};

/// A rate in django-ratelimit's notation: `count/period`, the period one of `s`, `m`, `h`, `d`
/// with an optional multiplier (`100/5m`) or a number of seconds (`10/30`); Django REST
/// framework's throttle rates (`100/day`, `5/minute`, `1000/hour`, `3/second`) read the same.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_redis_http::ratelimit::Rate;
///
/// let rate: Rate = "100/5m".parse()?;
/// assert_eq!((rate.count(), rate.period()), (100, Duration::from_secs(300)));
/// assert_eq!(rate.to_string(), "100/300s");
/// let from_config: Rate = serde_json::from_str(r#""5/m""#).unwrap();
/// assert_eq!(from_config.period(), Duration::from_secs(60));
/// # Ok::<(), tower_redis_http::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Rate {
    count: u64,
    period: Duration,
}

impl Rate {
    /// `count` hits per `period`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::ratelimit::Rate;
    ///
    /// let rate = Rate::new(5, Duration::from_secs(60));
    /// assert_eq!(rate, "5/m".parse().unwrap());
    /// ```
    #[must_use]
    pub fn new(count: u64, period: Duration) -> Self {
        Self { count, period }
    }

    /// Hits per period.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::Rate;
    ///
    /// assert_eq!("7/h".parse::<Rate>().unwrap().count(), 7);
    /// ```
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The period.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::ratelimit::Rate;
    ///
    /// assert_eq!("7/d".parse::<Rate>().unwrap().period(), Duration::from_secs(86_400));
    /// ```
    #[must_use]
    pub fn period(&self) -> Duration {
        self.period
    }
}

impl FromStr for Rate {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| ConfigError::InvalidOption {
            option: "rate",
            reason: format!("`{text}`: {reason} (expected e.g. `5/m`, `100/5m`, `10/30`)"),
        };
        let (count, period) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| invalid("no `/`"))?;
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| invalid("the count is not a number"))?;
        let period = period.trim();
        let digits = period.bytes().take_while(u8::is_ascii_digit).count();
        let (multiplier, unit) = period.split_at(digits);
        let multiplier: u64 = if multiplier.is_empty() {
            1
        } else {
            multiplier
                .parse()
                .map_err(|_| invalid("the period is not a number"))?
        };
        // django-ratelimit's letters and Django REST framework's words (`100/day`)
        let unit_seconds = match unit {
            "" if digits > 0 => 1,
            "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            _ => {
                return Err(invalid(
                    "the unit is not one of s, m, h, d, second, minute, hour, day",
                ));
            }
        };
        let seconds = multiplier
            .checked_mul(unit_seconds)
            .filter(|&seconds| seconds > 0)
            .ok_or_else(|| invalid("the period must be longer than zero"))?;
        Ok(Self {
            count,
            period: Duration::from_secs(seconds),
        })
    }
}

impl TryFrom<String> for Rate {
    type Error = ConfigError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.count, self.period.as_secs())
    }
}

/// When a counted hit stays counted.
///
/// # Example
///
/// ```
/// use tower_redis_http::ratelimit::Commit;
///
/// assert_eq!(Commit::default(), Commit::Always);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Commit {
    /// Every allowed request counts. Default.
    #[default]
    Always,
    /// Only requests whose response is a success (2xx) count: a failing SMS gateway does not
    /// lock the user out for a minute. A request cancelled once the inner service was called
    /// (a client that resets its connection after sending) keeps its hit, since the side
    /// effect may already have happened; only a failure answered by the inner service (a
    /// non-2xx response or an error) gives it back.
    OnSuccess,
}

/// One limit: a named policy over a key.
///
/// The name goes into store keys (`rl:<name>:<key>`) and into the `RateLimit` headers, so two
/// rules with one key never share a counter. It is printable ASCII without `"` or `\`, and
/// without `:` unless the rule has its own [`store_key`](Rule::store_key): rule `a` keyed
/// `b:x` and a rule `a:b` keyed `x` would both count in `rl:a:b:x`.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_redis_http::ratelimit::{Key, Rule};
///
/// // one SMS code per phone number per minute
/// let sms = Rule::cooldown("sms", Duration::from_secs(60), Key::path_segment("/sms_codes/{mobile}/", "mobile"));
/// // and ten an hour per client address
/// let per_ip = Rule::fixed_window("sms_ip", "10/h", Key::client_ip());
/// ```
#[derive(Clone)]
pub struct Rule {
    pub(crate) name: Arc<str>,
    pub(crate) spec: Spec,
    pub(crate) key: Key,
    pub(crate) on_store_error: Option<FailurePolicy>,
    pub(crate) applies: Option<Applies>,
    pub(crate) commit: Option<Commit>,
    pub(crate) store_key: Option<Arc<str>>,
    pub(crate) durability: Option<Durability>,
}

/// Which requests a rule counts, when not all that the layer sees.
pub(crate) type Applies = Arc<dyn Fn(&RequestHead<'_>) -> bool + Send + Sync>;

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("spec", &self.spec)
            .field("key", &self.key)
            .field("on_store_error", &self.on_store_error)
            .field("when", &self.applies.as_ref().map(|_| ".."))
            .field("commit", &self.commit)
            .field("store_key", &self.store_key)
            .field("durability", &self.durability)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Spec {
    Cooldown(Duration),
    FixedWindow(Result<Rate, String>),
    Gcra(Result<Rate, String>, u64),
}

fn rate_of(rate: impl TryInto<Rate, Error = impl fmt::Display>) -> Result<Rate, String> {
    rate.try_into().map_err(|err| err.to_string())
}

impl Rule {
    /// At most one hit per `interval` per key: the send flag.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::ratelimit::{Key, Rule};
    ///
    /// let rule = Rule::cooldown("sms", Duration::from_secs(60), Key::header(http::HeaderName::from_static("x-phone")));
    /// ```
    pub fn cooldown(name: impl Into<Arc<str>>, interval: Duration, key: Key) -> Self {
        Self {
            name: name.into(),
            spec: Spec::Cooldown(interval),
            key,
            on_store_error: None,
            applies: None,
            commit: None,
            store_key: None,
            durability: None,
        }
    }

    /// At most `rate` hits per window per key (`"5/m"` or a [`Rate`]).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::{Key, Rule};
    ///
    /// let rule = Rule::fixed_window("api", "100/h", Key::client_ip());
    /// ```
    pub fn fixed_window(
        name: impl Into<Arc<str>>,
        rate: impl TryInto<Rate, Error = impl fmt::Display>,
        key: Key,
    ) -> Self {
        Self {
            name: name.into(),
            spec: Spec::FixedWindow(rate_of(rate)),
            key,
            on_store_error: None,
            applies: None,
            commit: None,
            store_key: None,
            durability: None,
        }
    }

    /// `rate` on average with bursts of `burst` extra hits (GCRA, as redis-cell).
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::{Key, Rule};
    ///
    /// let rule = Rule::gcra("search", "30/m", 10, Key::client_ip());
    /// ```
    pub fn gcra(
        name: impl Into<Arc<str>>,
        rate: impl TryInto<Rate, Error = impl fmt::Display>,
        burst: u64,
        key: Key,
    ) -> Self {
        Self {
            name: name.into(),
            spec: Spec::Gcra(rate_of(rate), burst),
            key,
            on_store_error: None,
            applies: None,
            commit: None,
            store_key: None,
            durability: None,
        }
    }

    /// What this rule does when the store fails (an error, a timeout, a full memory store).
    /// Defaults to the layer's [`on_store_error`](super::RateLimitBuilder::on_store_error)
    /// when set, else to [`FailurePolicy::Closed`] for a cooldown and [`FailurePolicy::Open`]
    /// for a fixed window or GCRA.
    ///
    /// A cooldown guards a side effect that costs money or can harass (an SMS, an e-mail):
    /// failing open would hand out one for every request while Redis is away, so it answers
    /// 503 instead. A window or GCRA that fails open lets traffic through unmetered for a
    /// while, which is usually the lesser harm.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::FailurePolicy;
    /// use tower_redis_http::ratelimit::{Key, Rule};
    ///
    /// // a newsletter resend: better one too many than none while Redis fails over
    /// let resend = Rule::cooldown("resend", Duration::from_secs(60), Key::query("email"))
    ///     .on_store_error(FailurePolicy::Open);
    /// ```
    #[must_use]
    pub fn on_store_error(mut self, policy: FailurePolicy) -> Self {
        self.on_store_error = Some(policy);
        self
    }

    /// Counts only the requests `applies` accepts; the others pass this rule untouched. For
    /// a rule that belongs to one route of a layer that wraps many, such as a per-address
    /// limit on `POST /login/`. Compare paths with [`RequestHead::path_is`], which counts
    /// every spelling a router may serve (`/login` and `/LOGIN/` too): comparing
    /// `uri.path()` to one spelling lets the others past the limit.
    ///
    /// # Example
    ///
    /// ```
    /// use http::Method;
    /// use tower_redis_http::ratelimit::{Key, RequestHead, Rule};
    ///
    /// // brute-force protection: ten login attempts a minute per client address
    /// let logins = Rule::fixed_window("login", "10/m", Key::client_ip())
    ///     .when(|request: &RequestHead<'_>| {
    ///         request.method == Method::POST && request.path_is("/login/")
    ///     });
    /// ```
    #[must_use]
    pub fn when(
        mut self,
        applies: impl Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.applies = Some(Arc::new(applies));
        self
    }

    /// The store key this rule writes, `{key}` standing for the request's key, in place of
    /// `rl:<name>:<key>`; the store's key scheme still applies. So a rule can share the flag
    /// that an existing application writes while both run, such as the Django tutorial's
    /// `send_flag_<mobile>` in the `verify_codes` database without a prefix (a store built with
    /// [`KeyScheme::raw`](crate::store::KeyScheme::raw)).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::ratelimit::{Key, RateLimitLayer, Rule};
    /// use tower_redis_http::store::{KeyScheme, MemoryStore};
    ///
    /// let verify_codes = MemoryStore::builder().key_scheme(KeyScheme::raw()).build()?;
    /// let limit = RateLimitLayer::builder(verify_codes)
    ///     .rule(
    ///         Rule::cooldown("sms", Duration::from_secs(60), Key::path_segment("/sms_codes/{mobile}/", "mobile"))
    ///             .store_key("send_flag_{key}"),
    ///     )
    ///     .build()?;
    /// # Ok::<(), tower_redis_http::ConfigError>(())
    /// ```
    #[must_use]
    pub fn store_key(mut self, template: impl Into<Arc<str>>) -> Self {
        self.store_key = Some(template.into());
        self
    }

    /// The store key template split around its `{key}`.
    pub(crate) fn store_key_parts(&self) -> Result<(Arc<str>, Arc<str>), ConfigError> {
        let Some(template) = &self.store_key else {
            return Ok((Arc::from(format!("rl:{}:", self.name)), Arc::from("")));
        };
        match template.split_once("{key}") {
            Some((before, after)) if !after.contains("{key}") => {
                Ok((Arc::from(before), Arc::from(after)))
            }
            _ => Err(ConfigError::InvalidOption {
                option: "store_key",
                reason: format!(
                    "rule `{}`: `{template}` must hold `{{key}}` exactly once",
                    self.name
                ),
            }),
        }
    }

    /// When this rule's hits stay counted, whatever the layer's
    /// [`commit`](super::RateLimitBuilder::commit) says for the others.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::ratelimit::{Commit, Key, Rule};
    ///
    /// // a failed login counts too, whatever the layer does for its send flag
    /// let logins = Rule::fixed_window("login", "10/m", Key::client_ip()).commit(Commit::Always);
    /// ```
    #[must_use]
    pub fn commit(mut self, commit: Commit) -> Self {
        self.commit = Some(commit);
        self
    }

    /// What an allowed hit's write must reach before the request goes on: the master alone,
    /// or a replica as well, so that a failover cannot take the hit back (see [`Durability`]).
    /// Defaults to [`Durability::ReplicaIfAny`] for a cooldown (a send flag lost in a
    /// failover lets a second SMS code out inside the interval) and to [`Durability::Master`]
    /// for a fixed window or GCRA.
    ///
    /// A hit that no replica acknowledged within the store's command timeout: under a rule
    /// that fails closed (a cooldown's default) it is given back and the rule's [failure
    /// policy](Self::on_store_error) answers the request; under one that fails open it stays
    /// counted on the master and the request goes on, so that the rule never limits less than
    /// without the wait. Only allowed hits wait; a refused one wrote nothing. The memory store
    /// ignores it.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_http::ratelimit::{Key, Rule};
    /// use tower_redis_http::store::Durability;
    ///
    /// // a resend link: a second one after a failover is harmless, the wait is not worth it
    /// let resend = Rule::cooldown("resend", Duration::from_secs(60), Key::query("email"))
    ///     .durability(Durability::Master);
    /// ```
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = Some(durability);
        self
    }

    /// The failure policy that applies, given the layer's default (if one was set).
    pub(crate) fn failure_policy(&self, layer_default: Option<FailurePolicy>) -> FailurePolicy {
        self.on_store_error
            .or(layer_default)
            .unwrap_or(match self.spec {
                Spec::Cooldown(_) => FailurePolicy::Closed,
                Spec::FixedWindow(_) | Spec::Gcra(..) => FailurePolicy::Open,
            })
    }

    pub(crate) fn policy(&self) -> Result<RatePolicy, ConfigError> {
        let policy = self.policy_of_spec()?;
        Ok(match self.durability {
            Some(durability) => policy.with_durability(durability),
            None => policy,
        })
    }

    fn policy_of_spec(&self) -> Result<RatePolicy, ConfigError> {
        let invalid = |reason: String| ConfigError::InvalidOption {
            option: "rule",
            reason: format!("rule `{}`: {reason}", self.name),
        };
        match &self.spec {
            Spec::Cooldown(interval) => RatePolicy::cooldown(*interval),
            Spec::FixedWindow(rate) => {
                let rate = rate.clone().map_err(invalid)?;
                RatePolicy::fixed_window(rate.count, rate.period)
            }
            Spec::Gcra(rate, burst) => {
                let rate = rate.clone().map_err(invalid)?;
                RatePolicy::gcra(rate.count, rate.period, *burst)
            }
        }
    }
}

impl TryFrom<&str> for Rate {
    type Error = ConfigError;

    fn try_from(text: &str) -> Result<Self, Self::Error> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_django_ratelimit_writes_them() {
        let cases = [
            ("5/s", 5, 1),
            ("5/m", 5, 60),
            ("100/h", 100, 3600),
            ("1000/d", 1000, 86_400),
            ("100/5m", 100, 300),
            ("10/30", 10, 30),
            ("10/30s", 10, 30),
            (" 3 / 2h ", 3, 7200),
            ("0/s", 0, 1),
            ("100/day", 100, 86_400),
            ("5/minute", 5, 60),
            ("1000/hour", 1000, 3600),
            ("3/second", 3, 1),
            ("10/minutes", 10, 60),
            ("2/5min", 2, 300),
        ];
        for (text, count, seconds) in cases {
            let rate: Rate = text.parse().unwrap();
            assert_eq!(
                (rate.count(), rate.period().as_secs()),
                (count, seconds),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_rates_are_config_errors() {
        for text in [
            "", "5", "5/", "/m", "x/m", "5/w", "5/0m", "5/0", "-1/m", "5/m/m", "5/1.5m", "5/week",
            "5/mango",
        ] {
            assert!(text.parse::<Rate>().is_err(), "{text:?} was accepted");
        }
        assert!(serde_json::from_str::<Rate>(r#""5/week""#).is_err());
    }

    #[test]
    fn rules_surface_their_errors_with_their_name() {
        let rule = Rule::fixed_window("api", "5/week", Key::client_ip());
        let err = rule.policy().unwrap_err().to_string();
        assert!(err.contains("rule `api`"), "{err}");
        assert!(
            Rule::gcra("g", "0/m", 1, Key::client_ip())
                .policy()
                .is_err()
        );
    }
}
