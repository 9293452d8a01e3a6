//! Admission: ResourceQuotas and LimitRanges refuse with Kubernetes' own messages.

use super::*;

/// ResourceQuota and LimitRange at admission, with kubectl: `create quota`, LimitRange
/// defaults and bounds, Kubernetes' 403 messages, and the quota's status.
#[test]
fn quotas_and_limit_ranges_refuse_with_kubernetes_messages() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr()]);
    let image = "--image=wasmorch.local/hello-http:1.0";
    ok(&c, &["create", "namespace", "qa"]);
    let lr = dir.path().join("lr.yaml");
    std::fs::write(
        &lr,
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: mem, namespace: qa}\nspec:\n  limits:\n    - type: Container\n      default: {memory: 16Mi}\n      max: {memory: 32Mi}\n",
    )
    .unwrap();
    assert_eq!(ok(&c, &["apply", "-f", lr.to_str().unwrap()]).trim(), "limitrange/mem created");
    assert_eq!(
        ok(&c, &["create", "quota", "q", "-n", "qa", "--hard=pods=2,requests.memory=40Mi"]).trim(),
        "resourcequota/q created"
    );
    assert_eq!(ok(&c, &["run", "a", "-n", "qa", image]).trim(), "pod/a created");
    assert_eq!(
        ok(&c, &["get", "pod", "a", "-n", "qa", "-o", "jsonpath={.spec.containers[0].resources}"]),
        r#"{"limits":{"memory":"16Mi"},"requests":{"memory":"16Mi"}}"#
    );
    ok(&c, &["run", "b", "-n", "qa", image]);
    let third = kubectl(&c, &["run", "c", "-n", "qa", image]);
    assert!(!third.status.success());
    assert_eq!(
        String::from_utf8_lossy(&third.stderr).trim(),
        "Error from server (Forbidden): pods \"c\" is forbidden: exceeded quota: q, requested: pods=1,requests.memory=16Mi, used: pods=2,requests.memory=32Mi, limited: pods=2,requests.memory=40Mi"
    );
    let big = kubectl(
        &c,
        &[
            "run",
            "big",
            "-n",
            "default",
            image,
            "--overrides",
            r#"{"spec":{"containers":[{"name":"big","image":"wasmorch.local/hello-http:1.0","resources":{"limits":{"memory":"64Mi"}}}]}}"#,
        ],
    );
    assert!(big.status.success(), "no LimitRange in default: {}", String::from_utf8_lossy(&big.stderr));
    let big = kubectl(
        &c,
        &[
            "run",
            "big",
            "-n",
            "qa",
            image,
            "--overrides",
            r#"{"spec":{"containers":[{"name":"big","image":"wasmorch.local/hello-http:1.0","resources":{"limits":{"memory":"64Mi"}}}]}}"#,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&big.stderr).trim(),
        "Error from server (Forbidden): pods \"big\" is forbidden: maximum memory usage per Container is 32Mi, but limit is 64Mi"
    );
    assert!(common::eventually(std::time::Duration::from_secs(30), || {
        ok(&c, &["get", "quota", "q", "-n", "qa", "-o", "jsonpath={.status.used}"])
            == r#"{"pods":"2","requests.memory":"32Mi"}"#
    }));
    let table = ok(&c, &["get", "quota", "-n", "qa"]);
    assert!(table.contains("pods: 2/2, requests.memory: 32Mi/40Mi"), "{table}");
    // Room again once a pod is gone.
    ok(&c, &["delete", "pod", "a", "-n", "qa", "--grace-period=0", "--force"]);
    assert!(common::eventually(std::time::Duration::from_secs(30), || {
        kubectl(&c, &["run", "c", "-n", "qa", image]).status.success()
    }));
}
