//! How long keys live: a write's [`Expiry`], a store's default [`Timeout`], a key's [`Ttl`].

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// How long a value written with [`Store::set`](crate::store::Store::set) or [`Store::set_if_absent`](crate::store::Store::set_if_absent) lives.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_redis_http::store::Expiry;
///
/// let sms_code: Expiry = Duration::from_secs(300).into();
/// assert_eq!(sms_code, Expiry::After(Duration::from_secs(300)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Expiry {
    /// The store's default timeout (Django's `TIMEOUT`, 300 s unless configured).
    #[default]
    Default,
    /// Expire after this long. A zero duration deletes the key, as Django's `timeout=0` does;
    /// durations are kept to the millisecond, rounded up.
    After(Duration),
    /// Never expire (Django's `timeout=None`).
    Never,
}

impl From<Duration> for Expiry {
    fn from(ttl: Duration) -> Self {
        Self::After(ttl)
    }
}

/// The longest expiry a store keeps, a hundred years: an expiry past it is taken as none, on
/// both stores alike, as Django's `None` (Redis refuses a `PX` past its range, and the memory
/// store's clock would overflow). Rate-limit intervals past it are refused instead.
pub const MAX_EXPIRY: Duration = Duration::from_secs(100 * 365 * 86_400);

impl Expiry {
    /// Turns `Default` into the store's default, so backends see only `After` or `Never`; an
    /// expiry past [`MAX_EXPIRY`] is none.
    pub(crate) fn resolve(self, default: Timeout) -> Self {
        match (self, default) {
            (Self::Default, Timeout::Never) => Self::Never,
            (Self::Default, Timeout::After(ttl)) | (Self::After(ttl), _) if ttl > MAX_EXPIRY => {
                Self::Never
            }
            (Self::Default, Timeout::After(ttl)) => Self::After(ttl),
            (other, _) => other,
        }
    }
}

/// Redis keeps expiries in milliseconds; rounding up keeps a short positive TTL from becoming
/// "expire now", and keeps both backends answering `ttl` alike.
pub(crate) fn ttl_ms_ceil(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The remaining lifetime of a key, as [`Store::ttl`](crate::store::Store::ttl) reports it.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_redis_http::store::Ttl;
///
/// let ttl = Ttl::Expires(Duration::from_secs(30));
/// assert_eq!(ttl.remaining(), Some(Duration::from_secs(30)));
/// assert_eq!(Ttl::Missing.remaining(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ttl {
    /// No such key.
    Missing,
    /// The key exists and never expires.
    Persistent,
    /// The key exists and expires after this long (millisecond precision).
    Expires(Duration),
}

impl Ttl {
    /// The remaining time for an expiring key, `None` otherwise.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::Ttl;
    ///
    /// assert_eq!(Ttl::Persistent.remaining(), None);
    /// ```
    #[must_use]
    pub fn remaining(self) -> Option<Duration> {
        match self {
            Self::Expires(ttl) => Some(ttl),
            Self::Missing | Self::Persistent => None,
        }
    }
}

/// A store's default lifetime for values written with [`Expiry::Default`](super::Expiry).
///
/// In configuration: a number of seconds (Django's `TIMEOUT`), or `null` / `"never"` for no
/// expiry (Django's `None`). Defaults to 300 seconds, as in Django. Fractions are kept
/// (`0.5` is half a second, as django-redis stores it in milliseconds), where Django's own
/// `int(TIMEOUT)` would make `0.5` expire at once; a number past [`MAX_EXPIRY`](MAX_EXPIRY)
/// is no expiry.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_redis_http::store::Timeout;
///
/// assert_eq!(Timeout::default(), Timeout::After(Duration::from_secs(300)));
/// let never: Timeout = serde_json::from_str("null").unwrap();
/// assert_eq!(never, Timeout::Never);
/// let half_minute: Timeout = serde_json::from_str("30").unwrap();
/// assert_eq!(half_minute, Timeout::After(Duration::from_secs(30)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timeout {
    /// Values expire after this long.
    After(Duration),
    /// Values never expire.
    Never,
}

impl Default for Timeout {
    fn default() -> Self {
        Self::After(Duration::from_secs(300))
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Seconds;

        const EXPECTED: &str = "TIMEOUT must be a number of seconds, null or \"never\"";

        impl Seconds {
            fn of<E: serde::de::Error>(secs: f64) -> Result<Timeout, E> {
                if secs.is_nan() || secs < 0.0 {
                    return Err(E::custom(format!(
                        "TIMEOUT must be 0 or more seconds, got {secs}"
                    )));
                }
                // past the longest a store keeps a key: for ever, as `null`
                if secs > MAX_EXPIRY.as_secs_f64() {
                    return Ok(Timeout::Never);
                }
                Ok(Timeout::After(Duration::from_secs_f64(secs)))
            }
        }

        impl<'v> serde::de::Visitor<'v> for Seconds {
            type Value = Timeout;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_f64<E: serde::de::Error>(self, secs: f64) -> Result<Timeout, E> {
                Self::of(secs)
            }

            #[allow(clippy::cast_precision_loss)]
            fn visit_i64<E: serde::de::Error>(self, secs: i64) -> Result<Timeout, E> {
                Self::of(secs as f64)
            }

            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E: serde::de::Error>(self, secs: u64) -> Result<Timeout, E> {
                Self::of(secs as f64)
            }

            fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<Timeout, E> {
                match word {
                    "never" | "none" | "None" => Ok(Timeout::Never),
                    other => Err(E::custom(format!("{EXPECTED}, got {other:?}"))),
                }
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Timeout, E> {
                Ok(Timeout::Never)
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<Timeout, E> {
                Ok(Timeout::Never)
            }

            fn visit_some<D: serde::Deserializer<'v>>(self, inner: D) -> Result<Timeout, D::Error> {
                inner.deserialize_any(Seconds)
            }

            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Timeout, E> {
                Err(E::custom(format!("{EXPECTED}, not true or false")))
            }
        }

        deserializer.deserialize_any(Seconds)
    }
}
