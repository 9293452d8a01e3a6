//! The pods' connect subresources: `pods/{name}/exec`, `pods/{name}/attach` and
//! `pods/{name}/portforward`. The API server decides (who may, which pod, which container,
//! whether it runs), then hops to the pod's node endpoint with the client's upgrade request
//! and, once the node has answered 101, splices the client's connection to the node's. The
//! protocols themselves (WebSocket channels, SPDY) are spoken by the node
//! (`wasmorch_host::streams`), as a kubelet speaks them.

use super::ServerState;
use super::request::{Params, Target};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use wasmorch_api::{ApiError, object};

/// The connect subresources of pods.
pub const SUBRESOURCES: [&str; 3] = ["exec", "attach", "portforward"];

/// Headers of the client's upgrade request the node needs.
const FORWARDED: [&str; 6] = [
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
/// Headers of the node's 101 the client needs.
const ANSWERED: [&str; 4] = ["upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol"];

/// The node endpoint path for a connect request on `pod`, or why it cannot be served.
pub fn node_path(sub: &str, pod: &Value, container: Option<&str>, query: &str) -> Result<String, ApiError> {
    let (ns, name, uid) = (object::namespace(pod), object::name(pod), object::uid(pod));
    let phase = object::str_at(pod, "status.phase").unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot {sub} into a container in a completed pod; current phase is {phase}"
        )));
    }
    let q = if query.is_empty() { String::new() } else { format!("?{query}") };
    Ok(match (sub, container) {
        ("portforward", _) => format!("/portForward/{ns}/{name}/{uid}{q}"),
        ("exec", Some(c)) => format!("/exec/{ns}/{name}/{uid}/{c}{q}"),
        ("attach", Some(c)) => format!("/attach/{ns}/{name}/{uid}/{c}{q}"),
        _ => return Err(ApiError::bad_request(format!("{sub} needs a container"))),
    })
}

pub async fn connect(state: &ServerState, t: &Target, req: Request) -> Result<Response, ApiError> {
    let sub = t.subresource.clone().unwrap_or_default();
    if !req.headers().contains_key(http::header::UPGRADE) {
        return Err(ApiError::bad_request(format!(
            "Upgrade request required: pods/{sub} is a streaming connection (WebSocket or SPDY/3.1)"
        )));
    }
    let mut pod_target = t.clone();
    pod_target.subresource = None;
    let pod = state.api.get(&pod_target).await?;
    let p = Params::parse(req.uri().query());
    let container = match sub.as_str() {
        "portforward" => None,
        _ => Some(super::logs::pick_container(&pod, p.get("container"))?),
    };
    let node = object::str_at(&pod, "spec.nodeName")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {} does not have a host assigned", object::name(&pod))))?
        .to_string();
    let path = node_path(&sub, &pod, container.as_deref(), req.uri().query().unwrap_or(""))?;
    let mut headers: Vec<(&str, String)> = Vec::new();
    for name in FORWARDED {
        for v in req.headers().get_all(name) {
            if let Ok(v) = v.to_str() {
                headers.push((name, v.to_string()));
            }
        }
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut resp = super::logs::node_upgrade(state, &node, &path, &headers).await?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        use http_body_util::BodyExt;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), 64 << 10)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let msg = String::from_utf8_lossy(&body).trim().to_string();
        return Err(match status.as_u16() {
            400 | 404 => ApiError::bad_request(msg),
            _ => ApiError::internal(format!("node {node}: {msg}")),
        });
    }
    let mut out = Response::builder().status(http::StatusCode::SWITCHING_PROTOCOLS);
    for name in ANSWERED {
        if let Some(v) = resp.headers().get(name) {
            out = out.header(name, v);
        }
    }
    // SPDY's answer names the stream protocol too.
    if let Some(v) = resp.headers().get("x-stream-protocol-version") {
        out = out.header("x-stream-protocol-version", v);
    }
    let node_up = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        match tokio::join!(hyper::upgrade::on(req), node_up) {
            (Ok(client), Ok(node_side)) => {
                let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(node_side));
                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
            }
            (a, b) => tracing::debug!("pods/{sub} upgrade: {:?} {:?}", a.err(), b.err()),
        }
    });
    out.body(Body::empty()).map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_paths() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "status": {"phase": "Running"}});
        assert_eq!(node_path("exec", &pod, Some("c"), "command=a").unwrap(), "/exec/ns/p/u1/c?command=a");
        assert_eq!(node_path("portforward", &pod, None, "").unwrap(), "/portForward/ns/p/u1");
        assert_eq!(node_path("attach", &pod, Some("c"), "").unwrap(), "/attach/ns/p/u1/c");
        let done = json!({"metadata": {"name": "p"}, "status": {"phase": "Succeeded"}});
        let e = node_path("exec", &done, Some("c"), "").unwrap_err();
        assert!(e.message.contains("completed pod; current phase is Succeeded"), "{}", e.message);
    }
}
