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
pub mod status;

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

// ---- rules ----

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(String),
    Regex(regex::Regex),
}

impl ValueMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatch::Exact(e) => e == v,
            ValueMatch::Regex(r) => r.is_match(v),
        }
    }
}

/// One entry of a rule's `matches` (all its parts must hold).
#[derive(Debug, Clone)]
pub struct Match {
    pub path: PathMatch,
    pub method: Option<String>,
    /// Header names lowercase.
    pub headers: Vec<(String, ValueMatch)>,
    pub query: Vec<(String, ValueMatch)>,
}

/// A header modifier (`RequestHeaderModifier`, `ResponseHeaderModifier`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderChanges {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// How a redirect or rewrite replaces the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathChange {
    Full(String),
    Prefix(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathChange>,
    pub port: Option<u16>,
    pub status: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    pub hostname: Option<String>,
    pub path: Option<PathChange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    RequestHeaders(HeaderChanges),
    ResponseHeaders(HeaderChanges),
    Redirect(Redirect),
    Rewrite(Rewrite),
}

/// A backendRef: `None` when it cannot be resolved (its share of requests answers 500).
#[derive(Debug, Clone)]
pub struct WeightedBackend {
    pub backend: Option<Backend>,
    pub weight: u32,
    pub filters: Vec<Filter>,
}

/// What a rule does with the requests it matches.
#[derive(Debug, Clone)]
pub struct Rule {
    pub namespace: String,
    pub route: String,
    pub filters: Vec<Filter>,
    pub backends: Vec<WeightedBackend>,
    /// `timeouts.request`, `timeouts.backendRequest` (`None`: no limit).
    pub request_timeout: Option<Duration>,
    pub backend_timeout: Option<Duration>,
}

/// Why a backendRef does not resolve (a reason of the `ResolvedRefs` condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRef {
    InvalidKind(String),
    RefNotPermitted(String),
    BackendNotFound(String),
}

/// The ReferenceGrants (`v1beta1`): which references across namespaces their targets'
/// namespaces allow. A reference into another namespace is allowed when a grant in that
/// namespace names the referring kind and namespace in `from` and the target's kind (and
/// name, when it names one) in `to`.
#[derive(Debug, Clone, Default)]
pub struct Grants(Vec<Grant>);

#[derive(Debug, Clone)]
struct Grant {
    namespace: String,
    /// (group, kind, namespace)
    from: Vec<(String, String, String)>,
    /// (group, kind, name: none for every name)
    to: Vec<(String, String, Option<String>)>,
}

/// What refers: (group, kind, namespace). What is referred to: (group, kind, namespace, name).
pub type From<'a> = (&'a str, &'a str, &'a str);
pub type To<'a> = (&'a str, &'a str, &'a str, &'a str);

impl Grants {
    pub fn new<'a>(grants: impl IntoIterator<Item = &'a Value>) -> Grants {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Grants(
            grants
                .into_iter()
                .map(|g| Grant {
                    namespace: object::namespace(g).to_string(),
                    from: g
                        .pointer("/spec/from")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|f| (s(f, "group"), s(f, "kind"), s(f, "namespace")))
                        .collect(),
                    to: g
                        .pointer("/spec/to")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|t| (s(t, "group"), s(t, "kind"), t.get("name").and_then(Value::as_str).map(String::from)))
                        .collect(),
                })
                .collect(),
        )
    }

    /// Whether `from` may refer to `to` (always, within one namespace).
    pub fn allows(&self, from: From, to: To) -> bool {
        let (fg, fk, fns) = from;
        let (tg, tk, tns, tname) = to;
        fns == tns
            || self.0.iter().any(|g| {
                g.namespace == tns
                    && g.from.iter().any(|(g, k, n)| g == fg && k == fk && n == fns)
                    && g.to.iter().any(|(g, k, n)| g == tg && k == tk && n.as_deref().is_none_or(|n| n == tname))
            })
    }
}

/// What resolving a route's references needs to know.
pub struct Refs<'a> {
    /// Whether Service `namespace/name` exists.
    pub service_exists: &'a dyn Fn(&str, &str) -> bool,
    pub grants: &'a Grants,
}

/// A backendRef read from a rule: the Service port it names, or why it names none that can
/// be served.
pub fn backend_ref(route_ns: &str, r: &Value, refs: &Refs) -> Result<Backend, BadRef> {
    let group = r.get("group").and_then(Value::as_str).unwrap_or("");
    let kind = r.get("kind").and_then(Value::as_str).unwrap_or("Service");
    let name = r.get("name").and_then(Value::as_str).unwrap_or("");
    if !group.is_empty() || kind != "Service" {
        return Err(BadRef::InvalidKind(format!(
            "backendRef {name}: only Services (group \"\", kind Service) are served"
        )));
    }
    let ns = r.get("namespace").and_then(Value::as_str).unwrap_or(route_ns);
    if !refs.grants.allows((GROUP, "HTTPRoute", route_ns), ("", "Service", ns, name)) {
        return Err(BadRef::RefNotPermitted(format!(
            "backendRef {ns}/{name}: no ReferenceGrant in {ns} allows HTTPRoutes of {route_ns} to refer to it"
        )));
    }
    let Some(port) = r.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()) else {
        return Err(BadRef::BackendNotFound(format!("backendRef {name}: a Service backend needs a port")));
    };
    if !(refs.service_exists)(ns, name) {
        return Err(BadRef::BackendNotFound(format!("Service {ns}/{name} not found")));
    }
    Ok(Backend { namespace: ns.to_string(), service: name.to_string(), port: PortRef::Number(port) })
}

fn value_match(m: &Value) -> Option<(String, ValueMatch)> {
    let name = m.get("name").and_then(Value::as_str)?.to_string();
    let value = m.get("value").and_then(Value::as_str).unwrap_or("");
    let vm = match m.get("type").and_then(Value::as_str).unwrap_or("Exact") {
        "RegularExpression" => ValueMatch::Regex(anchored(value)?),
        _ => ValueMatch::Exact(value.to_string()),
    };
    Some((name, vm))
}

/// A regular expression matching a whole value (as Envoy and most implementations read
/// the specification's `RegularExpression`).
fn anchored(re: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(&format!("^(?:{re})$")).size_limit(1 << 20).build().ok()
}

/// The matches of a rule (`None` when one cannot be compiled: the rule is not served).
fn matches_of(rule: &Value) -> Option<Vec<Match>> {
    let list = rule.get("matches").and_then(Value::as_array).filter(|l| !l.is_empty());
    let Some(list) = list else {
        return Some(vec![Match { path: PathMatch::Prefix("/".into()), method: None, headers: vec![], query: vec![] }]);
    };
    list.iter()
        .map(|m| {
            let p = m.get("path");
            let value = p.and_then(|p| p.get("value")).and_then(Value::as_str).unwrap_or("/").to_string();
            let path = match p.and_then(|p| p.get("type")).and_then(Value::as_str).unwrap_or("PathPrefix") {
                "Exact" => PathMatch::Exact(value),
                "RegularExpression" => PathMatch::Regex(anchored(&value)?),
                _ => PathMatch::Prefix(value),
            };
            let mut headers = Vec::new();
            for h in m.get("headers").and_then(Value::as_array).into_iter().flatten() {
                let (n, v) = value_match(h)?;
                headers.push((n.to_ascii_lowercase(), v));
            }
            let mut query = Vec::new();
            for q in m.get("queryParams").and_then(Value::as_array).into_iter().flatten() {
                query.push(value_match(q)?);
            }
            Some(Match { path, method: m.get("method").and_then(Value::as_str).map(String::from), headers, query })
        })
        .collect()
}

fn header_changes(v: Option<&Value>) -> HeaderChanges {
    let pairs = |k: &str| -> Vec<(String, String)> {
        v.and_then(|v| v.get(k))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|h| {
                Some((h.get("name")?.as_str()?.to_string(), h.get("value").and_then(Value::as_str)?.to_string()))
            })
            .collect()
    };
    HeaderChanges { set: pairs("set"), add: pairs("add"), remove: object::strings(v.and_then(|v| v.get("remove"))) }
}

fn path_change(v: Option<&Value>) -> Option<PathChange> {
    let v = v?;
    match v.get("type").and_then(Value::as_str)? {
        "ReplaceFullPath" => Some(PathChange::Full(v.get("replaceFullPath")?.as_str()?.to_string())),
        "ReplacePrefixMatch" => Some(PathChange::Prefix(v.get("replacePrefixMatch")?.as_str()?.to_string())),
        _ => None,
    }
}

/// The filters of a rule or backendRef; `Err` names a filter type wasmorch does not serve.
pub fn filters(list: Option<&Value>) -> Result<Vec<Filter>, String> {
    let mut out = Vec::new();
    for f in list.and_then(Value::as_array).into_iter().flatten() {
        let ty = f.get("type").and_then(Value::as_str).unwrap_or("");
        out.push(match ty {
            "RequestHeaderModifier" => Filter::RequestHeaders(header_changes(f.get("requestHeaderModifier"))),
            "ResponseHeaderModifier" => Filter::ResponseHeaders(header_changes(f.get("responseHeaderModifier"))),
            "RequestRedirect" => {
                let r = f.get("requestRedirect");
                let s = |k: &str| r.and_then(|r| r.get(k)).and_then(Value::as_str).map(String::from);
                Filter::Redirect(Redirect {
                    scheme: s("scheme"),
                    hostname: s("hostname"),
                    path: path_change(r.and_then(|r| r.get("path"))),
                    port: r.and_then(|r| r.get("port")).and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()),
                    status: r
                        .and_then(|r| r.get("statusCode"))
                        .and_then(Value::as_u64)
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(302),
                })
            }
            "URLRewrite" => {
                let r = f.get("urlRewrite");
                Filter::Rewrite(Rewrite {
                    hostname: r.and_then(|r| r.get("hostname")).and_then(Value::as_str).map(String::from),
                    path: path_change(r.and_then(|r| r.get("path"))),
                })
            }
            other => return Err(format!("filter type {other:?} is not served")),
        });
    }
    Ok(out)
}

fn timeout(rule: &Value, key: &str) -> Option<Duration> {
    let d = rule.pointer(&format!("/timeouts/{key}")).and_then(Value::as_str)?;
    object::parse_duration(d).ok().filter(|d| !d.is_zero())
}

/// The rules of `route` in order, each with its matches; rules with a match or filter that
/// cannot be served are left out (the status says why: [`status::route_problems`]).
pub fn rules(route: &Value, refs: &Refs) -> Vec<(Arc<Rule>, Vec<Match>)> {
    let ns = object::namespace(route);
    let mut out = Vec::new();
    let mut budget = MAX_MATCHES;
    for r in route.pointer("/spec/rules").and_then(Value::as_array).into_iter().flatten() {
        let (Some(mut ms), Ok(fs)) = (matches_of(r), filters(r.get("filters"))) else { continue };
        if ms.len() > budget {
            ms.truncate(budget);
        }
        budget -= ms.len();
        if ms.is_empty() {
            continue;
        }
        let backends = r
            .get("backendRefs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|b| WeightedBackend {
                backend: backend_ref(ns, b, refs).ok(),
                weight: b.get("weight").and_then(Value::as_u64).map_or(1, |w| w.min(1_000_000) as u32),
                filters: filters(b.get("filters")).unwrap_or_default(),
            })
            .collect();
        let rule = Rule {
            namespace: ns.to_string(),
            route: object::name(route).to_string(),
            filters: fs,
            backends,
            request_timeout: timeout(r, "request"),
            backend_timeout: timeout(r, "backendRequest"),
        };
        out.push((Arc::new(rule), ms));
    }
    out
}

// ---- the routing table ----

#[derive(Debug, Clone)]
struct Entry {
    hostname: Option<String>,
    m: Match,
    rule: Arc<Rule>,
    /// The listener's protocol (a redirect without scheme keeps it) and its hostname-less
    /// identity, for precedence.
    key: Precedence,
}

/// Sort key: greater wins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    exact_host_len: usize,
    host_len: usize,
    path_kind: u8,
    path_len: usize,
    method: bool,
    headers: usize,
    query: usize,
    age: std::cmp::Reverse<(String, String, String)>,
    order: std::cmp::Reverse<(usize, usize)>,
}

/// What a request reached: the rule, and the path prefix its match consumed (for
/// `ReplacePrefixMatch`).
#[derive(Debug, Clone)]
pub struct Hit<'a> {
    pub rule: &'a Arc<Rule>,
    pub prefix: Option<&'a str>,
}

/// The request as routing sees it.
pub struct Request<'a> {
    pub host: &'a str,
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    pub query: &'a str,
    /// Lowercase names.
    pub headers: &'a dyn Fn(&str) -> Option<String>,
}

/// The HTTPRoutes attached to the listeners of one port, compiled for matching.
#[derive(Debug, Clone, Default)]
pub struct PortTable {
    entries: Vec<Entry>,
    pub protocol: Option<Protocol>,
}

/// At most this many (hostname, match) entries per port: what one user's routes can make
/// every node hold is bounded (routes past it, the newest, are not served there).
pub const MAX_ENTRIES: usize = 20_000;

/// At most this many matches across a route's rules (as the specification bounds them).
pub const MAX_MATCHES: usize = 128;

fn route_age(r: &Value) -> (String, String, String) {
    (
        r.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or("").to_string(),
        object::namespace(r).to_string(),
        object::name(r).to_string(),
    )
}

/// Every served port's table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Whether some port reached [`MAX_ENTRIES`].
    pub truncated: bool,
    pub ports: BTreeMap<u16, PortTable>,
    /// HTTPS listeners' certificates: (port, hostname, Secret namespace/name).
    pub certificates: Vec<(u16, Option<String>, (String, String))>,
}

fn normalized(path: &str) -> &str {
    let t = path.trim_end_matches('/');
    if t.is_empty() { "/" } else { t }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    let (prefix, path) = (normalized(prefix), normalized(path));
    prefix == "/" || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.to_string())
    })
}

impl Match {
    fn hit(&self, req: &Request) -> bool {
        let path_ok = match &self.path {
            PathMatch::Exact(p) => p == req.path,
            PathMatch::Prefix(p) => prefix_matches(p, req.path),
            PathMatch::Regex(r) => r.is_match(req.path),
        };
        path_ok
            && self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(req.method))
            && self.headers.iter().all(|(n, v)| (req.headers)(n).is_some_and(|h| v.matches(&h)))
            && self.query.iter().all(|(n, v)| query_value(req.query, n).is_some_and(|q| v.matches(&q)))
    }
}

impl Table {
    /// The table of the Gateways of wasmorch's class and the routes attached to them.
    /// `namespace_labels` serves listeners that admit routes by namespace selector; `refs`
    /// decides which backendRefs and certificateRefs resolve.
    pub fn build<'a>(
        gateways: impl IntoIterator<Item = &'a Value>,
        routes: impl IntoIterator<Item = &'a Value>,
        namespace_labels: &dyn Fn(&str) -> Option<BTreeMap<String, String>>,
        refs: &Refs,
    ) -> Table {
        let mut t = Table::default();
        let listeners: Vec<Listener> = gateways.into_iter().flat_map(|g| listeners(g).0).collect();
        for l in &listeners {
            let port = t.ports.entry(l.port).or_default();
            // The first listener on a port decides its protocol; others of another
            // protocol are in conflict (the status says so) and not served.
            if port.protocol.is_none() {
                port.protocol = Some(l.protocol);
            }
            if port.protocol == Some(Protocol::Https) && l.protocol == Protocol::Https {
                for c in l
                    .certificates
                    .iter()
                    .filter(|(ns, name)| refs.grants.allows((GROUP, "Gateway", &l.namespace), ("", "Secret", ns, name)))
                {
                    t.certificates.push((l.port, l.hostname.clone(), c.clone()));
                }
            }
        }
        // Oldest first: when a port's table is full, the newer routes are the ones left out.
        let mut routes: Vec<&Value> = routes.into_iter().collect();
        routes.sort_by_key(|r| route_age(r));
        for route in routes {
            let parents = parent_refs(route);
            let compiled = rules(route, refs);
            let age = route_age(route);
            // Where the route is served: (port, hostname), however many listeners and
            // parentRefs lead there.
            let mut attached: std::collections::BTreeSet<(u16, Option<String>)> = Default::default();
            for l in &listeners {
                if t.ports.get(&l.port).is_none_or(|p| p.protocol != Some(l.protocol)) {
                    continue;
                }
                for p in &parents {
                    if let Ok(hosts) = attach(route, p, l, namespace_labels) {
                        attached.extend(hosts.into_iter().map(|h| (l.port, h)));
                    }
                }
            }
            for (port, host) in attached {
                let Some(port) = t.ports.get_mut(&port) else { continue };
                let (exact_host_len, host_len) = match &host {
                    None => (0, 0),
                    Some(h) if h.starts_with("*.") => (0, h.len()),
                    Some(h) => (h.len(), h.len()),
                };
                for (ri, (rule, ms)) in compiled.iter().enumerate() {
                    for (mi, m) in ms.iter().enumerate() {
                        if port.entries.len() >= MAX_ENTRIES {
                            t.truncated = true;
                            break;
                        }
                        let (path_kind, path_len) = match &m.path {
                            PathMatch::Exact(p) => (3, p.len()),
                            PathMatch::Regex(r) => (2, r.as_str().len()),
                            PathMatch::Prefix(p) => (1, normalized(p).len()),
                        };
                        let key = Precedence {
                            exact_host_len,
                            host_len,
                            path_kind,
                            path_len,
                            method: m.method.is_some(),
                            headers: m.headers.len(),
                            query: m.query.len(),
                            age: std::cmp::Reverse(age.clone()),
                            order: std::cmp::Reverse((ri, mi)),
                        };
                        port.entries.push(Entry { hostname: host.clone(), m: m.clone(), rule: rule.clone(), key });
                    }
                }
            }
        }
        for p in t.ports.values_mut() {
            p.entries.sort_by(|a, b| b.key.cmp(&a.key));
        }
        t
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The rule a request to `port` reaches, by the precedence in this module's comment.
    pub fn route<'a>(&'a self, port: u16, req: &Request) -> Option<Hit<'a>> {
        let host = req.host.trim_end_matches('.').to_ascii_lowercase();
        let table = self.ports.get(&port)?;
        table.entries.iter().find(|e| e.hostname.as_deref().is_none_or(|h| host_matches(h, &host)) && e.m.hit(req)).map(
            |e| Hit {
                rule: &e.rule,
                prefix: match &e.m.path {
                    PathMatch::Prefix(p) => Some(p.as_str()),
                    _ => None,
                },
            },
        )
    }
}

/// The backend a request goes to, from `r` (any number: a random one spreads requests by
/// weight). `None` when every weight is 0 or the rule has no backends (answer 500).
pub fn pick(backends: &[WeightedBackend], r: u64) -> Option<&WeightedBackend> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut at = r % total;
    for b in backends {
        if at < u64::from(b.weight) {
            return Some(b);
        }
        at -= u64::from(b.weight);
    }
    None
}

/// `path` with the matched `prefix` (or the whole path) replaced as `change` says.
pub fn changed_path(change: &PathChange, prefix: Option<&str>, path: &str) -> String {
    match change {
        PathChange::Full(p) => p.clone(),
        PathChange::Prefix(with) => {
            let prefix = normalized(prefix.unwrap_or("/"));
            let rest = if prefix == "/" { path } else { path.get(prefix.len()..).unwrap_or("") };
            let with = with.trim_end_matches('/');
            let joined = match (with.is_empty(), rest.is_empty()) {
                (true, true) => "/".to_string(),
                (true, false) => rest.to_string(),
                (false, _) => format!("{with}{rest}"),
            };
            if joined.starts_with('/') { joined } else { format!("/{joined}") }
        }
    }
}

/// The `Location` of a redirect: the request's scheme, host, port and path with the
/// redirect's replacements. A port is written only when it is not the scheme's own.
pub fn location(
    r: &Redirect,
    scheme: &str,
    host: &str,
    listener_port: u16,
    prefix: Option<&str>,
    path: &str,
    query: &str,
) -> String {
    let scheme_out = r.scheme.as_deref().unwrap_or(scheme);
    let host_only =
        host.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h);
    let host_out = r.hostname.as_deref().unwrap_or(host_only);
    let port = r.port.unwrap_or(match r.scheme.as_deref() {
        Some("https") => 443,
        Some("http") => 80,
        _ => listener_port,
    });
    let well_known = (scheme_out == "http" && port == 80) || (scheme_out == "https" && port == 443);
    let path_out = r.path.as_ref().map_or_else(|| path.to_string(), |c| changed_path(c, prefix, path));
    let q = if query.is_empty() { String::new() } else { format!("?{query}") };
    if well_known {
        format!("{scheme_out}://{host_out}{path_out}{q}")
    } else {
        format!("{scheme_out}://{host_out}:{port}{path_out}{q}")
    }
}

#[cfg(test)]
mod tests;
