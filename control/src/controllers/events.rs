//! Recording Events from the control plane, as Kubernetes' components do.

use crate::apiserver::api::Api;
use serde_json::{Value, json};
use wasmorch_api::object;
use wasmorch_api::resources;
use wasmorch_api::validation::FieldValidation;

/// Record an event about `obj` (`kind` is `Normal` or `Warning`), without waiting for the
/// write: an event is never worth slowing or failing a reconcile for (failures are logged).
pub async fn record(api: &Api, obj: &Value, kind: &str, reason: &str, message: String, component: &str) {
    let res = resources::of(resources::ResourceKind::Event);
    let ns = match object::namespace(obj) {
        "" => "default",
        ns => ns,
    };
    let now = object::now_rfc3339();
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", object::name(obj)), "namespace": ns},
        "involvedObject": {
            "apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": object::name(obj),
            "namespace": object::namespace(obj), "uid": object::uid(obj),
            "resourceVersion": object::resource_version(obj).to_string(),
        },
        "reason": reason, "message": message, "type": kind,
        "source": {"component": component},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": component, "reportingInstance": component,
    });
    let (api, reason, name, ns) = (api.clone(), reason.to_string(), object::name(obj).to_string(), ns.to_string());
    tokio::spawn(async move {
        if let Err(e) = api.create(res, Some(&ns), ev, FieldValidation::Ignore, false).await {
            tracing::debug!("event {reason} for {name}: {e}");
        }
    });
}
