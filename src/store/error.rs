//! `StoreError`: what went wrong in a store call, by kind.

use std::error::Error as StdError;
use std::fmt;

/// What went wrong in a store call, as [`StoreError::kind`] reports it.
///
/// # Example
///
/// ```
/// use tower_redis_http::store::{StoreError, StoreErrorKind};
///
/// let err = StoreError::new(StoreErrorKind::Timeout, "no reply within 250ms");
/// assert_eq!(err.kind(), StoreErrorKind::Timeout);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// No answer within the command timeout (including the wait for a pooled connection).
    Timeout,
    /// The connection could not be made, or broke during the call.
    Connection,
    /// The server refused the command (an error reply such as `NOAUTH` or `NOSCRIPT`).
    Server,
    /// The stored value is not what the operation needs (a non-integer for `increment`, an
    /// index read as a value or a value used as an index: Redis's `WRONGTYPE`).
    InvalidValue,
    /// The key is empty or longer than the key scheme allows; nothing was sent.
    InvalidKey,
    /// The operation cannot work with this configuration.
    Unsupported,
    /// The store is full and will not make room by evicting live state (the memory store's
    /// rate-limit share), or Redis refused a write for lack of memory (`OOM`).
    CapacityExceeded,
    /// The write reached the master, but no replica acknowledged it within the command
    /// timeout (or none was connected), as its [`Durability`](super::Durability) asks: a
    /// failover now could lose it.
    NotReplicated,
}

impl StoreErrorKind {
    /// The kind as a metrics label (`tower_redis_http_store_errors_total`'s `kind`).
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Server => "server",
            Self::InvalidValue => "invalid_value",
            Self::InvalidKey => "invalid_key",
            Self::Unsupported => "unsupported",
            Self::CapacityExceeded => "capacity_exceeded",
            Self::NotReplicated => "not_replicated",
        }
    }
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Timeout => "store call timed out",
            Self::Connection => "store connection failed",
            Self::Server => "store refused the command",
            Self::InvalidValue => "stored value has the wrong type",
            Self::InvalidKey => "invalid store key",
            Self::Unsupported => "operation not supported by this store configuration",
            Self::CapacityExceeded => "store is full",
            Self::NotReplicated => "store write did not reach a replica in time",
        })
    }
}

/// A store call failed.
///
/// Opaque on purpose: match on [`kind`](Self::kind) or use the predicates, and walk
/// [`source`](std::error::Error::source) for the backend's own error.
///
/// # Example
///
/// ```
/// use tower_redis_http::store::{StoreError, StoreErrorKind};
///
/// let err = StoreError::new(StoreErrorKind::Connection, "connection reset");
/// assert!(err.is_connection());
/// assert!(!err.is_timeout());
/// assert_eq!(err.to_string(), "store connection failed: connection reset");
/// ```
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    detail: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl StoreError {
    /// An error of `kind` with a human-readable detail.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{StoreError, StoreErrorKind};
    ///
    /// let err = StoreError::new(StoreErrorKind::InvalidValue, "not an integer");
    /// assert_eq!(err.kind(), StoreErrorKind::InvalidValue);
    /// ```
    pub fn new(kind: StoreErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::error::Error;
    /// use tower_redis_http::store::{StoreError, StoreErrorKind};
    ///
    /// let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    /// let err = StoreError::with_source(StoreErrorKind::Connection, "GET failed", io);
    /// assert!(err.source().is_some());
    /// ```
    pub fn with_source(
        kind: StoreErrorKind,
        detail: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            detail: detail.into(),
            source: Some(source.into()),
        }
    }

    /// What went wrong.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{StoreError, StoreErrorKind};
    ///
    /// assert_eq!(StoreError::new(StoreErrorKind::Server, "ERR").kind(), StoreErrorKind::Server);
    /// ```
    #[must_use]
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether the call ran out of time.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{StoreError, StoreErrorKind};
    ///
    /// assert!(StoreError::new(StoreErrorKind::Timeout, "slow").is_timeout());
    /// ```
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        self.kind == StoreErrorKind::Timeout
    }

    /// Whether the connection could not be made or broke.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::store::{StoreError, StoreErrorKind};
    ///
    /// assert!(StoreError::new(StoreErrorKind::Connection, "refused").is_connection());
    /// ```
    #[must_use]
    pub fn is_connection(&self) -> bool {
        self.kind == StoreErrorKind::Connection
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.kind, self.detail)
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}
