//! The embedded backend: one redb file, the single-server default.
//!
//! Layout:
//! - `objects`: key (`/{group}/{plural}/{namespace}/{name}`) → JSON object with
//!   `metadata.resourceVersion` set to the revision that last wrote it.
//! - `history`: revision → one change record (type, key, object), compacted from below.
//! - `meta`: `rev` (last committed revision), `compacted` (highest removed history revision),
//!   `clean` (1 when the writer stopped cleanly: see [`opened_rev`]).
//!
//! All writes go through one writer thread ([`writer`]) that applies every mutation queued
//! at the moment it wakes up in one transaction and commits once (group commit): each caller
//! is answered only after the commit is durable — its records synced to the write-ahead log
//! ([`wal`], `<file>.wal`; redb itself is made durable at checkpoints) — except for keys under
//! the store's *soft* prefixes (Leases: renewals rewritten every few seconds, worthless after
//! a crash). Soft writes are not logged; the next checkpoint (the log grown past 4 MiB, a
//! flush at most [`SOFT_MAX_AGE`] later, or [`SOFT_MAX_REVS`] of them) writes them out. Idle,
//! the control plane then touches the disk a few times an hour instead of ~40 times a minute.
//! Reads use redb read transactions (MVCC snapshots), so they never wait for the writer. Every
//! committed change is published on an in-memory feed that [`watch`] combines with the
//! history table to resume from any retained revision without gaps or duplicates. A mutation
//! runs once, inside the batch's transaction, so it never sees a conflict. The writer keeps
//! the objects it wrote last ([`recent`]) and decodes nothing for a write to one of them.

mod recent;
pub(crate) mod wal;
pub(super) mod watch;
pub(crate) mod writer;

pub use wal::path_of as wal_path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{broadcast, mpsc, oneshot};
use wasmorch_api::ApiError;

use super::{Change, Committed, MutateFn, Options, seal, storage_err};

pub(crate) const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
pub(crate) const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// redb page cache.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Longest a soft write stays in memory only.
pub const SOFT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);
/// Most revisions committed softly before the writer makes them durable.
pub(crate) const SOFT_MAX_REVS: u64 = 1024;
/// Revisions a crash can lose (soft revisions, and one more batch): a store reopened after a
/// crash skips this many, so no revision a client has seen is ever handed out again.
pub(crate) const LOSABLE_REVS: u64 = SOFT_MAX_REVS + writer::MAX_BATCH as u64;

/// How many live events the feed buffers for a slow watcher before it must re-read history.
pub(crate) const FEED_CAPACITY: usize = 8192;

pub(crate) enum Op {
    Mutate {
        key: String,
        f: MutateFn,
        dry_run: bool,
        reply: oneshot::Sender<Result<writer::Done, ApiError>>,
    },
    Compact {
        keep: u64,
        reply: oneshot::Sender<Result<u64, ApiError>>,
    },
    /// Make softly committed writes durable now (and say when done).
    Flush(Option<oneshot::Sender<()>>),
    /// Finish the current batch, persist everything and stop the writer thread.
    Shutdown,
}

pub(crate) struct Shared {
    pub db: Database,
    /// Last committed revision. Written only by the writer thread after a commit.
    pub rev: AtomicU64,
    /// Highest revision removed from history. Watches from below it get 410 Gone.
    pub compacted: AtomicU64,
    pub feed: broadcast::Sender<Change>,
    /// Seals Secrets at rest.
    pub sealer: seal::Sealer,
    /// Key prefixes written softly (see the module docs).
    pub soft_prefixes: Vec<String>,
    /// Commits that waited for the disk, and commits that did not.
    pub durable_commits: AtomicU64,
    pub soft_commits: AtomicU64,
}

/// The revision a store continues from: the stored one, or after a crash (`clean` unset) the
/// stored one plus every revision the crash may have lost, which clients may have seen.
pub(crate) fn opened_rev(stored: u64, clean: bool) -> u64 {
    if clean || stored == 0 { stored } else { stored + LOSABLE_REVS }
}

/// The embedded store.
pub struct Embedded {
    shared: Arc<Shared>,
    ops: mpsc::Sender<Op>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The store file is open in another process (another control plane on this data directory).
#[derive(Debug, thiserror::Error)]
#[error("the store {} is held by another control plane process", .0.display())]
pub struct Locked(pub std::path::PathBuf);

impl Embedded {
    /// Open (or create) the store at `path`, every write durable, and start its writer thread.
    pub fn open(path: &Path) -> anyhow::Result<Embedded> {
        Embedded::open_with(path, Options::default())
    }

    /// Open (or create) the store at `path` and start its writer thread.
    pub fn open_with(path: &Path, options: Options) -> anyhow::Result<Embedded> {
        // redb's default page cache is 1 GiB; an edge node has a fraction of that to spare.
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => anyhow::Error::new(Locked(path.to_path_buf())),
            e => anyhow::anyhow!("opening store {}: {e}", path.display()),
        })?;
        // Writes logged since the last checkpoint, if the last run did not end with one.
        let log = wal::path_of(path);
        let (_, replayed) = wal::replay(&db, &log)?;
        if replayed > 0 {
            tracing::info!("the store's log held {replayed} writes past its last checkpoint: applied");
        }
        let wal = wal::Wal::open_empty(&log).map_err(|e| anyhow::anyhow!("opening {}: {e}", log.display()))?;
        let (rev, compacted) = {
            let txn = db.begin_write()?;
            let (rev, compacted) = {
                let _ = txn.open_table(OBJECTS)?;
                let _ = txn.open_table(HISTORY)?;
                let mut meta = txn.open_table(META)?;
                let stored = meta.get("rev")?.map(|g| g.value()).unwrap_or(0);
                let clean = meta.get("clean")?.is_some_and(|g| g.value() == 1);
                let compacted = meta.get("compacted")?.map(|g| g.value()).unwrap_or(0);
                let rev = opened_rev(stored, clean);
                if rev != stored {
                    tracing::warn!("the store was not closed cleanly: revisions continue from {rev} (stored {stored})");
                    meta.insert("rev", rev)?;
                }
                // Unset until the writer stops cleanly.
                meta.insert("clean", 0)?;
                (rev, compacted)
            };
            txn.commit()?;
            (rev, compacted)
        };
        let sealer = seal::Sealer::load_or_create(&seal::key_path(path))?;
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let shared = Arc::new(Shared {
            db,
            rev: AtomicU64::new(rev),
            compacted: AtomicU64::new(compacted),
            feed,
            sealer,
            soft_prefixes: options.soft_prefixes,
            durable_commits: AtomicU64::new(0),
            soft_commits: AtomicU64::new(0),
        });
        // Bounded: when the disk cannot keep up, callers wait here instead of growing memory.
        let (tx, rx) = mpsc::channel(4096);
        let s = shared.clone();
        let handle = std::thread::Builder::new().name("store-writer".into()).spawn(move || writer::run(s, rx, wal))?;
        if !shared.soft_prefixes.is_empty() {
            // Soft writes reach the disk within SOFT_MAX_AGE even when nothing else is written.
            let weak = tx.downgrade();
            std::thread::Builder::new().name("store-flush".into()).spawn(move || {
                loop {
                    std::thread::sleep(SOFT_MAX_AGE);
                    let Some(tx) = weak.upgrade() else { return };
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Op::Flush(None)) {
                        return;
                    }
                }
            })?;
        }
        Ok(Embedded { shared, ops: tx, writer: std::sync::Mutex::new(Some(handle)) })
    }

    /// Stop the writer after what is queued, and wait for it. Later writes fail with 503.
    pub async fn close(&self) {
        let _ = self.ops.send(Op::Shutdown).await;
        // std Mutex: held only to take the handle, never across an await.
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    pub fn current_rev(&self) -> u64 {
        self.shared.rev.load(Ordering::Acquire)
    }

    pub fn compacted_rev(&self) -> u64 {
        self.shared.compacted.load(Ordering::Acquire)
    }

    /// Commits so far: (waited for the disk, did not).
    pub fn commits(&self) -> (u64, u64) {
        (self.shared.durable_commits.load(Ordering::Relaxed), self.shared.soft_commits.load(Ordering::Relaxed))
    }

    /// Make every softly committed write durable now.
    pub async fn flush(&self) -> Result<(), ApiError> {
        let (reply, rx) = oneshot::channel();
        self.ops.send(Op::Flush(Some(reply))).await.map_err(|_| ApiError::unavailable("the store is shutting down"))?;
        rx.await.map_err(|_| ApiError::unavailable("the store writer stopped"))
    }

    /// Apply `f` to the current object at `key`, durably (softly under a soft prefix).
    /// `dry_run` evaluates without writing.
    pub async fn mutate(&self, key: String, dry_run: bool, f: MutateFn) -> Result<Committed, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.ops
            .send(Op::Mutate { key, f, dry_run, reply })
            .await
            .map_err(|_| ApiError::unavailable("the store is shutting down"))?;
        rx.await.map_err(|_| ApiError::unavailable("the store writer stopped"))?.map(writer::Done::committed)
    }

    /// Remove history at or below `current - keep`. Returns the new compacted revision.
    pub async fn compact(&self, keep: u64) -> Result<u64, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.ops
            .send(Op::Compact { keep, reply })
            .await
            .map_err(|_| ApiError::unavailable("the store is shutting down"))?;
        rx.await.map_err(|_| ApiError::unavailable("the store writer stopped"))?
    }

    /// Read one object.
    pub async fn get(&self, key: &str) -> Result<Option<Value>, ApiError> {
        let shared = self.shared.clone();
        let key = key.to_string();
        blocking(move || {
            let txn = shared.db.begin_read().map_err(storage_err)?;
            let t = txn.open_table(OBJECTS).map_err(storage_err)?;
            match t.get(key.as_str()).map_err(storage_err)? {
                Some(v) => {
                    Ok(Some(serde_json::from_slice(&shared.sealer.open(&key, v.value())?).map_err(storage_err)?))
                }
                None => Ok(None),
            }
        })
        .await
    }

    /// All objects whose key starts with `prefix`, after `start_after` (for paging), at most
    /// `limit` (0 = all), and the revision of the snapshot they were read at.
    pub async fn list(
        &self,
        prefix: &str,
        start_after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Value>, u64, bool), ApiError> {
        let shared = self.shared.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            let txn = shared.db.begin_read().map_err(storage_err)?;
            let rev = txn
                .open_table(META)
                .map_err(storage_err)?
                .get("rev")
                .map_err(storage_err)?
                .map(|g| g.value())
                .unwrap_or(0);
            let t = txn.open_table(OBJECTS).map_err(storage_err)?;
            let start = start_after.unwrap_or_else(|| prefix.clone());
            let mut out = Vec::new();
            let mut more = false;
            for item in t.range(start.as_str()..).map_err(storage_err)? {
                let (k, v) = item.map_err(storage_err)?;
                let k = k.value();
                if !k.starts_with(prefix.as_str()) {
                    break;
                }
                if k == start {
                    continue;
                }
                if limit > 0 && out.len() == limit {
                    more = true;
                    break;
                }
                out.push(serde_json::from_slice(&shared.sealer.open(k, v.value())?).map_err(storage_err)?);
            }
            Ok((out, rev, more))
        })
        .await
    }

    /// Changes under `prefix` with revision greater than `after`.
    /// `Err(410 Gone)` if `after` is older than the compacted history.
    pub fn watch(&self, prefix: &str, after: u64) -> Result<watch::WatchStream, ApiError> {
        watch::WatchStream::new(self.shared.clone(), prefix.to_string(), after)
    }

    /// Write a consistent snapshot of the whole store to a new redb file at `dest`. Secrets
    /// stay sealed: the snapshot is restored with the server's own key file (`state.key`).
    pub async fn backup(&self, dest: &Path) -> Result<u64, ApiError> {
        let shared = self.shared.clone();
        let dest = dest.to_path_buf();
        blocking(move || {
            let txn = shared.db.begin_read().map_err(storage_err)?;
            let out = Database::create(&dest).map_err(storage_err)?;
            let w = out.begin_write().map_err(storage_err)?;
            let rev;
            {
                let src = txn.open_table(OBJECTS).map_err(storage_err)?;
                let mut dst = w.open_table(OBJECTS).map_err(storage_err)?;
                for item in src.iter().map_err(storage_err)? {
                    let (k, v) = item.map_err(storage_err)?;
                    dst.insert(k.value(), v.value()).map_err(storage_err)?;
                }
                let src = txn.open_table(HISTORY).map_err(storage_err)?;
                let mut dst = w.open_table(HISTORY).map_err(storage_err)?;
                for item in src.iter().map_err(storage_err)? {
                    let (k, v) = item.map_err(storage_err)?;
                    dst.insert(k.value(), v.value()).map_err(storage_err)?;
                }
                let src = txn.open_table(META).map_err(storage_err)?;
                let mut dst = w.open_table(META).map_err(storage_err)?;
                for item in src.iter().map_err(storage_err)? {
                    let (k, v) = item.map_err(storage_err)?;
                    dst.insert(k.value(), v.value()).map_err(storage_err)?;
                }
                rev = src.get("rev").map_err(storage_err)?.map(|g| g.value()).unwrap_or(0);
            }
            w.commit().map_err(storage_err)?;
            Ok(rev)
        })
        .await
    }
}

/// Write a store file at `dest` holding `objects` (key → stored bytes, as the objects table
/// keeps them) at revision `rev`, with no history: the backup of another engine.
pub fn write_snapshot(dest: &Path, rev: u64, objects: Vec<(String, Vec<u8>)>) -> Result<(), ApiError> {
    let out = Database::create(dest).map_err(storage_err)?;
    let w = out.begin_write().map_err(storage_err)?;
    {
        let mut dst = w.open_table(OBJECTS).map_err(storage_err)?;
        for (k, v) in &objects {
            dst.insert(k.as_str(), v.as_slice()).map_err(storage_err)?;
        }
        let _ = w.open_table(HISTORY).map_err(storage_err)?;
        let mut meta = w.open_table(META).map_err(storage_err)?;
        meta.insert("rev", rev).map_err(storage_err)?;
        meta.insert("compacted", rev).map_err(storage_err)?;
        meta.insert("clean", 1).map_err(storage_err)?;
    }
    w.commit().map_err(storage_err)
}

/// A key and its stored bytes (Secrets sealed).
pub type StoredObject = (String, Vec<u8>);

/// Every object of the store file at `path` (key → stored bytes, Secrets sealed) and its
/// revision: what a restore into another engine writes.
pub fn read_snapshot(path: &Path) -> anyhow::Result<(u64, Vec<StoredObject>)> {
    let rev = verify_snapshot(path)?;
    let db = Database::open(path)?;
    let txn = db.begin_read()?;
    let t = txn.open_table(OBJECTS)?;
    let mut out = Vec::new();
    for item in t.iter()? {
        let (k, v) = item?;
        out.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok((rev, out))
}

/// Check that `path` is a readable wasmorch store (used before restoring from it).
pub fn verify_snapshot(path: &Path) -> anyhow::Result<u64> {
    let db = Database::open(path).map_err(|e| anyhow::anyhow!("{} is not a wasmorch snapshot: {e}", path.display()))?;
    let txn = db.begin_read()?;
    let meta =
        txn.open_table(META).map_err(|e| anyhow::anyhow!("{} is not a wasmorch snapshot: {e}", path.display()))?;
    let _ = txn.open_table(OBJECTS)?;
    Ok(meta.get("rev")?.map(|g| g.value()).unwrap_or(0))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("store task: {e}")))?
}
