use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sha2::{Digest, Sha256};

use super::entry::Entry;
use super::flight::{FlightGuard, StoreLock};
use super::layer::Config;
use crate::auth::hex_digest;

pin_project! {
    /// The response body of [`ResponseCache`](super::ResponseCache): bytes from a cached entry,
    /// or the inner body, copied into the store on the way through when the response is being
    /// cached. Never boxed.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body::Body;
    /// use tower_redis_http::cache::ResponseBody;
    ///
    /// let body = ResponseBody::<http_body_util::Empty<Bytes>>::cached(Bytes::from_static(b"hi"));
    /// assert_eq!(body.size_hint().exact(), Some(2));
    /// ```
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Cached { data: Option<Bytes> },
        Inner { #[pin] body: B, recorder: Option<Recorder> },
    }
}

/// Everything needed to store a response once its body has gone by.
pub(crate) struct Recorder {
    chunks: Vec<Bytes>,
    len: usize,
    config: Arc<Config>,
    /// The entry, but for its body.
    entry: Entry,
    url: String,
    flight: Option<FlightGuard>,
    lock: Option<StoreLock>,
}

impl<B> ResponseBody<B> {
    /// A body of cached bytes.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_redis_http::cache::ResponseBody;
    ///
    /// let body = ResponseBody::<()>::cached(Bytes::from_static(b"{}"));
    /// ```
    pub fn cached(data: Bytes) -> Self {
        Self {
            kind: Kind::Cached {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// The inner service's body, passed through untouched.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_redis_http::cache::ResponseBody;
    ///
    /// let body = ResponseBody::inner(http_body_util::Full::new(Bytes::from_static(b"hi")));
    /// ```
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner {
                body,
                recorder: None,
            },
        }
    }

    pub(crate) fn recording(body: B, recorder: Recorder) -> Self
    where
        B: Body,
    {
        // An empty body may never be polled (hyper writes `Content-Length: 0` and is done),
        // so the entry is complete now.
        if body.is_end_stream() {
            recorder.finish();
            return Self::inner(body);
        }
        Self {
            kind: Kind::Inner {
                body,
                recorder: Some(recorder),
            },
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Cached { data } => f
                .debug_struct("ResponseBody::Cached")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Inner { recorder, .. } => f
                .debug_struct("ResponseBody::Inner")
                .field("recording", &recorder.is_some())
                .finish(),
        }
    }
}

impl Recorder {
    pub(crate) fn new(
        config: Arc<Config>,
        entry: Entry,
        url: String,
        flight: Option<FlightGuard>,
        lock: Option<StoreLock>,
    ) -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
            config,
            entry,
            url,
            flight,
            lock,
        }
    }

    /// The recorder, completing `flight` (when it leads one) with its entry.
    pub(crate) fn led(mut self, flight: Option<FlightGuard>) -> Self {
        self.flight = flight;
        self
    }

    /// Keeps a data frame, or gives up when the body outgrows the bound.
    fn record(slot: &mut Option<Self>, data: &Bytes) {
        if let Some(recorder) = slot {
            recorder.len += data.len();
            if recorder.len > recorder.config.max_body {
                tracing::debug!(url = %recorder.url, limit = recorder.config.max_body, "response body outgrew the cache bound; not stored");
                *slot = None;
            } else {
                recorder.chunks.push(data.clone());
            }
        }
    }

    /// Completes the entry, shares it with waiting requests, and stores it in the background.
    fn finish(self) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.into_iter().next().expect("one chunk"),
            _ => {
                let mut joined = BytesMut::with_capacity(self.len);
                for chunk in &self.chunks {
                    joined.extend_from_slice(chunk);
                }
                joined.freeze()
            }
        };
        let mut entry = self.entry;
        if self.config.compute_etag && !entry.headers.contains_key(header::ETAG) {
            let digest = hex_digest(&Sha256::digest(&body)[..16]);
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
                entry.headers.insert(header::ETAG, etag);
            }
        }
        entry.body = body;
        let entry = Arc::new(entry);
        if let Some(flight) = self.flight {
            flight.complete(Arc::clone(&entry));
        }
        self.config.put(entry, &self.url, self.lock);
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Cached { data } => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
            KindProj::Inner { mut body, recorder } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                match &frame {
                    Some(Ok(frame)) => match frame.data_ref() {
                        Some(data) => {
                            Recorder::record(recorder, data);
                            // Servers stop polling once a body says it has ended (hyper does
                            // after Content-Length bytes), so the last data frame may be the
                            // last poll: finish now rather than on a `None` that never comes.
                            if body.is_end_stream()
                                && let Some(done) = recorder.take()
                            {
                                done.finish();
                            }
                        }
                        // trailers cannot be replayed from the cache
                        None => *recorder = None,
                    },
                    Some(Err(_)) => *recorder = None,
                    None => {
                        if let Some(done) = recorder.take() {
                            done.finish();
                        }
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Cached { data } => data.is_none(),
            // a recording body must be polled to its end to learn that it ended
            Kind::Inner { body, recorder } => recorder.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Cached { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { body, .. } => body.size_hint(),
        }
    }
}
