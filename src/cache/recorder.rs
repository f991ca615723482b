//! The cache's recorder: the copy of a response on its way to the client, stored once its
//! body has gone by.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use sha2::{Digest, Sha256};

use super::config::Config;
use super::entry::{Entry, Pieces};
use super::flight::FlightGuard;
use super::key;
use super::lock::StoreLock;
use crate::body::Tap;
use crate::hex::hex_digest;

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
    /// For a partial response: the pieces stored so far, and the range this one holds.
    piece: Option<(Pieces, Range<u64>)>,
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
            piece: None,
        }
    }

    /// The recorder of a partial response holding `range`: once its body has gone by, it is
    /// added to `pieces` and stored with them, or as the complete entry when they make up
    /// the whole. `entry` holds the fields to store.
    pub(crate) fn partial(
        config: Arc<Config>,
        entry: Entry,
        url: String,
        pieces: Pieces,
        range: Range<u64>,
    ) -> Self {
        Self {
            piece: Some((pieces, range)),
            ..Self::new(config, entry, url, None, None)
        }
    }

    /// The recorder, completing `flight` (when it leads one) with its entry.
    pub(crate) fn led(mut self, flight: Option<FlightGuard>) -> Self {
        self.flight = flight;
        // the response's head has come: work the followers and the lock's renewal see
        self.show_progress();
        self
    }

    /// Tells the flight's followers, and the stampede lock's renewal, that the body is still
    /// coming: they wait on a slow body for as long as no piece is later than the deadline.
    fn show_progress(&self) {
        if let Some(flight) = &self.flight {
            flight.progress().stamp();
        } else if let Some(lock) = &self.lock {
            lock.progress().stamp();
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
        if let Some((pieces, range)) = self.piece {
            Self::finish_piece(&self.config, entry, &self.url, pieces, range, body);
            return;
        }
        if self.config.compute_etag && !entry.headers.contains_key(header::ETAG) {
            let digest = hex_digest(&Sha256::digest(&body)[..16]);
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
                entry.headers.insert(header::ETAG, etag);
            }
        }
        entry.body = body;
        let entry = Arc::new(entry);
        // stored before the flight ends (at once on the memory store): a request that finds
        // no flight finds the entry instead of rendering it again
        self.config.put(Arc::clone(&entry), &self.url, self.lock);
        if let Some(flight) = self.flight {
            flight.complete(entry);
        }
    }

    /// Adds a partial response's `body` to the stored `pieces` (RFC 9111 §3.4) and stores
    /// them, or the complete entry they make up.
    fn finish_piece(
        config: &Arc<Config>,
        mut entry: Entry,
        url: &str,
        pieces: Pieces,
        range: Range<u64>,
        body: Bytes,
    ) {
        if body.len() as u64 != range.end - range.start {
            tracing::debug!(url = %crate::failure::Digest(url), "partial response body does not match its Content-Range; not stored");
            return;
        }
        let pieces = pieces.with(range.start, body);
        let entry_key = key::entry_key(&config.prefix(), url, &entry.variant);
        let partial_key = key::partial_key(&entry_key);
        if let Some(whole) = pieces.whole() {
            entry.headers.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(pieces.complete_len),
            );
            entry.body = whole;
            config.put(Arc::new(entry), url, None);
            config.state.recent_pieces.forget_variant(url, &partial_key);
            config.discard(partial_key);
            return;
        }
        // the pieces hold the bytes: the entry keeps none of its own
        entry.body = Bytes::new();
        let write_ended = config.state.recent_pieces.keep(
            url,
            partial_key.clone(),
            entry.clone(),
            pieces.clone(),
        );
        config.put_partial(partial_key, entry, pieces, url, write_ended);
    }
}

impl Tap for Recorder {
    /// Keeps a data frame, or gives up when the body outgrows the bound.
    fn data(&mut self, data: &Bytes) -> bool {
        self.show_progress();
        self.len += data.len();
        if self.len > self.config.max_body {
            tracing::debug!(url = %crate::failure::Digest(&self.url), limit = self.config.max_body, "response body outgrew the cache bound; not stored");
            // as for a body whose declared length is over the bound: every follower goes to
            // the handler at once, and the key skips the flight for a while. Dropped
            // unfinished instead, the flight would hand itself to one follower after another,
            // each waiting for the body to outgrow the bound again
            if let Some(flight) = self.flight.take() {
                self.config.remember_uncacheable(flight.key());
                flight.uncacheable();
            }
            return false;
        }
        self.chunks.push(data.clone());
        true
    }

    fn end(self: Box<Self>) {
        self.finish();
    }
}
