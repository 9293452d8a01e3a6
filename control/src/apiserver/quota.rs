//! Admission: a pod gets its ServiceAccount and token volume; by ResourceQuota and LimitRange, a create in a namespace with LimitRanges gets
//! their defaults and bounds (pods); one with ResourceQuotas is refused with 403 when it
//! would exceed one. The decisions are `wasmorch_api::quota`'s; this reads what they need
//! (accounts, ranges and quotas through `lookups`' caches).

use super::api::{Api, ListOptions};
use serde_json::Value;
use wasmorch_api::resources::{Resource, ResourceKind};
use wasmorch_api::{ApiError, object, quota};

impl Api {
    async fn items(&self, res: &Resource, ns: &str) -> Result<Vec<Value>, ApiError> {
        let list = self.list(res, Some(ns), &ListOptions::default()).await?;
        Ok(list.get("items").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    /// ServiceAccount admission (`wasmorch_api::serviceaccount::admit_pod`): the pod's account
    /// and, unless automounting is off, its projected token volume.
    async fn admit_service_account(&self, ns: &str, pod: &mut Value) -> Result<(), ApiError> {
        let spec = pod.get("spec");
        let name = ["serviceAccountName", "serviceAccount"]
            .iter()
            .find_map(|k| spec.and_then(|s| s.get(*k)).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .unwrap_or("default")
            .to_string();
        let account = self.lookup(ResourceKind::ServiceAccount, ns, &name).await?;
        let pod_name = object::name(pod).to_string();
        wasmorch_api::serviceaccount::admit_pod(pod, account.as_ref())
            .map_err(|e| ApiError::forbidden_object("", "pods", &pod_name, &e.message))
    }

    /// Check `obj` (about to be created in `ns`) against the namespace's LimitRanges and
    /// ResourceQuotas. When a quota applies, the returned guard must be held until the object
    /// is written, so that two creates cannot both take the last of a quota.
    pub(super) async fn admit(
        &self,
        res: &'static Resource,
        ns: &str,
        obj: &mut Value,
    ) -> Result<Option<crate::store::LockGuard>, ApiError> {
        if ns.is_empty() || !res.namespaced {
            return Ok(None);
        }
        let name = object::name(obj).to_string();
        let refuse = |why: String| ApiError::forbidden_object(res.group, res.plural, &name, &why);
        if res.kind_id == ResourceKind::Pod {
            self.admit_service_account(ns, obj).await?;
            let ranges = self.lookup_all(ResourceKind::LimitRange, ns).await?;
            quota::apply_limit_ranges(obj, &ranges).map_err(&refuse)?;
        }
        let quotas = self.lookup_all(ResourceKind::ResourceQuota, ns).await?;
        let add = quota::usage(res, obj);
        let applies =
            |q: &&Value| quota::hard(q).keys().any(|k| quota::kind_of(k).is_some_and(|r| r.kind_id == res.kind_id));
        let relevant: Vec<&Value> = quotas.iter().filter(applies).collect();
        if relevant.is_empty() {
            return Ok(None);
        }
        // Held until the checked object is written, across API servers.
        let guard = self.store.lock("quota").await?;
        let existing = self.items(res, ns).await?;
        let used = quota::sum(existing.iter().map(|o| quota::usage(res, o)).collect::<Vec<_>>().iter());
        for q in relevant {
            quota::admit(q, &used, &add, obj).map_err(&refuse)?;
        }
        Ok(Some(guard))
    }
}
