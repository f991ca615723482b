//! Bodies with a bound on their silence, and a request body that tells how far it has been
//! sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::answer::BoxError;

/// A body stalled: no frame came within its idle timeout.
#[derive(Debug)]
pub struct Stalled {
    /// Whose body: `"origin"` for a response, `"client"` for a request.
    pub side: &'static str,
    /// The longest gap allowed between two frames.
    pub idle: Duration,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the {} sent nothing of its body for {:?}",
            self.side, self.idle
        )
    }
}

impl std::error::Error for Stalled {}

pin_project_lite::pin_project! {
    /// A body that fails with [`Stalled`] when its next frame is longer than `idle` in coming
    /// (nginx's `proxy_read_timeout` between two reads). The clock runs only while the body
    /// is asked for a frame it does not have: a reader that is slow to ask (a client reading
    /// slowly, which stops the proxy polling) never counts against the sender. Failing,
    /// rather than ending, keeps a truncated response out of the cache, and tells the client
    /// (the connection closes before the announced length) that it did not get the whole.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        // boxed, so that the body is `Unpin` when `B` is, as hyper's client asks
        timer: Pin<Box<Sleep>>,
        // whether the timer runs: set by a poll that found nothing, cleared by a frame
        waiting: bool,
        idle: Duration,
        side: &'static str,
    }
}

impl<B> IdleTimeout<B> {
    /// `inner`, failing once it has been waited on for `idle` without a frame.
    pub fn new(inner: B, idle: Duration, side: &'static str) -> Self {
        Self {
            inner,
            timer: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            idle,
            side,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.waiting = false;
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                if !*this.waiting {
                    *this.waiting = true;
                    // checked_add: an idle of years must not overflow the clock
                    if let Some(deadline) = Instant::now().checked_add(*this.idle) {
                        this.timer.as_mut().reset(deadline);
                    }
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled {
                        side: this.side,
                        idle: *this.idle,
                    })))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How far a request body on its way to the origin has got: when the origin last took a
/// piece of it, and whether the proxy is waiting on the client for the next one. The origin
/// is blamed for a stall only when the client is not (nginx's `proxy_send_timeout`, between
/// two writes): an origin that stops reading fills the socket, and the body is then not asked
/// for at all, so no timer on the client's side would ever run.
#[derive(Debug)]
pub struct UploadProgress {
    since: Instant,
    /// Milliseconds from `since` to the last piece the origin took (or to the last reset).
    last_taken: AtomicU64,
    waiting_on_client: AtomicBool,
}

impl UploadProgress {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            last_taken: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
        }
    }

    /// Starts the origin's clock over: a connection is there to write to.
    pub fn reset(&self) {
        self.taken_now();
    }

    fn taken_now(&self) {
        let elapsed = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_taken.store(elapsed, Ordering::Relaxed);
    }

    /// When the origin's silence reaches `limit`, counted from the last piece it took; `None`
    /// while the proxy waits on the client instead (whose own idle timeout applies).
    pub fn stalls_at(&self, limit: Duration) -> Option<Instant> {
        if self.waiting_on_client.load(Ordering::Relaxed) {
            return None;
        }
        let last = Duration::from_millis(self.last_taken.load(Ordering::Relaxed));
        Some(self.since + last.saturating_add(limit))
    }
}

pin_project_lite::pin_project! {
    /// A request body that says when it has been sent in full, so that the origin's time to
    /// answer is counted from then and a slow upload is not taken for a slow origin, and that
    /// keeps its [`UploadProgress`] so that an origin that stops reading is.
    pub struct SentNotice<B> {
        #[pin]
        inner: B,
        sent: Option<oneshot::Sender<()>>,
        progress: Arc<UploadProgress>,
    }
}

impl<B: Body> SentNotice<B> {
    /// `inner`, the receiver told once it has gone by (at once for an empty body), and its
    /// progress. The sender is dropped, which the receiver sees too, if the body fails or is
    /// dropped unsent.
    pub fn new(inner: B) -> (Self, oneshot::Receiver<()>, Arc<UploadProgress>) {
        let (sender, receiver) = oneshot::channel();
        let progress = Arc::new(UploadProgress::new());
        let mut body = Self {
            inner,
            sent: Some(sender),
            progress: Arc::clone(&progress),
        };
        if body.inner.is_end_stream() {
            body.notify();
        }
        (body, receiver, progress)
    }

    fn notify(&mut self) {
        notify(&mut self.sent);
    }
}

impl<B: Body> Body for SentNotice<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        this.progress
            .waiting_on_client
            .store(polled.is_pending(), Ordering::Relaxed);
        match &polled {
            Poll::Ready(None) => notify(this.sent),
            Poll::Ready(Some(Ok(_))) => {
                this.progress.taken_now();
                // hyper stops polling a body that says it has ended
                if this.inner.is_end_stream() {
                    notify(this.sent);
                }
            }
            Poll::Ready(Some(Err(_))) => drop(this.sent.take()),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn notify(sent: &mut Option<oneshot::Sender<()>>) {
    if let Some(sent) = sent.take() {
        let _ = sent.send(());
    }
}
