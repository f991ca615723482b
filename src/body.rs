//! The response body of every layer: the inner service's body (which the cache may copy on
//! the way through), or bytes the layer produced itself.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The inner service's body, or bytes a layer produced itself (a rejection, a 503, a
    /// cached entry).
    ///
    /// Neither case is boxed: the inner body is polled in place, and a produced body is one
    /// `Bytes` frame.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body::Body;
    /// use tower_redis_http::body::ResponseBody;
    ///
    /// let body = ResponseBody::<http_body_util::Empty<Bytes>>::full(Bytes::from_static(b"{}"));
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
        Inner { #[pin] body: B, tap: Option<Box<dyn Tap>> },
        Full { data: Option<Bytes> },
    }
}

/// What sees an inner body's data frames on their way to the client: the cache's recorder,
/// which stores the response once its body has gone by.
pub(crate) trait Tap: Send + Sync {
    /// Sees a data frame; `false` when it wants no more of the body (it is then dropped).
    fn data(&mut self, data: &Bytes) -> bool;

    /// The body ended after every data frame was seen.
    fn end(self: Box<Self>);
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_redis_http::body::ResponseBody;
    ///
    /// let body = ResponseBody::inner(http_body_util::Full::new(Bytes::from_static(b"hi")));
    /// ```
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body, tap: None },
        }
    }

    /// A body of `data` produced by the layer.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_redis_http::body::ResponseBody;
    ///
    /// let body = ResponseBody::<()>::full(Bytes::from_static(b"{}"));
    /// ```
    pub fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// The inner service's body, with `tap` seeing its data frames.
    pub(crate) fn tapped(body: B, tap: Box<dyn Tap>) -> Self
    where
        B: Body,
    {
        // An empty body may never be polled (hyper writes `Content-Length: 0` and is done),
        // so it has ended now.
        if body.is_end_stream() {
            tap.end();
            return Self::inner(body);
        }
        Self {
            kind: Kind::Inner {
                body,
                tap: Some(tap),
            },
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { tap, .. } => f
                .debug_struct("ResponseBody::Inner")
                .field("tapped", &tap.is_some())
                .finish(),
            Kind::Full { data } => f
                .debug_struct("ResponseBody::Full")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
        }
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
            KindProj::Inner { mut body, tap } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                if tap.is_none() {
                    return Poll::Ready(frame);
                }
                match &frame {
                    Some(Ok(frame)) => match frame.data_ref() {
                        Some(data) => {
                            if tap.as_mut().is_some_and(|seen| !seen.data(data)) {
                                *tap = None;
                            }
                            // Servers stop polling once a body says it has ended (hyper does
                            // after Content-Length bytes), so the last data frame may be the
                            // last poll: end now rather than on a `None` that never comes.
                            if body.is_end_stream()
                                && let Some(done) = tap.take()
                            {
                                done.end();
                            }
                        }
                        // trailers cannot be replayed from the cache
                        None => *tap = None,
                    },
                    Some(Err(_)) => *tap = None,
                    None => {
                        if let Some(done) = tap.take() {
                            done.end();
                        }
                    }
                }
                Poll::Ready(frame)
            }
            KindProj::Full { data } => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            // a tapped body must be polled to its end to learn that it ended
            Kind::Inner { body, tap } => tap.is_none() && body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body, .. } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
