//! Who may do what: pods' service-account tokens and RBAC bindings.

use super::*;

/// A pod's projected service-account token: the files Kubernetes puts at
/// `/var/run/secrets/kubernetes.io/serviceaccount/`, `KUBERNETES_SERVICE_HOST/PORT`, and a
/// token that reaches the API through the `kubernetes` Service (TLS verified with the pod's
/// `ca.crt`), limited by RBAC, and refused once the pod is gone. `kubectl create sa|token`.
#[test]
fn pods_reach_the_api_with_their_service_account_token() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A Service range of its own: the `kubernetes` Service takes the first address of it.
    let prefix = common::pod_ip_prefix();
    let service_cidr = format!("{prefix}.0.0/16");
    let c = Cluster::start_with(
        dir.path(),
        &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr(), "--service-cidr", &service_cidr],
    );
    assert_eq!(ok(&c, &["create", "serviceaccount", "reader"]).trim(), "serviceaccount/reader created");
    ok(&c, &["create", "rolebinding", "reader-view", "--clusterrole=view", "--serviceaccount=default:reader"]);
    let pod = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  {extra}\n  containers:\n    - name: main\n      image: wasmorch.local/hello-http:1.0\n      ports: [{{containerPort: 8080}}]\n"
        )
    };
    let f = dir.path().join("pods.yaml");
    std::fs::write(
        &f,
        format!(
            "{}---\n{}",
            pod("tok", "serviceAccountName: reader"),
            pod("quiet", "automountServiceAccountToken: false")
        ),
    )
    .unwrap();
    ok(&c, &["apply", "-f", f.to_str().unwrap()]);
    ok(&c, &["wait", "--for=condition=Ready", "pod/tok", "pod/quiet", "--timeout=60s"]);
    let ip = |p: &str| ok(&c, &["get", "pod", p, "-o", "jsonpath={.status.podIP}"]);
    let (tok, quiet) = (format!("{}:8080", ip("tok")), format!("{}:8080", ip("quiet")));
    let file = |addr: &str, name: &str| {
        common::http_get(addr, &format!("/file?path=/var/run/secrets/kubernetes.io/serviceaccount/{name}")).unwrap()
    };
    let (code, token) = file(&tok, "token");
    assert!(code == 200 && token.starts_with("eyJ"), "{code} {token}");
    assert_eq!(file(&tok, "namespace"), (200, "default".to_string()));
    let (code, ca) = file(&tok, "ca.crt");
    assert!(code == 200 && ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert_eq!(file(&quiet, "token").0, 404, "automountServiceAccountToken: false");
    let env = |name: &str| common::http_get(&tok, &format!("/env/{name}")).unwrap().1.trim().to_string();
    assert_eq!(env("KUBERNETES_SERVICE_HOST"), format!("{prefix}.0.1"));
    assert_eq!(env("KUBERNETES_SERVICE_PORT"), "443");

    // From the pod's point of view: the Service address, its CA, its token.
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca).unwrap();
    let server = format!("--server=https://{prefix}.0.1:443");
    let ca_arg = format!("--certificate-authority={}", ca_file.display());
    let as_pod = |token: &str, args: &[&str]| {
        let t = format!("--token={token}");
        let mut all = vec!["--kubeconfig=/dev/null", server.as_str(), ca_arg.as_str(), t.as_str()];
        all.extend_from_slice(args);
        Command::new("kubectl").args(&all).env("HOME", c.dir.join("home")).output().expect("run kubectl")
    };
    let o = as_pod(&token, &["get", "pods", "-o", "name"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("pod/tok"));
    let o = as_pod(&token, &["auth", "can-i", "delete", "pods"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "no");
    let o = as_pod(&token, &["delete", "pod", "quiet"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("forbidden"), "view may not delete");

    // `kubectl create token`: a token of the account, not bound to the pod.
    let minted = ok(&c, &["create", "token", "reader", "--duration=10m"]);
    assert!(as_pod(minted.trim(), &["get", "pods"]).status.success());

    // The pod's token ends with the pod.
    ok(&c, &["delete", "pod", "tok", "--wait=true", "--timeout=60s"]);
    let o = as_pod(&token, &["get", "pods"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(as_pod(minted.trim(), &["get", "pods"]).status.success(), "an unbound token outlives the pod");
}

/// RBAC through real HTTPS and client certificates minted by `wasmorch kubeconfig user`:
/// a table of (user, request) → allowed or 403, escalation refused, `kubectl auth can-i`.
#[test]
fn rbac_allows_what_bindings_grant_and_nothing_more() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = node_cluster(dir.path(), &common::node_address());
    ok(&c, &["create", "namespace", "team"]);
    // bob's group "ops" edits everywhere; carol administers "team"; alice views "default".
    let crb = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: ops-edit}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: ops}]\n";
    std::fs::write(dir.path().join("crb.yaml"), crb).unwrap();
    ok(&c, &["apply", "-f", dir.path().join("crb.yaml").to_str().unwrap()]);
    let mint = |user: &str, extra: &[&str]| {
        let out = dir.path().join(format!("{user}.kubeconfig"));
        let mut args = vec!["kubeconfig", "user", user, "-o", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        c.ok(&args);
        out
    };
    let alice = mint("alice", &["--clusterrole", "view", "-n", "default"]);
    let bob = mint("bob", &["--group", "ops"]);
    let carol = mint("carol", &["--clusterrole", "admin", "-n", "team"]);
    let as_user = |cfg: &std::path::Path, args: &[&str]| {
        Command::new("kubectl").args(args).env("KUBECONFIG", cfg).env("HOME", c.dir.join("home")).output().unwrap()
    };
    let yaml = |name: &str, text: &str| {
        let f = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_string()
    };
    let secret_reader = yaml(
        "secret-reader",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: secret-reader, namespace: team}\nrules: [{apiGroups: [\"\"], resources: [secrets], verbs: [get]}]\n",
    );
    let node_admin = yaml(
        "node-admin",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: node-touch, namespace: team}\nrules: [{apiGroups: [\"\"], resources: [nodes], verbs: [delete]}]\n",
    );
    let bind_admin = yaml(
        "bind-admin",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: root, namespace: team}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: carol}]\n",
    );
    let bind_view = yaml(
        "bind-view",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-view, namespace: team}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]\n",
    );
    let table: Vec<(&std::path::Path, Vec<&str>, bool)> = vec![
        (&alice, vec!["get", "pods", "-n", "default"], true),
        (&alice, vec!["get", "deployments", "-n", "default"], true),
        (&alice, vec!["create", "configmap", "x", "-n", "default"], false),
        (&alice, vec!["get", "pods", "-n", "kube-system"], false),
        (&alice, vec!["get", "secrets", "-n", "default"], false),
        (&alice, vec!["get", "nodes"], false),
        (&bob, vec!["create", "deployment", "web", "--image=wasmorch.local/hello-http:1.0", "-n", "team"], true),
        (&bob, vec!["get", "secrets", "-n", "kube-system"], true),
        (&bob, vec!["create", "role", "r", "--verb=get", "--resource=pods", "-n", "team"], false),
        (&bob, vec!["delete", "node", "n1"], false),
        (&carol, vec!["apply", "-f", &secret_reader], true),
        (&carol, vec!["apply", "-f", &node_admin], false),
        (&carol, vec!["apply", "-f", &bind_admin], false),
        (&carol, vec!["apply", "-f", &bind_view], true),
        (&carol, vec!["get", "pods", "-n", "default"], false),
    ];
    for (cfg, args, allowed) in &table {
        let o = as_user(cfg, args);
        let who = cfg.file_stem().unwrap().to_string_lossy().into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.success(), *allowed, "{who} {args:?}: {err}");
        if !allowed {
            assert!(err.contains("forbidden") || err.contains("Forbidden"), "{who} {args:?}: {err}");
        }
    }
    // Escalation is refused with Kubernetes' message.
    let err = String::from_utf8_lossy(&as_user(&carol, &["apply", "-f", &node_admin]).stderr).into_owned();
    assert!(err.contains("attempting to grant RBAC permissions not currently held"), "{err}");
    // alice now views team too (carol bound her); can-i answers as the server decides.
    assert!(as_user(&alice, &["get", "pods", "-n", "team"]).status.success());
    let can =
        |cfg: &std::path::Path, args: &[&str]| String::from_utf8_lossy(&as_user(cfg, args).stdout).trim().to_string();
    assert_eq!(can(&alice, &["auth", "can-i", "list", "pods"]), "yes");
    assert_eq!(can(&alice, &["auth", "can-i", "create", "deployments"]), "no");
    assert_eq!(can(&bob, &["auth", "can-i", "create", "deployments", "-n", "anywhere"]), "yes");
    let list = can(&alice, &["auth", "can-i", "--list"]);
    assert!(list.lines().any(|l| l.starts_with("pods ") && l.contains("[get list watch]")), "{list}");
    assert!(!list.lines().any(|l| l.starts_with("secrets ")), "{list}");
    // Aggregation: a ClusterRole labelled aggregate-to-view extends view.
    ok(
        &c,
        &[
            "apply",
            "-f",
            &yaml(
                "secrets-view",
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: secrets-view, labels: {rbac.authorization.k8s.io/aggregate-to-view: \"true\"}}\nrules: [{apiGroups: [\"\"], resources: [secrets], verbs: [list]}]\n",
            ),
        ],
    );
    let widened = common::eventually(std::time::Duration::from_secs(20), || {
        as_user(&alice, &["get", "secrets", "-n", "default"]).status.success()
    });
    assert!(widened, "view did not take in the aggregated role");
}
