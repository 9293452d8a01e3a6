//! NetworkPolicy across machines: a table of policies, each checked with real traffic
//! between pods on the same and on different machines (sockets and `wasi:http`) and from
//! outside through a node port.

mod common;

use common::net::Net;
use common::netns::available;
use common::{eventually, workloads};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Namespaces `np` and `friends` (labelled `team: friends`), and in `np` the servers, pinned
/// to n2: `web` (HTTP, NodePort 30081) and `db` (tcp-echo), each behind a Service.
fn policy_world(hello: &str, echo: &str) -> String {
    let server = |name: &str, image: &str, port_name: &str, port: u16, service: &str| {
        format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: np}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {{kubernetes.io/hostname: n2}}
      containers:
        - {{name: main, image: file://{image}, ports: [{{name: {port_name}, containerPort: {port}}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: np}}
spec:
  selector: {{app: {name}}}
{service}
"
        )
    };
    let namespaces = "apiVersion: v1
kind: Namespace
metadata: {name: np}
---
apiVersion: v1
kind: Namespace
metadata: {name: friends, labels: {team: friends}}
";
    [
        namespaces.to_string(),
        server(
            "web",
            hello,
            "http",
            8080,
            "  type: NodePort\n  ports: [{name: http, port: 80, targetPort: http, nodePort: 30081}]",
        ),
        server("db", echo, "echo", 7000, "  ports: [{name: tcp, port: 7000, targetPort: echo}]"),
    ]
    .join("---\n")
}

/// A socket and `wasi:http` client on every node, in namespace `NS`.
const CLIENTS: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: client, namespace: NS}
spec:
  selector: {matchLabels: {role: client}}
  template:
    metadata: {labels: {role: client}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - {name: main, image: file://DEMO, ports: [{containerPort: 8080}]}
";

/// Pods of all namespaces with a label: `ns/name` → (node, pod IP, ready).
fn pods_everywhere(net: &Net, selector: &str) -> BTreeMap<String, (String, String, bool)> {
    let Some(out) = net.get(&["get", "pods", "-A", "-l", selector, "-o", "json"]) else { return BTreeMap::new() };
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready =
                p["status"]["containerStatuses"].as_array().is_some_and(|c| c.iter().all(|c| c["ready"] == true));
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            let key = format!("{}/{}", s(&p["metadata"]["namespace"]), s(&p["metadata"]["name"]));
            (key, (s(&p["spec"]["nodeName"]), s(&p["status"]["podIP"]), ready))
        })
        .collect()
}

#[test]
fn network_policies_judge_sockets_wasi_http_and_node_ports_on_every_machine() {
    if !available() {
        return;
    }
    let net = Net::start("np", 2);
    let w = workloads();
    let path = |f: &str| w.join(f).display().to_string();
    net.apply(&policy_world(&path("hello_http.wasm"), &path("tcp-echo.wasm")));
    for ns in ["np", "friends"] {
        net.apply(&CLIENTS.replace("NS", ns).replace("DEMO", &path("sdk_demo.wasm")));
    }
    let settled = eventually(Duration::from_secs(90), || {
        let all = pods_everywhere(&net, "role=client");
        let servers = pods_everywhere(&net, "app in (web,db)");
        all.len() == 4 && servers.len() == 2 && all.values().chain(servers.values()).all(|p| p.2)
    });
    assert!(settled, "{:?} {:?}", pods_everywhere(&net, "role=client"), pods_everywhere(&net, "app in (web,db)"));
    let clients = pods_everywhere(&net, "role=client");
    let web_ip = pods_everywhere(&net, "app=web").into_values().next().unwrap().1;
    let svc_ip = |name: &str| {
        let v: Value =
            serde_json::from_str(&net.get(&["get", "svc", "-n", "np", name, "-o", "json"]).unwrap()).unwrap();
        v["spec"]["clusterIP"].as_str().unwrap().to_string()
    };
    let (web, db) = (svc_ip("web"), svc_ip("db"));

    // What each client (namespace, node) reaches: the web Service by name and by cluster
    // address and the web pod by its address (wasi:http), the db Service over a socket; and
    // what the web NodePort answers from the control plane's machine and from machine 1.
    let observe = || {
        let mut seen = Vec::new();
        for (key, (node, ip, _)) in &clients {
            let ns = key.split('/').next().unwrap();
            let i: usize = node[1..].parse().unwrap();
            let urls = [
                format!("http://{ip}:8080/call/web.np/"),
                format!("http://{ip}:8080/fetch?http://{web}/"),
                format!("http://{ip}:8080/fetch?http://{web_ip}:8080/"),
                format!("http://{ip}:8080/connect?{db}:7000"),
                format!("http://{ip}:8080/connect?db.np.svc.cluster.local:7000"),
            ];
            let got = net.m.get_all(i, &urls);
            let mark = |ok: bool| if ok { "+" } else { "-" };
            seen.push(format!(
                "{ns}@{node}:name{}ip{}pod{}sock{}",
                mark(got[0].0 == 200),
                mark(got[1] == (200, "fetched: 200".into())),
                mark(got[2] == (200, "fetched: 200".into())),
                // A socket to the cluster address, and to the Service's name (a cluster
                // name lookup): the same answer.
                mark(got[3] == (200, "connected: ping".into()) && got[4] == got[3]),
            ));
        }
        seen.sort();
        let node_port = format!("http://{}:30081/", net.m.addrs[2]);
        for i in [0, 1] {
            let got = net.m.get_all(i, std::slice::from_ref(&node_port));
            seen.push(format!("nodeport-from-{i}{}", if got[0].0 == 200 { "+" } else { "-" }));
        }
        seen.join(" ")
    };
    let expect = |np: &str, friends: &str, from0: bool, from1: bool| {
        let mut want = Vec::new();
        for ns in ["friends", "np"] {
            for n in ["n1", "n2"] {
                let m: Vec<char> = (if ns == "np" { np } else { friends }).chars().collect();
                want.push(format!("{ns}@{n}:name{}ip{}pod{}sock{}", m[0], m[1], m[2], m[3]));
            }
        }
        want.push(format!("nodeport-from-0{}", if from0 { "+" } else { "-" }));
        want.push(format!("nodeport-from-1{}", if from1 { "+" } else { "-" }));
        want.join(" ")
    };
    let check = |what: &str, want: String| {
        let mut last = String::new();
        let ok = eventually(Duration::from_secs(30), || {
            last = observe();
            last == want
        });
        assert!(ok, "{what}:\n want {want}\n  got {last}");
    };
    let policy = |name: &str, spec: &str| {
        net.apply(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: np}}\nspec:\n{spec}"
        ))
    };

    check("no policy: everything open", expect("++++", "++++", true, true));

    policy("deny", "  podSelector: {}\n  policyTypes: [Ingress]\n");
    check("default deny in np", expect("----", "----", false, false));
    let table = net.get(&["get", "netpol", "-n", "np"]).unwrap();
    assert!(table.starts_with("NAME") && table.contains("POD-SELECTOR") && table.contains("<none>"), "{table}");

    policy(
        "friends",
        "  podSelector: {matchExpressions: [{key: app, operator: In, values: [web, db]}]}\n  ingress:\n    - from: [{namespaceSelector: {matchLabels: {team: friends}}}]\n",
    );
    check("allowed from a namespace", expect("----", "++++", false, false));

    policy(
        "db-clients",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n    - from: [{podSelector: {matchLabels: {role: client}}}]\n      ports: [{port: echo}]\n",
    );
    check("a named port for the pods of np", expect("---+", "++++", false, false));

    let m1 = net.m.addrs[1].clone();
    policy(
        "outside",
        &format!(
            "  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n    - from: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [{m1}/32]}}}}]\n"
        ),
    );
    check("an ipBlock with except, by NodePort", expect("---+", "++++", true, false));

    net.apply(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: quiet, namespace: friends}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n",
    );
    check("egress denied at the source", expect("---+", "----", true, false));

    for (ns, name) in [("friends", "quiet"), ("np", "outside"), ("np", "db-clients"), ("np", "friends"), ("np", "deny")]
    {
        net.get(&["delete", "netpol", "-n", ns, name]).expect("delete");
    }
    check("all deleted: open again", expect("++++", "++++", true, true));
}
