//! Every namespace gets what pods need to reach the API: the `default` ServiceAccount
//! (Kubernetes' serviceaccounts controller) and the `kube-root-ca.crt` ConfigMap with the
//! cluster CA (Kubernetes' root-ca-cert-publisher), re-created when deleted and corrected
//! when changed.

use super::replicaset::{merge_patch, target};
use super::runtime::{Action, Informer, Queue, run_workers};
use crate::apiserver::api::Api;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use wasmorch_api::resources::{self, ResourceKind};
use wasmorch_api::serviceaccount::ROOT_CA_CONFIGMAP;
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object};

/// ConfigMaps are not watched (a cache of every ConfigMap to follow one name): each
/// namespace's is looked at again this often.
const RECHECK: Duration = Duration::from_secs(60);

pub async fn start(api: Api, ca_pem: String) {
    let namespaces = Informer::new(resources::of(ResourceKind::Namespace));
    let accounts = Informer::new(resources::of(ResourceKind::ServiceAccount));
    let queue = Queue::new();
    {
        let q = queue.clone();
        namespaces.on_change(Arc::new(move |_, new| {
            if let Some(n) = new {
                q.add(object::name(n));
            }
        }));
        let q = queue.clone();
        // A deleted `default` account comes back.
        accounts.on_change(Arc::new(move |old, new| {
            if let (Some(o), None) = (old, new)
                && object::name(o) == "default"
            {
                q.add(object::namespace(o));
            }
        }));
    }
    tokio::spawn(namespaces.clone().run(api.clone()));
    tokio::spawn(accounts.clone().run(api.clone()));
    run_workers(api.clone(), "serviceaccounts", queue, 1, move |ns: String| {
        let (api, namespaces, ca) = (api.clone(), namespaces.clone(), ca_pem.clone());
        async move {
            let Some(n) = namespaces.cache.get(&ns) else { return Ok(Action::AwaitChange) };
            if object::str_at(&n, "status.phase") == Some("Terminating")
                || n["metadata"].get("deletionTimestamp").is_some()
            {
                return Ok(Action::AwaitChange);
            }
            ensure(&api, ResourceKind::ServiceAccount, &ns, json!({"metadata": {"name": "default"}}), None).await?;
            let cm = json!({"metadata": {"name": ROOT_CA_CONFIGMAP}, "data": {"ca.crt": ca}});
            ensure(&api, ResourceKind::ConfigMap, &ns, cm, Some(json!({"data": {"ca.crt": ca}}))).await?;
            Ok(Action::Requeue(RECHECK))
        }
    })
    .await
}

/// Create `obj` in `ns` unless it exists; when it does and `want` is given, make sure it
/// holds that (a merge patch when it differs).
async fn ensure(api: &Api, kind: ResourceKind, ns: &str, mut obj: Value, want: Option<Value>) -> Result<(), ApiError> {
    let res = resources::of(kind);
    let name = object::name(&obj).to_string();
    match api.get(&target(res, ns, &name, None)).await {
        Ok(cur) => {
            if let Some(want) = want
                && want.as_object().into_iter().flatten().any(|(k, v)| cur.get(k) != Some(v))
            {
                merge_patch(api, &target(res, ns, &name, None), want).await?;
            }
            Ok(())
        }
        Err(e) if e.code == 404 => {
            obj["apiVersion"] = json!("v1");
            obj["kind"] = json!(res.kind);
            match api.create(res, Some(ns), obj, FieldValidation::Ignore, false).await {
                Ok(_) => Ok(()),
                // Raced with someone else's create, or the namespace is going away.
                Err(e) if e.code == 409 || e.code == 403 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}
