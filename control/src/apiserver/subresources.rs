//! Subresources with their own shapes: `pods/binding` (the scheduler's write) and the
//! `scale` of Deployments and ReplicaSets (`autoscaling/v1` Scale).

use super::api::{Api, Written};
use super::objects;
use super::request::Target;
use crate::store::Outcome;
use serde_json::{Value, json};
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, Resource, object};

/// Where a custom resource keeps its replicas (`None` for the built-in workloads).
fn custom_scale(res: &Resource) -> Option<wasmorch_api::custom::Scale> {
    wasmorch_api::custom::version_of(res).and_then(|v| v.scale)
}

/// The Scale view of a Deployment, ReplicaSet or custom resource (at the paths its
/// definition names).
pub fn scale_of(res: &Resource, obj: &Value) -> Value {
    let (spec, status, selector) = match custom_scale(res) {
        Some(sc) => {
            let at = |p: &str| wasmorch_api::custom::at_path(obj, p).cloned().unwrap_or(Value::Null);
            let selector = sc.label_selector.as_deref().map(at).and_then(|v| v.as_str().map(String::from));
            (
                at(&sc.spec_replicas).as_i64().unwrap_or(0),
                at(&sc.status_replicas).as_i64().unwrap_or(0),
                selector.unwrap_or_default(),
            )
        }
        None => (
            obj["spec"]["replicas"].as_i64().unwrap_or(1),
            obj["status"]["replicas"].as_i64().unwrap_or(0),
            wasmorch_api::selector::LabelSelector::of_workload(obj).map(|s| s.to_string()).unwrap_or_default(),
        ),
    };
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
        "spec": {"replicas": spec},
        "status": {"replicas": status, "selector": selector},
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
            new["spec"]["nodeName"] = json!(&node);
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
        Ok(scale_of(t.res, &self.get(&t2).await?))
    }

    /// `PUT` or `PATCH …/scale`: `f` turns the current Scale into the wanted one.
    pub async fn set_scale(
        &self,
        t: &Target,
        dry_run: bool,
        mut f: impl FnMut(&Value) -> Result<Value, ApiError> + Send + 'static,
    ) -> Result<Value, ApiError> {
        let mut t2 = t.clone();
        t2.subresource = None;
        let res = t.res;
        let w = self
            .modify_raw(&t2, dry_run, move |cur| {
                let want = f(&scale_of(res, cur))?;
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
                match custom_scale(res) {
                    Some(sc) => {
                        wasmorch_api::custom::set_path(&mut new, &sc.spec_replicas, json!(n));
                    }
                    None => new["spec"]["replicas"] = json!(n),
                }
                new["metadata"]["resourceVersion"] = json!("");
                objects::prepare_update(res, cur, new, None, FieldValidation::Ignore).map(|(o, _)| o)
            })
            .await?;
        Ok(scale_of(res, &w.object))
    }
}
