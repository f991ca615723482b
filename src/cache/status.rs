//! `Cache-Status` (RFC 9211) and `X-Cache`: why a request went to the inner service, and the
//! field values made once per cache name for it.

use http::header::{HeaderName, HeaderValue};

use super::policy::NotStored;

/// Why a request went to the inner service (RFC 9211 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fwd {
    UriMiss,
    VaryMiss,
    Request,
    Miss,
    /// A stale entry is being revalidated, or replaced.
    Stale,
}

/// The `Cache-Status` values of responses not stored, by `fwd` reason and [`NotStored`].
pub(crate) type NotStoredStatuses = [[HeaderValue; NotStored::ALL.len()]; Fwd::ALL.len()];

impl Fwd {
    /// Every reason, in the order of [`Fwd::index`].
    pub(crate) const ALL: [Self; 5] = [
        Self::UriMiss,
        Self::VaryMiss,
        Self::Request,
        Self::Miss,
        Self::Stale,
    ];

    /// The `Cache-Status` values of a forwarded response for the cache `name`, by reason and
    /// whether it was stored, made once per distinct name in the process. They are static
    /// so that copying one onto a response touches no shared reference count: a count
    /// written by every request on every core made its cache line travel between them.
    /// Names come from configuration, not from requests, so the values made stay few.
    pub(crate) fn statuses_for(name: &str) -> &'static [[HeaderValue; 2]; 5] {
        type Statuses = &'static [[HeaderValue; 2]; 5];
        static MADE: std::sync::Mutex<Vec<(String, Statuses)>> = std::sync::Mutex::new(Vec::new());
        let mut made = MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, statuses)) = made.iter().find(|(made, _)| made == name) {
            return statuses;
        }
        let statuses: Statuses = Box::leak(Box::new(Self::ALL.map(|fwd| {
            [false, true].map(|stored| {
                // the body is still to go by: the entry is written once it has, whole
                let stored = if stored { "; detail=storing" } else { "" };
                let value: &'static str =
                    Box::leak(format!("{name}; fwd={}{stored}", fwd.as_str()).into_boxed_str());
                HeaderValue::from_static(value)
            })
        })));
        made.push((name.to_owned(), statuses));
        statuses
    }

    /// [`statuses_for`](Self::statuses_for) with `detail=<why it was not stored>`: static
    /// too, made once per name.
    pub(crate) fn unstored_statuses_for(name: &str) -> &'static NotStoredStatuses {
        static MADE: std::sync::Mutex<Vec<(String, &'static NotStoredStatuses)>> =
            std::sync::Mutex::new(Vec::new());
        let mut made = MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, statuses)) = made.iter().find(|(made, _)| made == name) {
            return statuses;
        }
        let statuses: &'static NotStoredStatuses = Box::leak(Box::new(Self::ALL.map(|fwd| {
            NotStored::ALL.map(|unstored| {
                let value: &'static str = Box::leak(
                    format!("{name}; fwd={}; detail={}", fwd.as_str(), unstored.as_str())
                        .into_boxed_str(),
                );
                HeaderValue::from_static(value)
            })
        })));
        made.push((name.to_owned(), statuses));
        statuses
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::UriMiss => "uri-miss",
            Self::VaryMiss => "vary-miss",
            Self::Request => "request",
            Self::Miss => "miss",
            Self::Stale => "stale",
        }
    }
}

pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
