//! ResourceQuota and LimitRange, as pure decisions: what an object uses, whether adding it
//! stays within a quota (with Kubernetes' messages), and the defaults and bounds a LimitRange
//! puts on a pod's containers.
//!
//! Amounts are integers in thousandths of the unit (millicores, millibytes), so sums are exact.

use crate::quantity;
use crate::resources::{Resource, ResourceKind};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Resource name (as a quota's `hard` names it) → amount in thousandths.
pub type Usage = BTreeMap<String, i128>;

fn milli(q: &Value) -> Option<i128> {
    match q {
        Value::String(s) => quantity::parse(s),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
    .map(|v| (v * 1000.0).round() as i128)
}

/// How Kubernetes prints an amount: cores (`500m`, `2`), bytes in binary units (`64Mi`),
/// counts as integers.
pub fn format(name: &str, m: i128) -> String {
    if name.ends_with("cpu") {
        return if m % 1000 == 0 { (m / 1000).to_string() } else { format!("{m}m") };
    }
    let whole = m / 1000;
    if name.contains("memory") || name.contains("storage") {
        for (unit, size) in [("Ti", 1i128 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if whole != 0 && whole % size == 0 {
                return format!("{}{unit}", whole / size);
            }
        }
    }
    whole.to_string()
}

/// A pod's compute requests and limits. A request that is not set is its limit, as
/// Kubernetes defaults it.
fn pod_compute(pod: &Value) -> Usage {
    let mut u = Usage::new();
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let containers = spec.get("containers").and_then(Value::as_array).into_iter().flatten();
    for c in containers {
        let res = c.get("resources").unwrap_or(&Value::Null);
        for r in ["cpu", "memory", "ephemeral-storage"] {
            let limit = res.get("limits").and_then(|l| l.get(r)).and_then(milli);
            let request = res.get("requests").and_then(|l| l.get(r)).and_then(milli).or(limit);
            if let Some(l) = limit {
                *u.entry(format!("limits.{r}")).or_default() += l;
            }
            if let Some(q) = request {
                *u.entry(format!("requests.{r}")).or_default() += q;
                *u.entry(r.to_string()).or_default() += q;
            }
        }
    }
    u
}

fn terminal(pod: &Value) -> bool {
    matches!(pod.get("status").and_then(|s| s.get("phase")).and_then(Value::as_str), Some("Succeeded" | "Failed"))
}

/// The quota names that count objects of `res`: `count/deployments.apps`, and the short
/// names Kubernetes keeps for core kinds (`pods`, `services`, …).
pub fn count_names(res: &Resource) -> Vec<String> {
    let qualified = if res.group.is_empty() { res.plural.to_string() } else { format!("{}.{}", res.plural, res.group) };
    let mut v = vec![format!("count/{qualified}")];
    use ResourceKind::*;
    if matches!(
        res.kind_id,
        Pod | Service | ConfigMap | Secret | PersistentVolumeClaim | ReplicationController | ResourceQuota
    ) {
        v.push(res.plural.to_string());
    }
    v
}

/// The kind whose objects a quota resource name counts (`pods`, `requests.memory` → Pod;
/// `count/deployments.apps` → Deployment).
pub fn kind_of(name: &str) -> Option<&'static Resource> {
    use crate::resources::{RESOURCES, of};
    if let Some(q) = name.strip_prefix("count/") {
        let (plural, group) = q.split_once('.').unwrap_or((q, ""));
        return RESOURCES.iter().find(|r| r.plural == plural && r.group == group);
    }
    Some(match name {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => of(ResourceKind::Pod),
        n if n.starts_with("requests.") && n != "requests.storage" || n.starts_with("limits.") => of(ResourceKind::Pod),
        "requests.storage" | "persistentvolumeclaims" => of(ResourceKind::PersistentVolumeClaim),
        "services" | "services.nodeports" | "services.loadbalancers" => of(ResourceKind::Service),
        other => return RESOURCES.iter().find(|r| r.group.is_empty() && r.plural == other),
    })
}

/// What one object of `res` uses of quota.
pub fn usage(res: &Resource, obj: &Value) -> Usage {
    let mut u = Usage::new();
    if res.kind_id == ResourceKind::Pod && terminal(obj) {
        return u;
    }
    for n in count_names(res) {
        u.insert(n, 1000);
    }
    match res.kind_id {
        ResourceKind::Pod => u.extend(pod_compute(obj)),
        ResourceKind::PersistentVolumeClaim => {
            if let Some(s) = obj.pointer("/spec/resources/requests/storage").and_then(milli) {
                u.insert("requests.storage".into(), s);
            }
        }
        ResourceKind::Service => {
            let ty = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
            let ports = obj.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len) as i128;
            if ty == "NodePort" || ty == "LoadBalancer" {
                u.insert("services.nodeports".into(), ports * 1000);
            }
            if ty == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), 1000);
            }
        }
        _ => {}
    }
    u
}

pub fn sum<'a>(usages: impl IntoIterator<Item = &'a Usage>) -> Usage {
    let mut out = Usage::new();
    for u in usages {
        for (k, v) in u {
            *out.entry(k.clone()).or_default() += v;
        }
    }
    out
}

/// A quota's `spec.hard` in thousandths.
pub fn hard(quota: &Value) -> Usage {
    quota
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), milli(v)?)))
        .collect()
}

/// Whether `add` fits `quota` on top of `used`; otherwise Kubernetes' reason (after
/// `… is forbidden: `): `exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2`
/// or, for a pod that does not say what it needs of a tracked resource,
/// `failed quota: q: must specify limits.memory for: c`.
pub fn admit(quota: &Value, used: &Usage, add: &Usage, obj: &Value) -> Result<(), String> {
    let name = quota.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let hard = hard(quota);
    if obj.get("kind").and_then(Value::as_str) == Some("Pod") && !terminal(obj) {
        let mut missing = Vec::new();
        for r in ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory"] {
            if !hard.contains_key(r) {
                continue;
            }
            let (section, res) = match r.split_once('.') {
                Some(("limits", x)) => ("limits", x),
                Some((_, x)) => ("requests", x),
                None => ("requests", r),
            };
            let lacking: Vec<&str> = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|c| {
                    let resources = c.get("resources").unwrap_or(&Value::Null);
                    let has = |s: &str| resources.get(s).and_then(|l| l.get(res)).is_some();
                    // A request may come from the limit.
                    !(has(section) || section == "requests" && has("limits"))
                })
                .map(|c| c.get("name").and_then(Value::as_str).unwrap_or(""))
                .collect();
            let entry = format!("{r} for: {}", lacking.join(","));
            if !lacking.is_empty() && !missing.contains(&entry) {
                missing.push(entry);
            }
        }
        if !missing.is_empty() {
            missing.sort();
            return Err(format!("failed quota: {name}: must specify {}", missing.join("; ")));
        }
    }
    let over: Vec<&String> = add
        .iter()
        .filter(|(k, v)| **v > 0 && hard.get(*k).is_some_and(|h| used.get(*k).copied().unwrap_or(0) + **v > *h))
        .map(|(k, _)| k)
        .collect();
    if over.is_empty() {
        return Ok(());
    }
    let list = |m: &dyn Fn(&str) -> i128| {
        over.iter().map(|k| format!("{k}={}", format(k, m(k)))).collect::<Vec<_>>().join(",")
    };
    Err(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        list(&|k| add.get(k).copied().unwrap_or(0)),
        list(&|k| used.get(k).copied().unwrap_or(0)),
        list(&|k| hard.get(k).copied().unwrap_or(0)),
    ))
}

/// A quota's status: `hard` as given, `used` of each resource it names.
pub fn status(quota: &Value, used: &Usage) -> Value {
    let hard_spec = quota.pointer("/spec/hard").cloned().unwrap_or_else(|| json!({}));
    let mut u = Map::new();
    for k in hard(quota).keys() {
        u.insert(k.clone(), json!(format(k, used.get(k).copied().unwrap_or(0))));
    }
    json!({"hard": hard_spec, "used": u})
}

/// Apply a namespace's LimitRanges to a pod being created: containers get `default` limits
/// and `defaultRequest` requests they lack, then every container must be within `min` and
/// `max`. The error is Kubernetes' (after `… is forbidden: `).
pub fn apply_limit_ranges(pod: &mut Value, ranges: &[Value]) -> Result<(), String> {
    let items: Vec<&Value> = ranges
        .iter()
        .filter_map(|r| r.pointer("/spec/limits").and_then(Value::as_array))
        .flatten()
        .filter(|l| l.get("type").and_then(Value::as_str) == Some("Container"))
        .collect();
    if items.is_empty() {
        return Ok(());
    }
    let Some(containers) = pod.pointer_mut("/spec/containers").and_then(Value::as_array_mut) else { return Ok(()) };
    for c in containers.iter_mut() {
        let Some(cm) = c.as_object_mut() else { continue };
        let resources = cm.entry("resources").or_insert_with(|| json!({}));
        let Some(rm) = resources.as_object_mut() else { continue };
        for item in &items {
            for (from, to) in [("default", "limits"), ("defaultRequest", "requests")] {
                let Some(defaults) = item.get(from).and_then(Value::as_object) else { continue };
                let section = rm.entry(to).or_insert_with(|| json!({}));
                if let Some(s) = section.as_object_mut() {
                    for (k, v) in defaults {
                        s.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
        }
        // As pod defaulting: a request not set is its limit.
        let limits = rm.get("limits").and_then(Value::as_object).cloned().unwrap_or_default();
        if let Some(req) = rm.entry("requests").or_insert_with(|| json!({})).as_object_mut() {
            for (k, v) in limits {
                req.entry(k).or_insert(v);
            }
        }
        rm.retain(|_, v| v.as_object().is_none_or(|m| !m.is_empty()));
    }
    for c in containers.iter() {
        for item in &items {
            for (r, bound) in item.get("max").and_then(Value::as_object).into_iter().flatten() {
                let (Some(b), limit) = (milli(bound), c.pointer(&format!("/resources/limits/{r}")).and_then(milli))
                else {
                    continue;
                };
                match limit {
                    Some(l) if l > b => {
                        return Err(format!(
                            "maximum {r} usage per Container is {}, but limit is {}",
                            format(r, b),
                            format(r, l)
                        ));
                    }
                    None => {
                        return Err(format!(
                            "maximum {r} usage per Container is {}, but no limit is specified",
                            format(r, b)
                        ));
                    }
                    _ => {}
                }
            }
            for (r, bound) in item.get("min").and_then(Value::as_object).into_iter().flatten() {
                let (Some(b), req) = (milli(bound), c.pointer(&format!("/resources/requests/{r}")).and_then(milli))
                else {
                    continue;
                };
                match req {
                    Some(q) if q < b => {
                        return Err(format!(
                            "minimum {r} usage per Container is {}, but request is {}",
                            format(r, b),
                            format(r, q)
                        ));
                    }
                    None => {
                        return Err(format!(
                            "minimum {r} usage per Container is {}, but no request is specified",
                            format(r, b)
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ResourceKind, of};

    fn pod(mem: Option<&str>) -> Value {
        let res = mem.map_or(json!({}), |m| json!({"limits": {"memory": m}}));
        json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": res}]}})
    }

    #[test]
    fn exceeded_quota_says_what_kubernetes_says() {
        let q = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2", "requests.memory": "64Mi"}}});
        let p = pod(Some("32Mi"));
        let add = usage(of(ResourceKind::Pod), &p);
        assert_eq!(add["requests.memory"], 32 * 1024 * 1024 * 1000);
        let used = sum([&add, &add]);
        assert_eq!(
            admit(&q, &used, &add, &p).unwrap_err(),
            "exceeded quota: q, requested: pods=1,requests.memory=32Mi, used: pods=2,requests.memory=64Mi, limited: pods=2,requests.memory=64Mi"
        );
        assert!(admit(&q, &add, &add, &p).is_ok());
        assert_eq!(
            admit(&q, &Usage::new(), &add, &pod(None)).unwrap_err(),
            "failed quota: q: must specify requests.memory for: c"
        );
        let st = status(&q, &used);
        assert_eq!(st["used"], json!({"pods": "2", "requests.memory": "64Mi"}));
    }

    #[test]
    fn limit_ranges_default_then_bound() {
        let lr = json!({"spec": {"limits": [{"type": "Container", "default": {"memory": "16Mi"}, "max": {"memory": "32Mi"}}]}});
        let mut p = pod(None);
        apply_limit_ranges(&mut p, std::slice::from_ref(&lr)).unwrap();
        assert_eq!(
            p["spec"]["containers"][0]["resources"],
            json!({"limits": {"memory": "16Mi"}, "requests": {"memory": "16Mi"}})
        );
        let mut big = pod(Some("64Mi"));
        assert_eq!(
            apply_limit_ranges(&mut big, &[lr]).unwrap_err(),
            "maximum memory usage per Container is 32Mi, but limit is 64Mi"
        );
        assert_eq!(format("cpu", 500), "500m");
        assert_eq!(format("limits.cpu", 2000), "2");
    }
}
