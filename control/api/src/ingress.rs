//! Ingress (`networking.k8s.io/v1`) as pure rules: validation as Kubernetes' `ValidateIngress`
//! states it, and routing — which backend a request's host and path reach — as the
//! Ingress documentation defines matching.
//!
//! Routing precedence (what [`Router::route`] decides):
//! 1. Host: a rule whose host equals the request's host wins over a wildcard rule
//!    (`*.example.com` matches exactly one more label: `a.example.com`, not
//!    `a.b.example.com` or `example.com`), which wins over a rule without host.
//! 2. Within the chosen host's paths (from every Ingress of the class): the longest matching
//!    path wins; at equal length `Exact` wins over `Prefix`. `Prefix` matches element by
//!    element on `/` (`/foo` matches `/foo`, `/foo/`, `/foo/bar`, not `/foobar`); a trailing
//!    `/` is ignored. `ImplementationSpecific` is treated as `Prefix` here.
//! 3. If a host's rule has no matching path, the request falls to the rules without host,
//!    then to the default backend (the oldest Ingress's that has one); none: 404.
//!
//! When two Ingresses define the same host and path, the older one (creationTimestamp, then
//! namespace/name) wins, as ingress-nginx does.

use crate::validation::Causes;
use serde_json::Value;

/// The IngressClass wasmorch creates and serves, and its controller name.
pub const CLASS: &str = "wasmorch";
pub const CONTROLLER: &str = "wasmorch.io/ingress-controller";
/// The annotation marking an IngressClass as the default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

const PATH_TYPES: &[&str] = &["Exact", "Prefix", "ImplementationSpecific"];

/// A backend: a Service port in the Ingress's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    pub port: PortRef,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathType {
    Exact,
    Prefix,
}

#[derive(Debug, Clone)]
struct PathRule {
    path: String,
    ty: PathType,
    backend: Backend,
    /// Order of definition: older Ingresses first, then by position (lower wins a tie).
    seq: usize,
}

#[derive(Debug, Clone, Default)]
struct HostRules {
    paths: Vec<PathRule>,
}

/// Every Ingress of one class, compiled for matching.
#[derive(Debug, Clone, Default)]
pub struct Router {
    exact: std::collections::BTreeMap<String, HostRules>,
    /// `*.suffix` rules by suffix (`example.com` for `*.example.com`).
    wildcard: std::collections::BTreeMap<String, HostRules>,
    any: HostRules,
    default: Option<Backend>,
}

fn backend_of(ns: &str, b: &Value) -> Option<Backend> {
    let svc = b.get("service")?;
    let port = svc.get("port")?;
    let port = match (port.get("number").and_then(Value::as_u64), port.get("name").and_then(Value::as_str)) {
        (Some(n), _) => PortRef::Number(u16::try_from(n).ok()?),
        (None, Some(name)) => PortRef::Name(name.to_string()),
        _ => return None,
    };
    Some(Backend { namespace: ns.to_string(), service: svc.get("name")?.as_str()?.to_string(), port })
}

/// The class an Ingress asks for: `spec.ingressClassName`, else the old annotation.
pub fn class_of(ing: &Value) -> Option<&str> {
    ing.pointer("/spec/ingressClassName")
        .and_then(Value::as_str)
        .or_else(|| ing.pointer("/metadata/annotations/kubernetes.io~1ingress.class").and_then(Value::as_str))
}

/// Whether the IngressClass `class` is wasmorch's and marked as the default.
pub fn is_default_class(class: &Value) -> bool {
    crate::object::name(class) == CLASS
        && class.pointer("/metadata/annotations").and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION)).and_then(Value::as_str)
            == Some("true")
}

/// `ingresses` oldest first (creationTimestamp, then namespace/name): the order in which
/// their rules and TLS entries claim a host or path.
pub fn by_age<'a>(ingresses: impl IntoIterator<Item = &'a Value>) -> Vec<&'a Value> {
    let mut list: Vec<&Value> = ingresses.into_iter().collect();
    list.sort_by_key(|o| {
        (
            o.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or("").to_string(),
            crate::object::namespace(o).to_string(),
            crate::object::name(o).to_string(),
        )
    });
    list
}

/// Whether an Ingress is wasmorch's to serve: it names the class, or names none while the
/// class is the default.
pub fn is_ours(ing: &Value, default_class: bool) -> bool {
    match class_of(ing) {
        Some(c) => c == CLASS,
        None => default_class,
    }
}

fn normalized(path: &str) -> &str {
    let t = path.trim_end_matches('/');
    if t.is_empty() { "/" } else { t }
}

/// Whether `rule` (of type `ty`) matches the request path `req` (without its query).
fn matches(ty: PathType, rule: &str, req: &str) -> bool {
    match ty {
        PathType::Exact => rule == req,
        PathType::Prefix => {
            let (rule, req) = (normalized(rule), normalized(req));
            rule == "/" || req == rule || req.strip_prefix(rule).is_some_and(|rest| rest.starts_with('/'))
        }
    }
}

impl HostRules {
    fn best(&self, path: &str) -> Option<&Backend> {
        self.paths
            .iter()
            .filter(|r| matches(r.ty, &r.path, path))
            // Longest path, then Exact over Prefix, then the older Ingress (the earlier path).
            .max_by(|a, b| {
                let key = |r: &PathRule| (normalized(&r.path).len(), r.ty == PathType::Exact, std::cmp::Reverse(r.seq));
                key(a).cmp(&key(b))
            })
            .map(|r| &r.backend)
    }
}

impl Router {
    /// The router of `ingresses` (already filtered to one class).
    pub fn build<'a>(ingresses: impl IntoIterator<Item = &'a Value>) -> Router {
        let list = by_age(ingresses);
        let mut r = Router::default();
        let mut seq = 0;
        for ing in list {
            let ns = crate::object::namespace(ing);
            let spec = ing.get("spec");
            if r.default.is_none()
                && let Some(b) = spec.and_then(|s| s.get("defaultBackend")).and_then(|b| backend_of(ns, b))
            {
                r.default = Some(b);
            }
            for rule in spec.and_then(|s| s.get("rules")).and_then(Value::as_array).into_iter().flatten() {
                let host = rule.get("host").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
                let target = if host.is_empty() {
                    &mut r.any
                } else if let Some(suffix) = host.strip_prefix("*.") {
                    r.wildcard.entry(suffix.to_string()).or_default()
                } else {
                    r.exact.entry(host).or_default()
                };
                let paths = rule.pointer("/http/paths").and_then(Value::as_array).into_iter().flatten();
                for p in paths {
                    let ty = match p.get("pathType").and_then(Value::as_str) {
                        Some("Exact") => PathType::Exact,
                        _ => PathType::Prefix,
                    };
                    let path = p.get("path").and_then(Value::as_str).unwrap_or("/").to_string();
                    if let Some(backend) = p.get("backend").and_then(|b| backend_of(ns, b)) {
                        target.paths.push(PathRule { path, ty, backend, seq });
                        seq += 1;
                    }
                }
            }
        }
        r
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.paths.is_empty() && self.default.is_none()
    }

    /// The backend for a request to `host` (a port after `:` is ignored) and `path` (a query
    /// after `?` is ignored).
    pub fn route(&self, host: &str, path: &str) -> Option<&Backend> {
        let host =
            host.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h);
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let path = path.split(['?', '#']).next().unwrap_or("/");
        let path = if path.is_empty() { "/" } else { path };
        let by_host = self.exact.get(&host).or_else(|| {
            let (_, suffix) = host.split_once('.')?;
            self.wildcard.get(suffix)
        });
        by_host.and_then(|h| h.best(path)).or_else(|| self.any.best(path)).or(self.default.as_ref())
    }
}

/// The hosts an Ingress serves, as kubectl's HOSTS column shows them.
pub fn hosts(ing: &Value) -> Vec<String> {
    let rules = ing.pointer("/spec/rules").and_then(Value::as_array);
    let mut out: Vec<String> = Vec::new();
    for r in rules.into_iter().flatten() {
        let h = r.get("host").and_then(Value::as_str).unwrap_or("*").to_string();
        if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// Validation of an Ingress's `spec` (after the typed schema check).
pub(crate) fn validate(spec: &Value, c: &mut Causes) {
    let default = spec.get("defaultBackend").filter(|v| !v.is_null());
    let rules = spec.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
    if default.is_none() && rules.is_empty() {
        c.invalid("spec", "", "either `defaultBackend` or `rules` must be specified");
    }
    if let Some(b) = default {
        validate_backend(b, "spec.defaultBackend", c);
    }
    for (i, r) in rules.iter().enumerate() {
        if let Some(h) = r.get("host").and_then(Value::as_str) {
            validate_host(h, &format!("spec.rules[{i}].host"), c);
        }
        let paths = r.pointer("/http/paths").and_then(Value::as_array).cloned().unwrap_or_default();
        if r.get("http").is_some_and(|h| !h.is_null()) && paths.is_empty() {
            c.required(format!("spec.rules[{i}].http.paths"));
        }
        for (j, p) in paths.iter().enumerate() {
            let at = format!("spec.rules[{i}].http.paths[{j}]");
            let path = p.get("path").and_then(Value::as_str);
            match p.get("pathType").and_then(Value::as_str) {
                None => c.required(format!("{at}.pathType")),
                Some(t) if !PATH_TYPES.contains(&t) => c.not_supported(format!("{at}.pathType"), t, PATH_TYPES),
                Some(t) => {
                    if t != "ImplementationSpecific" && path.is_none() {
                        c.required(format!("{at}.path"));
                    }
                    if let Some(path) = path {
                        if !path.starts_with('/') {
                            c.invalid(format!("{at}.path"), path, "must be an absolute path");
                        } else if t != "ImplementationSpecific"
                            && (path.contains("//") || path.split('/').any(|e| e == "." || e == ".."))
                        {
                            c.invalid(format!("{at}.path"), path, "must not contain '//', '/./' or '/../'");
                        }
                    }
                }
            }
            match p.get("backend") {
                Some(b) if !b.is_null() => validate_backend(b, &format!("{at}.backend"), c),
                _ => c.required(format!("{at}.backend")),
            }
        }
    }
    for (i, t) in spec.get("tls").and_then(Value::as_array).into_iter().flatten().enumerate() {
        for (j, h) in t.get("hosts").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if let Some(h) = h.as_str() {
                validate_host(h, &format!("spec.tls[{i}].hosts[{j}]"), c);
            }
        }
    }
}

fn validate_backend(b: &Value, at: &str, c: &mut Causes) {
    let svc = b.get("service").filter(|v| !v.is_null());
    let res = b.get("resource").filter(|v| !v.is_null());
    match (svc, res) {
        (Some(_), Some(_)) => c.invalid(at, "", "cannot set both service and resource backends"),
        (None, None) => c.invalid(at, "", "one backend (service or resource) must be specified"),
        (Some(s), None) => {
            if s.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                c.required(format!("{at}.service.name"));
            }
            let port = s.get("port").filter(|v| !v.is_null());
            let number = port.and_then(|p| p.get("number")).and_then(Value::as_i64);
            let name = port.and_then(|p| p.get("name")).and_then(Value::as_str).filter(|n| !n.is_empty());
            match (number, name) {
                (Some(_), Some(_)) => {
                    c.invalid(format!("{at}.service.port"), "", "cannot set both port name & port number")
                }
                (None, None) => c.required(format!("{at}.service.port")),
                (Some(n), None) if !(1..=65535).contains(&n) => {
                    c.invalid(format!("{at}.service.port.number"), n, "must be between 1 and 65535, inclusive")
                }
                _ => {}
            }
        }
        (None, Some(_)) => {}
    }
}

fn validate_host(h: &str, at: &str, c: &mut Causes) {
    if h.parse::<std::net::IpAddr>().is_ok() {
        c.invalid(at, h, "must be a DNS name, not an IP address");
        return;
    }
    let name = h.strip_prefix("*.").unwrap_or(h);
    if name.contains('*') {
        c.invalid(at, h, "a wildcard DNS-1123 subdomain must start with '*.' followed by a valid DNS subdomain");
    } else if let Some(e) = crate::validation::dns1123_subdomain_errors(name) {
        c.invalid(at, h, e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ing(name: &str, created: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "web", "creationTimestamp": created}, "spec": spec})
    }

    fn svc(name: &str) -> Value {
        json!({"service": {"name": name, "port": {"number": 80}}})
    }

    fn path(p: &str, ty: &str, to: &str) -> Value {
        json!({"path": p, "pathType": ty, "backend": svc(to)})
    }

    fn router() -> Router {
        let a = ing(
            "a",
            "2026-01-01T00:00:00Z",
            json!({"rules": [
                {"host": "foo.example.com", "http": {"paths": [
                    path("/", "Prefix", "root"), path("/foo", "Prefix", "foo"), path("/foo", "Exact", "foo-exact"),
                    path("/aaa/bbb", "Prefix", "aaa-bbb"), path("/aaa/bbb/", "Prefix", "aaa-bbb-slash")]}},
                {"host": "*.example.com", "http": {"paths": [path("/", "Prefix", "wild")]}},
                {"http": {"paths": [path("/any", "Prefix", "any")]}}
            ], "defaultBackend": svc("fallback")}),
        );
        // A later Ingress with the same host and path loses; its other paths join.
        let b = ing(
            "b",
            "2026-02-01T00:00:00Z",
            json!({"rules": [{"host": "foo.example.com", "http": {"paths": [
                path("/foo", "Prefix", "late"), path("/late", "ImplementationSpecific", "late")]}}],
                "defaultBackend": svc("late-default")}),
        );
        Router::build([&b, &a])
    }

    #[test]
    fn routing_follows_kubernetes_precedence() {
        let r = router();
        let to = |host: &str, p: &str| r.route(host, p).map(|b| b.service.clone()).unwrap_or_default();
        // (host, path, backend): the matching examples of the Ingress documentation and more.
        let table = [
            ("foo.example.com", "/", "root"),
            ("foo.example.com", "/foo", "foo-exact"),
            ("foo.example.com", "/foo/", "foo"),
            ("foo.example.com", "/foo/bar", "foo"),
            ("foo.example.com", "/foobar", "root"),
            ("foo.example.com", "/aaa/bbb", "aaa-bbb"),
            ("foo.example.com", "/aaa/bbb/", "aaa-bbb"),
            ("foo.example.com", "/aaa/bbbxyz", "root"),
            ("foo.example.com", "/aaa/bbb/ccc", "aaa-bbb"),
            ("foo.example.com", "/late/x", "late"),
            ("FOO.example.com:8080", "/foo?x=1", "foo-exact"),
            ("bar.example.com", "/anything", "wild"),
            ("a.b.example.com", "/any/x", "any"),
            ("example.com", "/x", "fallback"),
            ("other.org", "/any", "any"),
            ("other.org", "/", "fallback"),
        ];
        for (host, p, want) in table {
            assert_eq!(to(host, p), want, "{host}{p}");
        }
        assert_eq!(r.route("x", "/").unwrap().namespace, "web");
        assert!(Router::build([]).route("x", "/").is_none());
    }

    #[test]
    fn a_class_is_named_or_defaulted() {
        let named = json!({"spec": {"ingressClassName": "wasmorch"}});
        let other = json!({"spec": {"ingressClassName": "nginx"}});
        let none = json!({"spec": {}});
        let annotated = json!({"metadata": {"annotations": {"kubernetes.io/ingress.class": "wasmorch"}}, "spec": {}});
        assert!(is_ours(&named, false) && !is_ours(&other, true));
        assert!(is_ours(&none, true) && !is_ours(&none, false));
        assert!(is_ours(&annotated, false));
        let class = |name: &str, default: &str| json!({"metadata": {"name": name, "annotations": {DEFAULT_CLASS_ANNOTATION: default}}});
        assert!(is_default_class(&class("wasmorch", "true")));
        assert!(!is_default_class(&class("wasmorch", "false")) && !is_default_class(&class("nginx", "true")));
    }

    #[test]
    fn validation_names_each_bad_field() {
        let check = |spec: Value| {
            let mut c = Causes::default();
            validate(&spec, &mut c);
            c.0.into_iter().map(|c| c.field).collect::<Vec<_>>()
        };
        assert!(check(json!({"defaultBackend": svc("x")})).is_empty());
        assert_eq!(check(json!({})), ["spec"]);
        let bad = json!({"rules": [{"host": "10.0.0.1", "http": {"paths": [
            {"path": "foo", "pathType": "Prefix", "backend": svc("x")},
            {"path": "/a", "pathType": "Regex", "backend": svc("x")},
            {"path": "/a", "backend": svc("x")},
            {"path": "/a//b", "pathType": "Exact", "backend": {"service": {"name": "x", "port": {"number": 80, "name": "http"}}}},
            {"path": "/a", "pathType": "Exact"}]}},
            {"host": "a.*.com", "http": {"paths": [path("/", "Prefix", "x")]}}]});
        assert_eq!(
            check(bad),
            [
                "spec.rules[0].host",
                "spec.rules[0].http.paths[0].path",
                "spec.rules[0].http.paths[1].pathType",
                "spec.rules[0].http.paths[2].pathType",
                "spec.rules[0].http.paths[3].path",
                "spec.rules[0].http.paths[3].backend.service.port",
                "spec.rules[0].http.paths[4].backend",
                "spec.rules[1].host",
            ]
        );
        let hosts_of = ing("h", "", json!({"rules": [{"host": "a.com"}, {"host": "a.com"}, {}]}));
        assert_eq!(hosts(&hosts_of), ["a.com", "*"]);
    }
}
