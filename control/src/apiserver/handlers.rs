//! HTTP dispatch: authenticate, route by path, call [`Api`], reply.

use super::ServerState;
use super::api::{Api, ListOptions};
use super::authz;
use super::discovery;
use super::objects::DeleteOptions;
use super::request::{self, Params, Reply, Target, json_response};
use super::watch::{self, WatchRequest};
use crate::pki::Identity;
use crate::store::EventType;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use wasmorch_api::selector::{FieldSelector, LabelSelector};
use wasmorch_api::table::{self, IncludeObject};
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, convert, object, resources};

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
            resource(&state.api, &id, t, req).await
        }
        ["apis", g, v, rest @ ..] => {
            let t = request::parse_target(g, v, rest)?;
            resource(&state.api, &id, t, req).await
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

/// The field manager of a write: `?fieldManager=`, else the product of the User-Agent
/// (`kubectl/v1.37.1 …` → `kubectl`), as Kubernetes defaults it. Apply requires one; `force`
/// is for apply only.
fn writer(p: &Params, headers: &axum::http::HeaderMap, apply: bool) -> Result<super::objects::WriteOpts, ApiError> {
    use wasmorch_api::error::Cause;
    let invalid = |c: Cause| ApiError::invalid("meta.k8s.io", "PatchOptions", "", vec![c]);
    let force = p.flag("force");
    if force && !apply {
        return Err(invalid(Cause::new(
            "FieldValueForbidden",
            "force",
            "Forbidden: may not be specified for non-apply patch",
        )));
    }
    let manager = match p.get("fieldManager") {
        Some(m) if m.len() > 128 => {
            return Err(invalid(Cause::invalid("fieldManager", m, "must be no more than 128 characters")));
        }
        Some(m) => m.to_string(),
        None if apply => {
            return Err(invalid(Cause::new(
                "FieldValueRequired",
                "fieldManager",
                "Required value: is required for apply patch",
            )));
        }
        None => headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .chars()
            .take(128)
            .collect(),
    };
    Ok(super::objects::WriteOpts { manager, force, apply })
}

fn list_options(t: &Target, p: &Params) -> Result<ListOptions, ApiError> {
    let labels =
        LabelSelector::parse(p.get("labelSelector").unwrap_or("")).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(p.get("fieldSelector").unwrap_or(""), t.res)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(ListOptions {
        labels,
        fields,
        limit: p.u64("limit")?.unwrap_or(0) as usize,
        continue_token: p.get("continue").map(String::from),
    })
}

async fn resource(api: &Api, id: &Identity, t: Target, req: Request) -> Result<Response, ApiError> {
    // Everything below works on the stored version; `view` is the version the client speaks
    // (`autoscaling/v1`), converted to on the way in and out.
    let view = t.res;
    let t = Target { res: resources::storage_of(view), ..t };
    let show = |v: Value| convert::from_storage(view, v);
    let p = Params::parse(req.uri().query());
    let method = req.method().clone();
    let headers = req.headers().clone();
    let table = request::wants_table(&headers).then(|| IncludeObject::parse(p.get("includeObject")));
    let mode = FieldValidation::parse(p.get("fieldValidation"))?;
    let dry_run = p.dry_run()?;
    let body = request::read_body(req.into_body()).await?;
    if !id.is_admin() {
        let verb = authz::Verb::of(&method, t.name.is_some(), p.flag("watch") || t.watch_path);
        // A create's body names what it makes (a node may create only its own Node and Lease).
        let named = (verb == authz::Verb::Create && !body.is_empty()).then(|| request::decode_body(&headers, &body));
        let named = named.transpose()?;
        authz::authorize(api, id, &t, verb, named.as_ref()).await?;
        // Roles and bindings: no granting what one does not hold.
        use wasmorch_api::ResourceKind as K;
        let rbac_kind = matches!(t.res.kind_id, K::Role | K::ClusterRole | K::RoleBinding | K::ClusterRoleBinding);
        if rbac_kind && matches!(verb, authz::Verb::Create | authz::Verb::Update | authz::Verb::Patch) {
            let mut obj = match verb {
                authz::Verb::Patch => {
                    let patch = request::decode_body(&headers, &body)?;
                    let ct = request::content_type(&headers);
                    match api.get(&t).await {
                        Ok(cur) if !ct.starts_with("application/apply-patch") => {
                            super::objects::apply_patch(&cur, &ct, &patch)?
                        }
                        _ => patch,
                    }
                }
                _ => request::decode_body(&headers, &body)?,
            };
            if let (Some(ns), Some(meta)) = (&t.namespace, obj.get_mut("metadata").and_then(Value::as_object_mut)) {
                meta.entry("namespace").or_insert_with(|| Value::String(ns.clone()));
            }
            super::rbac::check_escalation(api, id, t.res.kind_id, &obj)?;
        }
    }
    match (t.subresource.as_deref(), &method) {
        (Some("binding"), &Method::POST) if t.res.plural == "pods" => {
            let binding = request::decode_body(&headers, &body)?;
            api.bind(&t, binding, dry_run).await?;
            let ok = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
            return Ok(json_response(StatusCode::CREATED, &ok, &[]));
        }
        // Eviction: a delete that disruption budgets can refuse, with the Eviction's delete
        // options.
        (Some("eviction"), &Method::POST) if t.res.plural == "pods" => {
            let eviction = request::decode_body(&headers, &body)?;
            let opts = DeleteOptions::from_body(&eviction["deleteOptions"]);
            api.evict(&t, opts, dry_run).await?;
            let ok = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
            return Ok(json_response(StatusCode::CREATED, &ok, &[]));
        }
        (Some("scale"), m) if t.res.has_scale => {
            let scale = match *m {
                Method::GET => api.get_scale(&t).await?,
                Method::PUT => {
                    let want = request::decode_body(&headers, &body)?;
                    api.set_scale(&t, dry_run, move |_| Ok(want)).await?
                }
                Method::PATCH => {
                    let patch = request::decode_body(&headers, &body)?;
                    let ct = request::content_type(&headers);
                    api.set_scale(&t, dry_run, move |cur| super::objects::apply_patch(cur, &ct, &patch)).await?
                }
                _ => return Err(ApiError::method_not_allowed(format!("{method} is not supported on scale"))),
            };
            return Ok(json_response(StatusCode::OK, &scale, &[]));
        }
        _ => {}
    }
    match (&method, t.name.is_some()) {
        (&Method::GET, false) if p.flag("watch") || t.watch_path => {
            let after = match p.get("resourceVersion") {
                None | Some("0") => None,
                Some(v) => Some(
                    v.parse::<u64>()
                        .map_err(|_| ApiError::bad_request(format!("resourceVersion: invalid value {v:?}")))?,
                ),
            };
            let send_initial_events = p.flag("sendInitialEvents");
            if send_initial_events && !p.flag("allowWatchBookmarks") {
                return Err(ApiError::invalid(
                    "",
                    "ListOptions",
                    "",
                    vec![wasmorch_api::error::Cause::new(
                        "FieldValueForbidden",
                        "allowWatchBookmarks",
                        "Forbidden: allowWatchBookmarks must be set to true when sendInitialEvents is specified",
                    )],
                ));
            }
            let timeout = p.u64("timeoutSeconds")?.map_or(Duration::from_secs(1800), Duration::from_secs);
            let req = WatchRequest {
                res: t.res,
                namespace: t.namespace.clone(),
                opts: list_options(&t, &p)?,
                after,
                send_initial_events,
                bookmarks: p.flag("allowWatchBookmarks"),
                view,
                timeout,
                protobuf: table.is_none() && request::wants_protobuf(&headers),
                table,
            };
            Ok(watch::respond(api.clone(), req))
        }
        (&Method::GET, false) => {
            let opts = list_options(&t, &p)?;
            if p.get("resourceVersionMatch") == Some("Exact") {
                let rv = p.u64("resourceVersion")?.unwrap_or(0);
                if rv < api.store.compacted_rev() {
                    return Err(crate::store::gone_error(rv, api.store.compacted_rev()));
                }
            }
            let list = api.list(t.res, t.namespace.as_deref(), &opts).await?;
            Ok(match table {
                Some(include) => {
                    let mut tab = table::table(
                        t.res,
                        list["items"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                        list["metadata"]["resourceVersion"].as_str().unwrap_or(""),
                        include,
                        chrono::Utc::now(),
                    );
                    if let Some(c) = list["metadata"].get("continue") {
                        tab["metadata"]["continue"] = c.clone();
                    }
                    json_response(StatusCode::OK, &show(tab), &[])
                }
                None => json_response(StatusCode::OK, &show(list), &[]),
            })
        }
        (&Method::GET, true) => {
            if t.subresource.as_deref().is_some_and(|s| s != "status") {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("{} has no subresource {:?}", t.res.kind, t.subresource.as_deref().unwrap_or("")),
                ));
            }
            let obj = api.get(&t).await?;
            Ok(match table {
                Some(include) => json_response(
                    StatusCode::OK,
                    &show(table::table(
                        t.res,
                        std::slice::from_ref(&obj),
                        &object::resource_version(&obj).to_string(),
                        include,
                        chrono::Utc::now(),
                    )),
                    &[],
                ),
                None => json_response(StatusCode::OK, &show(obj), &[]),
            })
        }
        (&Method::POST, false) => {
            let (obj, mut warnings) = convert::to_storage(view, request::decode_body(&headers, &body)?, mode)?;
            let w =
                api.create_by(t.res, t.namespace.as_deref(), obj, mode, dry_run, &writer(&p, &headers, false)?).await?;
            warnings.extend(w.warnings);
            Ok(json_response(StatusCode::CREATED, &show(w.object), &warnings))
        }
        (&Method::PUT, true) => {
            let (obj, mut warnings) = convert::to_storage(view, request::decode_body(&headers, &body)?, mode)?;
            let w = api.update_by(&t, obj, mode, dry_run, writer(&p, &headers, false)?).await?;
            warnings.extend(w.warnings);
            Ok(json_response(StatusCode::OK, &show(w.object), &warnings))
        }
        (&Method::PATCH, true)
            if convert::converts(view) && !request::content_type(&headers).starts_with("application/apply-patch") =>
        {
            let patch = request::decode_body(&headers, &body)?;
            let w = patch_through(
                api,
                &t,
                view,
                &request::content_type(&headers),
                &patch,
                mode,
                dry_run,
                writer(&p, &headers, false)?,
            )
            .await?;
            Ok(json_response(StatusCode::OK, &show(w.object), &w.warnings))
        }
        (&Method::PATCH, true) => {
            let (patch, mut warnings) = match convert::converts(view) {
                // An apply configuration is a (partial) object of the version it names.
                true => convert::to_storage(view, request::decode_body(&headers, &body)?, mode)?,
                false => (request::decode_body(&headers, &body)?, Vec::new()),
            };
            let ct = request::content_type(&headers);
            let apply = ct == "application/apply-patch+yaml";
            let w = writer(&p, &headers, apply)?;
            match api.patch_by(&t, &ct, patch.clone(), mode, dry_run, w.clone()).await {
                Ok(w) => {
                    warnings.extend(w.warnings);
                    Ok(json_response(StatusCode::OK, &show(w.object), &warnings))
                }
                // Server-side apply creates what does not exist yet.
                Err(e) if e.code == 404 && ct == "application/apply-patch+yaml" && t.subresource.is_none() => {
                    if object::name(&patch) != t.name.as_deref().unwrap_or("") {
                        return Err(ApiError::bad_request(
                            "the name in the apply configuration does not match the URL",
                        ));
                    }
                    let w = api.create_by(t.res, t.namespace.as_deref(), patch, mode, dry_run, &w).await?;
                    warnings.extend(w.warnings);
                    Ok(json_response(StatusCode::CREATED, &show(w.object), &warnings))
                }
                Err(e) => Err(e),
            }
        }
        (&Method::DELETE, true) => {
            if t.subresource.is_some() {
                return Err(ApiError::method_not_allowed("DELETE is not allowed on a subresource"));
            }
            let mut opts = if body.is_empty() {
                DeleteOptions::default()
            } else {
                DeleteOptions::from_body(&request::decode_body(&headers, &body)?)
            };
            if let Some(pp) = p.get("propagationPolicy") {
                opts.propagation = Some(pp.to_string());
            }
            if let Some(g) = p.get("gracePeriodSeconds") {
                let g =
                    g.parse().map_err(|_| ApiError::bad_request(format!("gracePeriodSeconds: invalid value {g:?}")))?;
                opts.grace_period_seconds = Some(g);
            }
            let w = api.delete(&t, opts, dry_run).await?;
            let code =
                if w.event == Some(EventType::Deleted) || dry_run { StatusCode::OK } else { StatusCode::ACCEPTED };
            Ok(json_response(code, &show(w.object), &[]))
        }
        (&Method::DELETE, false) => {
            let opts = list_options(&t, &p)?;
            let list = api.list(t.res, t.namespace.as_deref(), &opts).await?;
            let mut deleted = Vec::new();
            for o in list["items"].as_array().into_iter().flatten() {
                let mut it = t.clone();
                it.name = Some(object::name(o).to_string());
                it.namespace = t.res.namespaced.then(|| object::namespace(o).to_string());
                match api.delete(&it, DeleteOptions::default(), dry_run).await {
                    Ok(w) => deleted.push(w.object),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            let mut out = list.clone();
            out["items"] = Value::Array(deleted);
            Ok(json_response(StatusCode::OK, &show(out), &[]))
        }
        _ => Err(ApiError::method_not_allowed(format!("{method} is not supported on this path"))),
    }
}

/// A JSON, merge or strategic-merge patch sent to an alternate version: applied to the object
/// as that version shows it, converted back, and written with the read object's
/// resourceVersion as precondition, again on a conflict (unless the patch itself names a
/// resourceVersion), as Kubernetes' guaranteed update does.
#[allow(clippy::too_many_arguments)]
async fn patch_through(
    api: &Api,
    t: &Target,
    view: &'static wasmorch_api::Resource,
    ct: &str,
    patch: &Value,
    mode: FieldValidation,
    dry_run: bool,
    w: super::objects::WriteOpts,
) -> Result<super::api::Written, ApiError> {
    let pinned = patch.pointer("/metadata/resourceVersion").is_some_and(|v| !v.is_null());
    let mut attempts = 0;
    loop {
        attempts += 1;
        let cur = api.get(t).await?;
        let rv = object::resource_version(&cur).to_string();
        let mut patched = super::objects::apply_patch(&convert::from_storage(view, cur), ct, patch)?;
        if !pinned && let Some(m) = patched.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), Value::String(rv));
        }
        let (obj, warnings) = convert::to_storage(view, patched, mode)?;
        match api.update_by(t, obj, mode, dry_run, w.clone()).await {
            Err(e) if e.code == 409 && !pinned && attempts < 5 => continue,
            Ok(mut written) => {
                written.warnings.splice(0..0, warnings);
                return Ok(written);
            }
            Err(e) => return Err(e),
        }
    }
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
