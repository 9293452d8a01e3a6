//! PodDisruptionBudget status: expected, healthy and desired pods and the disruptions
//! allowed now (`wasmorch_api::disruption::budget`, the same rule `pods/eviction` applies).

use super::replicaset::target;
use super::runtime::{Action, Informer, Queue, key_of, run_workers, split_key};
use crate::apiserver::api::Api;
use serde_json::json;
use std::sync::Arc;
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, disruption, object, resources};

pub async fn start(api: Api, pdbs: Arc<Informer>, pods: Arc<Informer>) {
    let queue = Queue::new();
    {
        let q = queue.clone();
        pdbs.on_change(Arc::new(move |_, new| {
            if let Some(b) = new {
                q.add(key_of(b));
            }
        }));
    }
    {
        let (q, b) = (queue.clone(), pdbs.clone());
        pods.on_change(Arc::new(move |old, new| {
            for p in [old, new].into_iter().flatten() {
                for pdb in b.cache.list(Some(object::namespace(p))) {
                    if disruption::selects(&pdb, p) {
                        q.add(key_of(&pdb));
                    }
                }
            }
        }));
    }
    pdbs.cache.wait_synced().await;
    pods.cache.wait_synced().await;
    run_workers(api.clone(), "disruption", queue, 1, move |key| {
        let (api, pdbs, pods) = (api.clone(), pdbs.clone(), pods.clone());
        async move {
            let Some(pdb) = pdbs.cache.get(&key) else { return Ok::<_, ApiError>(Action::AwaitChange) };
            let (ns, name) = split_key(&key);
            let ns = ns.unwrap_or("default");
            let b = disruption::budget(&pdb, &pods.cache.list(Some(ns)));
            let cur = &pdb["status"];
            let same = cur["disruptionsAllowed"] == json!(b.allowed)
                && cur["currentHealthy"] == json!(b.healthy)
                && cur["desiredHealthy"] == json!(b.desired_healthy)
                && cur["expectedPods"] == json!(b.expected)
                && cur["observedGeneration"] == pdb["metadata"]["generation"];
            if !same {
                let res = resources::of(resources::ResourceKind::PodDisruptionBudget);
                let t = target(res, ns, name, Some("status"));
                let patch = json!({"status": disruption::status(&pdb, b, &object::now_rfc3339())});
                api.patch(&t, "application/merge-patch+json", patch, FieldValidation::Ignore, false).await?;
            }
            Ok(Action::AwaitChange)
        }
    })
    .await
}
