//! The pieces of partial responses this process wrote in the last seconds: merged with what
//! the store holds until their write has landed, bounded in bytes, and dropped with every
//! invalidation of their URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use moka::ops::compute::Op;

use super::entry::{Entry, Pieces};

/// How long a process keeps the pieces it wrote: far longer than a write takes, short
/// enough that a piece never outlives the entry it completes by much.
const KEPT_FOR: Duration = Duration::from_secs(10);

/// The pieces of one variant this process wrote last, with the fields that go with them.
#[derive(Debug)]
pub(crate) struct Written {
    /// The entry's fields; its body is empty, the pieces hold the bytes.
    pub(crate) entry: Entry,
    pub(crate) pieces: Pieces,
    /// The partial entry's key, which tells the variants of one URL apart.
    partial_key: String,
    /// Set once the store write of these pieces has ended, landed or failed.
    write_ended: Arc<AtomicBool>,
}

/// Marks the end of the store write of some recent pieces when dropped, whether the write
/// landed, failed or was never run.
#[derive(Debug)]
pub(crate) struct WriteEnded(Arc<AtomicBool>);

impl Drop for WriteEnded {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Written {
    /// Whether these pieces still stand for a write the store may not have answered yet.
    /// Once it has, what the store holds is the truth: pieces the store no longer has were
    /// deleted (an invalidation on any instance), expired or evicted since.
    fn write_pending(&self) -> bool {
        !self.write_ended.load(Ordering::Acquire)
    }
}

/// Recent pieces as seen before a store read.
#[derive(Debug)]
pub(crate) struct Sighting {
    written: Arc<Written>,
    /// Whether their write had not ended when they were seen, so a store read sent after
    /// may have been answered before it landed.
    write_pending: bool,
}

impl Sighting {
    /// The pieces, when they still stand beside what a store read sent after the sighting
    /// answered: `stored_any` says whether the store held pieces of this variant at all.
    /// Without, pieces whose write had ended before the read are gone from the store
    /// (deleted by an invalidation on any instance, expired or evicted), and not served.
    pub(crate) fn beside(self, stored_any: bool) -> Option<Arc<Written>> {
        (stored_any || self.write_pending).then_some(self.written)
    }
}

/// Every URL's recently written pieces, at most `budget` bytes of them in all.
pub(crate) struct RecentPieces {
    /// URL key → the variants written, newest last.
    by_url: moka::sync::Cache<String, Arc<Vec<Arc<Written>>>>,
}

impl std::fmt::Debug for RecentPieces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentPieces")
            .field("urls", &self.by_url.entry_count())
            .finish()
    }
}

impl RecentPieces {
    /// Room for `budget` bytes of pieces. Each URL weighs the bytes of its pieces and
    /// fields: a flood of partial responses for distinct URLs evicts the oldest, and pins
    /// no more than the budget.
    pub(crate) fn new(budget: u64) -> Self {
        Self {
            by_url: moka::sync::Cache::builder()
                .max_capacity(budget)
                .weigher(|url: &String, variants: &Arc<Vec<Arc<Written>>>| {
                    let bytes = url.len()
                        + variants
                            .iter()
                            .map(|written| {
                                written.pieces.len()
                                    + written.partial_key.len()
                                    + written
                                        .entry
                                        .headers
                                        .iter()
                                        .map(|(name, value)| name.as_str().len() + value.len())
                                        .sum::<usize>()
                            })
                            .sum::<usize>();
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .time_to_live(KEPT_FOR)
                .build(),
        }
    }

    /// Keeps `pieces` of the variant stored under `partial_key` of `url`, until the store
    /// write that holds the returned guard ends and the store then no longer has them.
    pub(crate) fn keep(
        &self,
        url: &str,
        partial_key: String,
        entry: Entry,
        pieces: Pieces,
    ) -> WriteEnded {
        let write_ended = Arc::new(AtomicBool::new(false));
        let written = Arc::new(Written {
            entry,
            pieces,
            partial_key,
            write_ended: Arc::clone(&write_ended),
        });
        self.by_url
            .entry(url.to_owned())
            .and_compute_with(|current| {
                let mut variants: Vec<Arc<Written>> = current.map_or_else(Vec::new, |current| {
                    current
                        .value()
                        .iter()
                        .filter(|other| other.partial_key != written.partial_key)
                        .cloned()
                        .collect()
                });
                variants.push(written);
                Op::Put(Arc::new(variants))
            });
        WriteEnded(write_ended)
    }

    /// The pieces this process wrote last under `partial_key` of `url`, as seen now: look
    /// before reading the store, then ask the sighting whether they stand beside what the
    /// store answered.
    pub(crate) fn look(&self, url: &str, partial_key: &str) -> Option<Sighting> {
        let variants = self.by_url.get(url)?;
        let written = variants
            .iter()
            .find(|written| written.partial_key == partial_key)?;
        Some(Sighting {
            write_pending: written.write_pending(),
            written: Arc::clone(written),
        })
    }

    /// Drops a variant whose pieces became its complete entry.
    pub(crate) fn forget_variant(&self, url: &str, partial_key: &str) {
        self.by_url
            .entry(url.to_owned())
            .and_compute_with(|current| {
                let Some(current) = current else {
                    return Op::Nop;
                };
                let rest: Vec<Arc<Written>> = current
                    .value()
                    .iter()
                    .filter(|written| written.partial_key != partial_key)
                    .cloned()
                    .collect();
                if rest.is_empty() {
                    Op::Remove
                } else {
                    Op::Put(Arc::new(rest))
                }
            });
    }

    /// Drops every variant of `url`: it was invalidated.
    pub(crate) fn forget_url(&self, url: &str) {
        self.by_url.invalidate(url);
    }

    /// Drops everything: a pattern or the whole namespace was invalidated.
    pub(crate) fn forget_all(&self) {
        self.by_url.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn entry() -> Entry {
        Entry {
            status: http::StatusCode::PARTIAL_CONTENT,
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
            stored_at: std::time::SystemTime::UNIX_EPOCH,
            initial_age: Duration::ZERO,
            freshness: Duration::from_secs(60),
            keep: Duration::from_secs(60),
            reuse: crate::cache::policy::Reuse::default(),
            vary: Vec::new(),
            variant: "-".to_owned(),
        }
    }

    fn pieces(len: usize) -> Pieces {
        Pieces {
            complete_len: 1 << 30,
            held: vec![(0, Bytes::from(vec![b'x'; len]))],
        }
    }

    #[test]
    fn pieces_whose_write_ended_stand_only_beside_stored_ones() {
        let recent = RecentPieces::new(1 << 20);
        let ended = recent.keep("u", "u:a:partial".into(), entry(), pieces(10));
        let before_the_write_ended = recent.look("u", "u:a:partial").unwrap();
        drop(ended);
        assert!(
            before_the_write_ended.beside(false).is_some(),
            "a read sent while the write was pending may have missed it"
        );
        assert!(
            recent
                .look("u", "u:a:partial")
                .unwrap()
                .beside(true)
                .is_some()
        );
        assert!(
            recent
                .look("u", "u:a:partial")
                .unwrap()
                .beside(false)
                .is_none(),
            "the store lost them: so does the process"
        );
    }

    #[test]
    fn a_url_forgets_every_variant_at_once() {
        let recent = RecentPieces::new(1 << 20);
        recent.keep("u", "u:a:partial".into(), entry(), pieces(10));
        recent.keep("u", "u:b:partial".into(), entry(), pieces(10));
        recent.keep("v", "v:a:partial".into(), entry(), pieces(10));
        assert!(recent.look("u", "u:a:partial").is_some());
        assert!(recent.look("u", "u:b:partial").is_some());
        recent.forget_url("u");
        assert!(recent.look("u", "u:a:partial").is_none());
        assert!(recent.look("u", "u:b:partial").is_none());
        assert!(recent.look("v", "v:a:partial").is_some());
        recent.forget_variant("v", "v:a:partial");
        assert!(recent.look("v", "v:a:partial").is_none());
        recent.keep("w", "w:a:partial".into(), entry(), pieces(10));
        recent.forget_all();
        assert!(recent.look("w", "w:a:partial").is_none());
    }

    #[test]
    fn the_budget_bounds_the_bytes_kept() {
        let recent = RecentPieces::new(4 << 20);
        for url in 0..250 {
            recent.keep(
                &format!("u{url}"),
                format!("u{url}:a:partial"),
                entry(),
                pieces(1 << 20),
            );
        }
        recent.by_url.run_pending_tasks();
        assert!(
            recent.by_url.weighted_size() <= 4 << 20,
            "{} bytes kept",
            recent.by_url.weighted_size()
        );
    }
}
