//! ResourceQuota status: `hard` as declared and `used` as counted now (pods from the shared
//! cache, other kinds listed), refreshed when a pod of the namespace changes and every 10 s
//! (for the kinds no informer follows). Admission itself never trusts this status: it counts
//! under a lock (`apiserver/quota.rs`).

use super::replicaset::target;
use super::runtime::{Action, Informer, Queue, key_of, run_workers, split_key};
use crate::apiserver::api::{Api, ListOptions};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use wasmorch_api::resources::{self, ResourceKind};
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object, quota};

const RESYNC: Duration = Duration::from_secs(10);

pub async fn start(api: Api, quotas: Arc<Informer>, pods: Arc<Informer>) {
    let queue = Queue::new();
    {
        let q = queue.clone();
        quotas.on_change(Arc::new(move |_, new| {
            if let Some(o) = new {
                q.add(key_of(o));
            }
        }));
    }
    {
        let (q, all) = (queue.clone(), quotas.clone());
        pods.on_change(Arc::new(move |old, new| {
            for p in [old, new].into_iter().flatten() {
                for quota in all.cache.list(Some(object::namespace(p))) {
                    q.add(key_of(&quota));
                }
            }
        }));
    }
    quotas.cache.wait_synced().await;
    pods.cache.wait_synced().await;
    run_workers(api.clone(), "resourcequota", queue, 1, move |key| {
        let (api, quotas, pods) = (api.clone(), quotas.clone(), pods.clone());
        async move {
            let Some(q) = quotas.cache.get(&key) else { return Ok::<_, ApiError>(Action::AwaitChange) };
            let (ns, name) = split_key(&key);
            let ns = ns.unwrap_or("default");
            let kinds: HashSet<ResourceKind> =
                quota::hard(&q).keys().filter_map(|k| quota::kind_of(k)).map(|r| r.kind_id).collect();
            let mut usages = Vec::new();
            for kind in kinds {
                let res = resources::of(kind);
                let items: Vec<Value> = if kind == ResourceKind::Pod {
                    pods.cache.list(Some(ns))
                } else {
                    let list = api.list(res, Some(ns), &ListOptions::default()).await?;
                    list.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
                };
                usages.extend(items.iter().map(|o| quota::usage(res, o)));
            }
            let status = quota::status(&q, &quota::sum(usages.iter()));
            if q.get("status") != Some(&status) {
                let t = target(resources::of(ResourceKind::ResourceQuota), ns, name, Some("status"));
                api.patch(
                    &t,
                    "application/merge-patch+json",
                    json!({"status": status}),
                    FieldValidation::Ignore,
                    false,
                )
                .await?;
            }
            Ok(Action::Requeue(RESYNC))
        }
    })
    .await
}
