//! Defaulting applied on create and update, as the Kubernetes API server does, so stored
//! objects say what will happen (`restartPolicy: Always`, `type: ClusterIP`, …).

use crate::resources::ResourceKind;
use serde_json::{Value, json};

fn set_default(v: &mut Value, key: &str, default: Value) {
    if let Some(m) = v.as_object_mut()
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), default);
    }
}

/// Before anything else reads the object (the schema check included): YAML 1.1 spellings
/// that a YAML 1.2 parser leaves as strings, in fields where they can mean one thing only
/// (file modes: `defaultMode: 0400`). Safe on any input: it only rewrites values it finds in
/// the expected shape.
pub fn normalize(kind: ResourceKind, obj: &mut Value) {
    use ResourceKind::*;
    let pod_spec = match kind {
        Pod => "/spec",
        Deployment | ReplicaSet | ReplicationController | DaemonSet | Job => "/spec/template/spec",
        CronJob => "/spec/jobTemplate/spec/template/spec",
        _ => return,
    };
    let vols = obj.pointer_mut(&format!("{pod_spec}/volumes")).and_then(Value::as_array_mut);
    for v in vols.into_iter().flatten() {
        for kind in ["configMap", "secret", "downwardAPI", "projected"] {
            if let Some(src) = v.get_mut(kind) {
                volume_modes(src);
            }
        }
    }
}

pub fn apply(kind: ResourceKind, obj: &mut Value) {
    use ResourceKind::*;
    match kind {
        Pod => pod_spec(&mut obj["spec"], "Always"),
        Deployment => {
            let spec = &mut obj["spec"];
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(spec, "strategy", json!({}));
            set_default(&mut spec["strategy"], "type", json!("RollingUpdate"));
            if spec["strategy"]["type"] == "RollingUpdate" {
                set_default(&mut spec["strategy"], "rollingUpdate", json!({}));
                set_default(&mut spec["strategy"]["rollingUpdate"], "maxSurge", json!("25%"));
                set_default(&mut spec["strategy"]["rollingUpdate"], "maxUnavailable", json!("25%"));
            }
            template(&mut obj["spec"], "Always");
        }
        ReplicaSet => {
            set_default(&mut obj["spec"], "replicas", json!(1));
            template(&mut obj["spec"], "Always");
        }
        // As Kubernetes: the selector and the object's labels default to the template's labels.
        ReplicationController => {
            set_default(&mut obj["spec"], "replicas", json!(1));
            let labels = obj["spec"]["template"]["metadata"].get("labels").cloned().filter(|l| l.is_object());
            if let Some(labels) = labels {
                if obj["spec"].get("selector").is_none_or(|s| s.as_object().is_none_or(|m| m.is_empty())) {
                    obj["spec"]["selector"] = labels.clone();
                }
                if crate::object::meta(obj).get("labels").is_none_or(|l| l.as_object().is_none_or(|m| m.is_empty())) {
                    crate::object::meta_mut(obj).insert("labels".into(), labels);
                }
            }
            template(&mut obj["spec"], "Always");
        }
        DaemonSet => {
            let spec = &mut obj["spec"];
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            template(&mut obj["spec"], "Always");
        }
        Job => job_spec(&mut obj["spec"]),
        CronJob => {
            let spec = &mut obj["spec"];
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            if spec.get("jobTemplate").is_some() {
                job_spec(&mut spec["jobTemplate"]["spec"]);
            }
        }
        Service => {
            let spec = &mut obj["spec"];
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    let port = p.get("port").cloned().unwrap_or(Value::Null);
                    set_default(p, "targetPort", port);
                }
            }
        }
        Secret => {
            set_default(obj, "type", json!("Opaque"));
            fold_string_data(obj);
        }
        Namespace => {
            // As Kubernetes does, so that a namespaceSelector can name one namespace.
            let name = obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
                && name.is_string()
            {
                let labels = meta.entry("labels").or_insert_with(|| json!({}));
                if let Some(l) = labels.as_object_mut() {
                    l.insert("kubernetes.io/metadata.name".into(), name);
                }
            }
        }
        Node | Endpoints | ConfigMap | ServiceAccount | Event | Lease | PersistentVolume | StorageClass
        | EndpointSlice | PodDisruptionBudget | ResourceQuota | LimitRange => {}
        NetworkPolicy => crate::netpol::set_defaults(obj),
        Ingress | IngressClass => {}
        HorizontalPodAutoscaler => crate::hpa::set_defaults(obj),
        Role | ClusterRole | RoleBinding | ClusterRoleBinding => {}
        CustomResourceDefinition | Custom => {}
        PersistentVolumeClaim => {
            // The default class (admission does this in Kubernetes).
            if obj["spec"].get("storageClassName").is_none() {
                obj["spec"]["storageClassName"] = json!("local-path");
            }
            if obj["spec"].get("volumeMode").is_none() {
                obj["spec"]["volumeMode"] = json!("Filesystem");
            }
        }
    }
}

/// `stringData` is a write-only convenience: its entries are stored base64-encoded in `data`.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let Some(entries) = sd.as_object() else {
        return;
    };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in entries {
        let raw = v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
        obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(raw));
    }
}

fn job_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completions", json!(1));
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    // Kubernetes does not default a Job's restartPolicy: it must be OnFailure or Never.
    template(spec, "");
}

fn template(spec: &mut Value, restart: &str) {
    if spec.get("template").is_some_and(Value::is_object) {
        pod_spec(&mut spec["template"]["spec"], restart);
    }
}

fn pod_spec(spec: &mut Value, restart: &str) {
    if !spec.is_object() {
        return;
    }
    if !restart.is_empty() {
        set_default(spec, "restartPolicy", json!(restart));
    }
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols {
            // Kubernetes defaults projected file modes to 0644.
            for kind in ["configMap", "secret", "downwardAPI"] {
                if let Some(src) = v.get_mut(kind).filter(|s| s.is_object()) {
                    set_default(src, "defaultMode", json!(0o644));
                }
            }
        }
    }
    for list in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
                let latest = !image.contains('@')
                    && (image.ends_with(":latest") || !image.rsplit('/').next().unwrap_or("").contains(':'));
                let remote = !image.starts_with("file://");
                let policy = if latest && remote { "Always" } else { "IfNotPresent" };
                set_default(c, "imagePullPolicy", json!(policy));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// File modes written as YAML 1.1 octal (`defaultMode: 0400`, as Kubernetes manifests do)
/// arrive from a YAML 1.2 parser as strings; in these integer fields such a string can only
/// mean the octal number.
fn volume_modes(src: &mut Value) {
    fn octal(v: &mut Value) {
        if let Some(s) = v.as_str()
            && let Some(digits) = s.strip_prefix("0o").or_else(|| s.strip_prefix('0'))
            && let Ok(n) = i64::from_str_radix(if digits.is_empty() { "0" } else { digits }, 8)
        {
            *v = json!(n);
        }
    }
    if let Some(m) = src.get_mut("defaultMode") {
        octal(m);
    }
    for item in src.get_mut("items").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(m) = item.get_mut("mode") {
            octal(m);
        }
    }
    for s in src.get_mut("sources").and_then(Value::as_array_mut).into_iter().flatten() {
        for kind in ["configMap", "secret", "downwardAPI"] {
            if let Some(inner) = s.get_mut(kind) {
                volume_modes(inner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_octal_file_modes_become_numbers() {
        let mut pod = json!({"spec": {"volumes": [
            {"name": "a", "secret": {"secretName": "s", "defaultMode": "0400", "items": [{"key": "k", "path": "p", "mode": "0o600"}]}},
            {"name": "b", "configMap": {"name": "c", "defaultMode": 420}},
            {"name": "c", "downwardAPI": {"defaultMode": "zz"}},
            {"name": "d", "configMap": {"name": "c"}},
        ]}});
        normalize(ResourceKind::Pod, &mut pod);
        let mut spec = pod["spec"].take();
        pod_spec(&mut spec, "");
        assert_eq!(spec["volumes"][0]["secret"]["defaultMode"], 0o400);
        assert_eq!(spec["volumes"][0]["secret"]["items"][0]["mode"], 0o600);
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
        assert_eq!(spec["volumes"][2]["downwardAPI"]["defaultMode"], "zz", "not a number: left to validation");
        assert_eq!(spec["volumes"][3]["configMap"]["defaultMode"], 0o644);
    }

    #[test]
    fn defaults_fill_only_what_is_missing() {
        let mut d = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "a", "image": "file:///x.wasm"}]}}}});
        apply(ResourceKind::Deployment, &mut d);
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
        let mut sec = json!({"stringData": {"a": "hi"}, "data": {"b": "eA=="}});
        apply(ResourceKind::Secret, &mut sec);
        assert_eq!(sec, json!({"type": "Opaque", "data": {"a": "aGk=", "b": "eA=="}}));
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply(ResourceKind::Service, &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["type"], "ClusterIP");
    }
}
