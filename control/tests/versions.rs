//! Discovery documents, and kinds served in several versions (autoscaling/v1 and v2 views
//! of one stored HorizontalPodAutoscaler).

mod common;

use common::*;
use http::Method;
use serde_json::json;

#[tokio::test]
async fn discovery_documents() {
    let t = setup().await;
    let (_, v) = t.get("/api").await;
    assert_eq!(v["versions"], json!(["v1"]));
    let (_, v) = t
        .raw(
            Method::GET,
            "/apis",
            "",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
            vec![],
        )
        .await;
    assert_eq!(v["kind"], "APIGroupDiscoveryList");
    // The built-in groups, in order; the Gateway API's (built-in definitions) follows once
    // the server has loaded them.
    let groups: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["metadata"]["name"].as_str().unwrap())
        .filter(|g| *g != "gateway.networking.k8s.io")
        .collect();
    assert_eq!(
        groups,
        [
            "apps",
            "batch",
            "coordination.k8s.io",
            "discovery.k8s.io",
            "policy",
            "networking.k8s.io",
            "autoscaling",
            "rbac.authorization.k8s.io",
            "apiextensions.k8s.io",
            "storage.k8s.io",
            "metrics.k8s.io",
            "authorization.k8s.io"
        ]
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while t.get("/apis/gateway.networking.k8s.io/v1").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "the Gateway API was never served");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The resource metrics API: read-only, not stored.
    let (_, v) = t.get("/apis/metrics.k8s.io/v1beta1").await;
    let pods = v["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods").unwrap().clone();
    assert_eq!((pods["kind"].as_str(), &pods["verbs"]), (Some("PodMetrics"), &json!(["get", "list"])));
    let (_, v) = t.get("/apis/metrics.k8s.io/v1beta1/nodes").await;
    assert_eq!((v["kind"].as_str(), &v["items"]), (Some("NodeMetricsList"), &json!([])));
    let (_, v) = t.get("/apis/apps/v1").await;
    assert!(v["resources"].as_array().unwrap().iter().any(|r| r["name"] == "deployments" && r["namespaced"] == true));
    let (_, v) = t.get("/openapi/v3").await;
    let url = v["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap().to_string();
    let (_, v) = t.get(&url).await;
    let patch = &v["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
    let (code, v) = t.get("/version").await;
    assert_eq!((code, v["major"].as_str()), (200, Some("1")));
}

/// `autoscaling/v1` and `autoscaling/v2` are two views of one stored HPA: what one writes the
/// other reads, a v1 client's read-modify-write keeps what only v2 can say, and lists, watches,
/// tables and patches speak the version asked for.
#[tokio::test]
async fn hpa_is_served_in_v1_and_v2() {
    let t = setup().await;
    const V1: &str = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers";
    const V2: &str = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers";
    let (code, v) = t.get("/apis/autoscaling").await;
    assert_eq!(code, 200);
    assert_eq!(v["preferredVersion"]["version"], "v2");
    let versions: Vec<&str> =
        v["versions"].as_array().unwrap().iter().map(|g| g["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["v2", "v1"]);
    let (code, v) = t.get("/apis/autoscaling/v1").await;
    assert_eq!((code, v["resources"][0]["kind"].as_str()), (200, Some("HorizontalPodAutoscaler")));

    // Written in v1, read in v2.
    let hpa = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5,
        "targetCPUUtilizationPercentage": 40}});
    let (code, v) = t.post(V1, hpa).await;
    assert_eq!((code, v["apiVersion"].as_str()), (201, Some("autoscaling/v1")), "{v}");
    assert_eq!(v["spec"]["targetCPUUtilizationPercentage"], 40);
    let (_, v) = t.get(&format!("{V2}/web")).await;
    assert_eq!(v["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 40);
    assert!(v["metadata"].get("annotations").is_none(), "{v}");

    // A v2-only metric and behavior survive a v1 read-modify-write.
    let patch = json!({"spec": {"metrics": [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 40}}},
        {"type": "Pods", "pods": {"metric": {"name": "requests_per_second"}, "target": {"type": "AverageValue", "averageValue": "10"}}}],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}}});
    let (code, v) = t.merge(&format!("{V2}/web"), patch).await;
    assert_eq!(code, 200, "{v}");
    let (_, mut v1) = t.get(&format!("{V1}/web")).await;
    assert!(
        v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/metrics"]
            .as_str()
            .unwrap()
            .contains("requests_per_second")
    );
    v1["spec"]["maxReplicas"] = json!(7);
    let (code, v) = t.call(Method::PUT, &format!("{V1}/web"), Some(v1)).await;
    assert_eq!(code, 200, "{v}");
    let (_, v) = t.get(&format!("{V2}/web")).await;
    assert_eq!(v["spec"]["maxReplicas"], 7);
    assert_eq!(v["spec"]["metrics"].as_array().unwrap().len(), 2);
    assert_eq!(v["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 30);

    // A merge patch in v1 applies to the v1 form.
    let (code, v) = t
        .raw(
            Method::PATCH,
            &format!("{V1}/web"),
            "application/merge-patch+json",
            "application/json",
            br#"{"spec":{"targetCPUUtilizationPercentage":65}}"#.to_vec(),
        )
        .await;
    assert_eq!((code, &v["spec"]["targetCPUUtilizationPercentage"]), (200, &json!(65)), "{v}");
    let (_, v) = t.get(&format!("{V2}/web")).await;
    assert_eq!(v["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 65);
    assert_eq!(v["spec"]["metrics"][1]["type"], "Pods");

    // Lists, tables and watches in v1.
    let (_, v) = t.get(V1).await;
    assert_eq!(
        (v["apiVersion"].as_str(), v["items"][0]["apiVersion"].as_str()),
        (Some("autoscaling/v1"), Some("autoscaling/v1"))
    );
    let (_, v) = t
        .raw(
            Method::GET,
            &format!("{V1}?includeObject=Object"),
            "",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
            vec![],
        )
        .await;
    assert_eq!(v["rows"][0]["object"]["apiVersion"], "autoscaling/v1");
    let mut w = t.watch(&format!("{V1}?watch=true"), "application/json").await;
    let e = w.next().await.unwrap();
    assert_eq!((e["type"].as_str(), e["object"]["apiVersion"].as_str()), (Some("ADDED"), Some("autoscaling/v1")));
    assert_eq!(e["object"]["spec"]["targetCPUUtilizationPercentage"], 65);

    // Bad v1 input names the v1 field; nothing is stored.
    let bad = json!({"metadata": {"name": "bad"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": "many"}});
    let (code, v) = t.post(V1, bad).await;
    assert_eq!(code, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("spec.maxReplicas"), "{v}");
    let (code, _) = t.get(&format!("{V2}/bad")).await;
    assert_eq!(code, 404);
    let (code, v) = t.call(Method::DELETE, &format!("{V1}/web"), None).await;
    assert_eq!((code, v["apiVersion"].as_str()), (200, Some("autoscaling/v1")), "{v}");
}
