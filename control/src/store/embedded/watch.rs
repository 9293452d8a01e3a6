//! Watch: history replay joined to the live feed, in revision order, without gaps or duplicates.
//!
//! The stream subscribes to the live feed *before* reading history, so every change is seen
//! at least once; `last` (the highest revision delivered or skipped) drops the overlap. A
//! watcher that falls behind the feed's buffer (`Lagged`) goes back to the history table,
//! and gets 410 Gone only if what it missed has been compacted away.

use super::{HISTORY, META, Shared};
use crate::store::{Change, Event, gone, storage_err};
use redb::ReadableDatabase;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::broadcast;
use wasmorch_api::ApiError;

/// History records read per step while catching up.
const HISTORY_PAGE: usize = 2000;

pub struct WatchStream {
    shared: Arc<Shared>,
    prefix: String,
    last: u64,
    rx: broadcast::Receiver<Change>,
    pending: VecDeque<Arc<Event>>,
    caught_up: bool,
}

impl WatchStream {
    pub(super) fn new(shared: Arc<Shared>, prefix: String, after: u64) -> Result<Self, ApiError> {
        let rx = shared.feed.subscribe();
        let compacted = shared.compacted.load(Ordering::Acquire);
        if after < compacted {
            return Err(gone(after, compacted));
        }
        Ok(WatchStream { shared, prefix, last: after, rx, pending: VecDeque::new(), caught_up: false })
    }

    /// The highest revision this stream has passed (delivered or filtered out).
    pub fn last_rev(&self) -> u64 {
        self.last
    }

    /// The next change under the prefix. Cancel-safe.
    pub async fn next(&mut self) -> Result<Change, ApiError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e.into());
            }
            if !self.caught_up {
                self.read_history().await?;
                continue;
            }
            match self.rx.recv().await {
                Ok(change) => {
                    let ev = &change.event;
                    if ev.rev <= self.last {
                        continue;
                    }
                    self.last = ev.rev;
                    if ev.key.starts_with(&self.prefix) {
                        return Ok(change);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::info!("a watch of {} fell {n} changes behind the live feed; reading history", self.prefix);
                    self.caught_up = false;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(ApiError::unavailable("the store is shutting down"));
                }
            }
        }
    }

    async fn read_history(&mut self) -> Result<(), ApiError> {
        let shared = self.shared.clone();
        let after = self.last;
        let (records, compacted) = tokio::task::spawn_blocking(move || -> Result<(Vec<Event>, u64), ApiError> {
            let txn = shared.db.begin_read().map_err(storage_err)?;
            let compacted = txn
                .open_table(META)
                .map_err(storage_err)?
                .get("compacted")
                .map_err(storage_err)?
                .map(|g| g.value())
                .unwrap_or(0);
            if after < compacted {
                return Ok((Vec::new(), compacted));
            }
            let t = txn.open_table(HISTORY).map_err(storage_err)?;
            let mut out = Vec::new();
            for item in t.range(after + 1..).map_err(storage_err)?.take(HISTORY_PAGE) {
                let (_, v) = item.map_err(storage_err)?;
                let rec: crate::store::seal::Record = serde_json::from_slice(v.value()).map_err(storage_err)?;
                out.push(rec.into_event(&shared.sealer)?);
            }
            Ok((out, 0))
        })
        .await
        .map_err(|e| ApiError::internal(format!("watch task: {e}")))??;
        if compacted > 0 {
            return Err(gone(after, compacted));
        }
        if records.len() < HISTORY_PAGE {
            self.caught_up = true;
        }
        for ev in records {
            self.last = ev.rev;
            if ev.key.starts_with(&self.prefix) {
                self.pending.push_back(Arc::new(ev));
            }
        }
        Ok(())
    }
}
