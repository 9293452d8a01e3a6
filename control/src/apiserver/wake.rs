//! `POST /wasmorch/v1/namespaces/{ns}/services/{name}/wake`: a node's proxy holds a request
//! to a Service without ready endpoints and asks here whether someone is asleep behind it
//! (`wasmorch_api::idle`). Deployments the Service selects that were scaled to zero get their
//! replicas back; the answer says whether to keep holding, and why it is no use (a pod that
//! cannot start) so the proxy can answer 503 with the reason instead of waiting out its time.

use super::ServerState;
use super::api::ListOptions;
use crate::controllers::events;
use crate::controllers::replicaset::{merge_patch, target};
use crate::pki::Identity;
use serde_json::{Value, json};
use wasmorch_api::resources::{self, ResourceKind};
use wasmorch_api::selector::LabelSelector;
use wasmorch_api::{ApiError, idle, object};

const COMPONENT: &str = "scale-to-zero";

/// Whether the Service's selector picks the pods of a Deployment's template.
fn selects(selector: &std::collections::BTreeMap<String, String>, deploy: &Value) -> bool {
    let labels = object::string_map(deploy.pointer("/spec/template/metadata/labels"));
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub async fn wake(state: &ServerState, id: &Identity, ns: &str, service: &str) -> Result<Value, ApiError> {
    // Nodes' proxies wake; anyone else as RBAC allows (`create` on `services/wake`).
    if wasmorch_api::join::node_name(&id.user, &id.groups).is_none() {
        let a = wasmorch_api::rbac::Attributes {
            verb: "create".into(),
            resource: "services".into(),
            subresource: "wake".into(),
            name: service.into(),
            namespace: ns.into(),
            ..Default::default()
        };
        super::authz::require(&state.api, id, &a)?;
    }
    let svc = state.api.get(&target(resources::of(ResourceKind::Service), ns, service, None)).await?;
    let selector = object::string_map(svc.pointer("/spec/selector"));
    let deployments = resources::of(ResourceKind::Deployment);
    let list = state.api.list(deployments, Some(ns), &ListOptions::default()).await?;
    let mut woken = Vec::new();
    let mut waking = false;
    for d in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        if !selects(&selector, d) || !matches!(idle::idle_period(d), Some(Ok(_))) {
            continue;
        }
        waking = true;
        if !idle::sleeping(d) {
            continue;
        }
        let n = idle::wake_replicas(d);
        let name = object::name(d);
        let patch = json!({
            "metadata": {"annotations": {idle::SCALED_AT: null, idle::REPLICAS_BEFORE: null, idle::WOKEN_AT: object::now_rfc3339()}},
            "spec": {"replicas": n},
        });
        let w = merge_patch(&state.api, &target(deployments, ns, name, None), patch).await?;
        let msg = format!("a request to service {service} arrived: scaled from 0 to {n} replicas");
        events::record(&state.api, &w, "Normal", "Woken", msg, COMPONENT).await;
        woken.push(name.to_string());
    }
    // A pod that will not start makes waiting pointless.
    let mut problem = None;
    if waking {
        let pods = state.api.list(resources::of(ResourceKind::Pod), Some(ns), &ListOptions::default()).await?;
        let sel = LabelSelector::from_object(&json!({"matchLabels": selector})).ok();
        problem = pods
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| sel.as_ref().is_some_and(|s| s.selects(p)) && !object::is_deleting(p))
            .find_map(idle::stuck);
    }
    Ok(json!({"waking": waking, "woken": woken, "problem": problem}))
}
