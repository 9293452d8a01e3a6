//! The etcd engine: several API servers on different machines share one etcd cluster.
//!
//! As kube-apiserver uses etcd:
//! - keys under a prefix laid out as [`keys`] says; values are the object JSON without its
//!   `resourceVersion` (Secrets sealed by the same codec as the embedded engine);
//! - `resourceVersion` is the key's etcd mod revision, and a list's is the response header's
//!   revision;
//! - create is `If(create_revision == 0) Then Put`; update and delete are
//!   `If(mod_revision == read) Then Put/Delete Else Get`: on a conflict the mutation runs again
//!   on the value the `Else` branch returned, so concurrent writers through different servers
//!   never lose an update and need no lock;
//! - a paged list reads every page at the first page's revision;
//! - a watch is an etcd watch from `after + 1` with the previous value (for DELETED events)
//!   and progress requests while quiet, so bookmarks advance; a compacted start revision is
//!   410 Gone;
//! - compaction is etcd's, at `current - keep` (every server may ask; it is idempotent).
//!
//! Every request has a deadline ([`Config::request_timeout`]): with no quorum a write fails
//! with 503 instead of hanging.

pub mod keys;
pub mod testing;
mod watch;

pub use watch::WatchStream;

use super::seal::Sealer;
use super::{Committed, EventType, MutateFn, Outcome, gone, storage_err};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, TxnOp, TxnOpResponse};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmorch_api::{ApiError, object};

/// Most times one mutation is run against newer values before the write gives up (409).
const MAX_ATTEMPTS: usize = 64;

pub use super::EtcdConfig as Config;

/// A store on etcd.
pub struct Etcd {
    client: Client,
    prefix: String,
    sealer: Arc<Sealer>,
    timeout: Duration,
    /// Newest revision seen in any response.
    rev: Arc<AtomicU64>,
    /// Highest revision known compacted.
    compacted: Arc<AtomicU64>,
}

/// Whether `e` says a member could not be reached or could not serve (gRPC `Unavailable`,
/// a transport error): worth another try, likely on another member.
fn unreachable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => i32::from(s.code()) == 14,
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

pub(super) fn etcd_err(e: etcd_client::Error) -> ApiError {
    if let etcd_client::Error::GRpcStatus(s) = &e
        && s.message().contains("compacted")
    {
        return ApiError::gone(format!("etcd: {}", s.message()));
    }
    ApiError::unavailable(format!("etcd: {e}"))
}

impl Etcd {
    /// Connect to the cluster `cfg` names; Secrets are sealed with the keys in `key_file`.
    pub async fn connect(cfg: &Config, key_file: &Path) -> anyhow::Result<Etcd> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if cfg.ca_file.is_some() || cfg.cert_file.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &cfg.ca_file {
                let pem = std::fs::read(ca).map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            match (&cfg.cert_file, &cfg.key_file) {
                (Some(c), Some(k)) => {
                    let cert = std::fs::read(c).map_err(|e| anyhow::anyhow!("{}: {e}", c.display()))?;
                    let key = std::fs::read(k).map_err(|e| anyhow::anyhow!("{}: {e}", k.display()))?;
                    tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => anyhow::bail!("--datastore-certfile and --datastore-keyfile go together"),
            }
            opts = opts.with_tls(tls);
        }
        let mut client = Client::connect(&cfg.endpoints, Some(opts))
            .await
            .map_err(|e| anyhow::anyhow!("connecting to etcd at {}: {e}", cfg.endpoints.join(",")))?;
        // The first answer proves the cluster is there (and gives the current revision); a
        // member that is down is skipped by trying again.
        let until = tokio::time::Instant::now() + cfg.request_timeout;
        let status = loop {
            match tokio::time::timeout_at(until, client.status()).await {
                Ok(Ok(s)) => break s,
                Ok(Err(e)) if unreachable(&e) && tokio::time::Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => anyhow::bail!("etcd at {}: {e}", cfg.endpoints.join(",")),
                Err(_) => {
                    anyhow::bail!("etcd at {} did not answer in {:?}", cfg.endpoints.join(","), cfg.request_timeout)
                }
            }
        };
        let rev = status.header().map(|h| h.revision()).unwrap_or(0).max(0) as u64;
        let sealer = Sealer::load_or_create(key_file)?;
        Ok(Etcd {
            client,
            prefix: cfg.prefix.trim_end_matches('/').to_string(),
            sealer: Arc::new(sealer),
            timeout: cfg.request_timeout,
            rev: Arc::new(AtomicU64::new(rev)),
            compacted: Arc::new(AtomicU64::new(0)),
        })
    }

    fn etcd_key(&self, key: &str) -> String {
        keys::to_etcd(&self.prefix, key)
    }

    fn saw(&self, header: Option<&etcd_client::ResponseHeader>) {
        if let Some(h) = header {
            self.rev.fetch_max(h.revision().max(0) as u64, Ordering::AcqRel);
        }
    }

    /// Run the request `f` makes until it succeeds, fails for a reason other than an
    /// unreachable member, or the request deadline passes. etcd's client balances over the
    /// members but may still send a request to one that just died; another try reaches a
    /// live one. (A retried compare-and-swap is safe: if the first one landed, the compare
    /// fails and the mutation runs on what it wrote.)
    async fn deadline<T, F, Fut>(&self, mut f: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let until = tokio::time::Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            match tokio::time::timeout_at(until, f()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if unreachable(&e) && tokio::time::Instant::now() + pause < until => {
                    tracing::debug!("etcd: {e}; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Ok(Err(e)) => return Err(etcd_err(e)),
                Err(_) => {
                    return Err(ApiError::new(
                        504,
                        "Timeout",
                        format!("etcd did not answer within {:?} (is a quorum of its members up?)", self.timeout),
                    ));
                }
            }
        }
    }

    /// The object stored in `kv`, with its resourceVersion.
    fn decode(&self, key: &str, value: &[u8], mod_rev: i64) -> Result<Value, ApiError> {
        let plain = self.sealer.open(key, value)?;
        let mut v: Value = serde_json::from_slice(&plain).map_err(storage_err)?;
        object::set_resource_version(&mut v, mod_rev.max(0) as u64);
        Ok(v)
    }

    /// Bytes to store for `obj` under `key`: without its resourceVersion, sealed for Secrets.
    fn encode(&self, key: &str, obj: &Value) -> Result<Vec<u8>, ApiError> {
        let mut o = obj.clone();
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        self.sealer.encode(key, serde_json::to_vec(&o).map_err(storage_err)?)
    }

    async fn read(&self, ekey: &str, key: &str) -> Result<Option<(Value, i64)>, ApiError> {
        let kv = self.client.kv_client();
        let resp = self
            .deadline(|| {
                let mut kv = kv.clone();
                let k = ekey.to_string();
                async move { kv.get(k, None).await }
            })
            .await?;
        self.saw(resp.header());
        match resp.kvs().first() {
            Some(kv) => Ok(Some((self.decode(key, kv.value(), kv.mod_revision())?, kv.mod_revision()))),
            None => Ok(None),
        }
    }

    /// Take the lock `name` (see [`super::Store::lock`]).
    pub async fn lock(&self, name: &str) -> Result<HeldLock, ApiError> {
        let mut leases = self.client.lease_client();
        let lease = self
            .deadline(|| {
                let mut l = leases.clone();
                async move { l.grant(LOCK_TTL_S, None).await }
            })
            .await?
            .id();
        let kept = self
            .deadline(|| {
                let mut l = leases.clone();
                async move { l.keep_alive(lease).await }
            })
            .await;
        let (mut keeper, mut answers) = match kept {
            Ok(k) => k,
            Err(e) => {
                let _ = leases.revoke(lease).await;
                return Err(e);
            }
        };
        let keepalive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(LOCK_TTL_S as u64 / 3)).await;
                if keeper.keep_alive().await.is_err() || !matches!(answers.message().await, Ok(Some(_))) {
                    return;
                }
            }
        });
        let key = format!("{}{LOCKS}{name}", self.prefix);
        let locks = self.client.lock_client();
        let opts = etcd_client::LockOptions::new().with_lease(lease);
        let locked = self
            .deadline(|| {
                let (mut l, k, o) = (locks.clone(), key.clone(), opts.clone());
                async move { l.lock(k, Some(o)).await }
            })
            .await;
        match locked {
            Ok(resp) => Ok(HeldLock {
                key: resp.key().to_vec(),
                lease,
                client: self.client.clone(),
                keepalive: Some(keepalive),
            }),
            Err(e) => {
                keepalive.abort();
                let _ = leases.revoke(lease).await;
                Err(e)
            }
        }
    }

    /// Write a snapshot's objects (as [`super::embedded::read_snapshot`] gives them; Secrets
    /// sealed with this server's key file) into an empty prefix. Each object gets a new
    /// revision (etcd's), in key order. Returns how many were written.
    pub async fn restore(&self, objects: Vec<(String, Vec<u8>)>) -> Result<usize, ApiError> {
        let kv = self.client.kv_client();
        let probe = format!("{}/", self.prefix);
        let existing = self
            .deadline(|| {
                let (mut kv, k) = (kv.clone(), probe.clone());
                let end = keys::range_end(k.as_bytes());
                async move { kv.get(k, Some(GetOptions::new().with_range(end).with_count_only())).await }
            })
            .await?;
        if existing.count() > 0 {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("etcd already holds {} keys under {probe}: restore into an empty datastore", existing.count()),
            ));
        }
        let mut n = 0;
        for (key, bytes) in objects {
            if key.starts_with(LOCKS) {
                continue;
            }
            let mut obj: Value = serde_json::from_slice(&self.sealer.open(&key, &bytes)?).map_err(storage_err)?;
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            <Self as super::Backend>::mutate(
                self,
                key,
                false,
                Box::new(move |cur| match cur {
                    Some(_) => Err(ApiError::internal("restoring onto an existing key")),
                    None => Ok(Outcome::Put(obj.clone())),
                }),
            )
            .await?;
            n += 1;
        }
        Ok(n)
    }

    /// A consistent snapshot of every object under the prefix, at one revision, written as an
    /// embedded store file (Secrets stay sealed).
    pub async fn backup(&self, dest: &Path) -> Result<u64, ApiError> {
        let kv = self.client.kv_client();
        let mut objects = Vec::new();
        let eprefix = format!("{}/", self.prefix);
        let end = keys::range_end(eprefix.as_bytes());
        let mut start = eprefix.into_bytes();
        let mut rev = None;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(1000);
            if let Some(r) = rev {
                opts = opts.with_revision(r);
            }
            let resp = self
                .deadline(|| {
                    let (mut kv, k, o) = (kv.clone(), start.clone(), opts.clone());
                    async move { kv.get(k, Some(o)).await }
                })
                .await?;
            rev.get_or_insert(resp.header().map(|h| h.revision()).unwrap_or(0));
            for item in resp.kvs() {
                let ekey = String::from_utf8_lossy(item.key()).into_owned();
                let Some(key) = keys::from_etcd(&self.prefix, &ekey).filter(|k| !k.starts_with(LOCKS)) else {
                    continue;
                };
                // Stored as the embedded engine stores it: resourceVersion set, Secrets sealed.
                let obj = self.decode(&key, item.value(), item.mod_revision())?;
                objects.push((key.clone(), self.sealer.encode(&key, serde_json::to_vec(&obj).map_err(storage_err)?)?));
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        let rev = rev.unwrap_or(0).max(0) as u64;
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || super::embedded::write_snapshot(&dest, rev, objects))
            .await
            .map_err(|e| ApiError::internal(format!("backup task: {e}")))??;
        Ok(rev)
    }
}

impl super::Backend for Etcd {
    async fn mutate(&self, key: String, dry_run: bool, mut f: MutateFn) -> Result<Committed, ApiError> {
        let ekey = self.etcd_key(&key);
        let mut run = |cur: Option<&Value>| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(cur)))
                .map_err(|_| ApiError::internal(format!("mutation of {key} panicked")))?
        };
        // First guess that the key is absent: a create then takes one round trip (its compare
        // fails, and the Else branch returns the value, when it exists). A mutation that
        // refuses an absent key reads it first.
        let mut guessed = None;
        let mut current = None;
        if !dry_run && let Ok(Outcome::Put(v)) = run(None) {
            guessed = Some(Outcome::Put(v));
        } else {
            current = self.read(&ekey, &key).await?;
        }
        for _ in 0..MAX_ATTEMPTS {
            let outcome = match guessed.take() {
                Some(o) => o,
                None => run(current.as_ref().map(|(v, _)| v))?,
            };
            let (guard, op, kind) = match outcome {
                Outcome::Put(mut new) => {
                    if let Some((cur, _)) = &current {
                        object::set_resource_version(&mut new, object::resource_version(cur));
                        if &new == cur {
                            return Ok(Committed { object: new.into(), event: None, json: None });
                        }
                    }
                    if dry_run {
                        return Ok(Committed { object: new.into(), event: None, json: None });
                    }
                    let bytes = self.encode(&key, &new)?;
                    let (guard, kind) = match &current {
                        Some((_, rev)) => {
                            (Compare::mod_revision(ekey.as_str(), CompareOp::Equal, *rev), EventType::Modified)
                        }
                        None => (Compare::create_revision(ekey.as_str(), CompareOp::Equal, 0), EventType::Added),
                    };
                    (guard, TxnOp::put(ekey.as_str(), bytes, None), (kind, new))
                }
                Outcome::Delete => {
                    let Some((cur, rev)) = &current else {
                        return Err(ApiError::internal(format!("delete of absent key {key}")));
                    };
                    if dry_run {
                        return Ok(Committed { object: cur.clone().into(), event: None, json: None });
                    }
                    let guard = Compare::mod_revision(ekey.as_str(), CompareOp::Equal, *rev);
                    (guard, TxnOp::delete(ekey.as_str(), None), (EventType::Deleted, cur.clone()))
                }
            };
            let txn = etcd_client::Txn::new().when([guard]).and_then([op]).or_else([TxnOp::get(ekey.as_str(), None)]);
            let kv = self.client.kv_client();
            let resp = self
                .deadline(|| {
                    let (mut kv, t) = (kv.clone(), txn.clone());
                    async move { kv.txn(t).await }
                })
                .await?;
            self.saw(resp.header());
            if resp.succeeded() {
                let rev = resp.header().map(|h| h.revision()).unwrap_or(0).max(0) as u64;
                let (kind, mut obj) = kind;
                object::set_resource_version(&mut obj, rev);
                return Ok(Committed { object: obj.into(), event: Some(kind), json: None });
            }
            // Another writer came first: run the mutation again on what it wrote.
            current = None;
            for r in resp.op_responses() {
                if let TxnOpResponse::Get(g) = r
                    && let Some(kv) = g.kvs().first()
                {
                    current = Some((self.decode(&key, kv.value(), kv.mod_revision())?, kv.mod_revision()));
                }
            }
        }
        Err(ApiError::new(
            409,
            "Conflict",
            format!("{key} kept changing under {MAX_ATTEMPTS} attempts to write it; try again"),
        ))
    }

    async fn get(&self, key: &str) -> Result<Option<Value>, ApiError> {
        Ok(self.read(&self.etcd_key(key), key).await?.map(|(v, _)| v))
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<String>,
        limit: usize,
        at: Option<u64>,
    ) -> Result<(Vec<Value>, u64, bool), ApiError> {
        let eprefix = self.etcd_key(prefix);
        let end = keys::range_end(eprefix.as_bytes());
        let start = match &start_after {
            // Just after the last key of the previous page.
            Some(k) => {
                let mut s = self.etcd_key(k).into_bytes();
                s.push(0);
                s
            }
            None => eprefix.clone().into_bytes(),
        };
        let mut opts = GetOptions::new().with_range(end);
        if limit > 0 {
            opts = opts.with_limit(limit as i64);
        }
        if let Some(rev) = at.filter(|r| *r > 0) {
            opts = opts.with_revision(rev as i64);
        }
        let kv = self.client.kv_client();
        let resp = self
            .deadline(|| {
                let (mut kv, k, o) = (kv.clone(), start.clone(), opts.clone());
                async move { kv.get(k, Some(o)).await }
            })
            .await?;
        self.saw(resp.header());
        let rev = match at.filter(|r| *r > 0) {
            Some(r) => r,
            None => resp.header().map(|h| h.revision()).unwrap_or(0).max(0) as u64,
        };
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let ekey = String::from_utf8_lossy(kv.key());
            let Some(key) = keys::from_etcd(&self.prefix, &ekey).filter(|k| !k.starts_with(LOCKS)) else { continue };
            out.push(self.decode(&key, kv.value(), kv.mod_revision())?);
        }
        Ok((out, rev, resp.more()))
    }

    fn watch(&self, prefix: &str, after: u64) -> Result<super::WatchStream, ApiError> {
        let compacted = self.compacted.load(Ordering::Acquire);
        if after < compacted {
            return Err(gone(after, compacted));
        }
        Ok(super::WatchStream::Etcd(Box::new(WatchStream::new(
            self.client.clone(),
            self.etcd_key(prefix),
            self.prefix.clone(),
            self.sealer.clone(),
            self.compacted.clone(),
            after,
        ))))
    }

    async fn compact(&self, keep: u64) -> Result<u64, ApiError> {
        // The newest revision, from etcd itself (another server may have written since).
        let kv = self.client.kv_client();
        let resp = self
            .deadline(|| {
                let (mut kv, k) = (kv.clone(), self.prefix.clone());
                async move { kv.get(k, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        self.saw(resp.header());
        let current = self.rev.load(Ordering::Acquire);
        let upto = current.saturating_sub(keep);
        let old = self.compacted.load(Ordering::Acquire);
        if upto <= old {
            return Ok(old);
        }
        let compacted = self
            .deadline(|| {
                let mut kv = kv.clone();
                async move { kv.compact(upto as i64, None).await }
            })
            .await;
        match compacted {
            Ok(_) => {}
            // Another server compacted further already.
            Err(e) if e.code == 410 => {}
            Err(e) => return Err(e),
        }
        self.compacted.fetch_max(upto, Ordering::AcqRel);
        Ok(upto)
    }

    fn current_rev(&self) -> u64 {
        self.rev.load(Ordering::Acquire)
    }

    fn compacted_rev(&self) -> u64 {
        self.compacted.load(Ordering::Acquire)
    }

    async fn close(&self) {}
}

/// Where locks live (below the prefix; never backed up or restored).
pub(super) const LOCKS: &str = "/wasmorch.io/locks/";

/// Lease of a held lock: a holder that dies releases the lock within this many seconds.
const LOCK_TTL_S: i64 = 15;

/// A held etcd lock: unlocked, and its lease revoked, when dropped.
pub struct HeldLock {
    key: Vec<u8>,
    lease: i64,
    client: Client,
    keepalive: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
        let (key, lease, client) = (std::mem::take(&mut self.key), self.lease, self.client.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.lock_client().unlock(key).await;
                // Revoking the lease releases the lock even if the unlock was lost.
                let _ = client.lease_client().revoke(lease).await;
            });
        }
    }
}
