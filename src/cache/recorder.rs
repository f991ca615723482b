//! The cache's recorder: the copy of a response on its way to the client, stored once its
//! body has gone by.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use sha2::{Digest, Sha256};

use super::entry::Entry;
use super::flight::{FlightGuard, StoreLock};
use super::layer::Config;
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

impl Tap for Recorder {
    /// Keeps a data frame, or gives up when the body outgrows the bound.
    fn data(&mut self, data: &Bytes) -> bool {
        self.len += data.len();
        if self.len > self.config.max_body {
            tracing::debug!(url = %crate::failure::Digest(&self.url), limit = self.config.max_body, "response body outgrew the cache bound; not stored");
            return false;
        }
        self.chunks.push(data.clone());
        true
    }

    fn end(self: Box<Self>) {
        self.finish();
    }
}
