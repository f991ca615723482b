//! What the cluster client knows about nodes beyond redis-rs's routing: addresses that the
//! cluster named but cannot be reached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::StoreErrorKind;

/// A node address that the cluster named and that could not be reached.
#[derive(Debug)]
struct Unreachable {
    at: Instant,
    kind: StoreErrorKind,
    reason: String,
}

/// The cluster's nodes as the store has found them, shared by the calls.
#[derive(Debug, Default)]
pub(super) struct Nodes {
    unreachable: Mutex<HashMap<String, Unreachable>>,
}

impl Nodes {
    /// Records that `node` (`host:port`) could not be reached.
    pub(super) fn unreachable(&self, node: &str, kind: StoreErrorKind, reason: String) {
        if let Ok(mut unreachable) = self.unreachable.lock() {
            unreachable.insert(
                node.to_owned(),
                Unreachable {
                    at: Instant::now(),
                    kind,
                    reason,
                },
            );
        }
    }

    /// How `node` failed to be reached within the last `window`, if it did.
    pub(super) fn recently_unreachable(
        &self,
        node: &str,
        window: Duration,
    ) -> Option<(StoreErrorKind, String)> {
        let mut unreachable = self.unreachable.lock().ok()?;
        // the table holds what the cluster named, a few addresses; expired ones go here
        unreachable.retain(|_, found| found.at.elapsed() < window);
        let found = unreachable.get(node)?;
        Some((
            found.kind,
            format!(
                "{} ({} ms ago)",
                found.reason,
                found.at.elapsed().as_millis()
            ),
        ))
    }
}
