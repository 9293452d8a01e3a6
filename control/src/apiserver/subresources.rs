//! Subresources with their own shapes: `pods/binding` (the scheduler's write) and the
//! `scale` of Deployments and ReplicaSets (`autoscaling/v1` Scale).

use super::api::{Api, Written};
use super::objects;
use super::request::Target;
use crate::store::Outcome;
use serde_json::{Value, json};
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object};

/// The Scale view of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Value {
    let selector = wasmorch_api::selector::LabelSelector::of_workload(obj).map(|s| s.to_string()).unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": object::name(obj),
            "namespace": object::namespace(obj),
            "uid": object::uid(obj),
            "resourceVersion": object::resource_version(obj).to_string(),
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

impl Api {
    /// `POST pods/{name}/binding`: set the pod's node, once.
    pub async fn bind(&self, t: &Target, binding: Value, dry_run: bool) -> Result<Written, ApiError> {
        let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                t.name.as_deref().unwrap_or(""),
                vec![wasmorch_api::error::Cause::new("FieldValueRequired", "target.name", "Required value")],
            ));
        }
        let mut t2 = t.clone();
        t2.subresource = None;
        let name = t.name.clone().unwrap_or_default();
        self.modify_raw(&t2, dry_run, move |cur| {
            let current = cur["spec"]["nodeName"].as_str().unwrap_or("");
            if !current.is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &name,
                    &format!("pod {name} is already assigned to node \"{current}\""),
                ));
            }
            if object::is_deleting(cur) {
                return Err(ApiError::conflict("", "pods", &name, "the pod is being deleted"));
            }
            let mut new = cur.clone();
            new["spec"]["nodeName"] = json!(node);
            let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                "lastTransitionTime": object::now_rfc3339()});
            new["status"]["conditions"] = object::with_condition(&cur["status"]["conditions"], scheduled);
            Ok(Outcome::Put(new))
        })
        .await
    }

    /// `GET …/scale`.
    pub async fn get_scale(&self, t: &Target) -> Result<Value, ApiError> {
        let mut t2 = t.clone();
        t2.subresource = None;
        Ok(scale_of(&self.get(&t2).await?))
    }

    /// `PUT` or `PATCH …/scale`: `f` turns the current Scale into the wanted one.
    pub async fn set_scale(
        &self,
        t: &Target,
        dry_run: bool,
        f: impl FnOnce(&Value) -> Result<Value, ApiError> + Send + 'static,
    ) -> Result<Value, ApiError> {
        let mut t2 = t.clone();
        t2.subresource = None;
        let res = t.res;
        let w = self
            .modify_raw(&t2, dry_run, move |cur| {
                let want = f(&scale_of(cur))?;
                let rv = want["metadata"]["resourceVersion"].as_str().unwrap_or("");
                if !rv.is_empty() && rv != object::resource_version(cur).to_string() {
                    return Err(ApiError::conflict(
                        res.group,
                        res.plural,
                        object::name(cur),
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ));
                }
                let Some(n) = want["spec"]["replicas"].as_i64().filter(|n| *n >= 0) else {
                    return Err(ApiError::invalid(
                        "autoscaling",
                        "Scale",
                        object::name(cur),
                        vec![wasmorch_api::error::Cause::new(
                            "FieldValueInvalid",
                            "spec.replicas",
                            format!("Invalid value: {}: must be greater than or equal to 0", want["spec"]["replicas"]),
                        )],
                    ));
                };
                let mut new = cur.clone();
                new["spec"]["replicas"] = json!(n);
                new["metadata"]["resourceVersion"] = json!("");
                objects::prepare_update(res, cur, new, None, FieldValidation::Ignore).map(|(o, _)| o)
            })
            .await?;
        Ok(scale_of(&w.object))
    }
}
