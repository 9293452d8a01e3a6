//! CustomResourceDefinitions, as Kubernetes' apiextensions controllers keep them: a
//! definition's status says its names are accepted and it is established (what `kubectl wait
//! --for condition=established` waits for), and which versions objects were stored in; a
//! definition being deleted first deletes every object of its kind, then lets itself go
//! (the `customresourcecleanup.apiextensions.k8s.io` finalizer).

use super::replicaset::target;
use super::runtime::{Action, Informer, Queue, run_workers};
use crate::apiserver::api::{Api, ListOptions};
use crate::apiserver::objects::DeleteOptions;
use crate::apiserver::request::Target;
use serde_json::{Value, json};
use std::sync::Arc;
use wasmorch_api::resources::{self, ResourceKind};
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, custom, object};

pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The status a definition should have, given the one it has (conditions keep their
/// transition times while unchanged).
pub fn status(crd: &Value, now: &str) -> Value {
    let cur = &crd["status"];
    let cond = |ty: &str, reason: &str, message: &str| {
        let same = cur["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == ty && c["status"] == "True")
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or(now)
            .to_string();
        json!({"type": ty, "status": "True", "reason": reason, "message": message, "lastTransitionTime": same})
    };
    let mut stored: Vec<String> =
        cur["storedVersions"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect();
    for v in crd["spec"]["versions"].as_array().into_iter().flatten().filter(|v| v["storage"] == true) {
        if let Some(n) = v["name"].as_str()
            && !stored.iter().any(|s| s == n)
        {
            stored.push(n.to_string());
        }
    }
    let mut accepted = crd["spec"]["names"].clone();
    if accepted.get("singular").is_none_or(Value::is_null) {
        accepted["singular"] = json!(accepted["kind"].as_str().unwrap_or("").to_lowercase());
    }
    if accepted.get("listKind").is_none_or(Value::is_null) {
        accepted["listKind"] = json!(format!("{}List", accepted["kind"].as_str().unwrap_or("")));
    }
    json!({
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": accepted,
        "storedVersions": stored,
    })
}

pub async fn start(api: Api, crds: Arc<Informer>) {
    let queue = Queue::new();
    {
        let q = queue.clone();
        crds.on_change(Arc::new(move |_, new| {
            if let Some(n) = new {
                q.add(object::name(n));
            }
        }));
    }
    let res = resources::of(ResourceKind::CustomResourceDefinition);
    run_workers(api.clone(), "customresourcedefinitions", queue, 1, move |name: String| {
        let (api, crds) = (api.clone(), crds.clone());
        async move {
            let Some(crd) = crds.cache.get(&name) else { return Ok(Action::AwaitChange) };
            let t = target(res, "", &name, None);
            if object::is_deleting(&crd) {
                return cleanup(&api, &t, &crd).await;
            }
            let want = status(&crd, &object::now_rfc3339());
            if crd["status"] != want {
                let mut t = t.clone();
                t.subresource = Some("status".into());
                let patch = json!({"status": want});
                match api.patch(&t, "application/merge-patch+json", patch, FieldValidation::Ignore, false).await {
                    Ok(w) => crds.cache.assume(w.object),
                    Err(e) if e.code == 404 || e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(Action::AwaitChange)
        }
    })
    .await
}

/// Delete every object of the definition's kind, then drop the finalizer. Objects that hold
/// finalizers of their own keep the definition until they go (it is looked at again).
async fn cleanup(api: &Api, t: &Target, crd: &Value) -> Result<Action, ApiError> {
    if !object::finalizers(crd).iter().any(|f| f == CLEANUP_FINALIZER) {
        return Ok(Action::AwaitChange);
    }
    let stored = custom::versions().iter().find(|v| v.definition == object::name(crd)).map(|v| v.storage);
    if let Some(res) = stored {
        let list = api.list(res, None, &ListOptions::default()).await?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        if !items.is_empty() {
            for o in &items {
                let ns = object::namespace(o);
                let it = target(res, ns, object::name(o), None);
                match api.delete(&it, DeleteOptions::default(), false).await {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(Action::Requeue(std::time::Duration::from_millis(200)));
        }
    }
    let rest: Vec<String> = object::finalizers(crd).into_iter().filter(|f| f != CLEANUP_FINALIZER).collect();
    let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": object::resource_version(crd).to_string()}});
    match api.patch(t, "application/merge-patch+json", patch, FieldValidation::Ignore, false).await {
        Ok(_) => Ok(Action::AwaitChange),
        Err(e) if e.code == 404 => Ok(Action::AwaitChange),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_accepts_names_and_records_stored_versions() {
        let crd = json!({"spec": {"names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "storage": true}, {"name": "v1beta1", "storage": false}]},
            "status": {"storedVersions": ["v1beta1"]}});
        let s = status(&crd, "T0");
        assert_eq!(s["storedVersions"], json!(["v1beta1", "v1"]));
        assert_eq!(s["acceptedNames"]["singular"], "widget");
        assert_eq!(s["acceptedNames"]["listKind"], "WidgetList");
        assert_eq!(s["conditions"][1]["type"], "Established");
        // Unchanged conditions keep their time: a second pass is no change.
        let again = json!({"spec": crd["spec"], "status": s});
        assert_eq!(status(&again, "T1"), again["status"]);
    }
}
