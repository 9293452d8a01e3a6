//! Scale to zero (`wasmorch_api::idle`): every period, a Deployment that opted in and whose
//! pods have had no request for its idle period is scaled to zero, remembering its replicas;
//! the proxy's wake (`apiserver::wake`) brings it back. Its events say when and why.

use super::events;
use super::replicaset::{merge_patch, target};
use super::runtime::Informer;
use crate::apiserver::api::Api;
use crate::apiserver::metrics::Metrics;
use chrono::Utc;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use wasmorch_api::selector::LabelSelector;
use wasmorch_api::{idle, object, resources};

const COMPONENT: &str = "scale-to-zero";

pub async fn start(api: Api, deployments: Arc<Informer>, pods: Arc<Informer>, metrics: Arc<Metrics>, every: Duration) {
    deployments.cache.wait_synced().await;
    pods.cache.wait_synced().await;
    let res = resources::of(resources::ResourceKind::Deployment);
    loop {
        for d in deployments.cache.list(None) {
            if idle::idle_period(&d).is_none() || object::is_deleting(&d) {
                continue;
            }
            let ns = object::namespace(&d).to_string();
            let Ok(sel) = LabelSelector::of_workload(&d) else { continue };
            let last: Vec<_> = pods
                .cache
                .list(Some(&ns))
                .iter()
                .filter(|p| sel.selects(p) && !object::is_deleting(p))
                .map(|p| metrics.pod(&ns, object::name(p)).and_then(|u| u.last_request))
                .collect();
            let Some(period) = idle::should_sleep(&d, &last, Utc::now()) else { continue };
            let replicas = d.pointer("/spec/replicas").and_then(serde_json::Value::as_i64).unwrap_or(1);
            let patch = json!({
                "metadata": {"annotations": {idle::SCALED_AT: object::now_rfc3339(), idle::REPLICAS_BEFORE: replicas.to_string()}},
                "spec": {"replicas": 0},
            });
            match merge_patch(&api, &target(res, &ns, object::name(&d), None), patch).await {
                Ok(w) => {
                    let msg = format!("no request for {period:?}: scaled from {replicas} to 0 replicas");
                    events::record(&api, &w, "Normal", "ScaledToZero", msg, COMPONENT).await;
                    deployments.cache.assume(w);
                }
                Err(e) => tracing::debug!("scale to zero of {}/{}: {e}", ns, object::name(&d)),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = api.shutdown.cancelled() => return,
        }
    }
}
