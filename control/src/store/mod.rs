//! The state store: objects under keys, one global revision, watch from any retained
//! revision, compaction, backup — behind one interface ([`Backend`]) with two engines:
//!
//! - [`embedded`] (redb, one file in the data directory): the default, for a single server
//!   (and its standby on the same machine).
//! - [`etcd`] (feature `etcd`): a cluster of etcd members shared by several API servers on
//!   different machines, laid out as kube-apiserver lays out its keys.
//!
//! Everything above the store — API server, controllers, backup — sees only [`Store`].
//!
//! The contract both engines keep:
//! - **Writes are mutations**, functions of the key's current object ([`MutateFn`]). The
//!   embedded engine runs one once, inside its transaction; etcd runs it against the value it
//!   read and commits with compare-and-swap on the key's revision, running it again on the
//!   newer value when another writer came first. So a mutation must decide from its argument
//!   alone, and may run more than once.
//! - **Revisions** are one counter for the whole store, strictly increasing with every change;
//!   an object's `metadata.resourceVersion` is the revision that last wrote it.
//! - **Watch** from revision `r` delivers every change after `r` under a prefix, in revision
//!   order, without gaps or duplicates, or fails with 410 Gone when `r` was compacted away.
//! - **Secrets are sealed** ([`seal`]) by whichever engine stores them, with the same codec.

pub mod embedded;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod seal;

pub use embedded::{Locked, SOFT_MAX_AGE, verify_snapshot, wal_path};

use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use wasmorch_api::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EventType {
    #[serde(rename = "ADDED")]
    Added,
    #[serde(rename = "MODIFIED")]
    Modified,
    #[serde(rename = "DELETED")]
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change. For `Deleted`, `object` is the last state with the deleting revision.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub rev: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub key: String,
    pub object: Value,
}

/// A change as a watch delivers it: the event, and the object's JSON when the writer has it at
/// hand. The embedded engine's live feed carries the bytes the writer serialized for its
/// tables, so a watch serving the stored version sends them instead of serializing the object
/// again (that was 8 % of the API server's CPU while a node started thousands of pods). A
/// change read back from history carries the JSON stored in its record (but a Secret's, which
/// is sealed there). Only the feed's bounded buffer keeps them: caches keep the event alone.
#[derive(Debug, Clone)]
pub struct Change {
    pub event: Arc<Event>,
    /// Exactly `serde_json::to_vec(&event.object)`, or `None`.
    pub json: Option<bytes::Bytes>,
}

impl From<Arc<Event>> for Change {
    fn from(event: Arc<Event>) -> Change {
        Change { event, json: None }
    }
}

/// What a mutation decides, given the current object (if any).
#[derive(Debug)]
pub enum Outcome {
    /// Store this object (created or replaced).
    Put(Value),
    /// Remove the object.
    Delete,
}

/// A mutation: decides from the current state of one key (if any). Returning an error
/// rejects this mutation only. It may run more than once (see the module docs).
pub type MutateFn = Box<dyn FnMut(Option<&Value>) -> Result<Outcome, ApiError> + Send>;

/// An object as a write left it: its own, or shared with the event that announced it (the
/// watchers' and informers' copy), so a caller that only reads it (a reply, or nothing) makes
/// no copy. A copy of all of it was ~5 % of the API server's CPU while a node started
/// thousands of pods.
#[derive(Debug, Clone)]
pub enum Stored {
    Own(Value),
    Event(Arc<Event>),
}

impl Stored {
    /// The object, copied only when it is shared.
    pub fn into_owned(self) -> Value {
        match self {
            Stored::Own(v) => v,
            Stored::Event(e) => Arc::try_unwrap(e).map_or_else(|e| e.object.clone(), |e| e.object),
        }
    }
}

impl std::ops::Deref for Stored {
    type Target = Value;
    fn deref(&self) -> &Value {
        match self {
            Stored::Own(v) => v,
            Stored::Event(e) => &e.object,
        }
    }
}

impl From<Value> for Stored {
    fn from(v: Value) -> Stored {
        Stored::Own(v)
    }
}

/// The result of a committed (or dry-run) mutation.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The stored object (with its resourceVersion), or the deleted object.
    pub object: Stored,
    /// `None` when nothing changed (the new object equalled the stored one) or on dry run.
    pub event: Option<EventType>,
    /// The object's JSON when the write serialized it (the embedded engine's changes), so a
    /// reply in the stored version sends those bytes: see [`Change::json`].
    pub json: Option<bytes::Bytes>,
}

/// How a store is opened.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Keys under these prefixes are written softly (embedded engine: see its docs).
    pub soft_prefixes: Vec<String>,
}

/// How to reach an etcd cluster (k3s' flag names: `--datastore-endpoint`,
/// `--datastore-cafile`, `--datastore-certfile`, `--datastore-keyfile`). Parsed in every build;
/// only a build with the `etcd` feature can use it.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub ca_file: Option<std::path::PathBuf>,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    /// Key prefix, without a trailing slash (`/registry`).
    pub prefix: String,
    /// Deadline of one request to etcd.
    pub request_timeout: std::time::Duration,
}

impl EtcdConfig {
    /// From `--datastore-endpoint`: comma-separated URLs (`http://` or `https://`).
    pub fn from_endpoints(list: &str) -> anyhow::Result<EtcdConfig> {
        let endpoints: Vec<String> =
            list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
        if endpoints.is_empty() {
            anyhow::bail!("--datastore-endpoint names no endpoint");
        }
        for e in &endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                anyhow::bail!("datastore endpoint {e:?}: expected http://HOST:PORT or https://HOST:PORT");
            }
        }
        Ok(EtcdConfig {
            endpoints,
            ca_file: None,
            cert_file: None,
            key_file: None,
            prefix: "/registry".into(),
            request_timeout: std::time::Duration::from_secs(10),
        })
    }
}

/// Connect to etcd as `cfg` says; Secrets are sealed with the keys in `key_file`.
pub async fn open_etcd(cfg: &EtcdConfig, key_file: &Path) -> anyhow::Result<Store> {
    #[cfg(feature = "etcd")]
    {
        Ok(Store::on_etcd(etcd::Etcd::connect(cfg, key_file).await?))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = key_file;
        anyhow::bail!(
            "--datastore-endpoint {}: this wasmorch was built without the etcd engine; build it with \
             `cargo build --release --features etcd` (which needs protoc)",
            cfg.endpoints.join(",")
        )
    }
}

#[cfg(test)]
#[test]
fn datastore_endpoints_are_urls() {
    let c = EtcdConfig::from_endpoints("http://10.0.0.1:2379, https://e2:2379").unwrap();
    assert_eq!(c.endpoints, ["http://10.0.0.1:2379", "https://e2:2379"]);
    assert!(EtcdConfig::from_endpoints("10.0.0.1:2379").is_err());
    assert!(EtcdConfig::from_endpoints(" , ").is_err());
}

pub(crate) fn storage_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("storage: {e}"))
}

/// The 410 Gone of a watch or list from a revision that was compacted away.
pub fn gone(rev: u64, compacted: u64) -> ApiError {
    ApiError::gone(format!("too old resource version: {rev} ({compacted})"))
}
pub use gone as gone_error;

/// The interface of a store engine. [`Store`] dispatches to one.
pub trait Backend: Send + Sync {
    /// Apply `f` to the current object at `key` and store what it decides; `dry_run`
    /// evaluates without writing.
    fn mutate(
        &self,
        key: String,
        dry_run: bool,
        f: MutateFn,
    ) -> impl Future<Output = Result<Committed, ApiError>> + Send;
    /// Read one object.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Value>, ApiError>> + Send;
    /// Objects whose key starts with `prefix`, after `start_after`, at most `limit` (0 = all),
    /// read at revision `at` where the engine keeps old states (else at the newest); with the
    /// revision read at and whether more remain.
    fn list(
        &self,
        prefix: &str,
        start_after: Option<String>,
        limit: usize,
        at: Option<u64>,
    ) -> impl Future<Output = Result<(Vec<Value>, u64, bool), ApiError>> + Send;
    /// Changes under `prefix` after revision `after`.
    fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream, ApiError>;
    /// Forget history at or below `current - keep`; returns the compacted revision.
    fn compact(&self, keep: u64) -> impl Future<Output = Result<u64, ApiError>> + Send;
    /// The newest revision this server knows of.
    fn current_rev(&self) -> u64;
    /// The highest revision compacted away, as far as this server knows.
    fn compacted_rev(&self) -> u64;
    /// Stop: finish and persist what is queued.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

impl Backend for embedded::Embedded {
    async fn mutate(&self, key: String, dry_run: bool, f: MutateFn) -> Result<Committed, ApiError> {
        embedded::Embedded::mutate(self, key, dry_run, f).await
    }
    async fn get(&self, key: &str) -> Result<Option<Value>, ApiError> {
        embedded::Embedded::get(self, key).await
    }
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<String>,
        limit: usize,
        _at: Option<u64>,
    ) -> Result<(Vec<Value>, u64, bool), ApiError> {
        // redb keeps only the newest state: later pages are read at the newest revision.
        embedded::Embedded::list(self, prefix, start_after, limit).await
    }
    fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream, ApiError> {
        Ok(WatchStream::Embedded(embedded::Embedded::watch(self, prefix, after)?))
    }
    async fn compact(&self, keep: u64) -> Result<u64, ApiError> {
        embedded::Embedded::compact(self, keep).await
    }
    fn current_rev(&self) -> u64 {
        embedded::Embedded::current_rev(self)
    }
    fn compacted_rev(&self) -> u64 {
        embedded::Embedded::compacted_rev(self)
    }
    async fn close(&self) {
        embedded::Embedded::close(self).await
    }
}

/// The engine a [`Store`] runs on.
enum Engine {
    Embedded(embedded::Embedded),
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::Etcd>),
}

/// Run `$call` on whichever engine `$store` holds.
macro_rules! dispatch {
    ($store:expr, $e:ident => $call:expr) => {
        match &*$store.engine {
            Engine::Embedded($e) => $call,
            #[cfg(feature = "etcd")]
            Engine::Etcd(boxed) => {
                let $e: &etcd::Etcd = boxed;
                $call
            }
        }
    };
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    engine: Arc<Engine>,
    /// The embedded engine's named locks (one server writes to it).
    local_locks: Arc<std::sync::Mutex<LocalLocks>>,
}

/// The embedded engine's named locks.
type LocalLocks = std::collections::HashMap<&'static str, Arc<tokio::sync::Mutex<()>>>;

/// A named lock held across every API server of the store (see [`Store::lock`]); released
/// when dropped.
pub struct LockGuard {
    _held: Held,
}

enum Held {
    Local(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>),
    #[cfg(feature = "etcd")]
    Etcd(#[allow(dead_code)] Box<etcd::HeldLock>),
}

impl Store {
    /// Open (or create) the embedded store at `path`, every write durable.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        Store::open_with(path, Options::default())
    }

    /// Open (or create) the embedded store at `path`.
    pub fn open_with(path: &Path, options: Options) -> anyhow::Result<Store> {
        Ok(Store::with_engine(Engine::Embedded(embedded::Embedded::open_with(path, options)?)))
    }

    /// A store on an etcd cluster.
    #[cfg(feature = "etcd")]
    pub fn on_etcd(e: etcd::Etcd) -> Store {
        Store::with_engine(Engine::Etcd(Box::new(e)))
    }

    fn with_engine(engine: Engine) -> Store {
        Store { engine: Arc::new(engine), local_locks: Default::default() }
    }

    /// Take the named lock, held by one holder at a time across every API server of this
    /// store, for decisions that read several objects and write one (Service addresses, the
    /// last disruption a budget allows, the last unit of a quota). Embedded: a lock in this
    /// process (the only one writing). etcd: etcd's lock on a lease of its own, kept alive
    /// while held, so a holder that dies releases it within the lease's 15 s. Waiting longer
    /// than the request deadline is a 504.
    pub async fn lock(&self, name: &'static str) -> Result<LockGuard, ApiError> {
        match &*self.engine {
            Engine::Embedded(_) => {
                let m = self.local_locks.lock().unwrap_or_else(|e| e.into_inner()).entry(name).or_default().clone();
                Ok(LockGuard { _held: Held::Local(m.lock_owned().await) })
            }
            #[cfg(feature = "etcd")]
            Engine::Etcd(e) => Ok(LockGuard { _held: Held::Etcd(Box::new(e.lock(name).await?)) }),
        }
    }

    /// The embedded engine, for what only it has (soft writes, file backups).
    pub fn embedded(&self) -> Option<&embedded::Embedded> {
        match &*self.engine {
            Engine::Embedded(e) => Some(e),
            #[cfg(feature = "etcd")]
            Engine::Etcd(_) => None,
        }
    }

    /// Which engine, for messages and metrics.
    pub fn engine_name(&self) -> &'static str {
        match &*self.engine {
            Engine::Embedded(_) => "embedded",
            #[cfg(feature = "etcd")]
            Engine::Etcd(_) => "etcd",
        }
    }

    /// Stop the engine after what is queued. Later writes fail with 503.
    pub async fn close(&self) {
        dispatch!(self, e => Backend::close(e).await)
    }

    pub fn current_rev(&self) -> u64 {
        dispatch!(self, e => Backend::current_rev(e))
    }

    pub fn compacted_rev(&self) -> u64 {
        dispatch!(self, e => Backend::compacted_rev(e))
    }

    /// Commits so far: (waited for the disk, did not). Embedded engine only; etcd: (0, 0).
    pub fn commits(&self) -> (u64, u64) {
        self.embedded().map(|e| e.commits()).unwrap_or((0, 0))
    }

    /// Make every softly committed write durable now (etcd has none).
    pub async fn flush(&self) -> Result<(), ApiError> {
        match self.embedded() {
            Some(e) => e.flush().await,
            None => Ok(()),
        }
    }

    /// Apply `f` to the current object at `key`. `dry_run` evaluates without writing.
    pub async fn mutate(&self, key: String, dry_run: bool, f: MutateFn) -> Result<Committed, ApiError> {
        dispatch!(self, e => Backend::mutate(e, key, dry_run, f).await)
    }

    /// Forget history at or below `current - keep`. Returns the new compacted revision.
    pub async fn compact(&self, keep: u64) -> Result<u64, ApiError> {
        dispatch!(self, e => Backend::compact(e, keep).await)
    }

    /// Read one object.
    pub async fn get(&self, key: &str) -> Result<Option<Value>, ApiError> {
        dispatch!(self, e => Backend::get(e, key).await)
    }

    /// All objects whose key starts with `prefix`, after `start_after` (for paging), at most
    /// `limit` (0 = all), and the revision of the snapshot they were read at.
    pub async fn list(
        &self,
        prefix: &str,
        start_after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Value>, u64, bool), ApiError> {
        self.list_at(prefix, start_after, limit, None).await
    }

    /// [`Store::list`] at revision `at` (later pages of one list), where the engine keeps it.
    pub async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<String>,
        limit: usize,
        at: Option<u64>,
    ) -> Result<(Vec<Value>, u64, bool), ApiError> {
        dispatch!(self, e => Backend::list(e, prefix, start_after, limit, at).await)
    }

    /// Changes under `prefix` with revision greater than `after`.
    /// `Err(410 Gone)` if `after` is older than the compacted history.
    pub fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream, ApiError> {
        dispatch!(self, e => Backend::watch(e, prefix, after))
    }

    /// Write the objects of the snapshot file at `path` (a `wasmorch backup`) into this store,
    /// which must be empty: the restore of an etcd datastore. Returns the snapshot's revision
    /// and how many objects were written. (The embedded engine restores by taking the file
    /// itself, before it opens: `--restore`.)
    pub async fn restore_snapshot(&self, path: &Path) -> anyhow::Result<(u64, usize)> {
        let p = path.to_path_buf();
        #[allow(unused_variables)]
        let (rev, objects) = tokio::task::spawn_blocking(move || embedded::read_snapshot(&p)).await??;
        match &*self.engine {
            Engine::Embedded(_) => anyhow::bail!("the embedded store is restored from its file before it opens"),
            #[cfg(feature = "etcd")]
            Engine::Etcd(e) => Ok((rev, e.restore(objects).await?)),
        }
    }

    /// Write a consistent snapshot of the whole store to `dest`; returns its revision.
    /// Secrets stay sealed: the snapshot is restored with the server's own key file.
    pub async fn backup(&self, dest: &Path) -> Result<u64, ApiError> {
        dispatch!(self, e => e.backup(dest).await)
    }
}

/// A watch on either engine.
pub enum WatchStream {
    Embedded(embedded::watch::WatchStream),
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::WatchStream>),
}

impl WatchStream {
    /// The highest revision this stream has passed (delivered, filtered out, or known quiet).
    pub fn last_rev(&self) -> u64 {
        match self {
            WatchStream::Embedded(w) => w.last_rev(),
            #[cfg(feature = "etcd")]
            WatchStream::Etcd(w) => w.last_rev(),
        }
    }

    /// History records an embedded store's stream has read (of every key).
    #[cfg(test)]
    pub(crate) fn history_read(&self) -> Option<u64> {
        match self {
            WatchStream::Embedded(w) => Some(w.history_read()),
            #[cfg(feature = "etcd")]
            WatchStream::Etcd(_) => None,
        }
    }

    /// The next change under the prefix. Cancel-safe.
    pub async fn next(&mut self) -> Result<Arc<Event>, ApiError> {
        Ok(self.next_change().await?.event)
    }

    /// The next change under the prefix, with its JSON when the engine has it. Cancel-safe.
    pub async fn next_change(&mut self) -> Result<Change, ApiError> {
        match self {
            WatchStream::Embedded(w) => w.next().await,
            #[cfg(feature = "etcd")]
            WatchStream::Etcd(w) => w.next().await.map(Change::from),
        }
    }
}

#[cfg(test)]
mod tests;
