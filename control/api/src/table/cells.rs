//! Each kind's row: the cells under [`super::columns`], as upstream kubectl prints them.

use crate::object::{self, age, str_at};
use crate::resources::ResourceKind;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn int(obj: &Value, path: &str) -> i64 {
    object::at(obj, path).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(v: Option<&str>) -> String {
    v.filter(|x| !x.is_empty()).unwrap_or("<none>").to_string()
}

/// Containers, images and selector: the wide columns of every workload kind.
fn workload_wide(template_spec: &Value, selector: &Value) -> [Value; 3] {
    let cts = template_spec.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let names: Vec<&str> = cts.iter().filter_map(|c| c.get("name").and_then(Value::as_str)).collect();
    let images: Vec<&str> = cts.iter().filter_map(|c| c.get("image").and_then(Value::as_str)).collect();
    let sel = crate::selector::LabelSelector::from_object(selector).map(|s| s.to_string()).unwrap_or_default();
    [s(names.join(",")), s(images.join(",")), s(or_none(Some(&sel)))]
}

pub(super) fn cells(kind: ResourceKind, o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    use ResourceKind::*;
    let name = s(object::name(o));
    let created = age(str_at(o, "metadata.creationTimestamp"), now);
    match kind {
        Namespace => vec![name, s(str_at(o, "status.phase").unwrap_or("Active")), s(created)],
        Node => node_cells(o, name, created),
        Pod => pod_cells(o, name, created, now),
        Service => service_cells(o, name, created),
        Endpoints => vec![name, s(endpoints_summary(o)), s(created)],
        ResourceQuota => {
            // kubectl's form: `pods: 1/2, requests.memory: 32Mi/64Mi`, limits.* apart.
            let hard = o.pointer("/status/hard").or(o.pointer("/spec/hard")).and_then(Value::as_object);
            let (mut req, mut lim) = (Vec::new(), Vec::new());
            for (k, h) in hard.into_iter().flatten() {
                let used = o.pointer("/status/used").and_then(|u| u.get(k)).and_then(Value::as_str).unwrap_or("0");
                let h = h.as_str().map(String::from).unwrap_or_else(|| h.to_string());
                let cell = format!("{k}: {used}/{h}");
                if k.starts_with("limits.") { lim.push(cell) } else { req.push(cell) }
            }
            vec![name, s(created), s(req.join(", ")), s(lim.join(", "))]
        }
        LimitRange => vec![name, s(str_at(o, "metadata.creationTimestamp").unwrap_or("").to_string())],
        ConfigMap => {
            let n = ["data", "binaryData"]
                .iter()
                .map(|k| o.get(*k).and_then(Value::as_object).map_or(0, |m| m.len()))
                .sum::<usize>();
            vec![name, json!(n), s(created)]
        }
        Secret => {
            let n = o.get("data").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name, s(str_at(o, "type").unwrap_or("Opaque")), json!(n), s(created)]
        }
        Event => event_cells(o, now),
        Deployment => {
            let mut c = vec![
                name,
                s(format!(
                    "{}/{}",
                    int(o, "status.readyReplicas"),
                    o["spec"].get("replicas").and_then(Value::as_i64).unwrap_or(1)
                )),
                json!(int(o, "status.updatedReplicas")),
                json!(int(o, "status.availableReplicas")),
                s(created),
            ];
            c.extend(workload_wide(&o["spec"]["template"]["spec"], &o["spec"]["selector"]));
            c
        }
        ReplicaSet | ReplicationController => {
            let selector = if kind == ReplicationController {
                json!({"matchLabels": o["spec"]["selector"]})
            } else {
                o["spec"]["selector"].clone()
            };
            let mut c = vec![
                name,
                json!(o["spec"].get("replicas").and_then(Value::as_i64).unwrap_or(1)),
                json!(int(o, "status.replicas")),
                json!(int(o, "status.readyReplicas")),
                s(created),
            ];
            c.extend(workload_wide(&o["spec"]["template"]["spec"], &selector));
            c
        }
        DaemonSet => {
            let sel: Vec<String> = object::string_map(o["spec"]["template"]["spec"].get("nodeSelector"))
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let mut c = vec![
                name,
                json!(int(o, "status.desiredNumberScheduled")),
                json!(int(o, "status.currentNumberScheduled")),
                json!(int(o, "status.numberReady")),
                json!(int(o, "status.updatedNumberScheduled")),
                json!(int(o, "status.numberAvailable")),
                s(or_none(Some(&sel.join(",")))),
                s(created),
            ];
            c.extend(workload_wide(&o["spec"]["template"]["spec"], &o["spec"]["selector"]));
            c
        }
        Job => job_cells(o, name, created, now),
        CronJob => {
            let last = age(str_at(o, "status.lastScheduleTime"), now);
            let last = if last == "<unknown>" { "<none>".to_string() } else { last };
            let mut c = vec![
                name,
                s(str_at(o, "spec.schedule").unwrap_or("")),
                s(or_none(str_at(o, "spec.timeZone"))),
                json!(o["spec"].get("suspend").and_then(Value::as_bool).unwrap_or(false)),
                json!(o["status"].get("active").and_then(Value::as_array).map_or(0, Vec::len)),
                s(last),
                s(created),
            ];
            c.extend(workload_wide(
                &o["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                &o["spec"]["jobTemplate"]["spec"]["selector"],
            ));
            c
        }
        Lease => vec![name, s(or_none(str_at(o, "spec.holderIdentity"))), s(created)],
        ServiceAccount => vec![name, json!(o["secrets"].as_array().map_or(0, Vec::len)), s(created)],
        PersistentVolumeClaim => vec![
            name,
            s(str_at(o, "status.phase").unwrap_or("Pending")),
            s(str_at(o, "spec.volumeName").unwrap_or("")),
            s(str_at(o, "status.capacity.storage").unwrap_or("")),
            s(access_modes(&o["status"]["accessModes"])),
            s(str_at(o, "spec.storageClassName").unwrap_or("")),
            s(created),
        ],
        PersistentVolume => {
            let claim = match (str_at(o, "spec.claimRef.namespace"), str_at(o, "spec.claimRef.name")) {
                (Some(ns), Some(n)) => format!("{ns}/{n}"),
                _ => String::new(),
            };
            vec![
                name,
                s(str_at(o, "spec.capacity.storage").unwrap_or("")),
                s(access_modes(&o["spec"]["accessModes"])),
                s(str_at(o, "spec.persistentVolumeReclaimPolicy").unwrap_or("Retain")),
                s(str_at(o, "status.phase").unwrap_or("Available")),
                s(claim),
                s(str_at(o, "spec.storageClassName").unwrap_or("")),
                s(created),
            ]
        }
        Role | ClusterRole | CustomResourceDefinition => {
            vec![name, s(str_at(o, "metadata.creationTimestamp").unwrap_or(""))]
        }
        Custom => vec![name, s(created)],
        RoleBinding | ClusterRoleBinding => {
            let subjects = |kind: &str| {
                let v: Vec<String> = o["subjects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|x| x["kind"] == kind)
                    .map(|x| match (kind, x["namespace"].as_str()) {
                        ("ServiceAccount", Some(ns)) => format!("{ns}/{}", x["name"].as_str().unwrap_or("")),
                        _ => x["name"].as_str().unwrap_or("").to_string(),
                    })
                    .collect();
                v.join(", ")
            };
            vec![
                name,
                s(format!(
                    "{}/{}",
                    o["roleRef"]["kind"].as_str().unwrap_or(""),
                    o["roleRef"]["name"].as_str().unwrap_or("")
                )),
                s(created),
                s(subjects("User")),
                s(subjects("Group")),
                s(subjects("ServiceAccount")),
            ]
        }
        HorizontalPodAutoscaler => {
            let r = &o["spec"]["scaleTargetRef"];
            vec![
                name,
                s(format!("{}/{}", r["kind"].as_str().unwrap_or(""), r["name"].as_str().unwrap_or(""))),
                s(crate::hpa::targets_column(o)),
                s(o["spec"]["minReplicas"].as_i64().map_or("<unset>".into(), |n| n.to_string())),
                json!(o["spec"]["maxReplicas"].as_i64().unwrap_or(0)),
                json!(o["status"]["currentReplicas"].as_i64().unwrap_or(0)),
                s(created),
            ]
        }
        PodDisruptionBudget => {
            let iop = |v: &Value| match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => "N/A".to_string(),
            };
            vec![
                name,
                s(iop(&o["spec"]["minAvailable"])),
                s(iop(&o["spec"]["maxUnavailable"])),
                json!(o["status"]["disruptionsAllowed"].as_i64().unwrap_or(0)),
                s(created),
            ]
        }
        Ingress => {
            let class = crate::ingress::class_of(o).unwrap_or("<none>").to_string();
            let addresses: Vec<&str> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|i| i.get("ip").or(i.get("hostname")).and_then(Value::as_str))
                .collect();
            let tls = o.pointer("/spec/tls").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
            vec![
                name,
                s(class),
                s(crate::ingress::hosts(o).join(",")),
                s(addresses.join(",")),
                s(if tls { "80, 443" } else { "80" }),
                s(created),
            ]
        }
        IngressClass => {
            let params = o.pointer("/spec/parameters").map_or("<none>".to_string(), |p| {
                let kind = p.get("kind").and_then(Value::as_str).unwrap_or("");
                let group = p.get("apiGroup").and_then(Value::as_str).map(|g| format!(".{g}")).unwrap_or_default();
                format!("{kind}{group}/{}", p.get("name").and_then(Value::as_str).unwrap_or(""))
            });
            vec![
                name,
                s(o.pointer("/spec/controller").and_then(Value::as_str).unwrap_or("").to_string()),
                s(params),
                s(created),
            ]
        }
        NetworkPolicy => {
            let sel = o.pointer("/spec/podSelector").map(crate::selector::LabelSelector::from_object);
            let sel = match sel {
                Some(Ok(s)) if !s.is_empty() => s.to_string(),
                _ => "<none>".to_string(),
            };
            vec![name, s(sel), s(created)]
        }
        EndpointSlice => {
            let ports: Vec<String> = o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_u64().map(|p| p.to_string()))
                .collect();
            let eps: Vec<String> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["addresses"][0].as_str().map(String::from))
                .collect();
            let shown = if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                eps.join(",")
            };
            vec![
                name,
                s(str_at(o, "addressType").unwrap_or("")),
                s(if ports.is_empty() { "<unset>".to_string() } else { ports.join(",") }),
                s(if shown.is_empty() { "<unset>".to_string() } else { shown }),
                s(created),
            ]
        }
        StorageClass => {
            let default = o["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true";
            let n = name.as_str().unwrap_or("").to_string();
            vec![
                s(if default { format!("{n} (default)") } else { n }),
                s(str_at(o, "provisioner").unwrap_or("")),
                s(str_at(o, "reclaimPolicy").unwrap_or("Delete")),
                s(str_at(o, "volumeBindingMode").unwrap_or("Immediate")),
                s(created),
            ]
        }
    }
}

/// `RWO,ROX`, as kubectl abbreviates access modes.
fn access_modes(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn node_cells(o: &Value, name: Value, created: String) -> Vec<Value> {
    let conds = o["status"].get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let ready = conds.iter().find(|c| c["type"] == "Ready");
    let mut status = match ready.and_then(|c| c["status"].as_str()) {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o["spec"].get("unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> =
        object::labels(o).keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(String::from)).collect();
    roles.sort();
    let addr = |t: &str| {
        o["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["type"] == t))
            .and_then(|x| x["address"].as_str())
            .map(String::from)
            .unwrap_or_else(|| "<none>".into())
    };
    let info = &o["status"]["nodeInfo"];
    vec![
        name,
        s(status),
        s(or_none(Some(&roles.join(",")))),
        s(created),
        s(info["kubeletVersion"].as_str().unwrap_or("")),
        s(addr("InternalIP")),
        s(addr("ExternalIP")),
        s(or_none(info["osImage"].as_str())),
        s(or_none(info["kernelVersion"].as_str())),
        s(or_none(info["containerRuntimeVersion"].as_str())),
    ]
}

/// The STATUS column of a pod, computed as kubectl's printer does.
pub fn pod_status(o: &Value) -> String {
    let st = &o["status"];
    let mut reason = st["reason"].as_str().or(st["phase"].as_str()).unwrap_or("Pending").to_string();
    let statuses = st.get("containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut running = false;
    for c in statuses.iter().rev() {
        if let Some(r) = c["state"]["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
            reason = r.to_string();
        } else if let Some(t) = c["state"].get("terminated") {
            reason = match (t["reason"].as_str(), t["signal"].as_i64(), t["exitCode"].as_i64()) {
                (Some(r), _, _) if !r.is_empty() => r.to_string(),
                (_, Some(sig), _) if sig != 0 => format!("Signal:{sig}"),
                (_, _, code) => format!("ExitCode:{}", code.unwrap_or(0)),
            };
        } else if c["ready"].as_bool() == Some(true) && c["state"].get("running").is_some() {
            running = true;
        }
    }
    if reason == "Completed" && running {
        reason = "Running".into();
    }
    if object::is_deleting(o) {
        reason = if st["reason"] == "NodeLost" { "Unknown".into() } else { "Terminating".into() };
    }
    reason
}

fn pod_cells(o: &Value, name: Value, created: String, now: DateTime<Utc>) -> Vec<Value> {
    let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
    let statuses = o["status"].get("containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    let ready = statuses.iter().filter(|c| c["ready"].as_bool() == Some(true)).count();
    let restarts: i64 = statuses.iter().map(|c| c["restartCount"].as_i64().unwrap_or(0)).sum();
    let last_restart = statuses
        .iter()
        .filter_map(|c| c["lastState"]["terminated"]["finishedAt"].as_str())
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .max();
    let restarts = match last_restart {
        Some(t) if restarts > 0 => {
            format!("{restarts} ({} ago)", object::human_duration((now - t.with_timezone(&Utc)).num_seconds()))
        }
        _ => restarts.to_string(),
    };
    let gates = o["spec"].get("readinessGates").and_then(Value::as_array).map_or(0, Vec::len);
    vec![
        name,
        s(format!("{ready}/{total}")),
        s(pod_status(o)),
        s(restarts),
        s(created),
        s(or_none(str_at(o, "status.podIP"))),
        s(or_none(str_at(o, "spec.nodeName"))),
        s(or_none(str_at(o, "status.nominatedNodeName"))),
        s(if gates == 0 { "<none>".to_string() } else { format!("0/{gates}") }),
    ]
}

fn service_cells(o: &Value, name: Value, created: String) -> Vec<Value> {
    let spec = &o["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    let external = match ty {
        "ExternalName" => spec["externalName"].as_str().unwrap_or("<none>").to_string(),
        "LoadBalancer" => {
            let ing: Vec<&str> = o["status"]["loadBalancer"]["ingress"]
                .as_array()
                .map(|a| a.iter().filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str())).collect())
                .unwrap_or_default();
            if ing.is_empty() { "<pending>".into() } else { ing.join(",") }
        }
        _ => "<none>".into(),
    };
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) => format!("{}:{np}/{proto}", p["port"]),
                        None => format!("{}/{proto}", p["port"]),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let sel: Vec<String> = object::string_map(spec.get("selector")).iter().map(|(k, v)| format!("{k}={v}")).collect();
    vec![
        name,
        s(ty),
        s(or_none(spec["clusterIP"].as_str())),
        s(external),
        s(or_none(Some(&ports.join(",")))),
        s(created),
        s(or_none(Some(&sel.join(",")))),
    ]
}

fn endpoints_summary(o: &Value) -> String {
    let mut list = Vec::new();
    let mut total = 0;
    for subset in o["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<i64> = subset["ports"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["port"].as_i64()).collect())
            .unwrap_or_default();
        for a in subset["addresses"].as_array().into_iter().flatten() {
            let ip = a["ip"].as_str().unwrap_or("");
            if ports.is_empty() {
                total += 1;
                if list.len() < 3 {
                    list.push(ip.to_string());
                }
            }
            for p in &ports {
                total += 1;
                if list.len() < 3 {
                    list.push(format!("{ip}:{p}"));
                }
            }
        }
    }
    match total {
        0 => "<none>".into(),
        n if n > list.len() => format!("{} + {} more...", list.join(","), n - list.len()),
        _ => list.join(","),
    }
}

fn event_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let last = str_at(o, "lastTimestamp").or(str_at(o, "eventTime")).or(str_at(o, "metadata.creationTimestamp"));
    let first = str_at(o, "firstTimestamp").or(str_at(o, "eventTime")).or(str_at(o, "metadata.creationTimestamp"));
    let inv = &o["involvedObject"];
    let object =
        format!("{}/{}", inv["kind"].as_str().unwrap_or("").to_lowercase(), inv["name"].as_str().unwrap_or(""));
    let source = o["source"]["component"].as_str().or(str_at(o, "reportingComponent")).unwrap_or("");
    let source = match o["source"]["host"].as_str() {
        Some(h) if !h.is_empty() => format!("{source}, {h}"),
        _ => source.to_string(),
    };
    vec![
        s(age(last, now)),
        s(str_at(o, "type").unwrap_or("")),
        s(str_at(o, "reason").unwrap_or("")),
        s(object),
        s(inv["fieldPath"].as_str().unwrap_or("")),
        s(source),
        s(str_at(o, "message").unwrap_or("").trim()),
        s(age(first, now)),
        s(o["count"].as_i64().unwrap_or(1).to_string()),
        s(object::name(o)),
    ]
}

fn job_cells(o: &Value, name: Value, created: String, now: DateTime<Utc>) -> Vec<Value> {
    let conds = o["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let has = |t: &str| conds.iter().any(|c| c["type"] == t && c["status"] == "True");
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if object::is_deleting(o) {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    };
    let completions = match o["spec"]["completions"].as_i64() {
        Some(n) => format!("{}/{n}", int(o, "status.succeeded")),
        None => {
            let p = o["spec"]["parallelism"].as_i64().unwrap_or(1);
            if p > 1 {
                format!("{}/1 of {p}", int(o, "status.succeeded"))
            } else {
                format!("{}/1", int(o, "status.succeeded"))
            }
        }
    };
    let start = str_at(o, "status.startTime").and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    let end = str_at(o, "status.completionTime").and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    let duration = match (start, end) {
        (Some(s), Some(e)) => object::human_duration((e - s).num_seconds()),
        (Some(s), None) => object::human_duration((now - s.with_timezone(&Utc)).num_seconds()),
        _ => String::new(),
    };
    let mut c = vec![name, s(status), s(completions), s(duration), s(created)];
    c.extend(workload_wide(&o["spec"]["template"]["spec"], &o["spec"]["selector"]));
    c
}
