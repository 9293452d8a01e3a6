//! A watch on etcd: one etcd watch from `last + 1` with the previous value (for DELETED
//! events) and progress requests while quiet, reopened from where it got to when its member
//! goes.

use super::{LOCKS, etcd_err, keys};
use crate::store::seal::Sealer;
use crate::store::{Event, EventType, gone, storage_err};
use etcd_client::{Client, WatchOptions, WatchResponseStream};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmorch_api::{ApiError, object};

/// How often a quiet watch asks etcd how far it has got (for bookmarks).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A watch on etcd: one etcd watch from `last + 1`, reopened from where it got to when its
/// connection breaks (etcd's client moves to another member).
pub struct WatchStream {
    client: Client,
    /// The etcd key prefix watched.
    etcd_prefix: String,
    /// The engine's key prefix.
    prefix: String,
    sealer: Arc<Sealer>,
    compacted: Arc<AtomicU64>,
    last: u64,
    open: Option<Open>,
    pending: std::collections::VecDeque<Arc<Event>>,
    /// Reopenings in a row that failed.
    failures: u32,
}

struct Open {
    requests: etcd_client::WatchRequestSender,
    responses: WatchResponseStream,
    progress: tokio::time::Interval,
}

impl WatchStream {
    pub(super) fn new(
        client: Client,
        etcd_prefix: String,
        prefix: String,
        sealer: Arc<Sealer>,
        compacted: Arc<AtomicU64>,
        after: u64,
    ) -> WatchStream {
        WatchStream {
            client,
            etcd_prefix,
            prefix,
            sealer,
            compacted,
            last: after,
            open: None,
            pending: std::collections::VecDeque::new(),
            failures: 0,
        }
    }

    pub fn last_rev(&self) -> u64 {
        self.last
    }

    async fn open(&mut self) -> Result<(), ApiError> {
        let opts = WatchOptions::new()
            .with_range(keys::range_end(self.etcd_prefix.as_bytes()))
            .with_start_revision(self.last as i64 + 1)
            .with_prev_key()
            .with_progress_notify();
        let mut w = self.client.watch_client();
        let stream = tokio::time::timeout(Duration::from_secs(10), w.watch(self.etcd_prefix.as_str(), Some(opts)))
            .await
            .map_err(|_| ApiError::unavailable("etcd: opening a watch timed out"))?
            .map_err(etcd_err)?;
        let (requests, responses) = stream.split();
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.tick().await;
        self.open = Some(Open { requests, responses, progress });
        Ok(())
    }

    /// The next change under the prefix. Cancel-safe: state changes only after an await
    /// completes.
    pub async fn next(&mut self) -> Result<Arc<Event>, ApiError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            if self.open.is_none()
                && let Err(e) = self.open().await
            {
                self.failures += 1;
                if self.failures > 3 {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(self.failures))).await;
                continue;
            }
            let Some(open) = self.open.as_mut() else { continue };
            let msg = tokio::select! {
                m = open.responses.message() => m,
                _ = open.progress.tick() => {
                    // Quiet: ask how far etcd has got, for the next bookmark.
                    let _ = open.requests.request_progress().await;
                    continue;
                }
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => {
                    // The member went away: reopen from the last revision passed.
                    self.open = None;
                    self.failures += 1;
                    continue;
                }
            };
            self.failures = 0;
            if resp.canceled() {
                let c = resp.compact_revision();
                if c > 0 {
                    self.compacted.fetch_max(c as u64, Ordering::AcqRel);
                    return Err(gone(self.last, c as u64));
                }
                return Err(ApiError::unavailable(format!("etcd cancelled the watch: {}", resp.cancel_reason())));
            }
            if resp.created() {
                // Its header is the store's revision now, but older events may still follow.
                continue;
            }
            if resp.events().is_empty() {
                // A progress notification: nothing under the prefix up to this revision.
                if let Some(h) = resp.header() {
                    self.last = self.last.max(h.revision().max(0) as u64);
                }
                continue;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let rev = kv.mod_revision().max(0) as u64;
                let ekey = String::from_utf8_lossy(kv.key());
                let Some(key) = keys::from_etcd(&self.prefix, &ekey).filter(|k| !k.starts_with(LOCKS)) else {
                    continue;
                };
                let decode = |bytes: &[u8]| -> Result<Value, ApiError> {
                    let plain = self.sealer.open(&key, bytes)?;
                    let mut v: Value = serde_json::from_slice(&plain).map_err(storage_err)?;
                    object::set_resource_version(&mut v, rev);
                    Ok(v)
                };
                let (kind, object) = match ev.event_type() {
                    etcd_client::EventType::Put => {
                        let kind = if kv.create_revision() == kv.mod_revision() {
                            EventType::Added
                        } else {
                            EventType::Modified
                        };
                        (kind, decode(kv.value())?)
                    }
                    etcd_client::EventType::Delete => {
                        let object = match ev.prev_kv() {
                            Some(p) => decode(p.value())?,
                            None => deleted_stub(&key, rev),
                        };
                        (EventType::Deleted, object)
                    }
                };
                self.last = rev;
                self.pending.push_back(Arc::new(Event { rev, kind, key, object }));
            }
        }
    }
}

/// What a DELETED event carries when etcd no longer has the previous value: the name.
fn deleted_stub(key: &str, rev: u64) -> Value {
    let parts: Vec<&str> = key.trim_matches('/').split('/').collect();
    let (ns, name) = match parts.as_slice() {
        [_, _, ns, name] => (*ns, *name),
        [_, _, name] => ("", *name),
        _ => ("", ""),
    };
    let mut meta = serde_json::json!({"name": name, "resourceVersion": rev.to_string()});
    if !ns.is_empty() {
        meta["namespace"] = Value::String(ns.to_string());
    }
    serde_json::json!({"metadata": meta})
}
