//! Namespace lifecycle: a namespace marked for deletion is emptied, then removed.

use crate::apiserver::api::{Api, ListOptions};
use crate::apiserver::objects::DeleteOptions;
use crate::apiserver::request::Target;
use serde_json::{Value, json};
use std::time::Duration;
use wasmorch_api::resources;
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object};

fn target(res: &'static resources::Resource, ns: Option<&str>, name: &str) -> Target {
    Target { res, namespace: ns.map(String::from), name: Some(name.to_string()), subresource: None, watch_path: false }
}

/// What to do for a terminating namespace, given how many objects remain in it.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    DeleteContents,
    Finalize,
}

pub fn plan(remaining: usize) -> Step {
    if remaining > 0 { Step::DeleteContents } else { Step::Finalize }
}

/// Reconcile one namespace. Returns whether it needs another pass.
pub async fn reconcile(api: &Api, name: &str) -> Result<bool, ApiError> {
    let ns_res = resources::of(resources::ResourceKind::Namespace);
    let ns = match api.get(&target(ns_res, None, name)).await {
        Ok(n) => n,
        Err(e) if e.code == 404 => return Ok(false),
        Err(e) => return Err(e),
    };
    if !object::is_deleting(&ns) {
        return Ok(false);
    }
    let mut remaining = 0;
    // Custom kinds too: a namespace's custom resources go with it.
    for res in resources::stored().into_iter().filter(|r| r.namespaced) {
        let list = api.list(res, Some(name), &ListOptions::default()).await?;
        for o in list["items"].as_array().into_iter().flatten() {
            remaining += 1;
            if object::is_deleting(o) {
                continue;
            }
            match api.delete(&target(res, Some(name), object::name(o)), DeleteOptions::default(), false).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    match plan(remaining) {
        Step::DeleteContents => Ok(true),
        Step::Finalize => {
            let patch: Value = json!({"spec": {"finalizers": []}});
            let t = target(ns_res, None, name);
            match api.store_patch_namespace_finalizers(&t, patch).await {
                Ok(_) => Ok(false),
                Err(e) if e.code == 404 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Watch namespaces and finish deletions, until `api.shutdown`.
pub async fn run(api: Api) {
    let ns_res = resources::of(resources::ResourceKind::Namespace);
    loop {
        let result = async {
            let list = api.list(ns_res, None, &ListOptions::default()).await?;
            let rev: u64 = list["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            let mut pending: Vec<String> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| object::is_deleting(n))
                .map(|n| object::name(n).to_string())
                .collect();
            let mut w = api.store.watch(&ns_res.key_prefix(None), rev)?;
            loop {
                let mut again = Vec::new();
                for n in pending.drain(..) {
                    if reconcile(&api, &n).await? {
                        again.push(n);
                    }
                }
                pending = again;
                let wait = if pending.is_empty() { Duration::from_secs(3600) } else { Duration::from_millis(200) };
                tokio::select! {
                    ev = w.next() => {
                        let ev = ev?;
                        if object::is_deleting(&ev.object) {
                            pending.push(object::name(&ev.object).to_string());
                        }
                    }
                    _ = tokio::time::sleep(wait) => {}
                    _ = api.shutdown.cancelled() => return Ok::<(), ApiError>(()),
                }
                pending.sort();
                pending.dedup();
            }
        }
        .await;
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!("namespace controller: {e}; restarting");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = api.shutdown.cancelled() => return,
                }
            }
        }
    }
}

impl Api {
    /// Clear a terminating namespace's `spec.finalizers` (the `finalize` subresource).
    async fn store_patch_namespace_finalizers(&self, t: &Target, patch: Value) -> Result<(), ApiError> {
        let res = t.res;
        let key = res.key("", t.name.as_deref().unwrap_or(""));
        self.store
            .mutate(
                key,
                false,
                Box::new(move |cur| {
                    let cur = cur.ok_or_else(|| ApiError::not_found("", "namespaces", ""))?;
                    let mut new = cur.clone();
                    json_patch::merge(&mut new, &patch);
                    let mut finalized = new.clone();
                    finalized["spec"]["finalizers"] = json!([]);
                    crate::apiserver::objects::prepare_update(
                        res,
                        cur,
                        finalized,
                        Some("finalize"),
                        FieldValidation::Ignore,
                    )
                    .map(|(o, _)| o)
                }),
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn plan_finalizes_only_when_empty() {
        assert_eq!(super::plan(3), super::Step::DeleteContents);
        assert_eq!(super::plan(0), super::Step::Finalize);
    }
}
