//! HTTP dispatch: authenticate, route by path, call [`Api`], reply.

use super::ServerState;
use super::authz;
use super::discovery;
use super::request::{self, Params, Reply, json_response};
use crate::pki::Identity;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;
use wasmorch_api::ApiError;

/// Identity of the TLS peer, set per connection by the accept loop.
#[derive(Clone, Debug)]
pub struct PeerIdentity(pub Option<Identity>);

/// Who the request comes from: a bearer token (static, or a join token's credential), else
/// the connection's verified client certificate. Takes owned parts of the request: the
/// request itself (its body) must not be held across the awaits here.
pub(super) async fn authenticate(
    state: &ServerState,
    authorization: Option<String>,
    peer: Option<Identity>,
) -> Result<Identity, ApiError> {
    if let Some(auth) = authorization {
        let token = auth.strip_prefix("Bearer ").ok_or_else(ApiError::unauthorized)?.trim();
        if let Some(id) = state.tokens.lookup(token) {
            return Ok(id.clone());
        }
        if wasmorch_api::join::JoinToken::looks_like_credential(token)
            && let Some(id) = crate::membership::authenticate_token(&state.api, token).await
        {
            return Ok(id);
        }
        if crate::jwt::Signer::looks_like(token)
            && let Some(id) = super::serviceaccounts::authenticate(state, token).await
        {
            return Ok(id);
        }
        return Err(ApiError::unauthorized());
    }
    peer.ok_or_else(ApiError::unauthorized)
}

pub async fn health() -> &'static str {
    "ok"
}

/// The cluster CA, anonymously: a joining node checks it against its token's pin before it
/// trusts the server with anything.
pub async fn cacerts(State(state): State<Arc<ServerState>>) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-pem-file")
        .body(Body::from(state.pki.ca_pem.clone()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

pub async fn version() -> Response {
    json_response(StatusCode::OK, &discovery::version(), &[])
}

pub async fn dispatch(State(state): State<Arc<ServerState>>, req: Request) -> Response {
    let start = std::time::Instant::now();
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (resource, named) = crate::telemetry::resource_of(&segs);
    let watch = segs.get(2) == Some(&"watch")
        || segs.get(3) == Some(&"watch")
        || Params::parse(req.uri().query()).flag("watch");
    let verb = crate::telemetry::verb(req.method(), named, watch).to_string();
    let resp = Reply(route(state, req).await).into_response();
    let t = crate::telemetry::get();
    let code = resp.status().as_u16().to_string();
    t.requests
        .get_or_create(&crate::telemetry::RequestLabels { verb: verb.clone(), resource: resource.clone(), code })
        .inc();
    t.request_seconds
        .get_or_create(&crate::telemetry::VerbResource { verb, resource })
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// `GET /metrics`: the control plane's Prometheus metrics, for an admin (or anyone, with
/// `--anonymous-metrics`).
pub async fn metrics(State(state): State<Arc<ServerState>>, req: Request) -> Response {
    if !state.anonymous_metrics {
        let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(String::from);
        let peer = req.extensions().get::<PeerIdentity>().and_then(|p| p.0.clone());
        let a =
            wasmorch_api::rbac::Attributes { verb: "get".into(), path: Some("/metrics".into()), ..Default::default() };
        if let Err(e) =
            authenticate(&state, authorization, peer).await.and_then(|id| authz::require(&state.api, &id, &a))
        {
            return Reply(Err(e)).into_response();
        }
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
        .body(Body::from(crate::telemetry::get().render()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

async fn route(state: Arc<ServerState>, req: Request) -> Result<Response, ApiError> {
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(String::from);
    let peer = req.extensions().get::<PeerIdentity>().and_then(|p| p.0.clone());
    let id = authenticate(&state, authorization, peer).await?;
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let accept = request::accept(req.headers());
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v, &[]));
    let not_found =
        || ApiError::new(404, "NotFound", format!("the server could not find the requested resource (path {path})"));
    match segs.as_slice() {
        ["api"] => Ok(discovery_reply(discovery::core(discovery::wants_aggregated(&accept)), &accept)),
        ["apis"] => Ok(discovery_reply(discovery::groups(discovery::wants_aggregated(&accept)), &accept)),
        ["api", v] => discovery::resource_list("", v).map_or_else(|| Err(not_found()), ok),
        ["apis", g] => discovery::group(g).map_or_else(|| Err(not_found()), ok),
        ["apis", g, v] => discovery::resource_list(g, v).map_or_else(|| Err(not_found()), ok),
        ["apis", super::metrics::GROUP, super::metrics::VERSION, rest @ ..] if req.method() == Method::GET => {
            ok(super::metrics::serve(&state, &id, rest, req.uri().query()).await?)
        }
        ["apis", super::access::GROUP, "v1", rest @ ..] if req.method() == Method::POST => {
            let (kind, ns) = match rest {
                [kind] => (*kind, None),
                ["namespaces", ns, kind] => (*kind, Some(*ns)),
                _ => return Err(not_found()),
            };
            let headers = req.headers().clone();
            let body = request::read_body(req.into_body()).await?;
            let body = request::decode_body(&headers, &body)?;
            let out = super::access::review(&state, &id, kind, ns, body)?;
            Ok(json_response(StatusCode::CREATED, &out, &[]))
        }
        ["openapi", "v3"] => ok(discovery::openapi_root()),
        ["openapi", "v3", rest @ ..] => {
            discovery::openapi_group_version(&rest.join("/")).map_or_else(|| Err(not_found()), ok)
        }
        ["wasmorch", "v1", "backup"] if req.method() == Method::GET => {
            let a = wasmorch_api::rbac::Attributes {
                verb: "get".into(),
                path: Some("/wasmorch/v1/backup".into()),
                ..Default::default()
            };
            authz::require(&state.api, &id, &a)?;
            backup(&state).await
        }
        ["wasmorch", "v1", "user-certificates"] if req.method() == Method::POST => {
            let a = wasmorch_api::rbac::Attributes {
                verb: "post".into(),
                path: Some("/wasmorch/v1/user-certificates".into()),
                ..Default::default()
            };
            authz::require(&state.api, &id, &a)?;
            let headers = req.headers().clone();
            let body = request::read_body(req.into_body()).await?;
            let body = request::decode_body(&headers, &body)?;
            ok(user_certificate(&state, &body)?)
        }
        ["wasmorch", "v1", "node-certificates"] if req.method() == Method::POST => {
            let headers = req.headers().clone();
            let body = request::read_body(req.into_body()).await?;
            let body = request::decode_body(&headers, &body)?;
            let out =
                crate::membership::issue_node_certificate(&state.api, &state.pki, state.node_cert_ttl, &id, &body)
                    .await?;
            ok(out)
        }
        ["wasmorch", "v1", "namespaces", ns, "services", name, "wake"] if req.method() == Method::POST => {
            ok(super::wake::wake(&state, &id, ns, name).await?)
        }
        ["api", "v1", "nodes", node, "proxy", tail @ ..] if req.method() == Method::GET => {
            let t = request::parse_target("", "v1", &["nodes", node, "proxy"])?;
            authz::authorize(&state.api, &id, &t, authz::Verb::Get, None).await?;
            let mut path = format!("/{}", tail.join("/"));
            if let Some(q) = req.uri().query() {
                path.push('?');
                path.push_str(q);
            }
            super::logs::node_proxy(&state, node, &path).await
        }
        ["api", v, rest @ ..] => {
            let t = request::parse_target("", v, rest)?;
            if t.res.plural == "pods" && t.subresource.as_deref() == Some("log") && req.method() == Method::GET {
                let p = Params::parse(req.uri().query());
                authz::authorize(&state.api, &id, &t, authz::Verb::Get, None).await?;
                return super::logs::logs(&state, &t, &p).await;
            }
            if t.res.plural == "pods"
                && t.subresource.as_deref().is_some_and(|s| super::connect::SUBRESOURCES.contains(&s))
            {
                // Kubernetes asks for `create` whatever the method (WebSocket clients use GET).
                authz::authorize(&state.api, &id, &t, authz::Verb::Create, None).await?;
                return super::connect::connect(&state, &t, req).await;
            }
            if t.res.plural == "serviceaccounts" && t.subresource.as_deref() == Some("token") {
                if req.method() != Method::POST {
                    return Err(ApiError::method_not_allowed(format!(
                        "{} is not supported on serviceaccounts/token",
                        req.method()
                    )));
                }
                let dry_run = Params::parse(req.uri().query()).dry_run()?;
                let headers = req.headers().clone();
                let body = request::decode_body(&headers, &request::read_body(req.into_body()).await?)?;
                authz::authorize(&state.api, &id, &t, authz::Verb::Create, Some(&body)).await?;
                let out = super::serviceaccounts::token_request(&state, &t, &body, dry_run).await?;
                return Ok(json_response(StatusCode::CREATED, &out, &[]));
            }
            super::verbs::resource(&state.api, &id, t, req).await
        }
        ["apis", g, v, rest @ ..] => {
            let t = request::parse_target(g, v, rest)?;
            super::verbs::resource(&state.api, &id, t, req).await
        }
        _ => Err(not_found()),
    }
}

/// A client certificate for a user (CN) in groups (O), signed by the cluster CA: what
/// `wasmorch kubeconfig user` puts in a kubeconfig. Node and join identities are not handed
/// out this way.
fn user_certificate(state: &ServerState, body: &Value) -> Result<Value, ApiError> {
    let user = body.get("user").and_then(Value::as_str).unwrap_or("").trim();
    let groups: Vec<&str> =
        body.get("groups").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let bad = |why: String| ApiError::bad_request(why);
    if user.is_empty() || user.len() > 253 || user.chars().any(|c| c.is_control()) {
        return Err(bad("user: a name of 1 to 253 printable characters is required".into()));
    }
    if user.starts_with("system:node:") || user.starts_with("system:serviceaccount:") {
        return Err(bad(format!("user {user:?}: node and service account identities are not issued here")));
    }
    for g in &groups {
        if g.is_empty()
            || g.chars().any(|c| c.is_control())
            || ["system:nodes", wasmorch_api::join::BOOTSTRAPPERS_GROUP].contains(g)
        {
            return Err(bad(format!("group {g:?} is not issued here")));
        }
    }
    let (cert, key) = state.pki.issue_client(user, &groups).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(serde_json::json!({"certificate": cert, "key": key, "ca": state.pki.ca_pem}))
}

fn discovery_reply(v: Value, accept: &str) -> Response {
    let mut r = json_response(StatusCode::OK, &v, &[]);
    if discovery::wants_aggregated(accept) {
        r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(discovery::AGGREGATED));
    }
    r
}

async fn backup(state: &ServerState) -> Result<Response, ApiError> {
    let dir = state.data_dir.join("tmp");
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(format!("backup-{}.redb", uuid::Uuid::new_v4()));
    let rev = state.api.store.backup(&path).await;
    let bytes = tokio::fs::read(&path).await;
    let _ = tokio::fs::remove_file(&path).await;
    let rev = rev?;
    let bytes = bytes.map_err(|e| ApiError::internal(format!("reading snapshot: {e}")))?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("X-Wasmorch-Revision", rev.to_string())
        .body(Body::from(bytes))
        .unwrap_or_else(|_| Response::new(Body::empty())))
}
