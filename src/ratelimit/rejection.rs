//! The answer to a request the layer refuses: a limit reached, or another refusal.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};

/// Why a request was limited, handed to a custom rejection response.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Response, StatusCode};
/// use tower_redis_http::ratelimit::Limited;
///
/// let legacy = |limited: &Limited| {
///     let body = serde_json::json!({"message": format!("请求次数过于频繁 ({})", limited.rule())});
///     let mut response = Response::new(Bytes::from(body.to_string()));
///     *response.status_mut() = StatusCode::BAD_REQUEST;
///     response
/// };
/// ```
#[derive(Debug, Clone)]
pub struct Limited {
    pub(crate) rule: Arc<str>,
    pub(crate) retry_after: std::time::Duration,
    pub(crate) limit: u64,
}

impl Limited {
    /// The name of the rule that limited the request.
    ///
    /// # Example
    ///
    /// ```
    /// # fn f(limited: &tower_redis_http::ratelimit::Limited) {
    /// println!("limited by {}", limited.rule());
    /// # }
    /// ```
    #[must_use]
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// How long until a request would be allowed.
    ///
    /// # Example
    ///
    /// ```
    /// # fn f(limited: &tower_redis_http::ratelimit::Limited) {
    /// let seconds = limited.retry_after().as_secs();
    /// # }
    /// ```
    #[must_use]
    pub fn retry_after(&self) -> std::time::Duration {
        self.retry_after
    }

    /// The rule's limit.
    ///
    /// # Example
    ///
    /// ```
    /// # fn f(limited: &tower_redis_http::ratelimit::Limited) {
    /// let limit = limited.limit();
    /// # }
    /// ```
    #[must_use]
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Turns a limited request into its response. Implemented by [`JsonLimited`] (the default)
/// and by any `Fn(&Limited) -> http::Response<Bytes>` closure. The layer adds `Retry-After`
/// and the `RateLimit` fields to whatever it returns, unless already there.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Response, StatusCode};
/// use tower_redis_http::ratelimit::{Limited, LimitedResponse};
///
/// #[derive(Clone)]
/// struct Plain;
///
/// impl LimitedResponse for Plain {
///     fn limited(&self, limited: &Limited) -> Response<Bytes> {
///         let mut response = Response::new(Bytes::from(format!("slow down ({})", limited.rule())));
///         *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
///         response
///     }
/// }
/// ```
pub trait LimitedResponse: Clone + Send + Sync + 'static {
    /// The response for `limited`.
    fn limited(&self, limited: &Limited) -> Response<Bytes>;

    /// The response when the layer answers for another reason than a limit (see
    /// [`Refusal`]). Defaults to [`Refusal::response`], Django REST framework's JSON shape;
    /// override it to answer every refusal your way.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::Response;
    /// use tower_redis_http::ratelimit::{Limited, LimitedResponse, Refusal};
    ///
    /// #[derive(Clone)]
    /// struct Plain;
    ///
    /// impl LimitedResponse for Plain {
    ///     fn limited(&self, limited: &Limited) -> Response<Bytes> {
    ///         Response::new(Bytes::from(format!("slow down ({})", limited.rule())))
    ///     }
    ///
    ///     fn refused(&self, refusal: &Refusal) -> Response<Bytes> {
    ///         let mut response = Response::new(Bytes::from(refusal.detail()));
    ///         *response.status_mut() = refusal.status();
    ///         response
    ///     }
    /// }
    ///
    /// let response = Plain.refused(&Refusal::StoreUnavailable);
    /// assert_eq!(response.status(), 503);
    /// ```
    fn refused(&self, refusal: &Refusal) -> Response<Bytes> {
        refusal.response()
    }
}

/// `rejection`'s answer for `refusal`, kept out of line: refusals are the rare path, and the
/// allowed request's code stays small without them.
#[cold]
#[inline(never)]
pub(crate) fn refuse<R: LimitedResponse>(rejection: &R, refusal: Refusal) -> Response<Bytes> {
    rejection.refused(&refusal)
}

/// Why the rate limiter answers a request by itself without a limit being reached: never by
/// letting the request through uncounted.
///
/// # Example
///
/// ```
/// use tower_redis_http::ratelimit::Refusal;
///
/// assert_eq!(Refusal::MissingKey.status(), 400);
/// assert_eq!(Refusal::StoreUnavailable.response().status(), 503);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The store failed on a rule that fails closed: 503.
    StoreUnavailable,
    /// The request names a rule's route in an ambiguous spelling (`%2E`, `//`, ...), so its
    /// key cannot be told: 400. Holds why.
    MalformedKey(&'static str),
    /// The request carries no value to key a rule by, and the layer rejects such requests
    /// ([`MissingKey::Reject`](super::MissingKey::Reject)): 400.
    MissingKey,
    /// A rule cannot compute its keys (no client address, another principal type): 500, with
    /// the cause logged once.
    Misconfigured,
}

impl Refusal {
    /// The status of the default answer.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::Refusal;
    ///
    /// assert_eq!(Refusal::Misconfigured.status(), 500);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::MalformedKey(_) | Self::MissingKey => StatusCode::BAD_REQUEST,
            Self::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message of the default answer.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::Refusal;
    ///
    /// assert_eq!(Refusal::StoreUnavailable.detail(), "Rate limiting is temporarily unavailable.");
    /// ```
    #[must_use]
    pub fn detail(&self) -> String {
        match self {
            Self::StoreUnavailable => "Rate limiting is temporarily unavailable.".to_owned(),
            Self::MalformedKey(why) => format!("The request path is not in normal form: {why}."),
            Self::MissingKey => "The request carries no value to rate-limit it by.".to_owned(),
            Self::Misconfigured => {
                "The rate limiter is misconfigured; the server log says why.".to_owned()
            }
        }
    }

    /// The default answer: [`status`](Self::status) and `{"detail": "<detail>"}`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::ratelimit::Refusal;
    ///
    /// let response = Refusal::MissingKey.response();
    /// assert_eq!(response.headers()["content-type"], "application/json");
    /// ```
    #[must_use]
    pub fn response(&self) -> Response<Bytes> {
        crate::json::detail(self.status(), &self.detail())
    }
}

impl<F> LimitedResponse for F
where
    F: Fn(&Limited) -> Response<Bytes> + Clone + Send + Sync + 'static,
{
    fn limited(&self, limited: &Limited) -> Response<Bytes> {
        self(limited)
    }
}

/// The default answer: the layer's status (429 unless configured) and Django REST
/// framework's throttling message, `{"detail": "Request was throttled. Expected available in N
/// seconds."}`.
///
/// # Example
///
/// ```
/// use tower_redis_http::ratelimit::{JsonLimited, LimitedResponse};
///
/// let rejection = JsonLimited::default();
/// ```
#[derive(Debug, Clone, Copy)]
pub struct JsonLimited {
    pub(crate) status: StatusCode,
}

impl Default for JsonLimited {
    fn default() -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl LimitedResponse for JsonLimited {
    fn limited(&self, limited: &Limited) -> Response<Bytes> {
        let seconds = super::headers::seconds_ceil(limited.retry_after).max(1);
        crate::json::detail(
            self.status,
            &format!("Request was throttled. Expected available in {seconds} seconds."),
        )
    }
}
