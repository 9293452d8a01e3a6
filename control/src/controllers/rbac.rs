//! ClusterRole aggregation: a ClusterRole with an `aggregationRule` holds the union of the
//! rules of the ClusterRoles its selectors pick (`wasmorch_api::rbac::aggregated_rules`), kept
//! current as those change — how `admin`, `edit` and `view` take in the rules of roles
//! labelled `rbac.authorization.k8s.io/aggregate-to-…`.

use super::replicaset::{merge_patch, target};
use super::runtime::{Action, Informer, Queue, run_workers};
use crate::apiserver::api::Api;
use serde_json::json;
use std::sync::Arc;
use wasmorch_api::{ApiError, object, rbac, resources};

pub async fn start(api: Api, cluster_roles: Arc<Informer>) {
    let queue = Queue::new();
    {
        let q = queue.clone();
        // Any change may change what an aggregated role selects: one key for the whole pass.
        cluster_roles.on_change(Arc::new(move |_, _| q.add("all")));
    }
    cluster_roles.cache.wait_synced().await;
    queue.add("all");
    let res = resources::of(resources::ResourceKind::ClusterRole);
    run_workers(api.clone(), "clusterrole-aggregation", queue, 1, move |_| {
        let (api, roles) = (api.clone(), cluster_roles.clone());
        async move {
            let all = roles.cache.list(None);
            for r in &all {
                let Some(rules) = rbac::aggregated_rules(r, &all) else { continue };
                if r["rules"] == json!(rules) || (rules.is_empty() && r["rules"].is_null()) {
                    continue;
                }
                let w = merge_patch(&api, &target(res, "", object::name(r), None), json!({"rules": rules})).await?;
                roles.cache.assume(w);
            }
            Ok::<_, ApiError>(Action::AwaitChange)
        }
    })
    .await
}
