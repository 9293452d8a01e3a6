//! Ingresses of the `wasmorch` class (or of no class, while it is the default): their
//! `status.loadBalancer` lists every Ready node's address, where each node's proxy serves
//! them (the routing itself is the node's: `wasmorch_api::ingress::Router`). The IngressClass
//! `wasmorch` is created at start (`server::bootstrap`), as the default class.

use super::endpoints::{lb_changed, load_balancer_status};
use super::replicaset::target;
use super::runtime::{Action, Informer, Queue, key_of, run_workers, split_key};
use crate::apiserver::api::Api;
use serde_json::{Value, json};
use std::sync::Arc;
use wasmorch_api::ingress::{self, CLASS, DEFAULT_CLASS_ANNOTATION};
use wasmorch_api::resources::{self, ResourceKind};
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object};

/// The IngressClass wasmorch serves.
pub fn class() -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "spec": {"controller": ingress::CONTROLLER}})
}

/// Whether the `wasmorch` class is the default one (its annotation, as an admin may change).
fn default_class(classes: &Informer) -> bool {
    classes.cache.get(CLASS).is_some_and(|c| ingress::is_default_class(&c))
}

pub async fn start(api: Api, ingresses: Arc<Informer>, nodes: Arc<Informer>, classes: Arc<Informer>) {
    let queue = Queue::new();
    {
        let q = queue.clone();
        ingresses.on_change(Arc::new(move |_, new| {
            if let Some(o) = new {
                q.add(key_of(o));
            }
        }));
    }
    // A node's readiness or address, or the default class, changes every Ingress's status.
    for (i, relevant) in [(&nodes, lb_changed as fn(Option<&Value>, Option<&Value>) -> bool), (&classes, |_, _| true)] {
        let (q, all) = (queue.clone(), ingresses.clone());
        i.on_change(Arc::new(move |old, new| {
            if relevant(old, new) {
                all.cache.for_each(|o| q.add(key_of(o)));
            }
        }));
    }
    for i in [&ingresses, &nodes, &classes] {
        i.cache.wait_synced().await;
    }
    run_workers(api.clone(), "ingress", queue, 1, move |key| {
        let (api, ingresses, nodes, classes) = (api.clone(), ingresses.clone(), nodes.clone(), classes.clone());
        async move {
            let Some(ing) = ingresses.cache.get(&key) else { return Ok::<_, ApiError>(Action::AwaitChange) };
            if !ingress::is_ours(&ing, default_class(&classes)) {
                return Ok(Action::AwaitChange);
            }
            let lb = nodes.cache.with_all(|n| load_balancer_status(n));
            // An Ingress's load-balancer entries carry no ipMode.
            let entries: Vec<Value> = lb
                .get("ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("ip").map(|ip| json!({"ip": ip})))
                .collect();
            let want = json!({"ingress": entries});
            if ing.pointer("/status/loadBalancer") != Some(&want) {
                let (ns, name) = split_key(&key);
                let t = target(resources::of(ResourceKind::Ingress), ns.unwrap_or(""), name, Some("status"));
                let patch = json!({"status": {"loadBalancer": want}});
                api.patch(&t, "application/merge-patch+json", patch, FieldValidation::Ignore, false).await?;
                tracing::debug!("ingress {}: addresses updated", object::name(&ing));
            }
            Ok(Action::AwaitChange)
        }
    })
    .await;
}
