//! Gateway API: the built-in GatewayClass, Gateway and HTTPRoute kinds; every node's proxy
//! serves the listeners of wasmorch's Gateways with the routes' matches, filters, weights
//! and timeouts; the controller writes the conditions the specification asks for.

mod common;

use common::edge::{app, app_of, certificate, curl_tls, exchange, request, tls_secret};
use common::{Cluster, apply, eventually, get_json};
use serde_json::Value;
use std::time::Duration;

fn gateway(http: u16, https: u16) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web}}
spec:
  gatewayClassName: wasmorch
  listeners:
    - {{name: http, port: {http}, protocol: HTTP}}
    - name: https
      port: {https}
      protocol: HTTPS
      hostname: secure.example.com
      tls: {{certificateRefs: [{{name: secure-cert}}]}}
"#
    )
}

const ROUTES: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split}
spec:
  parentRefs: [{name: web, sectionName: http}]
  hostnames: [split.example.com]
  rules:
    - backendRefs:
        - {name: stable, port: 80, weight: 90}
        - {name: canary, port: 80, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rules}
spec:
  parentRefs: [{name: web}]
  hostnames: [rules.example.com, secure.example.com]
  rules:
    - matches: [{headers: [{name: X-Canary, value: "yes"}]}]
      backendRefs: [{name: canary, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - type: URLRewrite
          urlRewrite: {hostname: rewritten.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /headers}}
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: X-Added, value: "1"}], remove: [X-Drop]}
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: X-Served-By, value: wasmorch}]}
      backendRefs: [{name: stable, port: 80}]
    - matches: [{path: {type: Exact, value: /moved}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {scheme: https, hostname: new.example.com, statusCode: 301}
    - matches: [{path: {value: /post}, method: POST}, {queryParams: [{name: to, value: other}]}]
      backendRefs: [{name: other, port: 80}]
    - matches: [{path: {value: /sleep}}]
      timeouts: {request: 300ms}
      backendRefs: [{name: stable, port: 80}]
    - backendRefs: [{name: stable, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken}
spec:
  parentRefs: [{name: web}]
  hostnames: [broken.example.com]
  rules:
    - backendRefs: [{name: nothing, port: 80}]
"#;

const CROSS: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross}
spec:
  parentRefs: [{name: web, sectionName: http}]
  hostnames: [cross.example.com]
  rules:
    - backendRefs: [{name: far, namespace: shared, port: 80}]
"#;

const GRANT: &str = r#"apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: routes-from-default, namespace: shared}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service, name: far}]
"#;

fn condition(conds: &Value, ty: &str) -> (String, String) {
    let c = conds.as_array().and_then(|a| a.iter().find(|c| c["type"] == ty));
    let s = |k: &str| c.and_then(|c| c[k].as_str()).unwrap_or("").to_string();
    (s("status"), s("reason"))
}

fn parent_condition(c: &Cluster, route: &str, ty: &str) -> (String, String) {
    get_json(c, &["httproute", route])
        .map(|r| condition(&r["status"]["parents"][0]["conditions"], ty))
        .unwrap_or_default()
}

#[test]
fn gateways_route_split_filter_and_report_status() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let address = common::node_address();
    let free = || std::net::TcpListener::bind(format!("{address}:0")).unwrap().local_addr().unwrap().port();
    let (http, https) = (free(), free());
    let c = Cluster::start_with(d, &["--node-address", &address]);
    for name in ["stable", "canary", "other"] {
        apply(&c, d, name, &app(name));
    }
    // The kinds are built in, and the class is wasmorch's and accepted.
    let accepted = eventually(Duration::from_secs(30), || {
        get_json(&c, &["gatewayclass", "wasmorch"])
            .is_some_and(|g| condition(&g["status"]["conditions"], "Accepted").0 == "True")
    });
    assert!(accepted, "the GatewayClass was not accepted: {}", c.log());
    let classes = c.ok(&["get", "gatewayclasses"]);
    let header: Vec<&str> = classes.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CONTROLLER", "ACCEPTED", "AGE"], "{classes}");
    assert!(classes.contains("wasmorch.io/gateway-controller") && classes.contains("True"), "{classes}");

    apply(&c, d, "secret", &tls_secret("secure-cert", &certificate("secure.example.com")));
    apply(&c, d, "gateway", &gateway(http, https));
    apply(&c, d, "routes", ROUTES);
    let front = format!("{address}:{http}");
    let ready = eventually(Duration::from_secs(60), || {
        ["stable", "canary", "other"].iter().all(|want| {
            let target = match *want {
                "stable" => "/",
                "canary" => "/?x",
                _ => "/?to=other",
            };
            let headers: &[(&str, &str)] = if *want == "canary" { &[("X-Canary", "yes")] } else { &[] };
            exchange(&front, "GET", "rules.example.com", target, headers)
                .is_ok_and(|(s, _, b)| s == 200 && app_of(&b) == *want)
        })
    });
    assert!(ready, "the Gateway never routed to all three apps: {}", c.log());

    // A 90/10 split over 2,000 requests lands within 3 % of the total of its weights.
    let mut canary = 0;
    for _ in 0..2000 {
        let (status, body) = request(&front, "split.example.com", "/").unwrap();
        assert_eq!(status, 200, "{body}");
        match app_of(&body).as_str() {
            "canary" => canary += 1,
            "stable" => {}
            other => panic!("the split reached {other}: {body}"),
        }
    }
    eprintln!("canary share: {canary}/2000");
    assert!((200i32 - canary).abs() <= 60, "canary answered {canary} of 2000 (want 200 ± 60)");

    // Matches: header, method, query; precedence puts them before the catch-all rule.
    let to = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let (s, _, b) = exchange(&front, method, "rules.example.com", path, headers).unwrap();
        (s, app_of(&b))
    };
    assert_eq!(to("GET", "/x", &[("x-canary", "yes")]), (200, "canary".into()));
    assert_eq!(to("GET", "/x", &[("x-canary", "no")]), (200, "stable".into()));
    assert_eq!(to("POST", "/post", &[]), (200, "other".into()));
    assert_eq!(to("GET", "/post", &[]), (200, "stable".into()));
    assert_eq!(to("GET", "/any?to=other", &[]), (200, "other".into()));
    // Rewrite: path prefix and host replaced, request headers set and removed, a response
    // header added.
    let (s, head, body) =
        exchange(&front, "GET", "rules.example.com", "/old/deep?q=1", &[("X-Drop", "gone"), ("X-Added", "0")]).unwrap();
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("path=/headers/deep?q=1"), "{body}");
    assert!(body.contains("authority: rewritten.example.com") && body.contains("x-added: 1"), "{body}");
    assert!(!body.contains("x-drop") && !body.contains("x-added: 0"), "{body}");
    assert!(head.to_ascii_lowercase().contains("x-served-by: wasmorch"), "{head}");
    // Redirect: scheme and host replaced, the path kept, the well-known port left out.
    let (s, head, _) = exchange(&front, "GET", &format!("rules.example.com:{http}"), "/moved", &[]).unwrap();
    assert_eq!(s, 301, "{head}");
    assert!(head.contains("https://new.example.com/moved"), "{head}");
    // Timeout: a backend slower than timeouts.request answers 504.
    let (s, _, body) = exchange(&front, "GET", "rules.example.com", "/sleep/3000", &[]).unwrap();
    assert_eq!(s, 504, "{body}");
    // No route for the host: 404; a backend that does not exist: 500.
    assert_eq!(request(&front, "unknown.org", "/").unwrap().0, 404);
    let (s, body) = request(&front, "broken.example.com", "/").unwrap();
    assert_eq!(s, 500, "{body}");

    // HTTPS: the listener's certificate, by its hostname; the route attached there too.
    let ca = d.join("secure.pem");
    let secret = get_json(&c, &["secret", "secure-cert"]).unwrap();
    let crt = secret["data"]["tls.crt"].as_str().unwrap();
    use base64::Engine;
    std::fs::write(&ca, base64::engine::general_purpose::STANDARD.decode(crt).unwrap()).unwrap();
    let served = eventually(Duration::from_secs(30), || {
        curl_tls(&address, https, "secure.example.com", &ca, true)
            .is_ok_and(|(v, b)| v == "2 200" && app_of(&b) == "stable")
    });
    assert!(served, "HTTPS listener: {:?}", curl_tls(&address, https, "secure.example.com", &ca, true));

    // Status: the Gateway programmed at the node's address, its listeners' attached routes;
    // each route accepted, and the broken one's references not resolved.
    let programmed = eventually(Duration::from_secs(30), || {
        get_json(&c, &["gateway", "web"]).is_some_and(|g| {
            condition(&g["status"]["conditions"], "Programmed").0 == "True"
                && g["status"]["addresses"][0]["value"] == address
                && g["status"]["listeners"][0]["attachedRoutes"] == 3
                && g["status"]["listeners"][1]["attachedRoutes"] == 1
        })
    });
    assert!(programmed, "Gateway status: {:?}", get_json(&c, &["gateway", "web"]).map(|g| g["status"].clone()));
    for r in ["split", "rules"] {
        let ok = eventually(Duration::from_secs(20), || {
            parent_condition(&c, r, "Accepted") == ("True".into(), "Accepted".into())
                && parent_condition(&c, r, "ResolvedRefs").0 == "True"
        });
        assert!(ok, "HTTPRoute {r}: {:?}", get_json(&c, &["httproute", r]).map(|g| g["status"].clone()));
    }
    let unresolved = eventually(Duration::from_secs(20), || {
        parent_condition(&c, "broken", "ResolvedRefs") == ("False".into(), "BackendNotFound".into())
    });
    assert!(unresolved, "{:?}", get_json(&c, &["httproute", "broken"]).map(|g| g["status"].clone()));
    // Creating the missing Service resolves it.
    apply(&c, d, "nothing", &app("nothing"));
    let resolved = eventually(Duration::from_secs(20), || parent_condition(&c, "broken", "ResolvedRefs").0 == "True");
    assert!(resolved, "{:?}", get_json(&c, &["httproute", "broken"]).map(|g| g["status"].clone()));

    // Another namespace's Service: refused until a ReferenceGrant there allows it.
    apply(&c, d, "shared", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shared}\n");
    let far = d.join("far.yaml");
    std::fs::write(&far, app("far")).unwrap();
    c.ok(&["apply", "-n", "shared", "-f", far.to_str().unwrap()]);
    apply(&c, d, "cross", CROSS);
    let refused = eventually(Duration::from_secs(20), || {
        parent_condition(&c, "cross", "ResolvedRefs") == ("False".into(), "RefNotPermitted".into())
    });
    assert!(refused, "{:?}", get_json(&c, &["httproute", "cross"]).map(|g| g["status"].clone()));
    let (s, body) = request(&front, "cross.example.com", "/").unwrap();
    assert_eq!(s, 500, "{body}");
    apply(&c, d, "grant", GRANT);
    let granted = eventually(Duration::from_secs(30), || {
        request(&front, "cross.example.com", "/").is_ok_and(|(s, b)| s == 200 && app_of(&b) == "far")
            && parent_condition(&c, "cross", "ResolvedRefs").0 == "True"
    });
    assert!(granted, "{:?}", get_json(&c, &["httproute", "cross"]).map(|g| g["status"].clone()));

    // kubectl's columns, as the upstream definitions print them.
    let table = c.ok(&["get", "gateway"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"], "{table}");
    let row = table.lines().nth(1).unwrap();
    assert!(row.contains("wasmorch") && row.contains(&address) && row.contains("True"), "{table}");
    let routes = c.ok(&["get", "httproutes"]);
    assert!(
        routes.starts_with("NAME") && routes.contains("HOSTNAMES") && routes.contains("split.example.com"),
        "{routes}"
    );

    // Bad input is refused naming the field; nothing is stored.
    let bad = d.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad}\nspec:\n  rules:\n    - matches: [{path: {type: Glob, value: /x}}]\n",
    )
    .unwrap();
    let o = c.cli(&["apply", "-f", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("spec.rules[0].matches[0].path.type"), "{err}");
    assert!(c.cli(&["get", "httproute", "bad"]).stderr.starts_with(b"Error from server (NotFound)"));

    // Deleting the Gateway closes its listeners.
    c.ok(&["delete", "gateway", "web"]);
    let closed = eventually(Duration::from_secs(20), || std::net::TcpStream::connect(&front).is_err());
    assert!(closed, "the Gateway's listener stayed open after it was deleted");
}

/// The example the README walks through (`manifests/gateway.yaml` in front of
/// `manifests/hello.yaml`), applied and read with the real kubectl.
#[test]
fn the_example_gateway_serves_hello_and_its_canary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let address = common::node_address();
    let c = Cluster::start_with(d, &["--node-address", &address]);
    let m = common::manifests_dir();
    let files = [m.join("hello.yaml"), m.join("gateway.yaml")];
    let kubectl = common::kubectl_available();
    if !kubectl {
        assert!(std::env::var_os("WASMORCH_REQUIRE_PEERS").is_none(), "kubectl is required");
    }
    // kubectl when there is one, else the built-in client: the same requests.
    let run = |args: &[&str]| -> String {
        let o = if kubectl { c.kubectl(args) } else { c.cli(args) };
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{args:?}: {out}\n{err}");
        out.into_owned()
    };
    let out = run(&["apply", "-f", files[0].to_str().unwrap(), "-f", files[1].to_str().unwrap()]);
    assert!(out.contains("gateway.gateway.networking.k8s.io/web created"), "{out}");
    assert!(out.contains("httproute.gateway.networking.k8s.io/hello created"), "{out}");
    let front = format!("{address}:8080");
    let ready = eventually(Duration::from_secs(60), || {
        exchange(&front, "GET", "hello.localhost", "/", &[("X-Canary", "always")])
            .is_ok_and(|(s, _, b)| s == 200 && b.contains("pod=hello-canary-"))
    });
    assert!(ready, "the example Gateway never served the canary: {}", c.log());
    // The canary's pod may be Ready before the main Deployment's: its Service may still have
    // no endpoints for a moment (503), so this is waited for too.
    let mut last = None;
    let greeted = eventually(Duration::from_secs(60), || {
        let r = exchange(&front, "GET", "hello.localhost", "/v1/greeting", &[]);
        let ok = r.as_ref().is_ok_and(|(s, _, body)| *s == 200 && body.contains("path=/greeting"));
        last = r.ok().map(|(s, _, body)| (s, body));
        ok
    });
    assert!(greeted, "{last:?}");
    let (s, head, _) = exchange(&front, "GET", "hello.localhost:8080", "/home", &[]).unwrap();
    assert!(s == 302 && head.contains("http://hello.localhost:8080/"), "{head}");
    let programmed = eventually(Duration::from_secs(30), || run(&["get", "gateway", "web"]).contains("True"));
    assert!(programmed, "{}", run(&["get", "gateway", "web", "-o", "yaml"]));
    let both = run(&["get", "gateway,httproute"]);
    let lines: Vec<&str> = both.lines().collect();
    let words = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(words(lines[0]), ["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"], "{both}");
    assert_eq!(words(lines[1])[..4], ["gateway.gateway.networking.k8s.io/web", "wasmorch", &address, "True"], "{both}");
    let routes = lines.iter().position(|l| l.starts_with("NAME") && l.contains("HOSTNAMES")).expect(&both);
    assert_eq!(
        words(lines[routes + 1])[..2],
        ["httproute.gateway.networking.k8s.io/hello", "[\"hello.localhost\"]"],
        "{both}"
    );

    // A listener on hello's node port is refused: the port stays the Service's alone.
    let listeners = r#"{"spec":{"listeners":[{"name":"http","port":8080,"protocol":"HTTP"},{"name":"taken","port":30080,"protocol":"HTTP"}]}}"#;
    run(&["patch", "gateway", "web", "--type=merge", "-p", listeners]);
    let refused = eventually(Duration::from_secs(20), || {
        get_json(&c, &["gateway", "web"]).is_some_and(|g| {
            condition(&g["status"]["listeners"][1]["conditions"], "Accepted")
                == ("False".into(), "PortUnavailable".into())
        })
    });
    assert!(refused, "{:?}", get_json(&c, &["gateway", "web"]).map(|g| g["status"].clone()));
    for _ in 0..20 {
        let (s, body) = request(&format!("{address}:30080"), "no-route.example", "/").unwrap();
        assert!(s == 200 && body.contains("Hello from wasmorch"), "{s} {body}");
    }
}
