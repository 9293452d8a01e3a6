//! The single writer: group commit of every queued mutation.
//!
//! Why one thread: redb allows one write transaction at a time, and fsync is the cost that
//! matters (~200 µs here). Taking everything queued at wake-up into one transaction turns
//! N concurrent writes into one fsync; a lone writer still commits at once (no timer).
//!
//! redb commits without syncing (`Durability::None`). A batch with a durable write is
//! durable once its history records are appended to the write-ahead log and the log is
//! synced ([`super::wal`]); redb itself is made durable at a *checkpoint* (when the log has
//! grown past [`super::wal::CHECKPOINT_BYTES`], for a compaction, a flush, or the soft
//! writes' bounds), after which the log is emptied; [`plan`] decides.
//!
//! Soft writes (keys under the store's soft prefixes) do not wait for the disk: they are not
//! logged, and the next checkpoint writes them out.

use super::recent::Recent;
use super::wal::{self, Wal};
use super::{HISTORY, META, OBJECTS, Op, Shared};
use crate::store::seal::{Record, Sealer, is_sealed_key};
use crate::store::{Change, Committed, Event, EventType, Outcome, Stored, storage_err};
use bytes::Bytes;
use redb::{Durability, ReadableTable, WriteTransaction};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use wasmorch_api::{ApiError, object};

/// Most mutations in one transaction; bounds commit latency under a flood.
pub(crate) const MAX_BATCH: usize = 512;
/// Most history records removed per compaction step, so the writer never stalls long.
const COMPACT_STEP: u64 = 20_000;

enum Reply {
    Mutate(oneshot::Sender<Result<Done, ApiError>>, Result<Done, ApiError>),
    Compact(oneshot::Sender<Result<u64, ApiError>>, Result<u64, ApiError>),
}

/// What redb has not made durable yet.
struct Unflushed {
    /// Revisions committed softly (not logged) since the last checkpoint.
    revs: u64,
    /// Commits (soft or logged) since the last checkpoint.
    commits: u64,
    last_durable: Instant,
}

/// Whether the soft writes in memory have reached their bounds.
pub(crate) fn must_persist(hard: bool, unflushed_revs: u64, since_durable: Duration) -> bool {
    hard || unflushed_revs >= super::SOFT_MAX_REVS || since_durable >= super::SOFT_MAX_AGE
}

/// How a batch reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Commit to redb in memory only: nothing in the batch waits for the disk.
    Soft,
    /// Commit to redb in memory, log the batch's records and sync the log.
    Log,
    /// Commit to redb durably and empty the log.
    Checkpoint,
}

/// What a batch needs: `logged` whether it holds a durable write, `forced` a compaction or a
/// flush with something to flush, then the soft writes' bounds and the log's size.
pub(crate) fn plan(logged: bool, forced: bool, unflushed_revs: u64, since_durable: Duration, wal_len: u64) -> Plan {
    if forced || must_persist(false, unflushed_revs, since_durable) || wal_len >= wal::CHECKPOINT_BYTES {
        Plan::Checkpoint
    } else if logged {
        Plan::Log
    } else {
        Plan::Soft
    }
}

fn is_soft(shared: &Shared, key: &str) -> bool {
    shared.soft_prefixes.iter().any(|p| key.starts_with(p.as_str()))
}

pub(super) fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Op>, mut wal: Wal) {
    let mut stop = false;
    let mut recent = Recent::new(super::FEED_CAPACITY);
    let mut unflushed = Unflushed { revs: 0, commits: 0, last_durable: Instant::now() };
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Some(i) = batch.iter().position(|op| matches!(op, Op::Shutdown)) {
            batch.truncate(i);
            stop = true;
        }
        apply_batch(&shared, batch, &mut unflushed, &mut wal, &mut recent);
        if stop {
            break;
        }
    }
    // Refuse what is still queued: its callers see the channel close.
    rx.close();
    // Everything reaches the disk, marked clean: the next open continues from this revision.
    let closed = (|| -> Result<(), redb::Error> {
        let txn = shared.db.begin_write()?;
        txn.open_table(META)?.insert("clean", 1)?;
        txn.commit()?;
        Ok(())
    })();
    match closed {
        Ok(()) => {
            if let Err(e) = wal.reset() {
                tracing::warn!("emptying the store's log: {e}");
            }
        }
        Err(e) => tracing::warn!("closing the store: {e}"),
    }
}

fn apply_batch(shared: &Shared, batch: Vec<Op>, unflushed: &mut Unflushed, wal: &mut Wal, recent: &mut Recent) {
    if batch.is_empty() {
        return;
    }
    let logged =
        batch.iter().any(|op| matches!(op, Op::Mutate { key, dry_run, .. } if !dry_run && !is_soft(shared, key)));
    let forced = batch.iter().any(|op| match op {
        Op::Compact { .. } => true,
        Op::Flush(_) => unflushed.commits > 0,
        _ => false,
    });
    let only_flushes = batch.iter().all(|op| matches!(op, Op::Flush(_)));
    if only_flushes && unflushed.commits == 0 {
        // Nothing waits for the disk.
        return reply_flushes(batch);
    }
    let plan = plan(logged, forced, unflushed.revs, unflushed.last_durable.elapsed(), wal.len());
    let start_rev = shared.rev.load(Ordering::Acquire);
    let mut rev = start_rev;
    let mut replies = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let mut compacted = None;

    let began = Instant::now();
    let writes = batch.iter().filter(|op| matches!(op, Op::Mutate { .. } | Op::Compact { .. })).count();
    let mut txn = match shared.db.begin_write() {
        Ok(t) => t,
        Err(e) => return fail_all(batch, storage_err(e)),
    };
    if plan != Plan::Checkpoint
        && let Err(e) = txn.set_durability(Durability::None)
    {
        return fail_all(batch, storage_err(e));
    }
    let mut flushes = Vec::new();
    // The records of the batch's durable writes, for the log.
    let mut records = Vec::new();
    let mut soft_revs = 0;
    let mut tables = Tables { txn: &txn, open: None };
    for op in batch {
        match op {
            Op::Mutate { key, f, dry_run, reply } => {
                let cached = recent.take(&key);
                let res =
                    tables.get().and_then(|t| apply_one(&shared.sealer, t, &key, cached.clone(), f, dry_run, rev + 1));
                let res = match res {
                    Ok(Applied::Changed { change, record }) => {
                        rev += 1;
                        // One copy of the object: the watchers' event is the caller's answer.
                        events.push(change.clone());
                        if is_soft(shared, &key) {
                            soft_revs += 1;
                        } else if plan == Plan::Log {
                            records.push(record);
                        }
                        Ok(Done::Changed(change))
                    }
                    Ok(Applied::Unchanged(c)) => {
                        // Still the key's committed object.
                        if let Some(ev) = &cached {
                            recent.put(ev);
                        }
                        Ok(Done::Unchanged(c))
                    }
                    Err(e) => Err(e),
                };
                replies.push(Reply::Mutate(reply, res));
            }
            Op::Shutdown => {}
            Op::Flush(reply) => flushes.extend(reply),
            Op::Compact { keep, reply } => {
                tables.open = None;
                let res = compact(&txn, rev.saturating_sub(keep));
                if let Ok(c) = res {
                    compacted = Some(c);
                }
                replies.push(Reply::Compact(reply, res));
            }
        }
    }
    drop(tables);
    let logged_from = wal.len();
    let commit = (|| -> Result<(), ApiError> {
        if rev != start_rev {
            txn.open_table(META).map_err(storage_err)?.insert("rev", rev).map_err(storage_err)?;
        }
        // Logged before the commit makes the batch visible: if logging fails, nobody saw it.
        if !records.is_empty() {
            wal.append(&records).map_err(|e| ApiError::unavailable(format!("writing the store's log: {e}")))?;
        }
        txn.commit().map_err(storage_err).inspect_err(|_| {
            if wal.len() != logged_from
                && let Err(e) = wal.cut(logged_from)
            {
                tracing::error!("a failed commit stays in the store's log and comes back after a restart: {e}");
            }
        })
    })();
    if let Err(e) = commit {
        // Nothing of this batch is stored: every caller learns it failed.
        for r in replies {
            match r {
                Reply::Mutate(tx, _) => drop(tx.send(Err(e.clone()))),
                Reply::Compact(tx, _) => drop(tx.send(Err(e.clone()))),
            }
        }
        return;
    }
    let t = crate::telemetry::get();
    t.commit_seconds.observe(began.elapsed().as_secs_f64());
    t.commit_batch.observe(writes as f64);
    match plan {
        Plan::Checkpoint => {
            shared.durable_commits.fetch_add(1, Ordering::Relaxed);
            *unflushed = Unflushed { revs: 0, commits: 0, last_durable: Instant::now() };
            if let Err(e) = wal.reset() {
                tracing::warn!("emptying the store's log: {e}");
            }
        }
        Plan::Log | Plan::Soft => {
            let counter = if plan == Plan::Log { &shared.durable_commits } else { &shared.soft_commits };
            counter.fetch_add(1, Ordering::Relaxed);
            unflushed.revs += soft_revs;
            unflushed.commits += 1;
        }
    }
    for f in flushes {
        let _ = f.send(());
    }
    if let Some(c) = compacted {
        shared.compacted.store(c, Ordering::Release);
    }
    shared.rev.store(rev, Ordering::Release);
    for change in events {
        if change.event.kind != EventType::Deleted {
            recent.put(&change.event);
        }
        // No receivers is fine: nobody is watching.
        let _ = shared.feed.send(change);
    }
    for r in replies {
        match r {
            Reply::Mutate(tx, res) => drop(tx.send(res)),
            Reply::Compact(tx, res) => drop(tx.send(res)),
        }
    }
}

fn fail_all(batch: Vec<Op>, e: ApiError) {
    for op in batch {
        match op {
            Op::Mutate { reply, .. } => drop(reply.send(Err(e.clone()))),
            Op::Compact { reply, .. } => drop(reply.send(Err(e.clone()))),
            // A failed flush is dropped: its caller sees the writer's answer channel close.
            Op::Flush(_) | Op::Shutdown => {}
        }
    }
}

fn reply_flushes(batch: Vec<Op>) {
    for op in batch {
        if let Op::Flush(Some(reply)) = op {
            let _ = reply.send(());
        }
    }
}

/// What one mutation did.
enum Applied {
    /// Nothing to store (no change, or a dry run): the answer.
    Unchanged(Committed),
    /// A change: its event with its JSON (the answer too) and its history record.
    Changed { change: Change, record: Bytes },
}

/// The writer's answer to a mutation. A change is answered with the event the watchers get,
/// so the writer copies no object: the caller takes its own copy.
pub(crate) enum Done {
    Unchanged(Committed),
    Changed(Change),
}

impl Done {
    pub(crate) fn committed(self) -> Committed {
        match self {
            Done::Unchanged(c) => c,
            Done::Changed(Change { event, json }) => {
                Committed { event: Some(event.kind), object: Stored::Event(event), json }
            }
        }
    }
}

type ObjectsTable<'t> = redb::Table<'t, &'static str, &'static [u8]>;
type HistoryTable<'t> = redb::Table<'t, u64, &'static [u8]>;

/// The tables a batch's mutations write, opened at its first mutation and kept open until
/// something else needs them (a compaction, the commit): opening a table looks it up in the
/// transaction, and dropping it writes its root back, once per batch rather than per write.
struct Tables<'t> {
    txn: &'t WriteTransaction,
    open: Option<(ObjectsTable<'t>, HistoryTable<'t>)>,
}

impl<'t> Tables<'t> {
    fn get(&mut self) -> Result<&mut (ObjectsTable<'t>, HistoryTable<'t>), ApiError> {
        let open = match self.open.take() {
            Some(open) => open,
            None => {
                (self.txn.open_table(OBJECTS).map_err(storage_err)?, self.txn.open_table(HISTORY).map_err(storage_err)?)
            }
        };
        Ok(self.open.insert(open))
    }
}

/// `cached`: the key's committed object when [`Recent`] has it (else it is read from the table).
fn apply_one(
    sealer: &Sealer,
    (objects, history): &mut (ObjectsTable<'_>, HistoryTable<'_>),
    key: &str,
    cached: Option<Arc<Event>>,
    mut f: crate::store::MutateFn,
    dry_run: bool,
    rev: u64,
) -> Result<Applied, ApiError> {
    let current: Option<Stored> = match cached {
        Some(ev) => Some(Stored::Event(ev)),
        None => match objects.get(key).map_err(storage_err)? {
            Some(v) => Some(Stored::Own(serde_json::from_slice(&sealer.open(key, v.value())?).map_err(storage_err)?)),
            None => None,
        },
    };
    // A bug in a mutation must fail that request, not the writer thread.
    let outcome = catch_unwind(AssertUnwindSafe(|| f(current.as_deref())))
        .map_err(|_| ApiError::internal(format!("mutation of {key} panicked")))??;
    let (kind, mut object) = match outcome {
        Outcome::Put(mut new) => {
            if let Some(cur) = current.as_deref() {
                object::set_resource_version(&mut new, object::resource_version(cur));
                if &new == cur {
                    return Ok(Applied::Unchanged(Committed { object: new.into(), event: None, json: None }));
                }
            }
            let kind = if current.is_some() { EventType::Modified } else { EventType::Added };
            (kind, new)
        }
        Outcome::Delete => match current {
            Some(cur) => (EventType::Deleted, cur.into_owned()),
            None => return Err(ApiError::internal(format!("delete of absent key {key}"))),
        },
    };
    if dry_run {
        return Ok(Applied::Unchanged(Committed { object: object.into(), event: None, json: None }));
    }
    object::set_resource_version(&mut object, rev);
    // Serialize the object once: the same bytes go to the objects table, wrapped to history,
    // and to the live feed's watchers.
    let bytes = serde_json::to_vec(&object).map_err(storage_err)?;
    let (record, json) = if is_sealed_key(key) {
        let sealed = sealer.seal(key, &bytes)?;
        if kind != EventType::Deleted {
            objects.insert(key, sealed.as_slice()).map_err(storage_err)?;
        }
        let rec = Record {
            rev,
            kind,
            key: key.to_string(),
            object: None,
            sealed: Some(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &sealed)),
        };
        (Bytes::from(serde_json::to_vec(&rec).map_err(storage_err)?), Bytes::from(bytes))
    } else {
        if kind != EventType::Deleted {
            objects.insert(key, bytes.as_slice()).map_err(storage_err)?;
        }
        let head = serde_json::json!({"rev": rev, "type": kind, "key": key}).to_string();
        let mut record = Vec::with_capacity(head.len() + bytes.len() + 12);
        record.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        record.extend_from_slice(b",\"object\":");
        let at = record.len();
        record.extend_from_slice(&bytes);
        record.push(b'}');
        // The feed's JSON is the record's object, not a copy of it.
        let record = Bytes::from(record);
        let json = record.slice(at..record.len() - 1);
        (record, json)
    };
    if kind == EventType::Deleted {
        objects.remove(key).map_err(storage_err)?;
    }
    history.insert(rev, &record[..]).map_err(storage_err)?;
    let event = Arc::new(Event { rev, kind, key: key.to_string(), object });
    Ok(Applied::Changed { change: Change { event, json: Some(json) }, record })
}

/// Remove history records up to `upto` (bounded per step). Returns the new compacted revision.
fn compact(txn: &WriteTransaction, upto: u64) -> Result<u64, ApiError> {
    let mut meta = txn.open_table(META).map_err(storage_err)?;
    let old = meta.get("compacted").map_err(storage_err)?.map(|g| g.value()).unwrap_or(0);
    if upto <= old {
        return Ok(old);
    }
    let upto = upto.min(old + COMPACT_STEP);
    let mut history = txn.open_table(HISTORY).map_err(storage_err)?;
    history.retain_in(..=upto, |_, _| false).map_err(storage_err)?;
    meta.insert("compacted", upto).map_err(storage_err)?;
    Ok(upto)
}
