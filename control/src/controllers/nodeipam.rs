//! Node IPAM: gives every Node a pod range from the cluster's (`spec.podCIDR`, `podCIDRs`),
//! as kube-controller-manager's node-ipam controller does. The decision is
//! `wasmorch_api::ipam::plan`; one key, one worker, so two Nodes never get the same range.
//! When the cluster range is exhausted the Node gets a `CIDRNotAvailable` event and waits
//! until a Node is deleted.

use super::replicaset::target;
use super::runtime::{Action, Informer, Queue, run_workers};
use crate::apiserver::api::Api;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use wasmorch_api::ipam::{self, PodRanges};
use wasmorch_api::resources::{self, ResourceKind};
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object};

const KEY: &str = "all-nodes";

pub async fn start(api: Api, nodes: Arc<Informer>, ranges: PodRanges) {
    let queue = Queue::new();
    {
        let q = queue.clone();
        nodes.on_change(Arc::new(move |old, new| {
            // A new Node without a range, or a deleted one whose range is free again.
            let needs = new.is_some_and(|n| ipam::pod_cidr(n).is_none()) || (new.is_none() && old.is_some());
            if needs {
                q.add(KEY.to_string());
            }
        }));
    }
    nodes.cache.wait_synced().await;
    queue.add(KEY.to_string());
    run_workers(api.clone(), "nodeipam", queue, 1, move |_key| {
        let (api, nodes) = (api.clone(), nodes.clone());
        async move {
            let all = nodes.cache.list(None);
            let mut exhausted = false;
            for (name, cidr) in ipam::plan(&all, &ranges) {
                let Some(cidr) = cidr else {
                    exhausted = true;
                    if let Some(n) = all.iter().find(|n| object::name(n) == name) {
                        let msg = format!(
                            "Node {name} status is now: CIDRNotAvailable (no range left in {})",
                            ranges.cluster
                        );
                        super::events::record(&api, n, "Node", "CIDRNotAvailable", msg, "nodeipam").await;
                    }
                    continue;
                };
                let t = target(resources::of(ResourceKind::Node), "", &name, None);
                let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
                match api.patch(&t, "application/merge-patch+json", patch, FieldValidation::Ignore, false).await {
                    // Seen at once by the next plan, before the watch brings it.
                    Ok(w) => nodes.cache.assume(w.object),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, ApiError>(if exhausted { Action::Requeue(Duration::from_secs(30)) } else { Action::AwaitChange })
        }
    })
    .await
}
