//! Gateway API (`gateway.networking.k8s.io/v1`) as pure rules: which listeners a Gateway
//! of wasmorch's class opens, which HTTPRoutes attach to them, and which rule of which
//! route a request reaches — then what that rule does with it (filters, weighted backends,
//! timeouts). The definitions wasmorch serves the kinds by are in [`crds`]; the status the
//! controller writes is decided in [`status`].
//!
//! Routing precedence ([`Table::route`]), as the HTTPRoute specification orders it; each
//! step only breaks the previous one's ties:
//! 1. the longest matching non-wildcard hostname, then the longest matching hostname
//!    (`*.example.com` matches any name ending in `.example.com`, at any depth);
//! 2. an `Exact` path, then a `RegularExpression` (its precedence is left to implementations;
//!    before prefixes, so a catch-all `/` does not hide it), then the longest `PathPrefix`;
//! 3. a rule naming a method; 4. more header matches; 5. more query-parameter matches;
//! 6. the oldest route (creationTimestamp), then `namespace/name` alphabetically;
//! 7. within a route, the first rule, then the first match.
//!
//! A request no rule matches is answered 404. A rule whose backends cannot be resolved
//! (no such Service, a port missing, another namespace no ReferenceGrant opens) keeps its share of the traffic and
//! answers it 500, as the specification requires.

pub mod crds;
mod rules;
pub mod status;
mod table;

pub use rules::*;
pub use table::*;

use crate::ingress::{Backend, PortRef};
use crate::object;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const GROUP: &str = "gateway.networking.k8s.io";
/// The GatewayClass wasmorch creates, and the controller name it answers to.
pub const CLASS: &str = "wasmorch";
pub const CONTROLLER: &str = "wasmorch.io/gateway-controller";

/// A listener's protocol, of those wasmorch serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
}

/// Which namespaces' routes a listener admits (`allowedRoutes.namespaces`).
#[derive(Debug, Clone)]
pub enum Allowed {
    Same,
    All,
    Selector(crate::selector::LabelSelector),
}

/// A listener of a Gateway wasmorch serves.
#[derive(Debug, Clone)]
pub struct Listener {
    pub namespace: String,
    pub gateway: String,
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    /// `None`: every host name.
    pub hostname: Option<String>,
    pub allowed: Allowed,
    /// Whether `allowedRoutes.kinds` admits HTTPRoute (the default).
    pub admits_http_routes: bool,
    /// The Secrets of `tls.certificateRefs` (namespace, name).
    pub certificates: Vec<(String, String)>,
}

/// Why a listener is not served: (listener name, reason, message).
pub type Refusal = (String, &'static str, String);

/// The listeners of a Gateway, and those it names that wasmorch cannot serve.
pub fn listeners(gw: &Value) -> (Vec<Listener>, Vec<Refusal>) {
    let ns = object::namespace(gw);
    let (mut out, mut refused) = (Vec::new(), Vec::new());
    for l in gw.pointer("/spec/listeners").and_then(Value::as_array).into_iter().flatten() {
        let name = l.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let port = l.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0);
        let protocol = match l.get("protocol").and_then(Value::as_str) {
            Some("HTTP") => Protocol::Http,
            Some("HTTPS") => Protocol::Https,
            other => {
                let p = other.unwrap_or("");
                refused.push((name, "UnsupportedProtocol", format!("protocol {p:?} is not served: use HTTP or HTTPS")));
                continue;
            }
        };
        let Some(port) = port else {
            refused.push((name, "PortUnavailable", "the port must be between 1 and 65535".into()));
            continue;
        };
        let tls = l.get("tls");
        if protocol == Protocol::Https
            && tls.and_then(|t| t.get("mode")).and_then(Value::as_str).is_some_and(|m| m != "Terminate")
        {
            refused.push((name, "UnsupportedValue", "TLS mode Passthrough is not served: use Terminate".into()));
            continue;
        }
        let allowed = l.pointer("/allowedRoutes/namespaces");
        let allowed = match allowed.and_then(|a| a.get("from")).and_then(Value::as_str) {
            Some("All") => Allowed::All,
            Some("Selector") => {
                match allowed
                    .and_then(|a| a.get("selector"))
                    .map(crate::selector::LabelSelector::from_object)
                    .unwrap_or(Err(crate::selector::SelectorError("no selector".into())))
                {
                    Ok(s) => Allowed::Selector(s),
                    Err(e) => {
                        refused.push((name, "Invalid", format!("allowedRoutes.namespaces.selector: {}", e.0)));
                        continue;
                    }
                }
            }
            _ => Allowed::Same,
        };
        let kinds = l.pointer("/allowedRoutes/kinds").and_then(Value::as_array);
        let admits_http_routes = kinds.is_none_or(|k| {
            k.is_empty()
                || k.iter().any(|k| {
                    k.get("kind").and_then(Value::as_str) == Some("HTTPRoute")
                        && k.get("group").and_then(Value::as_str).is_none_or(|g| g == GROUP)
                })
        });
        let certificates = tls
            .and_then(|t| t.get("certificateRefs"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|r| {
                r.get("kind").and_then(Value::as_str).unwrap_or("Secret") == "Secret"
                    && r.get("group").and_then(Value::as_str).unwrap_or("").is_empty()
            })
            .filter_map(|r| {
                let n = r.get("name").and_then(Value::as_str)?;
                Some((r.get("namespace").and_then(Value::as_str).unwrap_or(ns).to_string(), n.to_string()))
            })
            .collect();
        let hostname =
            l.get("hostname").and_then(Value::as_str).filter(|h| !h.is_empty()).map(|h| h.to_ascii_lowercase());
        out.push(Listener {
            namespace: ns.to_string(),
            gateway: object::name(gw).to_string(),
            name,
            port,
            protocol,
            hostname,
            allowed,
            admits_http_routes,
            certificates,
        });
    }
    (out, refused)
}

/// The host names a route and a listener have in common: the more specific of each pair
/// that intersects. `Some(vec![])` stands for "every name" (neither restricts); `None`: they
/// share none.
pub fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<Option<String>>> {
    let route: Vec<String> = route.iter().map(|h| h.to_ascii_lowercase()).collect();
    match (listener, route.is_empty()) {
        (None, true) => Some(vec![None]),
        (Some(l), true) => Some(vec![Some(l.to_string())]),
        (l, false) => {
            let out: Vec<Option<String>> = route
                .iter()
                .filter_map(|r| match l {
                    None => Some(r.clone()),
                    Some(l) => host_intersection(l, r),
                })
                .map(Some)
                .collect();
            if out.is_empty() { None } else { Some(out) }
        }
    }
}

fn host_intersection(a: &str, b: &str) -> Option<String> {
    match (a.strip_prefix("*."), b.strip_prefix("*.")) {
        (None, None) => (a == b).then(|| a.to_string()),
        (Some(_), None) => host_matches(a, b).then(|| b.to_string()),
        (None, Some(_)) => host_matches(b, a).then(|| a.to_string()),
        (Some(sa), Some(sb)) => {
            if sa == sb || sa.ends_with(&format!(".{sb}")) {
                Some(a.to_string())
            } else if sb.ends_with(&format!(".{sa}")) {
                Some(b.to_string())
            } else {
                None
            }
        }
    }
}

/// Whether the pattern (`a.b`, or `*.b` for any name ending in `.b`) matches `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1 && host.ends_with(suffix) && host.ends_with(&format!(".{suffix}"))
        }
        None => pattern == host,
    }
}

/// How a parentRef of a route names a Gateway and, optionally, one of its listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    pub namespace: String,
    pub name: String,
    pub section: Option<String>,
    pub port: Option<u16>,
    /// The parentRef as written, for status.
    pub raw: Value,
}

/// The parentRefs of `route` that name Gateways.
pub fn parent_refs(route: &Value) -> Vec<ParentRef> {
    let ns = object::namespace(route);
    route
        .pointer("/spec/parentRefs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| {
            p.get("group").and_then(Value::as_str).unwrap_or(GROUP) == GROUP
                && p.get("kind").and_then(Value::as_str).unwrap_or("Gateway") == "Gateway"
        })
        .filter_map(|p| {
            Some(ParentRef {
                namespace: p.get("namespace").and_then(Value::as_str).unwrap_or(ns).to_string(),
                name: p.get("name").and_then(Value::as_str)?.to_string(),
                section: p.get("sectionName").and_then(Value::as_str).map(String::from),
                port: p.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()),
                raw: p.clone(),
            })
        })
        .collect()
}

/// Why a route does not attach to a listener (a reason of the `Accepted` condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAttached {
    /// The parentRef names another Gateway, listener or port.
    NoMatchingParent,
    /// The listener does not admit routes of this namespace or kind.
    NotAllowedByListeners,
    NoMatchingListenerHostname,
}

/// Whether `route` (by `parent`) attaches to `listener`, and with which host names.
pub fn attach(
    route: &Value,
    parent: &ParentRef,
    listener: &Listener,
    namespace_labels: &dyn Fn(&str) -> Option<BTreeMap<String, String>>,
) -> Result<Vec<Option<String>>, NotAttached> {
    if parent.namespace != listener.namespace
        || parent.name != listener.gateway
        || parent.section.as_ref().is_some_and(|s| *s != listener.name)
        || parent.port.is_some_and(|p| p != listener.port)
    {
        return Err(NotAttached::NoMatchingParent);
    }
    let ns = object::namespace(route);
    let allowed = match &listener.allowed {
        Allowed::Same => ns == listener.namespace,
        Allowed::All => true,
        Allowed::Selector(s) => namespace_labels(ns).is_some_and(|l| s.matches(&l)),
    };
    if !allowed || !listener.admits_http_routes {
        return Err(NotAttached::NotAllowedByListeners);
    }
    intersect(listener.hostname.as_deref(), &object::strings(route.pointer("/spec/hostnames")))
        .ok_or(NotAttached::NoMatchingListenerHostname)
}

#[cfg(test)]
mod tests;
