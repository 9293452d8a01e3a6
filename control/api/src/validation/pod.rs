//! Pod spec rules (pods and every pod template).

use super::{Causes, dns1123_label_errors, port_name_errors};
use crate::quantity;
use serde_json::Value;
use std::collections::BTreeSet;

/// The list at `key`, read in place (validation runs on every write of a pod).
fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Validate a pod, or a pod template at `path` (`spec.template`; "" for a pod itself): its
/// serving annotations ([`crate::serving`]) and its spec.
pub(crate) fn validate_pod_template(template: &Value, path: &str, restart_policies: &[&str], c: &mut Causes) {
    let at = |field: &str| if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
    let annotations = template.get("metadata").and_then(|m| m.get("annotations"));
    for bad in crate::serving::serving(annotations).1 {
        c.invalid(
            format!("{}[{}]", at("metadata.annotations"), bad.annotation),
            format!("\"{}\"", bad.value),
            &bad.why,
        );
    }
    validate_pod_spec(template.get("spec").unwrap_or(&Value::Null), &at("spec"), restart_policies, c);
}

/// Validate a pod spec at `path` (`spec` or `spec.template.spec`).
/// `restart_policies` restricts `restartPolicy` (Jobs allow only OnFailure/Never).
fn validate_pod_spec(spec: &Value, path: &str, restart_policies: &[&str], c: &mut Causes) {
    let containers = arr(spec, "containers");
    if containers.is_empty() {
        c.required(format!("{path}.containers"));
    }
    let volumes: BTreeSet<String> = arr(spec, "volumes")
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let n = v.get("name").and_then(Value::as_str).unwrap_or("");
            c.syntax(format!("{path}.volumes[{i}].name"), n, dns1123_label_errors);
            n.to_string()
        })
        .collect();
    if volumes.len() != arr(spec, "volumes").len() {
        c.0.push(crate::error::Cause::new(
            "FieldValueDuplicate",
            format!("{path}.volumes"),
            "Duplicate value: volume names must be unique",
        ));
    }
    let mut names = BTreeSet::new();
    for (field, list) in [("initContainers", arr(spec, "initContainers")), ("containers", containers)] {
        for (i, ct) in list.iter().enumerate() {
            let p = format!("{path}.{field}[{i}]");
            let name = ct.get("name").and_then(Value::as_str).unwrap_or("");
            c.syntax(format!("{p}.name"), name, dns1123_label_errors);
            if !name.is_empty() && !names.insert(name.to_string()) {
                c.duplicate(format!("{p}.name"), name);
            }
            validate_container(ct, &p, &volumes, c);
        }
    }
    if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !restart_policies.contains(&rp) {
            c.not_supported(format!("{path}.restartPolicy"), rp, restart_policies);
        }
    } else if !restart_policies.contains(&"Always") {
        c.0.push(crate::error::Cause::new(
            "FieldValueRequired",
            format!("{path}.restartPolicy"),
            format!(
                "Required value: valid values: {}",
                restart_policies.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if let Some(g) = spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64)
        && g < 0
    {
        c.invalid(format!("{path}.terminationGracePeriodSeconds"), g, "must be greater than or equal to 0");
    }
    for (k, v) in crate::object::string_map(spec.get("nodeSelector")) {
        c.syntax(format!("{path}.nodeSelector"), &k, super::qualified_name_errors);
        if let Some(e) = super::label_value_errors(&v) {
            c.invalid(format!("{path}.nodeSelector[{k}]"), format!("\"{v}\""), e);
        }
    }
}

fn validate_container(ct: &Value, p: &str, volumes: &BTreeSet<String>, c: &mut Causes) {
    if ct.get("image").and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
        c.required(format!("{p}.image"));
    }
    let mut port_names = BTreeSet::new();
    for (j, port) in arr(ct, "ports").iter().enumerate() {
        let pp = format!("{p}.ports[{j}]");
        let n = port.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&n) {
            c.invalid(format!("{pp}.containerPort"), n, "must be between 1 and 65535, inclusive");
        }
        if let Some(name) = port.get("name").and_then(Value::as_str) {
            c.syntax(format!("{pp}.name"), name, port_name_errors);
            if !port_names.insert(name.to_string()) {
                c.duplicate(format!("{pp}.name"), name);
            }
        }
        if let Some(proto) = port.get("protocol").and_then(Value::as_str)
            && !["TCP", "UDP", "SCTP"].contains(&proto)
        {
            c.not_supported(format!("{pp}.protocol"), proto, &["SCTP", "TCP", "UDP"]);
        }
    }
    let res = ct.get("resources").unwrap_or(&Value::Null);
    for section in ["requests", "limits"] {
        if let Some(m) = res.get(section).and_then(Value::as_object) {
            for (k, v) in m {
                let s = v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
                match quantity::parse(&s) {
                    None => c.invalid(
                        format!("{p}.resources.{section}[{k}]"),
                        format!("\"{s}\""),
                        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                    ),
                    Some(q) if q < 0.0 => c.invalid(
                        format!("{p}.resources.{section}[{k}]"),
                        format!("\"{s}\""),
                        "must be greater than or equal to 0",
                    ),
                    Some(_) => {}
                }
            }
        }
    }
    if let (Some(req), Some(lim)) =
        (res.get("requests").and_then(Value::as_object), res.get("limits").and_then(Value::as_object))
    {
        for (k, r) in req {
            let (Some(r), Some(l)) =
                (r.as_str().and_then(quantity::parse), lim.get(k).and_then(Value::as_str).and_then(quantity::parse))
            else {
                continue;
            };
            if r > l {
                c.invalid(
                    format!("{p}.resources.requests[{k}]"),
                    format!("\"{}\"", req[k].as_str().unwrap_or_default()),
                    format!("must be less than or equal to {k} limit"),
                );
            }
        }
    }
    for (j, m) in arr(ct, "volumeMounts").iter().enumerate() {
        let n = m.get("name").and_then(Value::as_str).unwrap_or("");
        if !volumes.contains(n) {
            c.0.push(crate::error::Cause::new(
                "FieldValueNotFound",
                format!("{p}.volumeMounts[{j}].name"),
                format!("Not found: \"{n}\""),
            ));
        }
        if m.get("mountPath").and_then(Value::as_str).is_none_or(str::is_empty) {
            c.required(format!("{p}.volumeMounts[{j}].mountPath"));
        }
    }
    for (j, e) in arr(ct, "env").iter().enumerate() {
        let n = e.get("name").and_then(Value::as_str).unwrap_or("");
        if n.is_empty() || n.contains('=') {
            c.invalid(
                format!("{p}.env[{j}].name"),
                format!("\"{n}\""),
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            );
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(pr) = ct.get(probe) {
            let handlers = ["httpGet", "tcpSocket", "exec", "grpc"].iter().filter(|h| pr.get(**h).is_some()).count();
            if handlers != 1 {
                c.0.push(crate::error::Cause::new(
                    "FieldValueRequired",
                    format!("{p}.{probe}"),
                    "Required value: must specify exactly one handler type (httpGet or tcpSocket)",
                ));
            }
        }
    }
}
