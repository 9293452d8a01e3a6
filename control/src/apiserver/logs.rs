//! `GET pods/{name}/log`: find the pod's node and stream the log from its log endpoint.

use super::ServerState;
use super::request::{Params, Target};
use axum::body::Body;
use axum::response::Response;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
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
    let nodes = resources::lookup("nodes").expect("registered");
    let node = state
        .api
        .get(&Target {
            res: nodes,
            namespace: None,
            name: Some(node_name.to_string()),
            subresource: None,
            watch_path: false,
        })
        .await?;
    let addr = node["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .and_then(|x| x["address"].as_str())
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name} has no address")))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name} serves no logs")))?;
    let host = if addr.contains(':') { format!("[{addr}]") } else { addr.to_string() };
    let mut url = format!(
        "http://{host}:{port}/containerLogs/{}/{}/{}/{container}?follow={}&previous={}",
        object::namespace(&pod),
        object::name(&pod),
        object::uid(&pod),
        p.flag("follow"),
        p.flag("previous")
    );
    if let Some(n) = p.u64("tailLines")? {
        url.push_str(&format!("&tailLines={n}"));
    }
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(&url)
        .header("authorization", format!("Bearer {}", state.node_token))
        .body(Empty::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = client
        .request(req)
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
