//! NetworkPolicy rules, as Kubernetes' `ValidateNetworkPolicySpec` states them.

use super::Causes;
use super::names::port_name_errors;
use crate::netpol::{strictly_inside, valid_cidr};
use crate::selector::LabelSelector;
use serde_json::Value;

const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const TYPES: &[&str] = &["Ingress", "Egress"];

fn selector(v: Option<&Value>, path: &str, c: &mut Causes) {
    if let Some(sel) = v.filter(|v| !v.is_null())
        && let Err(e) = LabelSelector::from_object(sel)
    {
        c.invalid(path, "", e.to_string());
    }
}

fn port(p: &Value, path: &str, c: &mut Causes) {
    if let Some(proto) = p.get("protocol").and_then(Value::as_str)
        && !PROTOCOLS.contains(&proto)
    {
        c.not_supported(format!("{path}.protocol"), proto, PROTOCOLS);
    }
    let end = p.get("endPort").and_then(Value::as_i64);
    match p.get("port") {
        None | Some(Value::Null) => {
            if end.is_some() {
                c.required(format!("{path}.port"));
            }
        }
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&n) {
                c.invalid(format!("{path}.port"), n, "must be between 1 and 65535, inclusive");
            }
            if let Some(e) = end
                && e < n
            {
                c.invalid(format!("{path}.endPort"), e, "must be greater than or equal to `port`");
            }
        }
        Some(Value::String(name)) => {
            c.syntax(format!("{path}.port"), name, port_name_errors);
            if end.is_some() {
                c.invalid(
                    format!("{path}.endPort"),
                    end.unwrap_or(0),
                    "may not be specified when `port` is non-numeric",
                );
            }
        }
        Some(_) => {}
    }
}

fn peer(p: &Value, path: &str, c: &mut Causes) {
    let set = |k: &str| p.get(k).is_some_and(|v| !v.is_null());
    let n = ["podSelector", "namespaceSelector", "ipBlock"].iter().filter(|k| set(k)).count();
    if n == 0 {
        c.required(format!("{path}: must specify a peer"));
        return;
    }
    if set("ipBlock") && n > 1 {
        c.forbidden(path, "may not specify both ipBlock and another peer");
    }
    selector(p.get("podSelector"), &format!("{path}.podSelector"), c);
    selector(p.get("namespaceSelector"), &format!("{path}.namespaceSelector"), c);
    if let Some(block) = p.get("ipBlock").filter(|v| !v.is_null()) {
        let cidr = block.get("cidr").and_then(Value::as_str).unwrap_or("");
        if cidr.is_empty() {
            c.required(format!("{path}.ipBlock.cidr"));
        } else if !valid_cidr(cidr) {
            c.invalid(format!("{path}.ipBlock.cidr"), format!("\"{cidr}\""), "must be a valid CIDR (e.g. 10.0.0.0/16)");
        }
        for (i, e) in block.get("except").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let field = format!("{path}.ipBlock.except[{i}]");
            let e = e.as_str().unwrap_or("");
            if !valid_cidr(e) {
                c.invalid(field, format!("\"{e}\""), "must be a valid CIDR (e.g. 10.0.0.0/16)");
            } else if valid_cidr(cidr) && !strictly_inside(e, cidr) {
                c.invalid(field, format!("\"{e}\""), "must be a strict subset of `cidr`");
            }
        }
    }
}

pub(crate) fn validate_network_policy(spec: &Value, c: &mut Causes) {
    selector(spec.get("podSelector"), "spec.podSelector", c);
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in spec.get(dir).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let path = format!("spec.{dir}[{i}]");
            for (j, p) in rule.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
                port(p, &format!("{path}.ports[{j}]"), c);
            }
            for (j, p) in rule.get(peers).and_then(Value::as_array).into_iter().flatten().enumerate() {
                peer(p, &format!("{path}.{peers}[{j}]"), c);
            }
        }
    }
    let types = spec.get("policyTypes").and_then(Value::as_array);
    let types: Vec<&str> = types.into_iter().flatten().map(|t| t.as_str().unwrap_or("")).collect();
    if types.len() > 2 {
        c.invalid("spec.policyTypes", format!("{types:?}"), "may not specify more than two policyTypes");
    }
    for (i, t) in types.iter().enumerate() {
        if !TYPES.contains(t) {
            c.not_supported(format!("spec.policyTypes[{i}]"), t, TYPES);
        } else if types[..i].contains(t) {
            c.duplicate(format!("spec.policyTypes[{i}]"), t);
        }
    }
}
