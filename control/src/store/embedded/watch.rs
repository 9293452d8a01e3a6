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
    pending: VecDeque<Change>,
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
            if let Some(c) = self.pending.pop_front() {
                return Ok(c);
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
                    // Rare (the feed buffers FEED_CAPACITY changes) and costly: worth a line.
                    tracing::warn!("a watch of {} fell {n} changes behind the live feed; reading history", self.prefix);
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
        let (after, prefix) = (self.last, self.prefix.clone());
        let page = tokio::task::spawn_blocking(move || -> Result<Page, ApiError> {
            let txn = shared.db.begin_read().map_err(storage_err)?;
            let compacted = txn
                .open_table(META)
                .map_err(storage_err)?
                .get("compacted")
                .map_err(storage_err)?
                .map(|g| g.value())
                .unwrap_or(0);
            if after < compacted {
                return Err(gone(after, compacted));
            }
            let t = txn.open_table(HISTORY).map_err(storage_err)?;
            let mut page = Page { events: Vec::new(), read: 0, last: after };
            for item in t.range(after + 1..).map_err(storage_err)?.take(HISTORY_PAGE) {
                let (rev, v) = item.map_err(storage_err)?;
                page.read += 1;
                page.last = rev.value();
                // One pass over the record: its head, and its object kept as the raw JSON the
                // writer stored. Only a change under the prefix has its object decoded
                // (history holds every kind's changes: a watch of Nodes catching up through
                // thousands of pod writes would otherwise decode each pod), and its JSON is
                // served as stored, not serialized again.
                let raw: Raw = serde_json::from_slice(v.value()).map_err(storage_err)?;
                if !raw.key.starts_with(prefix.as_str()) {
                    continue;
                }
                page.events.push(match raw.object {
                    Some(o) => {
                        let object = serde_json::from_str(o.get()).map_err(storage_err)?;
                        let event = Event { rev: raw.rev, kind: raw.kind, key: raw.key.into_owned(), object };
                        Change { event: Arc::new(event), json: Some(bytes::Bytes::copy_from_slice(o.get().as_bytes())) }
                    }
                    // Sealed (a Secret): opened, then served from its object.
                    None => {
                        let rec: crate::store::seal::Record = serde_json::from_slice(v.value()).map_err(storage_err)?;
                        Arc::new(rec.into_event(&shared.sealer)?).into()
                    }
                });
            }
            Ok(page)
        })
        .await
        .map_err(|e| ApiError::internal(format!("watch task: {e}")))??;
        if page.read < HISTORY_PAGE {
            self.caught_up = true;
        }
        self.last = page.last;
        self.pending.extend(page.events);
        Ok(())
    }
}

/// One step through history: the changes under the prefix, how many records were read, and
/// the revision of the last one.
struct Page {
    events: Vec<Change>,
    read: usize,
    last: u64,
}

/// A history record read in one pass: its head, and its object (absent when sealed) as the
/// JSON text stored, borrowed from the table's bytes.
#[derive(serde::Deserialize)]
struct Raw<'a> {
    rev: u64,
    #[serde(rename = "type")]
    kind: crate::store::EventType,
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    object: Option<&'a serde_json::value::RawValue>,
}
