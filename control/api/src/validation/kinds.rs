//! Per-kind semantic rules.

use super::pod::validate_pod_template;
use super::{Causes, config_key_errors, dns1123_label_errors, port_name_errors};
use crate::error::Cause;
use crate::object;
use crate::resources::ResourceKind;
use crate::selector::LabelSelector;
use serde_json::Value;

const ALL_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const JOB_POLICIES: &[&str] = &["OnFailure", "Never"];

pub(crate) fn validate_kind(kind: ResourceKind, obj: &Value, c: &mut Causes) {
    // Read in place: this runs on every write.
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    use ResourceKind::*;
    match kind {
        Pod => validate_pod_template(obj, "", ALL_POLICIES, c),
        Deployment | ReplicaSet | DaemonSet => {
            non_negative(spec, "spec", "replicas", c);
            non_negative(spec, "spec", "revisionHistoryLimit", c);
            non_negative(spec, "spec", "minReadySeconds", c);
            selector_and_template(spec, "spec", c);
            let policies: &[&str] = &["Always"];
            validate_pod_template(&spec["template"], "spec.template", policies, c);
            if kind == Deployment
                && let Some(t) = object::str_at(spec, "strategy.type")
            {
                if !["RollingUpdate", "Recreate"].contains(&t) {
                    c.not_supported("spec.strategy.type", t, &["Recreate", "RollingUpdate"]);
                }
                if t == "Recreate" && spec["strategy"].get("rollingUpdate").is_some_and(|v| !v.is_null()) {
                    c.forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    );
                }
            }
        }
        ReplicationController => {
            non_negative(spec, "spec", "replicas", c);
            non_negative(spec, "spec", "minReadySeconds", c);
            let sel = object::string_map(spec.get("selector"));
            if sel.is_empty() {
                c.required("spec.selector");
            } else {
                let labels = object::string_map(spec["template"]["metadata"].get("labels"));
                if sel.iter().any(|(k, v)| labels.get(k) != Some(v)) {
                    c.invalid(
                        "spec.template.metadata.labels",
                        format!("{labels:?}"),
                        "`selector` does not match template `labels`",
                    );
                }
            }
            if spec.get("template").is_none_or(Value::is_null) {
                c.required("spec.template");
            }
            validate_pod_template(&spec["template"], "spec.template", &["Always"], c);
        }
        Job => validate_job_spec(spec, "spec", c),
        CronJob => {
            match spec.get("schedule").and_then(Value::as_str) {
                None | Some("") => c.required("spec.schedule"),
                Some(s) => {
                    if let Err(e) = check_cron(s) {
                        c.invalid("spec.schedule", format!("\"{s}\""), e);
                    }
                }
            }
            if let Some(p) = spec.get("concurrencyPolicy").and_then(Value::as_str)
                && !["Allow", "Forbid", "Replace"].contains(&p)
            {
                c.not_supported("spec.concurrencyPolicy", p, &["Allow", "Forbid", "Replace"]);
            }
            non_negative(spec, "spec", "successfulJobsHistoryLimit", c);
            non_negative(spec, "spec", "failedJobsHistoryLimit", c);
            validate_job_spec(&spec["jobTemplate"]["spec"], "spec.jobTemplate.spec", c);
        }
        Service => validate_service(spec, c),
        ConfigMap | Secret => validate_config_data(kind, obj, c),
        ServiceAccount | Custom => {}
        CustomResourceDefinition => {
            let builtin: Vec<&str> = crate::resources::RESOURCES.iter().map(|r| r.group).collect();
            crate::custom::validate_definition(obj, &builtin, &mut c.0);
        }
        ResourceQuota => quantities(spec.get("hard"), "spec.hard", c),
        LimitRange => {
            for (i, l) in spec.get("limits").and_then(Value::as_array).into_iter().flatten().enumerate() {
                for k in ["max", "min", "default", "defaultRequest", "maxLimitRequestRatio"] {
                    quantities(l.get(k), &format!("spec.limits[{i}].{k}"), c);
                }
                match l.get("type").and_then(Value::as_str) {
                    Some("Container" | "Pod" | "PersistentVolumeClaim") => {}
                    Some(t) => c.not_supported(
                        format!("spec.limits[{i}].type"),
                        t,
                        &["Container", "Pod", "PersistentVolumeClaim"],
                    ),
                    None => c.required(format!("spec.limits[{i}].type")),
                }
            }
        }
        Event => {
            if obj.get("involvedObject").is_none_or(|v| v.get("name").is_none() && v.get("kind").is_none()) {
                c.required("involvedObject");
            }
        }
        PersistentVolumeClaim => {
            if spec.get("accessModes").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                c.required("spec.accessModes");
            }
            if spec.pointer("/resources/requests/storage").is_none() {
                c.required("spec.resources[storage]");
            }
        }
        Namespace | Node | Endpoints | Lease | PersistentVolume | StorageClass | EndpointSlice => {}
        NetworkPolicy => super::network::validate_network_policy(spec, c),
        Ingress => crate::ingress::validate(spec, c),
        IngressClass => {
            if spec.get("controller").and_then(Value::as_str).is_none_or(str::is_empty) {
                c.required("spec.controller");
            }
        }
        HorizontalPodAutoscaler => crate::hpa::validate(spec, c),
        Role | ClusterRole => validate_rules(obj, kind == Role, c),
        RoleBinding | ClusterRoleBinding => validate_binding(obj, kind == ClusterRoleBinding, c),
        PodDisruptionBudget => {
            if spec.get("minAvailable").is_some_and(|v| !v.is_null())
                && spec.get("maxUnavailable").is_some_and(|v| !v.is_null())
            {
                c.invalid(
                    "spec",
                    "minAvailable and maxUnavailable",
                    "minAvailable and maxUnavailable cannot be both set",
                );
            }
        }
    }
}

fn non_negative(v: &Value, path: &str, field: &str, c: &mut Causes) {
    if let Some(n) = v.get(field).and_then(Value::as_i64)
        && n < 0
    {
        c.invalid(format!("{path}.{field}"), n, "must be greater than or equal to 0");
    }
}

/// Every value of a resource map is a non-negative quantity.
fn quantities(map: Option<&Value>, path: &str, c: &mut Causes) {
    for (k, v) in map.and_then(Value::as_object).into_iter().flatten() {
        let q = v.as_str().and_then(crate::quantity::parse);
        match q {
            Some(q) if q >= 0.0 && q.is_finite() => {}
            Some(_) => c.invalid(format!("{path}[{k}]"), v, "must be greater than or equal to 0"),
            None => c.invalid(
                format!("{path}[{k}]"),
                v,
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ),
        }
    }
}

fn selector_and_template(spec: &Value, path: &str, c: &mut Causes) {
    let sel = spec.get("selector").cloned().unwrap_or(Value::Null);
    let has_terms = sel.get("matchLabels").and_then(Value::as_object).is_some_and(|m| !m.is_empty())
        || sel.get("matchExpressions").and_then(Value::as_array).is_some_and(|m| !m.is_empty());
    if !has_terms {
        c.0.push(Cause::new(
            "FieldValueInvalid",
            format!("{path}.selector"),
            "Invalid value: empty selector is invalid for deployment",
        ));
        return;
    }
    match LabelSelector::from_object(&sel) {
        Err(e) => c.invalid(format!("{path}.selector"), "", e.to_string()),
        Ok(s) => {
            let labels = object::string_map(spec["template"]["metadata"].get("labels"));
            if !s.matches(&labels) {
                c.invalid(
                    format!("{path}.template.metadata.labels"),
                    format!("{labels:?}"),
                    "`selector` does not match template `labels`",
                );
            }
        }
    }
}

fn validate_job_spec(spec: &Value, path: &str, c: &mut Causes) {
    for f in ["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"] {
        non_negative(spec, path, f, c);
    }
    if spec.get("activeDeadlineSeconds").and_then(Value::as_i64) == Some(0) {
        c.invalid(format!("{path}.activeDeadlineSeconds"), 0, "must be greater than 0");
    }
    if let Some(sel) = spec.get("selector").filter(|s| !s.is_null())
        && let Err(e) = LabelSelector::from_object(sel)
    {
        c.invalid(format!("{path}.selector"), "", e.to_string());
    }
    validate_pod_template(&spec["template"], &format!("{path}.template"), JOB_POLICIES, c);
}

fn validate_service(spec: &Value, c: &mut Causes) {
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
        c.not_supported("spec.type", ty, &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]);
    }
    let ports = spec.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if ports.is_empty() && ty != "ExternalName" && !headless {
        c.required("spec.ports");
    }
    if ty == "ExternalName" && spec.get("externalName").and_then(Value::as_str).is_none_or(str::is_empty) {
        c.required("spec.externalName");
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        match p.get("name").and_then(Value::as_str) {
            Some(n) => {
                c.syntax(format!("{pp}.name"), n, dns1123_label_errors);
                if !names.insert(n.to_string()) {
                    c.duplicate(format!("{pp}.name"), n);
                }
            }
            None if ports.len() > 1 => c.required(format!("{pp}.name")),
            None => {}
        }
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            c.invalid(format!("{pp}.port"), port, "must be between 1 and 65535, inclusive");
        }
        // 0 is Go's zero value: not set.
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64).filter(|&np| np != 0) {
            if ty == "ClusterIP" {
                c.forbidden(format!("{pp}.nodePort"), "may not be used when `type` is 'ClusterIP'");
            } else if !(30000..=32767).contains(&np) {
                c.invalid(
                    format!("{pp}.nodePort"),
                    np,
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                );
            }
        }
        match p.get("targetPort") {
            Some(Value::Number(n)) if !(1..=65535).contains(&n.as_i64().unwrap_or(0)) => {
                c.invalid(format!("{pp}.targetPort"), n, "must be between 1 and 65535, inclusive")
            }
            Some(Value::String(s)) => c.syntax(format!("{pp}.targetPort"), s, port_name_errors),
            _ => {}
        }
        if let Some(proto) = p.get("protocol").and_then(Value::as_str)
            && !["TCP", "UDP", "SCTP"].contains(&proto)
        {
            c.not_supported(format!("{pp}.protocol"), proto, &["SCTP", "TCP", "UDP"]);
        }
    }
    if let Some(a) = spec.get("sessionAffinity").and_then(Value::as_str)
        && !["None", "ClientIP"].contains(&a)
    {
        c.not_supported("spec.sessionAffinity", a, &["ClientIP", "None"]);
    }
}

fn validate_config_data(kind: ResourceKind, obj: &Value, c: &mut Causes) {
    let mut total = 0usize;
    let sections: &[&str] =
        if kind == ResourceKind::Secret { &["data", "stringData"] } else { &["data", "binaryData"] };
    let mut seen = std::collections::BTreeSet::new();
    for s in sections {
        for (k, v) in obj.get(*s).and_then(Value::as_object).into_iter().flatten() {
            c.syntax(format!("{s}[{k}]"), k, config_key_errors);
            if kind == ResourceKind::ConfigMap && !seen.insert(k.clone()) {
                c.duplicate(format!("{s}[{k}]"), k);
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
    }
    if total > 1024 * 1024 {
        c.0.push(Cause::new("FieldValueTooLong", "data", "Too long: must have at most 1048576 bytes"));
    }
}

/// Check a cron schedule: five fields of numbers, ranges, steps, lists or `*`, or an `@` macro.
pub fn check_cron(s: &str) -> Result<(), String> {
    let s = s.trim();
    let s = s
        .strip_prefix("TZ=")
        .or_else(|| s.strip_prefix("CRON_TZ="))
        .map_or(s, |rest| rest.split_once(' ').map_or("", |x| x.1));
    if s.starts_with('@') {
        return match s {
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly" => Ok(()),
            _ => Err(format!("unrecognized descriptor: {s}")),
        };
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: {s}", fields.len()));
    }
    let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    for (f, (lo, hi)) in fields.iter().zip(ranges) {
        for part in f.split(',') {
            let (base, step) = match part.split_once('/') {
                Some((b, st)) => (b, Some(st)),
                None => (part, None),
            };
            if let Some(st) = step
                && st.parse::<u32>().map_or(true, |n| n == 0)
            {
                return Err(format!("invalid step in {part:?}"));
            }
            if base == "*" || base == "?" {
                continue;
            }
            let bounds: Vec<&str> = base.split('-').collect();
            if bounds.len() > 2 {
                return Err(format!("invalid range {base:?}"));
            }
            for b in &bounds {
                let named = matches!(
                    b.to_ascii_lowercase().as_str(),
                    "jan"
                        | "feb"
                        | "mar"
                        | "apr"
                        | "may"
                        | "jun"
                        | "jul"
                        | "aug"
                        | "sep"
                        | "oct"
                        | "nov"
                        | "dec"
                        | "sun"
                        | "mon"
                        | "tue"
                        | "wed"
                        | "thu"
                        | "fri"
                        | "sat"
                );
                if named {
                    continue;
                }
                match b.parse::<u32>() {
                    Ok(n) if (lo..=hi).contains(&n) => {}
                    _ => return Err(format!("value {b:?} out of range [{lo}-{hi}]")),
                }
            }
        }
    }
    Ok(())
}

fn validate_rules(obj: &Value, namespaced: bool, c: &mut Causes) {
    for (i, r) in obj.get("rules").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let p = format!("rules[{i}]");
        let list = |k: &str| r.get(k).and_then(Value::as_array).map_or(0, Vec::len);
        if list("verbs") == 0 {
            c.required(format!("{p}.verbs"));
        }
        let urls = list("nonResourceURLs") > 0;
        if urls && namespaced {
            c.invalid(format!("{p}.nonResourceURLs"), "[…]", "namespaced rules cannot apply to non-resource URLs");
        }
        if urls && (list("apiGroups") > 0 || list("resources") > 0) {
            c.invalid(
                format!("{p}.nonResourceURLs"),
                "[…]",
                "rules cannot apply to both regular resources and non-resource URLs",
            );
        }
        if !urls {
            if list("apiGroups") == 0 {
                c.required(format!("{p}.apiGroups"));
            }
            if list("resources") == 0 {
                c.required(format!("{p}.resources"));
            }
        }
    }
}

fn validate_binding(obj: &Value, cluster: bool, c: &mut Causes) {
    let r = obj.get("roleRef").cloned().unwrap_or(Value::Null);
    match r.get("kind").and_then(Value::as_str) {
        Some("ClusterRole") => {}
        Some("Role") if !cluster => {}
        Some(k) => {
            c.not_supported("roleRef.kind", k, if cluster { &["ClusterRole"] } else { &["ClusterRole", "Role"] })
        }
        None => c.required("roleRef.kind"),
    }
    if r.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
        c.required("roleRef.name");
    }
    if let Some(g) = r.get("apiGroup").and_then(Value::as_str)
        && g != "rbac.authorization.k8s.io"
    {
        c.not_supported("roleRef.apiGroup", g, &["rbac.authorization.k8s.io"]);
    }
    for (i, s) in obj.get("subjects").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let p = format!("subjects[{i}]");
        if s.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            c.required(format!("{p}.name"));
        }
        match s.get("kind").and_then(Value::as_str) {
            Some("ServiceAccount") => {
                if cluster && s.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty) {
                    c.required(format!("{p}.namespace"));
                }
            }
            Some("User" | "Group") => {}
            Some(k) => c.not_supported(format!("{p}.kind"), k, &["Group", "ServiceAccount", "User"]),
            None => c.required(format!("{p}.kind")),
        }
    }
}
