//! Server-side printing: `meta.k8s.io/v1` Tables with the columns upstream kubectl shows.

use crate::object;
use crate::resources::{Resource, ResourceKind};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

mod cells;

use cells::cells;
pub use cells::pod_status;

/// Column: (name, type, priority). Priority 1 columns appear with `-o wide`.
type Col = (&'static str, &'static str, u8);

const WIDE_WORKLOAD: [Col; 3] = [("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)];

pub fn columns(kind: ResourceKind) -> Vec<Col> {
    use ResourceKind::*;
    let mut c: Vec<Col> = match kind {
        Namespace => vec![("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)],
        Node => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        Pod => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        Service => vec![
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        Endpoints => vec![("Name", "string", 0), ("Endpoints", "string", 0), ("Age", "string", 0)],
        ConfigMap => vec![("Name", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)],
        ResourceQuota => {
            vec![("Name", "string", 0), ("Age", "string", 0), ("Request", "string", 0), ("Limit", "string", 0)]
        }
        LimitRange => vec![("Name", "string", 0), ("Created At", "date", 0)],
        Secret => vec![("Name", "string", 0), ("Type", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)],
        Event => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("Message", "string", 0),
            ("First Seen", "string", 1),
            ("Count", "string", 1),
            ("Name", "string", 1),
        ],
        Deployment => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
        ],
        ReplicaSet | ReplicationController => vec![
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
        ],
        DaemonSet => vec![
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            ("Age", "string", 0),
        ],
        Job => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
        ],
        CronJob => vec![
            ("Name", "string", 0),
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            ("Age", "string", 0),
        ],
        Lease => vec![("Name", "string", 0), ("Holder", "string", 0), ("Age", "string", 0)],
        ServiceAccount => vec![("Name", "string", 0), ("Secrets", "integer", 0), ("Age", "string", 0)],
        PersistentVolumeClaim => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("Age", "string", 0),
        ],
        PersistentVolume => vec![
            ("Name", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("Age", "string", 0),
        ],
        PodDisruptionBudget => vec![
            ("Name", "string", 0),
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            ("Age", "string", 0),
        ],
        NetworkPolicy => vec![("Name", "string", 0), ("Pod-Selector", "string", 0), ("Age", "string", 0)],
        Ingress => vec![
            ("Name", "string", 0),
            ("Class", "string", 0),
            ("Hosts", "string", 0),
            ("Address", "string", 0),
            ("Ports", "string", 0),
            ("Age", "string", 0),
        ],
        IngressClass => {
            vec![("Name", "string", 0), ("Controller", "string", 0), ("Parameters", "string", 0), ("Age", "string", 0)]
        }
        Role | ClusterRole | CustomResourceDefinition => vec![("Name", "string", 0), ("Created At", "date", 0)],
        // Custom resources' columns come from their definition (see `table`).
        Custom => vec![("Name", "string", 0), ("Age", "string", 0)],
        RoleBinding | ClusterRoleBinding => vec![
            ("Name", "string", 0),
            ("Role", "string", 0),
            ("Age", "string", 0),
            ("Users", "string", 1),
            ("Groups", "string", 1),
            ("ServiceAccounts", "string", 1),
        ],
        HorizontalPodAutoscaler => vec![
            ("Name", "string", 0),
            ("Reference", "string", 0),
            ("Targets", "string", 0),
            ("MinPods", "string", 0),
            ("MaxPods", "integer", 0),
            ("Replicas", "integer", 0),
            ("Age", "string", 0),
        ],
        EndpointSlice => vec![
            ("Name", "string", 0),
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        StorageClass => vec![
            ("Name", "string", 0),
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("Age", "string", 0),
        ],
    };
    if matches!(kind, Deployment | ReplicaSet | ReplicationController | DaemonSet | Job | CronJob) {
        c.extend(WIDE_WORKLOAD);
    }
    c
}

/// How much of each object a row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

pub fn column_definitions(kind: ResourceKind) -> Value {
    Value::Array(
        columns(kind)
            .into_iter()
            .map(|(name, ty, prio)| {
                let format = if name == "Name" { "name" } else { "" };
                json!({"name": name, "type": ty, "format": format, "description": name, "priority": prio})
            })
            .collect(),
    )
}

/// A Table of `objects`. `with_columns` false leaves column definitions out (later watch events).
pub fn table(res: &Resource, objects: &[Value], rv: &str, include: IncludeObject, now: DateTime<Utc>) -> Value {
    // A custom resource prints the columns its definition names.
    let custom = crate::custom::version_of(res);
    let rows: Vec<Value> = objects.iter().map(|o| row(res, custom.as_ref(), o, include, now)).collect();
    let columns = match &custom {
        Some(v) => json!(crate::custom::column_definitions(v)),
        None => column_definitions(res.kind_id),
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn row(
    res: &Resource,
    custom: Option<&crate::custom::Version>,
    obj: &Value,
    include: IncludeObject,
    now: DateTime<Utc>,
) -> Value {
    let cells = match custom {
        Some(v) => crate::custom::cells(v, obj, now),
        None => cells(res.kind_id, obj, now),
    };
    let mut r = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => r["object"] = obj.clone(),
        IncludeObject::Metadata => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object::meta(obj),
            })
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::RESOURCES;

    #[test]
    fn every_kind_has_cells_for_every_column() {
        let now = Utc::now();
        for r in RESOURCES {
            let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2020-01-01T00:00:00Z"}});
            let t = table(r, &[obj], "1", IncludeObject::Metadata, now);
            assert_eq!(t["rows"][0]["cells"].as_array().unwrap().len(), columns(r.kind_id).len(), "{}", r.kind);
        }
    }

    #[test]
    fn pod_columns_like_kubectl() {
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        let c = cells(ResourceKind::Pod, &pod, Utc::now());
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "2");
        assert_eq!(c[5], "10.0.0.1");
        assert_eq!(c[6], "n1");
        let names: Vec<&str> = columns(ResourceKind::Pod).iter().filter(|c| c.2 == 0).map(|c| c.0).collect();
        assert_eq!(names, ["Name", "Ready", "Status", "Restarts", "Age"]);
    }

    #[test]
    fn service_ports_and_types() {
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.10",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}], "selector": {"app": "web"}}});
        let c = cells(ResourceKind::Service, &svc, Utc::now());
        assert_eq!(c[1], "NodePort");
        assert_eq!(c[2], "10.43.0.10");
        assert_eq!(c[4], "80:30080/TCP");
        assert_eq!(c[6], "app=web");
    }
}
