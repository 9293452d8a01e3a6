//! Garbage collector: a dependent whose owners are all gone is deleted (background
//! propagation, Kubernetes' default for `kubectl delete`). Owners are confirmed gone with a
//! live read before anything is deleted, so a lagging cache never removes a live object.
//!
//! Foreground deletion (finalizer `foregroundDeletion`): the owner stays, marked deleting,
//! until its dependents are deleted (themselves in the foreground); orphan deletion
//! (finalizer `orphan`): the owner references to it are removed from its dependents, which
//! stay. Then the finalizer goes and the store removes the owner.

use super::replicaset::{merge_patch, target};
use super::runtime::{Action, Informer, Queue, key_of, run_workers, split_key};
use crate::apiserver::api::Api;
use crate::apiserver::objects::{DeleteOptions, FOREGROUND, ORPHAN};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use wasmorch_api::{ApiError, object};

struct Gc {
    api: Api,
    /// Owner kinds this collector knows, by kind.
    owners: HashMap<&'static str, Arc<Informer>>,
    /// Dependent kinds, by kind.
    dependents: HashMap<&'static str, Arc<Informer>>,
}

fn refs(obj: &Value) -> Vec<(String, String, String)> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            (s("kind"), s("name"), s("uid"))
        })
        .collect()
}

impl Gc {
    /// Whether an owner is present in the cache (a hint only).
    fn cached(&self, ns: &str, kind: &str, name: &str, uid: &str) -> bool {
        let Some(inf) = self.owners.get(kind) else { return true };
        let key = if inf.res.namespaced { format!("{ns}/{name}") } else { name.to_string() };
        // Read in place: this runs for every change of every dependent (each pod's, against
        // its ReplicaSet), and a copy of the owner each time was most of the handler's cost.
        inf.cache.with(&key, |o| object::uid(o) == uid).unwrap_or(false)
    }

    /// Whether an owner exists, read live from the store.
    async fn exists(&self, ns: &str, kind: &str, name: &str, uid: &str) -> Result<bool, ApiError> {
        let Some(inf) = self.owners.get(kind) else { return Ok(true) };
        let ns = if inf.res.namespaced { ns } else { "" };
        match self.api.get(&target(inf.res, ns, name, None)).await {
            Ok(o) => Ok(object::uid(&o) == uid),
            Err(e) if e.code == 404 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Dependents (kind, object) that name `uid` as an owner.
    fn dependents_of(&self, ns: &str, uid: &str) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        for (kind, dep) in &self.dependents {
            for d in dep.cache.list(if ns.is_empty() { None } else { Some(ns) }) {
                if refs(&d).iter().any(|(_, _, u)| u == uid) {
                    out.push((*kind, d));
                }
            }
        }
        out
    }

    /// Finish a foreground or orphan deletion of an owner.
    async fn finish_owner(&self, kind: &str, okey: &str) -> Result<Action, ApiError> {
        let Some(inf) = self.owners.get(kind) else { return Ok(Action::AwaitChange) };
        let Some(owner) = inf.cache.get(okey) else { return Ok(Action::AwaitChange) };
        if !object::is_deleting(&owner) {
            return Ok(Action::AwaitChange);
        }
        let fins = object::finalizers(&owner);
        let ns = object::namespace(&owner).to_string();
        let uid = object::uid(&owner).to_string();
        let deps = self.dependents_of(&ns, &uid);
        let done = if fins.iter().any(|f| f == ORPHAN) {
            for (dkind, d) in &deps {
                let keep: Vec<Value> = d["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| r["uid"] != uid.as_str())
                    .cloned()
                    .collect();
                let res = self.dependents[dkind].res;
                let patch = serde_json::json!({"metadata": {"ownerReferences": keep}});
                match merge_patch(&self.api, &target(res, &ns, object::name(d), None), patch).await {
                    Ok(o) => self.dependents[dkind].cache.assume(o),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            ORPHAN
        } else if fins.iter().any(|f| f == FOREGROUND) {
            if !deps.is_empty() {
                for (dkind, d) in &deps {
                    if object::is_deleting(d) {
                        continue;
                    }
                    let res = self.dependents[dkind].res;
                    let opts = DeleteOptions {
                        propagation: (*dkind != "Pod").then(|| "Foreground".to_string()),
                        ..Default::default()
                    };
                    match self.api.delete(&target(res, &ns, object::name(d), None), opts, false).await {
                        Ok(_) | Err(ApiError { code: 404, .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                // Dependents going away requeue the owner; look again now and then anyway.
                return Ok(Action::Requeue(std::time::Duration::from_secs(2)));
            }
            FOREGROUND
        } else {
            return Ok(Action::AwaitChange);
        };
        let left: Vec<String> = fins.into_iter().filter(|f| f != done).collect();
        let patch = serde_json::json!({"metadata": {"finalizers": left}});
        match merge_patch(&self.api, &target(inf.res, &ns, object::name(&owner), None), patch).await {
            Ok(_) | Err(ApiError { code: 404, .. }) => Ok(Action::AwaitChange),
            Err(e) => Err(e),
        }
    }

    async fn reconcile(&self, key: String) -> Result<Action, ApiError> {
        if let Some(rest) = key.strip_prefix("owner:") {
            let Some((kind, okey)) = rest.split_once('|') else { return Ok(Action::AwaitChange) };
            return self.finish_owner(kind, okey).await;
        }
        let Some((kind, okey)) = key.split_once('|') else { return Ok(Action::AwaitChange) };
        let Some(inf) = self.dependents.get(kind) else { return Ok(Action::AwaitChange) };
        let Some(obj) = inf.cache.get(okey) else { return Ok(Action::AwaitChange) };
        let ns = object::namespace(&obj).to_string();
        let owners = refs(&obj);
        if owners.is_empty() || object::is_deleting(&obj) {
            return Ok(Action::AwaitChange);
        }
        for (k, name, uid) in &owners {
            if self.exists(&ns, k, name, uid).await? {
                return Ok(Action::AwaitChange);
            }
        }
        let (_, name) = split_key(okey);
        match self.api.delete(&target(inf.res, &ns, name, None), Default::default(), false).await {
            Ok(_) => tracing::debug!("gc: deleted {kind} {okey}: its owners are gone"),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
        Ok(Action::AwaitChange)
    }
}

/// `owners` and `dependents` are informers by kind (a kind may be both).
pub fn start(
    api: Api,
    owners: Vec<(&'static str, Arc<Informer>)>,
    dependents: Vec<(&'static str, Arc<Informer>)>,
) -> impl Future<Output = ()> {
    let queue = Queue::new();
    let gc = Arc::new(Gc {
        api: api.clone(),
        owners: owners.into_iter().collect(),
        dependents: dependents.into_iter().collect(),
    });
    for (kind, inf) in &gc.dependents {
        let (q, g, kind) = (queue.clone(), Arc::downgrade(&gc), *kind);
        inf.on_change(Arc::new(move |old, new| {
            let Some(g) = g.upgrade() else { return };
            match (old, new) {
                (_, Some(o)) => {
                    let ns = object::namespace(o);
                    if refs(o).iter().any(|(k, n, u)| !g.cached(ns, k, n, u)) {
                        q.add(format!("{kind}|{}", key_of(o)));
                    }
                }
                // A dependent went: an owner deleting in the foreground may be done.
                (Some(o), None) => {
                    let ns = object::namespace(o);
                    for (k, n, _) in refs(o) {
                        if g.owners.contains_key(k.as_str()) {
                            let okey = if ns.is_empty() { n } else { format!("{ns}/{n}") };
                            q.add(format!("owner:{k}|{okey}"));
                        }
                    }
                }
                (None, None) => {}
            }
        }));
    }
    for (kind, inf) in &gc.owners {
        let (q, kind) = (queue.clone(), *kind);
        inf.on_change(Arc::new(move |_, new| {
            if let Some(o) = new
                && object::is_deleting(o)
                && object::finalizers(o).iter().any(|f| f == FOREGROUND || f == ORPHAN)
            {
                q.add(format!("owner:{kind}|{}", key_of(o)));
            }
        }));
    }
    for inf in gc.owners.values() {
        let (q, g) = (queue.clone(), Arc::downgrade(&gc));
        inf.on_change(Arc::new(move |old, new| {
            let (Some(o), None, Some(g)) = (old, new, g.upgrade()) else { return };
            let (ns, uid) = (object::namespace(o), object::uid(o));
            for (kind, dep) in &g.dependents {
                for d in dep.cache.list(if ns.is_empty() { None } else { Some(ns) }) {
                    if refs(&d).iter().any(|(_, _, u)| u == uid) {
                        q.add(format!("{kind}|{}", key_of(&d)));
                    }
                }
            }
        }));
    }
    async move {
        for inf in gc.owners.values().chain(gc.dependents.values()) {
            inf.cache.wait_synced().await;
        }
        run_workers(api, "garbage-collector", queue, 2, move |k| {
            let g = gc.clone();
            async move { g.reconcile(k).await }
        })
        .await
    }
}
