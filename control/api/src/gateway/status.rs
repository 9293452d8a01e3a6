//! The status the Gateway API asks of an implementation, decided from what the controller
//! sees: GatewayClass `Accepted`; Gateway `Accepted` and `Programmed`, its addresses and,
//! per listener, `Accepted`, `Programmed`, `ResolvedRefs`, `Conflicted`, the kinds it
//! supports and how many routes attached; per HTTPRoute parent, `Accepted` and
//! `ResolvedRefs` (and `PartiallyInvalid` when some rules cannot be served).
//!
//! Conditions keep their `lastTransitionTime` while their status does not change, so a
//! second pass over unchanged objects writes nothing.

use super::{BadRef, CLASS, CONTROLLER, GROUP, Listener, NotAttached, attach, backend_ref, listeners, parent_refs};
use crate::object;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

fn generation(o: &Value) -> u64 {
    o.pointer("/metadata/generation").and_then(Value::as_u64).unwrap_or(1)
}

/// A condition, keeping the previous transition time while `status` is unchanged.
pub fn condition(
    prev: Option<&Value>,
    ty: &str,
    ok: bool,
    reason: &str,
    message: &str,
    observed: u64,
    now: &str,
) -> Value {
    let status = if ok { "True" } else { "False" };
    let since = prev
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| {
            c.get("type").and_then(Value::as_str) == Some(ty) && c.get("status").and_then(Value::as_str) == Some(status)
        })
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .unwrap_or(now);
    json!({"type": ty, "status": status, "reason": reason, "message": message,
        "observedGeneration": observed, "lastTransitionTime": since})
}

/// Whether a GatewayClass is wasmorch's.
pub fn is_ours(class: &Value) -> bool {
    class.pointer("/spec/controllerName").and_then(Value::as_str) == Some(CONTROLLER)
}

/// The GatewayClass wasmorch creates.
pub fn default_class() -> Value {
    json!({"apiVersion": format!("{GROUP}/v1"), "kind": "GatewayClass",
        "metadata": {"name": CLASS},
        "spec": {"controllerName": CONTROLLER, "description": "Served by every wasmorch node's proxy"}})
}

pub fn class_status(class: &Value, now: &str) -> Value {
    let prev = class.pointer("/status/conditions");
    json!({"conditions": [condition(prev, "Accepted", true, "Accepted", "served by every node's proxy", generation(class), now)]})
}

/// What the controller knows besides the object whose status it decides.
pub struct World<'a> {
    /// The Gateways whose class is wasmorch's.
    pub gateways: &'a [Value],
    pub routes: &'a [Value],
    /// The addresses of the Ready nodes (where every listener is served).
    pub addresses: &'a [String],
    pub namespace_labels: &'a dyn Fn(&str) -> Option<BTreeMap<String, String>>,
    /// Which Services exist and which references ReferenceGrants allow.
    pub refs: super::Refs<'a>,
    /// Whether a Service takes this port on the nodes' addresses (a node port, a
    /// load-balancer port): then a listener there is not served.
    pub port_taken: &'a dyn Fn(u16) -> bool,
    /// Whether a Secret holds a usable certificate: `Err` says why not.
    pub certificate: &'a dyn Fn(&str, &str) -> Result<(), String>,
    pub now: &'a str,
}

/// Listeners that share a port with a different protocol: (gateway ns/name, listener) of
/// every one but the first (oldest Gateway first, then listener order).
fn conflicts(gateways: &[Value]) -> Vec<(String, String, String)> {
    let mut sorted: Vec<&Value> = gateways.iter().collect();
    sorted.sort_by_key(|g| super::table::age_key(g));
    let mut first: HashMap<u16, super::Protocol> = HashMap::new();
    let mut out = Vec::new();
    for g in sorted {
        for l in listeners(g).0 {
            let p = *first.entry(l.port).or_insert(l.protocol);
            if p != l.protocol {
                out.push((l.namespace, l.gateway, l.name));
            }
        }
    }
    out
}

/// How many routes attach to `l`.
fn attached(l: &Listener, w: &World) -> usize {
    w.routes.iter().filter(|r| parent_refs(r).iter().any(|p| attach(r, p, l, w.namespace_labels).is_ok())).count()
}

pub fn gateway_status(gw: &Value, w: &World) -> Value {
    let observed = generation(gw);
    let prev = gw.get("status");
    let (served, refused) = listeners(gw);
    let conflicted = conflicts(w.gateways);
    let (ns, name) = (object::namespace(gw), object::name(gw));
    let mut out = Vec::new();
    let mut all_ok = refused.is_empty();
    let prev_listener = |n: &str| {
        prev.and_then(|p| p.get("listeners"))
            .and_then(Value::as_array)
            .and_then(|ls| ls.iter().find(|l| l.get("name").and_then(Value::as_str) == Some(n)))
            .and_then(|l| l.get("conditions"))
            .cloned()
    };
    let kinds = json!([{"group": GROUP, "kind": "HTTPRoute"}]);
    for l in &served {
        let p = prev_listener(&l.name);
        let p = p.as_ref();
        let conflict = conflicted.iter().any(|(cn, cg, cl)| cn == ns && cg == name && *cl == l.name);
        let mut cert_problem = None;
        if l.protocol == super::Protocol::Https {
            if l.certificates.is_empty() {
                cert_problem =
                    Some("an HTTPS listener needs tls.certificateRefs naming a kubernetes.io/tls Secret".into());
            }
            for (cns, cname) in &l.certificates {
                if !w.refs.grants.allows((GROUP, "Gateway", ns), ("", "Secret", cns, cname)) {
                    cert_problem = Some(format!(
                        "Secret {cns}/{cname}: no ReferenceGrant in {cns} allows Gateways of {ns} to refer to it"
                    ));
                } else if let Err(e) = (w.certificate)(cns, cname) {
                    cert_problem = Some(format!("Secret {cns}/{cname}: {e}"));
                }
            }
        }
        let taken = (w.port_taken)(l.port);
        let ok = !conflict && !taken && cert_problem.is_none();
        all_ok &= ok;
        let (accepted, reason, message) = if conflict {
            (false, "ProtocolConflict", "another listener serves this port with another protocol")
        } else if taken {
            (false, "PortUnavailable", "a Service's node port or load-balancer port takes this port on the nodes")
        } else {
            (true, "Accepted", "listener accepted")
        };
        let conds = vec![
            condition(p, "Accepted", accepted, reason, message, observed, w.now),
            condition(
                p,
                "Conflicted",
                conflict,
                if conflict { "ProtocolConflict" } else { "NoConflicts" },
                if conflict { "another listener serves this port with another protocol" } else { "no conflicts" },
                observed,
                w.now,
            ),
            condition(
                p,
                "ResolvedRefs",
                cert_problem.is_none(),
                if cert_problem.is_some() { "InvalidCertificateRef" } else { "ResolvedRefs" },
                cert_problem.as_deref().unwrap_or("references resolved"),
                observed,
                w.now,
            ),
            condition(
                p,
                "Programmed",
                ok,
                if ok { "Programmed" } else { "Invalid" },
                if ok { "served on every Ready node's address" } else { "not served" },
                observed,
                w.now,
            ),
        ];
        out.push(
            json!({"name": l.name, "supportedKinds": kinds, "attachedRoutes": if ok { attached(l, w) } else { 0 },
            "conditions": conds}),
        );
    }
    for (lname, reason, message) in &refused {
        let p = prev_listener(lname);
        let p = p.as_ref();
        out.push(json!({"name": lname, "supportedKinds": [], "attachedRoutes": 0, "conditions": [
            condition(p, "Accepted", false, reason, message, observed, w.now),
            condition(p, "Programmed", false, "Invalid", message, observed, w.now),
        ]}));
    }
    let pc = prev.and_then(|p| p.get("conditions"));
    let programmed = !w.addresses.is_empty() && !served.is_empty();
    let addresses: Vec<Value> = w.addresses.iter().map(|a| json!({"type": "IPAddress", "value": a})).collect();
    json!({
        "addresses": addresses,
        "conditions": [
            condition(pc, "Accepted", true, if all_ok { "Accepted" } else { "ListenersNotValid" },
                if all_ok { "accepted by wasmorch" } else { "some listeners are not valid" }, observed, w.now),
            condition(pc, "Programmed", programmed, if programmed { "Programmed" } else { "AddressNotAssigned" },
                if programmed { "served by every Ready node's proxy" } else { "no Ready node, or no listener, serves it yet" }, observed, w.now),
        ],
        "listeners": out,
    })
}

/// Rules of `route` that cannot be served, as messages.
pub fn route_problems(route: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let matches: usize = route
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| r.get("matches").and_then(Value::as_array).map_or(1, |m| m.len().max(1)))
        .sum();
    if matches > super::MAX_MATCHES {
        out.push(format!("{matches} matches across the rules: at most {} are served", super::MAX_MATCHES));
    }
    for (i, r) in route.pointer("/spec/rules").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if super::rules::matches_of(r).is_none() {
            out.push(format!("rules[{i}]: a regular expression does not compile"));
        }
        if let Err(e) = super::filters(r.get("filters")) {
            out.push(format!("rules[{i}]: {e}"));
        }
    }
    out
}

/// `status.parents` of an HTTPRoute: the entries of other controllers kept, ours decided
/// for every parentRef naming a Gateway of wasmorch's class.
pub fn route_status(route: &Value, w: &World) -> Value {
    let observed = generation(route);
    let prev: Vec<Value> = route.pointer("/status/parents").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out: Vec<Value> =
        prev.iter().filter(|p| p.get("controllerName").and_then(Value::as_str) != Some(CONTROLLER)).cloned().collect();
    let ns = object::namespace(route);
    let bad_refs: Vec<BadRef> = route
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|r| r.get("backendRefs").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter_map(|b| backend_ref(ns, &b, &w.refs).err())
        .collect();
    let problems = route_problems(route);
    let served_rules = route
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| super::rules::matches_of(r).is_some() && super::filters(r.get("filters")).is_ok())
        .count();
    let rules = route.pointer("/spec/rules").and_then(Value::as_array).map_or(0, Vec::len);
    for p in parent_refs(route) {
        let Some(gw) = w.gateways.iter().find(|g| object::namespace(g) == p.namespace && object::name(g) == p.name)
        else {
            continue;
        };
        let before = prev.iter().find(|e| {
            e.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER) && e.get("parentRef") == Some(&p.raw)
        });
        let pc = before.and_then(|b| b.get("conditions"));
        let results: Vec<Result<_, NotAttached>> =
            listeners(gw).0.iter().map(|l| attach(route, &p, l, w.namespace_labels)).collect();
        let accepted = results.iter().any(Result::is_ok);
        let why = [NotAttached::NoMatchingListenerHostname, NotAttached::NotAllowedByListeners]
            .into_iter()
            .find(|w| results.iter().any(|r| r.as_ref().err() == Some(w)))
            .unwrap_or(NotAttached::NoMatchingParent);
        let all_rules_bad = rules > 0 && served_rules == 0;
        let (a_ok, a_reason, a_msg) = if !accepted {
            let (reason, msg) = match why {
                NotAttached::NoMatchingListenerHostname => {
                    ("NoMatchingListenerHostname", "no listener's hostname matches the route's hostnames")
                }
                NotAttached::NotAllowedByListeners => {
                    ("NotAllowedByListeners", "no listener admits routes of this namespace or kind")
                }
                NotAttached::NoMatchingParent => ("NoMatchingParent", "no listener has this sectionName and port"),
            };
            (false, reason, msg.to_string())
        } else if all_rules_bad {
            (false, "UnsupportedValue", problems.join("; "))
        } else {
            (true, "Accepted", "accepted by wasmorch".to_string())
        };
        let (r_ok, r_reason, r_msg) = match bad_refs.first() {
            None => (true, "ResolvedRefs", "every backendRef resolves".to_string()),
            Some(first) => {
                let reason = match first {
                    BadRef::InvalidKind(_) => "InvalidKind",
                    BadRef::RefNotPermitted(_) => "RefNotPermitted",
                    BadRef::BackendNotFound(_) => "BackendNotFound",
                };
                let msgs: Vec<String> = bad_refs
                    .iter()
                    .map(|b| match b {
                        BadRef::InvalidKind(m) | BadRef::RefNotPermitted(m) | BadRef::BackendNotFound(m) => m.clone(),
                    })
                    .collect();
                (false, reason, msgs.join("; "))
            }
        };
        let mut conds = vec![
            condition(pc, "Accepted", a_ok, a_reason, &a_msg, observed, w.now),
            condition(pc, "ResolvedRefs", r_ok, r_reason, &r_msg, observed, w.now),
        ];
        if !problems.is_empty() && !all_rules_bad {
            conds.push(condition(
                pc,
                "PartiallyInvalid",
                true,
                "UnsupportedValue",
                &problems.join("; "),
                observed,
                w.now,
            ));
        }
        out.push(json!({"parentRef": p.raw, "controllerName": CONTROLLER, "conditions": conds}));
    }
    json!({"parents": out})
}
