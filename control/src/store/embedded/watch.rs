//! Watch: history replay joined to the live feed, in revision order, without gaps or duplicates.
//!
//! The stream subscribes to the live feed *before* reading history, so every change is seen
//! at least once; `last` (the highest revision delivered or skipped) drops the overlap. History
//! is read only up to the store's revision when the stream subscribed (`until`): every change
//! after it is in the feed's buffer, so a watch that starts behind a busy writer reads what it
//! missed once, rather than chasing the writer page by page through records the feed holds
//! already. A watcher that falls behind the feed's buffer (`Lagged`) goes back to the history
//! table, up to the revision of that moment, and gets 410 Gone only if what it missed has been
//! compacted away.

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
    /// The revision history is read up to; the feed holds every change after it.
    until: u64,
    /// History records read so far (all keys'), for tests.
    history_read: u64,
}

impl WatchStream {
    pub(super) fn new(shared: Arc<Shared>, prefix: String, after: u64) -> Result<Self, ApiError> {
        let rx = shared.feed.subscribe();
        // Read after subscribing: the writer stores a revision before it sends the change, so
        // whatever was sent before the subscription is at or below this.
        let until = shared.rev.load(Ordering::Acquire);
        let compacted = shared.compacted.load(Ordering::Acquire);
        if after < compacted {
            return Err(gone(after, compacted));
        }
        let caught_up = after >= until;
        Ok(WatchStream { shared, prefix, last: after, rx, pending: VecDeque::new(), caught_up, until, history_read: 0 })
    }

    /// History records this stream has read (of every key).
    #[cfg(test)]
    pub(crate) fn history_read(&self) -> u64 {
        self.history_read
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
                    // What the buffer dropped is committed by now: read up to the present.
                    self.until = self.shared.rev.load(Ordering::Acquire);
                    self.caught_up = self.last >= self.until;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(ApiError::unavailable("the store is shutting down"));
                }
            }
        }
    }

    async fn read_history(&mut self) -> Result<(), ApiError> {
        let shared = self.shared.clone();
        let (after, until, prefix) = (self.last, self.until, self.prefix.clone());
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
            for item in t.range(after + 1..=until).map_err(storage_err)?.take(HISTORY_PAGE) {
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
        self.history_read += page.read as u64;
        crate::telemetry::get().watch_history_read.inc_by(page.read as u64);
        if page.read < HISTORY_PAGE || page.last >= self.until {
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
