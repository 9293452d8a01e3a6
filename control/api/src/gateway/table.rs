//! The routing table: every rule attached to a port's listeners, sorted once by the
//! precedence in the module's comment, so a request takes the first entry that matches; and
//! what a rule does with a request (a backend by weight, a changed path, a redirect).

use super::*;

#[derive(Debug, Clone)]
struct Entry {
    hostname: Option<String>,
    m: Match,
    rule: Arc<Rule>,
    /// Where it stands in the precedence order.
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

/// The order objects claim things in: creationTimestamp, then namespace/name.
pub(super) fn age_key(r: &Value) -> (String, String, String) {
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

impl PortTable {
    /// How many (hostname, match) entries the port holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        // Oldest Gateway first, as the status's conflict rule orders them.
        let mut gateways: Vec<&Value> = gateways.into_iter().collect();
        gateways.sort_by_key(|g| age_key(g));
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
        routes.sort_by_key(|r| age_key(r));
        for route in routes {
            let parents = parent_refs(route);
            let compiled = rules(route, refs);
            let age = age_key(route);
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
