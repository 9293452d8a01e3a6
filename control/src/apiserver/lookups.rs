//! What admission reads on every create — the namespace, its ResourceQuotas and LimitRanges,
//! a pod's ServiceAccount — served from informers instead of the store, as kube-apiserver's
//! admission plugins read listers. On etcd that turns a create from three round trips into
//! one. Pods are followed too, for the node authorizer ([`Api::cached_any`]); the leader's
//! controllers follow that same pod informer instead of keeping a second copy of every pod
//! ([`Informer::follower`]).
//!
//! Freshness. This server's own writes of those kinds are always seen: each records its
//! revision, and a cache that has not yet reached the newest one is bypassed (the store is
//! read, as before). An object missing from a cache is looked up in the store too, so a
//! namespace created through another API server a moment ago is found. What remains is
//! Kubernetes' own window: a quota or LimitRange created or changed through *another* API
//! server applies here once this server's watch delivers it (milliseconds).

use super::api::{Api, ListOptions};
use super::request::Target;
use crate::controllers::runtime::Informer;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmorch_api::ApiError;
use wasmorch_api::resources::{self, Resource, ResourceKind};

/// The kinds followed, in the order of [`Lookups::slots`].
const KINDS: [ResourceKind; 5] = [
    ResourceKind::Namespace,
    ResourceKind::ResourceQuota,
    ResourceKind::LimitRange,
    ResourceKind::ServiceAccount,
    ResourceKind::Pod,
];

struct Slot {
    informer: Arc<Informer>,
    /// The revision of this server's newest write of the kind.
    written: AtomicU64,
}

pub struct Lookups {
    slots: Vec<Slot>,
}

impl Lookups {
    fn slot(&self, kind: ResourceKind) -> Option<&Slot> {
        KINDS.iter().position(|k| *k == kind).and_then(|i| self.slots.get(i))
    }

    /// The informer of a followed kind, for others to follow instead of keeping their own.
    pub fn informer(&self, kind: ResourceKind) -> Option<&Arc<Informer>> {
        self.slot(kind).map(|s| &s.informer)
    }

    /// The informer of `kind`, when it holds everything this server wrote of that kind.
    fn fresh(&self, kind: ResourceKind) -> Option<&Informer> {
        let s = self.slot(kind)?;
        let cache = &s.informer.cache;
        usable(cache.is_synced(), cache.revision(), s.written.load(Ordering::Acquire)).then_some(&*s.informer)
    }
}

/// Whether a cache may answer: listed once, and at or past this server's newest write.
fn usable(synced: bool, cache_rev: u64, written: u64) -> bool {
    synced && cache_rev >= written
}

/// Follow the kinds admission reads and let `api` answer from them.
pub fn start(api: &Api) {
    let slots: Vec<Slot> =
        KINDS.iter().map(|k| Slot { informer: Informer::new(resources::of(*k)), written: AtomicU64::new(0) }).collect();
    for s in &slots {
        tokio::spawn(s.informer.clone().run(api.clone()));
    }
    let _ = api.lookups.set(Arc::new(Lookups { slots }));
}

impl Api {
    /// Note a committed write of `res` at revision `rev`: caches behind it are not used until
    /// they catch up.
    pub(super) fn noted(&self, res: &Resource, rev: u64) {
        if let Some(s) = self.lookups.get().and_then(|l| l.slot(res.kind_id)) {
            s.written.fetch_max(rev, Ordering::AcqRel);
        }
    }

    /// One object of a followed kind: from the cache when it is fresh and has it, else from
    /// the store. `None` when it does not exist.
    pub(super) async fn lookup(&self, kind: ResourceKind, ns: &str, name: &str) -> Result<Option<Value>, ApiError> {
        self.lookup_with(kind, ns, name, Value::clone).await
    }

    /// [`lookup`](Self::lookup), reading the object with `f` instead of copying it out of
    /// the cache (`f` must not block).
    pub(super) async fn lookup_with<R>(
        &self,
        kind: ResourceKind,
        ns: &str,
        name: &str,
        f: impl FnOnce(&Value) -> R,
    ) -> Result<Option<R>, ApiError> {
        let key = cache_key(ns, name);
        let mut f = Some(f);
        if let Some(i) = self.lookups.get().and_then(|l| l.fresh(kind))
            && let Some(r) = i.cache.with(&key, |o| f.take().map(|f| f(o)))
        {
            return Ok(r);
        }
        match self.get(&Target::object(kind, ns, name)).await {
            Ok(o) => Ok(f.map(|f| f(&o))),
            Err(e) if e.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the cache of a followed kind, once listed, holds an object of `ns` that
    /// satisfies `f`; `false` also when it has not listed yet. Fresh or not: a caller that
    /// must not miss a recent write reads the store when this says no.
    pub(super) fn cached_any(&self, kind: ResourceKind, ns: Option<&str>, f: impl FnMut(&Value) -> bool) -> bool {
        let Some(slot) = self.lookups.get().and_then(|l| l.slot(kind)) else { return false };
        let cache = &slot.informer.cache;
        cache.is_synced() && cache.any_in(ns, f)
    }

    /// `f` of the cached object `ns/name` of a followed kind, read in place; `None` when the
    /// cache has not listed yet or does not hold it. Fresh or not, as [`Api::cached_any`].
    pub(super) fn cached_with<R>(
        &self,
        kind: ResourceKind,
        ns: &str,
        name: &str,
        f: impl FnOnce(&Value) -> R,
    ) -> Option<R> {
        let slot = self.lookups.get().and_then(|l| l.slot(kind))?;
        let cache = &slot.informer.cache;
        let key = cache_key(ns, name);
        cache.is_synced().then(|| cache.with(&key, f)).flatten()
    }

    /// Every object of a followed kind in `ns`: from the cache when it is fresh, else listed.
    pub(super) async fn lookup_all(&self, kind: ResourceKind, ns: &str) -> Result<Vec<Value>, ApiError> {
        if let Some(i) = self.lookups.get().and_then(|l| l.fresh(kind)) {
            return Ok(i.cache.list(Some(ns)));
        }
        let list = self.list(resources::of(kind), Some(ns), &ListOptions::default()).await?;
        Ok(list.get("items").and_then(Value::as_array).cloned().unwrap_or_default())
    }
}

/// The key of object `ns/name` in an informer's cache (`name` alone for cluster objects).
fn cache_key(ns: &str, name: &str) -> String {
    if ns.is_empty() { name.to_string() } else { format!("{ns}/{name}") }
}

#[cfg(test)]
mod tests {
    use super::usable;

    #[test]
    fn a_cache_answers_only_once_listed_and_caught_up_with_this_servers_writes() {
        assert!(!usable(false, 10, 0), "not listed yet");
        assert!(usable(true, 0, 0), "listed, nothing written here");
        assert!(!usable(true, 9, 10), "behind this server's newest write");
        assert!(usable(true, 10, 10));
        assert!(usable(true, 11, 10));
    }
}
