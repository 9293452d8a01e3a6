//! HTTPRoute rules as the node applies them: matches, filters, backendRefs (resolved with
//! ReferenceGrants), timeouts — read from a route once, when the table is built.

use super::*;

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
    pub(super) fn matches(&self, v: &str) -> bool {
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
pub(super) fn matches_of(rule: &Value) -> Option<Vec<Match>> {
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
