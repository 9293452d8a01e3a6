use super::status::{World, gateway_status, route_status};
use super::*;
use serde_json::json;

fn gateway(name: &str, listeners: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "web", "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 2},
        "spec": {"gatewayClassName": "wasmorch", "listeners": listeners}})
}

fn route(name: &str, created: &str, hostnames: Value, rules: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "web", "creationTimestamp": created, "generation": 1},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": hostnames, "rules": rules}})
}

fn to(svc: &str) -> Value {
    json!([{"name": svc, "port": 80}])
}

fn no_labels(_: &str) -> Option<BTreeMap<String, String>> {
    None
}

fn every_service(_: &str, _: &str) -> bool {
    true
}

fn table() -> Table {
    let gw = gateway("gw", json!([{"name": "http", "port": 80, "protocol": "HTTP"}]));
    let a = route(
        "a",
        "2026-01-01T00:00:00Z",
        json!(["foo.example.com"]),
        json!([
            {"matches": [{"path": {"type": "Exact", "value": "/exact"}}], "backendRefs": to("exact")},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": to("api")},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "X-Canary", "value": "yes"}]}],
                "backendRefs": to("canary")},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}, "method": "POST"}], "backendRefs": to("post")},
            {"matches": [{"path": {"type": "RegularExpression", "value": "/v[0-9]+/.*"}}], "backendRefs": to("regex")},
            {"backendRefs": to("root")},
        ]),
    );
    let b = route("b", "2026-02-01T00:00:00Z", json!(["*.example.com"]), json!([{"backendRefs": to("wild")}]));
    let c = route(
        "c",
        "2026-03-01T00:00:00Z",
        json!([]),
        json!([
            {"matches": [{"path": {"value": "/api"}}], "backendRefs": to("any-api")},
            {"matches": [{"path": {"value": "/api"}, "queryParams": [{"name": "v", "value": "2"}]}], "backendRefs": to("any-api-v2")},
        ]),
    );
    // A later route with the same match as `a`'s loses to it.
    let d = route(
        "d",
        "2026-04-01T00:00:00Z",
        json!(["foo.example.com"]),
        json!([{"matches": [{"path": {"type": "Exact", "value": "/exact"}}], "backendRefs": to("late")}]),
    );
    let refs = Refs { service_exists: &every_service, grants: &Grants::default() };
    Table::build([&gw], [&d, &c, &b, &a], &no_labels, &refs)
}

fn service_of(t: &Table, method: &str, host: &str, target: &str, headers: &[(&str, &str)]) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let h = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.to_string());
    let req = Request { host, method, path, query, headers: &h };
    match t.route(80, &req) {
        None => "404".into(),
        Some(hit) => hit.rule.backends[0].backend.as_ref().map(|b| b.service.clone()).unwrap_or_default(),
    }
}

#[test]
fn routing_follows_the_specification_precedence() {
    let t = table();
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("GET", "foo.example.com", "/exact", &[], "exact"),
        ("GET", "foo.example.com", "/exact/x", &[], "root"),
        ("GET", "foo.example.com", "/api", &[], "api"),
        ("GET", "foo.example.com", "/api/x", &[], "api"),
        ("GET", "foo.example.com", "/apix", &[], "root"),
        ("GET", "foo.example.com", "/api/x", &[("x-canary", "yes")], "canary"),
        ("GET", "foo.example.com", "/api/x", &[("x-canary", "no")], "api"),
        ("POST", "foo.example.com", "/x", &[], "post"),
        // A longer prefix wins over a method.
        ("POST", "foo.example.com", "/api/x", &[], "api"),
        ("GET", "foo.example.com", "/v2/things", &[], "regex"),
        ("GET", "foo.example.com", "/x", &[], "root"),
        ("GET", "FOO.example.com.", "/exact", &[], "exact"),
        // A hostname match beats a longer path on a route without hostnames.
        ("GET", "bar.example.com", "/api", &[], "wild"),
        ("GET", "a.b.example.com", "/", &[], "wild"),
        ("GET", "example.com", "/api", &[], "any-api"),
        ("GET", "other.org", "/api/v?v=2", &[], "any-api-v2"),
        ("GET", "other.org", "/api/v?v=3", &[], "any-api"),
        ("GET", "other.org", "/", &[], "404"),
    ];
    for (method, host, target, headers, want) in cases {
        assert_eq!(service_of(&t, method, host, target, headers), *want, "{method} {host}{target} {headers:?}");
    }
    assert!(t.route(81, &Request { host: "x", method: "GET", path: "/", query: "", headers: &|_| None }).is_none());
}

#[test]
fn routes_attach_by_parent_namespace_and_hostname() {
    let gw = gateway(
        "gw",
        json!([
            {"name": "wild", "port": 80, "protocol": "HTTP", "hostname": "*.example.com"},
            {"name": "all", "port": 8080, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}},
            {"name": "tcp", "port": 9000, "protocol": "TCP"},
        ]),
    );
    let (ls, refused) = listeners(&gw);
    assert_eq!(ls.len(), 2);
    assert_eq!(refused[0].0, "tcp");
    assert_eq!(refused[0].1, "UnsupportedProtocol");
    let r = |ns: &str, hosts: Value, parent: Value| json!({"metadata": {"name": "r", "namespace": ns}, "spec": {"parentRefs": [parent], "hostnames": hosts}});
    let try_attach = |route: &Value, l: &Listener| attach(route, &parent_refs(route)[0], l, &no_labels);
    let same = r("web", json!(["a.example.com", "other.org"]), json!({"name": "gw"}));
    assert_eq!(try_attach(&same, &ls[0]), Ok(vec![Some("a.example.com".into())]));
    assert_eq!(try_attach(&same, &ls[1]), Ok(vec![Some("a.example.com".into()), Some("other.org".into())]));
    let elsewhere = r("team", json!([]), json!({"name": "gw", "namespace": "web"}));
    assert_eq!(try_attach(&elsewhere, &ls[0]), Err(NotAttached::NotAllowedByListeners));
    assert_eq!(try_attach(&elsewhere, &ls[1]), Ok(vec![None]));
    let section = r("web", json!([]), json!({"name": "gw", "sectionName": "all"}));
    assert_eq!(try_attach(&section, &ls[0]), Err(NotAttached::NoMatchingParent));
    let no_host = r("web", json!(["other.org"]), json!({"name": "gw"}));
    assert_eq!(try_attach(&no_host, &ls[0]), Err(NotAttached::NoMatchingListenerHostname));
    // Wildcards intersect to the more specific name.
    assert_eq!(
        intersect(Some("*.example.com"), &["*.a.example.com".into()]),
        Some(vec![Some("*.a.example.com".into())])
    );
    assert_eq!(
        intersect(Some("*.a.example.com"), &["*.example.com".into()]),
        Some(vec![Some("*.a.example.com".into())])
    );
    assert_eq!(intersect(Some("x.org"), &["*.example.com".into()]), None);
    assert!(host_matches("*.example.com", "a.b.example.com") && !host_matches("*.example.com", "example.com"));
    assert!(!host_matches("*.example.com", "aexample.com"));
}

#[test]
fn weights_spread_requests_in_proportion() {
    let b = |w: u32, name: &str| WeightedBackend {
        backend: Some(Backend { namespace: "n".into(), service: name.into(), port: PortRef::Number(80) }),
        weight: w,
        filters: vec![],
    };
    let list = [b(90, "stable"), b(10, "canary"), b(0, "off")];
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in 0..1000u64 {
        let picked = pick(&list, r).unwrap();
        *counts.entry(picked.backend.as_ref().unwrap().service.clone()).or_default() += 1;
    }
    assert_eq!(counts.get("stable"), Some(&900));
    assert_eq!(counts.get("canary"), Some(&100));
    assert_eq!(counts.get("off"), None);
    assert!(pick(&[b(0, "x")], 7).is_none() && pick(&[], 1).is_none());
}

#[test]
fn rewrites_and_redirects_replace_what_they_name() {
    let full = PathChange::Full("/new".into());
    let prefix = |p: &str| PathChange::Prefix(p.into());
    assert_eq!(changed_path(&full, Some("/old"), "/old/x"), "/new");
    assert_eq!(changed_path(&prefix("/v2"), Some("/v1"), "/v1/items"), "/v2/items");
    assert_eq!(changed_path(&prefix("/v2/"), Some("/v1/"), "/v1/items"), "/v2/items");
    assert_eq!(changed_path(&prefix("/"), Some("/api"), "/api/items"), "/items");
    assert_eq!(changed_path(&prefix("/"), Some("/api"), "/api"), "/");
    assert_eq!(changed_path(&prefix("/x"), Some("/"), "/items"), "/x/items");
    let r = Redirect { scheme: Some("https".into()), status: 301, ..Default::default() };
    assert_eq!(location(&r, "http", "a.example.com:8080", 8080, None, "/p", "q=1"), "https://a.example.com/p?q=1");
    let r = Redirect { hostname: Some("b.example.com".into()), path: Some(prefix("/new")), ..Default::default() };
    assert_eq!(
        location(&r, "http", "a.example.com:8080", 8080, Some("/old"), "/old/x", ""),
        "http://b.example.com:8080/new/x"
    );
    let r = Redirect { port: Some(80), ..Default::default() };
    assert_eq!(location(&r, "http", "a.example.com:8080", 8080, None, "/", ""), "http://a.example.com/");
    let f = filters(Some(&json!([{"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}]))).unwrap();
    assert_eq!(f, [Filter::Redirect(Redirect { scheme: Some("https".into()), status: 302, ..Default::default() })]);
    assert!(filters(Some(&json!([{"type": "RequestMirror"}]))).unwrap_err().contains("RequestMirror"));
}

#[test]
fn status_reports_acceptance_references_and_conflicts() {
    let gw = gateway(
        "gw",
        json!([
            {"name": "http", "port": 80, "protocol": "HTTP"},
            {"name": "https", "port": 443, "protocol": "HTTPS", "tls": {"certificateRefs": [{"name": "missing"}]}},
            {"name": "clash", "port": 80, "protocol": "HTTPS", "tls": {"certificateRefs": [{"name": "cert"}]}},
            {"name": "taken", "port": 30080, "protocol": "HTTP"},
        ]),
    );
    let good = route("good", "2026-01-01T00:00:00Z", json!([]), json!([{"backendRefs": to("there")}]));
    let bad = route("bad", "2026-01-01T00:00:00Z", json!([]), json!([{"backendRefs": to("gone")}]));
    let gateways = [gw.clone()];
    let routes = [good.clone(), bad.clone()];
    let exists = |_: &str, name: &str| name != "gone";
    let cert = |_: &str, name: &str| if name == "cert" { Ok(()) } else { Err("not found".to_string()) };
    let addresses = ["10.0.0.1".to_string()];
    let w = World {
        gateways: &gateways,
        routes: &routes,
        addresses: &addresses,
        namespace_labels: &no_labels,
        refs: Refs { service_exists: &exists, grants: &Grants::default() },
        port_taken: &|p| p == 30080,
        certificate: &cert,
        now: "T0",
    };
    let s = gateway_status(&gw, &w);
    let cond = |conds: &Value, ty: &str| {
        let c = conds.as_array().unwrap().iter().find(|c| c["type"] == ty).unwrap();
        (c["status"].as_str().unwrap().to_string(), c["reason"].as_str().unwrap().to_string())
    };
    assert_eq!(s["addresses"], json!([{"type": "IPAddress", "value": "10.0.0.1"}]));
    assert_eq!(cond(&s["conditions"], "Programmed"), ("True".into(), "Programmed".into()));
    assert_eq!(cond(&s["conditions"], "Accepted"), ("True".into(), "ListenersNotValid".into()));
    let l = |i: usize| &s["listeners"][i];
    assert_eq!(l(0)["attachedRoutes"], 2);
    assert_eq!(cond(&l(0)["conditions"], "Programmed").0, "True");
    assert_eq!(cond(&l(1)["conditions"], "ResolvedRefs"), ("False".into(), "InvalidCertificateRef".into()));
    assert_eq!(cond(&l(2)["conditions"], "Conflicted"), ("True".into(), "ProtocolConflict".into()));
    assert_eq!(cond(&l(3)["conditions"], "Accepted"), ("False".into(), "PortUnavailable".into()));
    assert_eq!(cond(&l(3)["conditions"], "Programmed").0, "False");
    assert_eq!(s["listeners"][0]["conditions"][0]["observedGeneration"], 2);

    let rs = route_status(&good, &w);
    assert_eq!(rs["parents"][0]["controllerName"], CONTROLLER);
    assert_eq!(cond(&rs["parents"][0]["conditions"], "Accepted"), ("True".into(), "Accepted".into()));
    assert_eq!(cond(&rs["parents"][0]["conditions"], "ResolvedRefs"), ("True".into(), "ResolvedRefs".into()));
    let rs = route_status(&bad, &w);
    assert_eq!(cond(&rs["parents"][0]["conditions"], "ResolvedRefs"), ("False".into(), "BackendNotFound".into()));
    // Unchanged, a second pass keeps the transition times: nothing to write.
    let again = json!({"metadata": bad["metadata"], "spec": bad["spec"], "status": rs});
    let w2 = World { now: "T1", ..w };
    assert_eq!(route_status(&again, &w2), again["status"]);
    // Another controller's entries stay.
    let theirs = json!({"parentRef": {"name": "other"}, "controllerName": "example.com/x", "conditions": []});
    let mixed = json!({"metadata": good["metadata"], "spec": good["spec"], "status": {"parents": [theirs]}});
    assert_eq!(route_status(&mixed, &w2)["parents"].as_array().unwrap().len(), 2);
}

#[test]
fn built_in_definitions_are_valid_and_admit_an_example() {
    for crd in crds::all() {
        let mut causes = Vec::new();
        crate::custom::validate_definition(&crd, &[], &mut causes);
        assert!(causes.is_empty(), "{}: {causes:?}", crate::object::name(&crd));
    }
}

#[test]
fn reference_grants_open_other_namespaces_to_what_they_name() {
    let grant = json!({"metadata": {"name": "g", "namespace": "shared"}, "spec": {
        "from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "web"}],
        "to": [{"group": "", "kind": "Service", "name": "api"}, {"group": "", "kind": "Secret"}]}});
    let grants = Grants::new([&grant]);
    let refs = Refs { service_exists: &every_service, grants: &grants };
    let to = |name: &str, ns: &str| json!({"name": name, "namespace": ns, "port": 80});
    assert!(backend_ref("web", &to("api", "shared"), &refs).is_ok());
    assert!(matches!(backend_ref("web", &to("db", "shared"), &refs), Err(BadRef::RefNotPermitted(_))));
    assert!(matches!(backend_ref("team", &to("api", "shared"), &refs), Err(BadRef::RefNotPermitted(_))));
    assert!(matches!(backend_ref("web", &to("api", "other"), &refs), Err(BadRef::RefNotPermitted(_))));
    let none = Grants::default();
    let refs = Refs { service_exists: &every_service, grants: &none };
    assert!(backend_ref("web", &to("api", "web"), &refs).is_ok(), "the same namespace needs no grant");
    assert!(matches!(
        backend_ref("web", &json!({"name": "x", "kind": "Bucket", "port": 1}), &refs),
        Err(BadRef::InvalidKind(_))
    ));
    assert!(matches!(backend_ref("web", &json!({"name": "x"}), &refs), Err(BadRef::BackendNotFound(_))));
    // Grants name the referring kind: a Gateway's certificate is not an HTTPRoute's.
    assert!(!grants.allows((GROUP, "Gateway", "web"), ("", "Secret", "shared", "cert")));
    assert!(grants.allows((GROUP, "HTTPRoute", "web"), ("", "Secret", "shared", "cert")));
}

#[test]
fn what_one_route_can_make_a_node_hold_is_bounded() {
    let gw = gateway("gw", json!([{"name": "http", "port": 80, "protocol": "HTTP"}]));
    // 16 rules of 64 matches: only MAX_MATCHES are served, and the status says so.
    let rule = json!({"matches": (0..64).map(|i| json!({"path": {"type": "Exact", "value": format!("/{i}")}})).collect::<Vec<_>>(),
        "backendRefs": to("x")});
    let big = route("big", "2026-01-01T00:00:00Z", json!([]), Value::Array(vec![rule; 16]));
    let refs = Refs { service_exists: &every_service, grants: &Grants::default() };
    let served: usize = rules(&big, &refs).iter().map(|(_, m)| m.len()).sum();
    assert_eq!(served, MAX_MATCHES);
    assert!(status::route_problems(&big)[0].contains("1024 matches"));
    // Many such routes: the port's table stops at MAX_ENTRIES, the oldest routes kept.
    let many: Vec<Value> = (0..200)
        .map(|i| {
            let mut r = route(
                &format!("r{i:03}"),
                &format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60),
                json!([]),
                big["spec"]["rules"].clone(),
            );
            r["spec"]["hostnames"] = json!([format!("h{i}.example.com")]);
            r
        })
        .collect();
    let t = Table::build([&gw], many.iter().rev(), &no_labels, &refs);
    assert!(t.truncated);
    assert_eq!(t.ports[&80].len(), MAX_ENTRIES);
    let served =
        |host: &str| t.route(80, &Request { host, method: "GET", path: "/3", query: "", headers: &|_| None }).is_some();
    assert!(served("h0.example.com"), "the oldest route is served");
    assert!(!served("h199.example.com"), "the newest is left out");
}

#[test]
fn the_oldest_gateway_decides_a_shared_port_s_protocol() {
    let older = json!({"metadata": {"name": "a", "namespace": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"listeners": [{"name": "s", "port": 8443, "protocol": "HTTPS", "tls": {"certificateRefs": [{"name": "c"}]}}]}});
    let newer = json!({"metadata": {"name": "b", "namespace": "web", "creationTimestamp": "2026-02-01T00:00:00Z"},
        "spec": {"listeners": [{"name": "h", "port": 8443, "protocol": "HTTP"}]}});
    let refs = Refs { service_exists: &every_service, grants: &Grants::default() };
    for order in [[&older, &newer], [&newer, &older]] {
        let t = Table::build(order, [], &no_labels, &refs);
        assert_eq!(t.ports[&8443].protocol, Some(Protocol::Https));
    }
}
