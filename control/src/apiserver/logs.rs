//! The API server's hop to a node's endpoint: `GET pods/{name}/log` (find the pod's node and
//! stream the log), `GET nodes/{name}/proxy/{path}` (e.g. `stats/summary`, the kubelet's
//! Summary API), and the upgrade requests of exec, attach and port-forward (`connect.rs`).

use super::ServerState;
use super::request::{Params, Target};
use axum::body::Body;
use axum::response::Response;
use serde_json::Value;
use wasmorch_api::resources;
use wasmorch_api::{ApiError, object};

/// The container a log request means: the named one, or the only one.
pub fn pick_container(pod: &Value, asked: Option<&str>) -> Result<String, ApiError> {
    let names: Vec<&str> =
        pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    let name = object::name(pod);
    match asked {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None if names.len() == 1 => Ok(names[0].to_string()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

pub async fn logs(state: &ServerState, t: &Target, p: &Params) -> Result<Response, ApiError> {
    let mut pod_target = t.clone();
    pod_target.subresource = None;
    let pod = state.api.get(&pod_target).await?;
    let container = pick_container(&pod, p.get("container"))?;
    let node_name = object::str_at(&pod, "spec.nodeName")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {} does not have a host assigned", object::name(&pod))))?;
    let (ip, port) = node_endpoint(state, node_name).await?;
    let mut url = format!(
        "/containerLogs/{}/{}/{}/{container}?follow={}&previous={}",
        object::namespace(&pod),
        object::name(&pod),
        object::uid(&pod),
        p.flag("follow"),
        p.flag("previous")
    );
    if let Some(n) = p.u64("tailLines")? {
        url.push_str(&format!("&tailLines={n}"));
    }
    let resp = node_request(state, node_name, (ip, port), &url)
        .await
        .map_err(|e| ApiError::unavailable(format!("node {node_name} is unreachable for logs: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let msg = String::from_utf8_lossy(&body).trim().to_string();
        return Err(if status.as_u16() == 404 {
            ApiError::bad_request(msg)
        } else {
            ApiError::internal(format!("node {node_name}: {msg}"))
        });
    }
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(Body::new(resp.into_body()))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Where a node's endpoint listens: its `InternalIP` and `daemonEndpoints.kubeletEndpoint.Port`.
async fn node_endpoint(state: &ServerState, node_name: &str) -> Result<(std::net::IpAddr, u16), ApiError> {
    let node = state
        .api
        .get(&Target {
            res: resources::of(resources::ResourceKind::Node),
            namespace: None,
            name: Some(node_name.to_string()),
            subresource: None,
            watch_path: false,
        })
        .await?;
    let addr = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP")))
        .and_then(|x| x.get("address"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name} has no address")))?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name} serves no endpoint")))?;
    let ip =
        addr.parse().map_err(|_| ApiError::unavailable(format!("node {node_name} has no IP address: {addr:?}")))?;
    Ok((ip, port))
}

/// `GET nodes/{name}/proxy/{path}`: the node endpoint's answer, status and body as they are.
pub async fn node_proxy(state: &ServerState, node_name: &str, path: &str) -> Result<Response, ApiError> {
    let addr = node_endpoint(state, node_name).await?;
    let resp = node_request(state, node_name, addr, path)
        .await
        .map_err(|e| ApiError::unavailable(format!("node {node_name} is unreachable: {e}")))?;
    let status = resp.status();
    let ct = resp.headers().get(http::header::CONTENT_TYPE).cloned();
    let mut b = Response::builder().status(status);
    if let Some(ct) = ct {
        b = b.header(http::header::CONTENT_TYPE, ct);
    }
    b.body(Body::new(resp.into_body())).map_err(|e| ApiError::internal(e.to_string()))
}

/// A request to a node's endpoint asking to upgrade the connection (exec, port-forward); the
/// answer is the node's, 101 or not.
pub async fn node_upgrade(
    state: &ServerState,
    node_name: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<http::Response<hyper::body::Incoming>, ApiError> {
    let addr = node_endpoint(state, node_name).await?;
    super::dial::request(http::Method::GET, state.kubelet_tls.clone(), node_name, addr.into(), path, headers)
        .await
        .map_err(|e| ApiError::unavailable(format!("node {node_name} is unreachable: {e}")))
}

/// Largest JSON document read from a node (a Summary of thousands of pods fits).
const MAX_NODE_JSON: usize = 64 << 20;

/// One GET of a JSON document from a node's endpoint.
pub async fn node_json(state: &ServerState, node_name: &str, path: &str) -> Result<Value, String> {
    use http_body_util::BodyExt;
    let addr = node_endpoint(state, node_name).await.map_err(|e| e.message)?;
    let resp = node_request(state, node_name, addr, path).await?;
    if !resp.status().is_success() {
        return Err(format!("{path}: status {}", resp.status()));
    }
    let body = http_body_util::Limited::new(resp.into_body(), MAX_NODE_JSON)
        .collect()
        .await
        .map_err(|e| format!("{path}: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
}

/// One GET to a node's endpoint over TLS. The node's certificate must come from the cluster
/// CA and name the node (`DNS:<node>`): nodes are known by name, not by address.
async fn node_request(
    state: &ServerState,
    node: &str,
    addr: (std::net::IpAddr, u16),
    path: &str,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    super::dial::request(http::Method::GET, state.kubelet_tls.clone(), node, addr.into(), path, &[]).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_choice() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, None).unwrap(), "a");
        assert_eq!(pick_container(&one, Some("b")).unwrap_err().code, 400);
        let two = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let e = pick_container(&two, None).unwrap_err();
        assert!(e.message.contains("choose one of: [a b]"), "{}", e.message);
        assert_eq!(pick_container(&two, Some("b")).unwrap(), "b");
    }
}
