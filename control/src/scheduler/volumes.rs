//! Volume binding for pods with `persistentVolumeClaim` volumes, and the built-in local-path
//! provisioner (k3s' model: `WaitForFirstConsumer`).
//!
//! A claim bound to a volume pins its pods to the volume's node (the volume's node affinity).
//! An unbound claim of the local-path class is provisioned when its first pod is placed: a
//! `PersistentVolume` whose directory lives in the chosen node's storage directory, with node
//! affinity to that node, and the claim bound to it — before the pod is bound, so the node
//! finds the volume when the pod arrives.

use crate::apiserver::api::Api;
use crate::controllers::replicaset::target;
use serde_json::{Value, json};
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object, resources};

/// The provisioner name of the built-in class.
pub const PROVISIONER: &str = "wasmorch.io/local-path";
/// The built-in (default) storage class.
pub const LOCAL_PATH: &str = "local-path";
pub use wasmorch_api::STORAGE_DIR_ANNOTATION;
const HOSTNAME: &str = "kubernetes.io/hostname";

/// The default StorageClass the server creates on first start.
pub fn default_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": LOCAL_PATH, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer",
    })
}

/// What placing a pod must respect for its claims.
#[derive(Debug, Default, PartialEq)]
pub struct Claims {
    /// The node every bound claim's volume is on, if any.
    pub node: Option<String>,
    /// Claims to provision on the chosen node.
    pub unbound: Vec<Value>,
}

fn claim_names(pod: &Value) -> Vec<&str> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .collect()
}

pub fn has_claims(pod: &Value) -> bool {
    !claim_names(pod).is_empty()
}

/// The node a volume's required node affinity names (`kubernetes.io/hostname In [node]`).
pub fn volume_node(pv: &Value) -> Option<String> {
    pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
        .as_array()?
        .iter()
        .flat_map(|t| t["matchExpressions"].as_array().cloned().unwrap_or_default())
        .find(|e| e["key"] == HOSTNAME && e["operator"] == "In")
        .and_then(|e| e["values"][0].as_str().map(String::from))
}

/// Look up the pod's claims. `Err` is why the pod cannot be placed yet.
pub async fn claims(api: &Api, pod: &Value) -> Result<Claims, String> {
    let ns = object::namespace(pod);
    let pvcs = resources::of(resources::ResourceKind::PersistentVolumeClaim);
    let pvs = resources::of(resources::ResourceKind::PersistentVolume);
    let mut out = Claims::default();
    for name in claim_names(pod) {
        let claim = match api.get(&target(pvcs, ns, name, None)).await {
            Ok(c) => c,
            Err(e) if e.code == 404 => return Err(format!("persistentvolumeclaim \"{name}\" not found")),
            Err(e) => return Err(format!("persistentvolumeclaim \"{name}\": {}", e.message)),
        };
        if object::is_deleting(&claim) {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        match claim["spec"]["volumeName"].as_str().filter(|v| !v.is_empty()) {
            Some(pv_name) => {
                let pv = api.get(&target(pvs, "", pv_name, None)).await.map_err(|e| {
                    format!("persistentvolumeclaim \"{name}\" is bound to volume \"{pv_name}\": {}", e.message)
                })?;
                if let Some(n) = volume_node(&pv) {
                    match &out.node {
                        Some(other) if *other != n => {
                            return Err("node(s) had volume node affinity conflict".to_string());
                        }
                        _ => out.node = Some(n),
                    }
                }
            }
            None => {
                let class = claim["spec"]["storageClassName"].as_str().unwrap_or(LOCAL_PATH);
                if class != LOCAL_PATH {
                    return Err(format!(
                        "pod has unbound immediate PersistentVolumeClaims: \"{name}\" asks for storage class \"{class}\", which no provisioner serves"
                    ));
                }
                if !out.unbound.iter().any(|c| object::uid(c) == object::uid(&claim)) {
                    out.unbound.push(claim);
                }
            }
        }
    }
    Ok(out)
}

/// The volume the local-path provisioner makes for `claim` on `node`.
pub fn volume_for(claim: &Value, node: &Value) -> Value {
    let ns = object::namespace(claim);
    let name = object::name(claim);
    let uid = object::uid(claim);
    let node_name = object::name(node);
    let dir = node["metadata"]["annotations"][STORAGE_DIR_ANNOTATION].as_str().unwrap_or("/var/lib/wasmorch/storage");
    let size = claim["spec"]["resources"]["requests"]["storage"].clone();
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("pvc-{uid}"), "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": claim["spec"]["accessModes"].clone(),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": LOCAL_PATH,
            "volumeMode": "Filesystem",
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid},
            "hostPath": {"path": format!("{dir}/pvc-{uid}_{ns}_{name}"), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": HOSTNAME, "operator": "In", "values": [node_name]}]}
            ]}},
        },
    })
}

/// Provision and bind `claim` on `node`. `Ok(false)`: the claim is bound elsewhere meanwhile
/// (the pod must be placed again).
pub async fn provision(api: &Api, claim: &Value, node: &Value) -> Result<bool, ApiError> {
    let pvs = resources::of(resources::ResourceKind::PersistentVolume);
    let pvcs = resources::of(resources::ResourceKind::PersistentVolumeClaim);
    let pv = volume_for(claim, node);
    let pv_name = object::name(&pv).to_string();
    let stored = match api.create(pvs, None, pv.clone(), FieldValidation::Ignore, false).await {
        Ok(w) => w.object.into_owned(),
        // Made by an earlier attempt that did not finish binding: adopt it if it is this
        // claim's and on this node.
        Err(e) if e.code == 409 => api.get(&target(pvs, "", &pv_name, None)).await?,
        Err(e) => return Err(e),
    };
    if stored["spec"]["claimRef"]["uid"] != claim["metadata"]["uid"]
        || volume_node(&stored).as_deref() != Some(object::name(node))
    {
        return Ok(false);
    }
    let pv_status = json!({"status": {"phase": "Bound"}});
    api.patch(
        &target(pvs, "", &pv_name, Some("status")),
        "application/merge-patch+json",
        pv_status,
        FieldValidation::Ignore,
        false,
    )
    .await?;
    let ns = object::namespace(claim);
    let name = object::name(claim);
    let bind = json!({
        "metadata": {"uid": object::uid(claim), "annotations": {
            "pv.kubernetes.io/bind-completed": "yes",
            "volume.kubernetes.io/selected-node": object::name(node),
            "volume.kubernetes.io/storage-provisioner": PROVISIONER,
        }},
        "spec": {"volumeName": pv_name},
    });
    api.patch(&target(pvcs, ns, name, None), "application/merge-patch+json", bind, FieldValidation::Ignore, false)
        .await?;
    let status = json!({"status": {
        "phase": "Bound",
        "accessModes": claim["spec"]["accessModes"].clone(),
        "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"].clone()},
    }});
    api.patch(
        &target(pvcs, ns, name, Some("status")),
        "application/merge-patch+json",
        status,
        FieldValidation::Ignore,
        false,
    )
    .await?;
    Ok(true)
}

/// Whether a provisioned volume's claim is gone (deleted, or replaced by a claim of the
/// same name), so that the `Delete` reclaim policy applies.
pub fn released(pv: &Value, claim: Option<&Value>) -> bool {
    pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == PROVISIONER
        && pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
        && claim.is_none_or(|c| c["metadata"]["uid"] != pv["spec"]["claimRef"]["uid"])
}

/// Whether a pod that has not finished still mounts the claim (the volume is kept until it
/// stops, as Kubernetes' pvc-protection does).
async fn in_use(api: &Api, ns: Option<&str>, claim: Option<&str>) -> bool {
    let (Some(ns), Some(claim)) = (ns, claim) else { return false };
    let pods = resources::of(resources::ResourceKind::Pod);
    let Ok(list) = api.list(pods, Some(ns), &Default::default()).await else { return true };
    list["items"].as_array().into_iter().flatten().any(|p| {
        !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) && claim_names(p).contains(&claim)
    })
}

/// The `Delete` reclaim policy for provisioned volumes: a volume whose claim is gone is
/// deleted (the node then removes its directory). Polls; claims are few and rarely deleted.
pub async fn reclaimer(api: Api, every: std::time::Duration) {
    let pvs = resources::of(resources::ResourceKind::PersistentVolume);
    let pvcs = resources::of(resources::ResourceKind::PersistentVolumeClaim);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = api.shutdown.cancelled() => return,
        }
        let Ok(list) = api.list(pvs, None, &Default::default()).await else { continue };
        for pv in list["items"].as_array().into_iter().flatten() {
            let (ns, name) = (pv["spec"]["claimRef"]["namespace"].as_str(), pv["spec"]["claimRef"]["name"].as_str());
            let claim = match (ns, name) {
                (Some(ns), Some(n)) => match api.get(&target(pvcs, ns, n, None)).await {
                    Ok(c) => Some(c),
                    Err(e) if e.code == 404 => None,
                    Err(_) => continue,
                },
                _ => None,
            };
            if released(pv, claim.as_ref()) && !object::is_deleting(pv) && !in_use(&api, ns, name).await {
                let t = target(pvs, "", object::name(pv), None);
                match api.delete(&t, Default::default(), false).await {
                    Ok(_) => tracing::info!("deleted volume {} (its claim is gone)", object::name(pv)),
                    Err(e) => tracing::warn!("deleting volume {}: {e}", object::name(pv)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioned_volume_is_pinned_to_its_node_and_claim() {
        let claim = json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        let node = json!({"metadata": {"name": "n2", "annotations": {STORAGE_DIR_ANNOTATION: "/srv/w/storage"}}});
        let pv = volume_for(&claim, &node);
        assert_eq!(pv["metadata"]["name"], "pvc-u1");
        assert_eq!(pv["spec"]["hostPath"]["path"], "/srv/w/storage/pvc-u1_ns_data");
        assert_eq!(pv["spec"]["claimRef"]["uid"], "u1");
        assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi");
        assert_eq!(volume_node(&pv).as_deref(), Some("n2"));
        let pod = json!({"spec": {"volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": "data"}}, {"name": "b", "emptyDir": {}}]}});
        assert_eq!(claim_names(&pod), ["data"]);
        assert!(!has_claims(&json!({"spec": {}})));
        let mut provisioned = pv.clone();
        assert!(!released(&provisioned, Some(&claim)), "its claim is there");
        assert!(released(&provisioned, None), "its claim is gone");
        let other = json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u2"}});
        assert!(released(&provisioned, Some(&other)), "a new claim of the same name is not its claim");
        provisioned["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
        assert!(!released(&provisioned, None), "Retain keeps it");
    }
}
