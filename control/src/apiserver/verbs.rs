//! The verbs on stored resources, behind `handlers::route`: the request is read once into a
//! [`Call`] (the target in its stored version, the version the client speaks as `view`),
//! authorized, then handled by a subresource with its own shape or by one function per verb.

use super::api::{Api, ListOptions};
use super::authz;
use super::objects::DeleteOptions;
use super::request::{self, Params, Target, json_response};
use super::watch::{self, WatchRequest};
use crate::pki::Identity;
use crate::store::{EventType, Stored};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;
use std::time::Duration;
use wasmorch_api::selector::{FieldSelector, LabelSelector};
use wasmorch_api::table::{self, IncludeObject};
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, Resource, convert, object, resources};

/// One request on a stored resource, read.
struct Call<'a> {
    api: &'a Api,
    /// The target in its stored version.
    t: Target,
    /// The version the client speaks (`autoscaling/v1`, a custom resource's other version):
    /// bodies are converted from it, replies to it.
    view: &'static Resource,
    p: Params,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
    table: Option<IncludeObject>,
    mode: FieldValidation,
    dry_run: bool,
}

/// A request on a stored resource (`/api/v1/…`, `/apis/g/v/…`).
pub(super) async fn resource(api: &Api, id: &Identity, t: Target, req: Request) -> Result<Response, ApiError> {
    let view = t.res;
    let t = Target { res: resources::storage_of(view), ..t };
    let p = Params::parse(req.uri().query());
    let method = req.method().clone();
    let headers = req.headers().clone();
    let table = request::wants_table(&headers).then(|| IncludeObject::parse(p.get("includeObject")));
    let mode = FieldValidation::parse(p.get("fieldValidation"))?;
    let dry_run = p.dry_run()?;
    let body = request::read_body(req.into_body()).await?;
    if !id.is_admin() {
        authorize(api, id, &t, &p, &method, &headers, &body).await?;
    }
    let c = Call { api, t, view, p, method, headers, body, table, mode, dry_run };
    if let Some(r) = subresource(&c).await? {
        return Ok(r);
    }
    let converted_patch =
        convert::converts(view) && !request::content_type(&c.headers).starts_with("application/apply-patch");
    match (&c.method, c.t.name.is_some()) {
        (&Method::GET, false) if c.p.flag("watch") || c.t.watch_path => watch(&c).await,
        (&Method::GET, false) => list(&c).await,
        (&Method::GET, true) => get(&c).await,
        (&Method::POST, false) => create(&c).await,
        (&Method::PUT, true) => update(&c).await,
        (&Method::PATCH, true) if converted_patch => patch_converted(&c).await,
        (&Method::PATCH, true) => patch(&c).await,
        (&Method::DELETE, true) => delete(&c).await,
        (&Method::DELETE, false) => delete_collection(&c).await,
        (m, _) => Err(ApiError::method_not_allowed(format!("{m} is not supported on this path"))),
    }
}

/// What a non-admin may do here: the authorizer's decision, and for roles and bindings
/// Kubernetes' escalation check (no granting what one does not hold) on the object as it
/// would be written.
async fn authorize(
    api: &Api,
    id: &Identity,
    t: &Target,
    p: &Params,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(), ApiError> {
    let verb = authz::Verb::of(method, t.name.is_some(), p.flag("watch") || t.watch_path);
    // A create's body names what it makes (a node may create only its own Node and Lease).
    let named = (verb == authz::Verb::Create && !body.is_empty()).then(|| request::decode_body(headers, body));
    let named = named.transpose()?;
    authz::authorize(api, id, t, verb, named.as_ref()).await?;
    // Roles and bindings: no granting what one does not hold.
    use wasmorch_api::ResourceKind as K;
    let rbac_kind = matches!(t.res.kind_id, K::Role | K::ClusterRole | K::RoleBinding | K::ClusterRoleBinding);
    if rbac_kind && matches!(verb, authz::Verb::Create | authz::Verb::Update | authz::Verb::Patch) {
        let mut obj = match verb {
            authz::Verb::Patch => {
                let patch = request::decode_body(headers, body)?;
                let ct = request::content_type(headers);
                match api.get(t).await {
                    Ok(cur) if !ct.starts_with("application/apply-patch") => {
                        super::objects::apply_patch(&cur, &ct, &patch)?
                    }
                    _ => patch,
                }
            }
            _ => request::decode_body(headers, body)?,
        };
        if let (Some(ns), Some(meta)) = (&t.namespace, obj.get_mut("metadata").and_then(Value::as_object_mut)) {
            meta.entry("namespace").or_insert_with(|| Value::String(ns.clone()));
        }
        super::rbac::check_escalation(api, id, t.res.kind_id, &obj)?;
    }
    Ok(())
}

/// The subresources with shapes of their own: `pods/binding`, `pods/eviction`, `scale`.
/// `None`: not one of them.
async fn subresource(c: &Call<'_>) -> Result<Option<Response>, ApiError> {
    let Call { api, t, method, headers, body, dry_run, .. } = c;
    let (api, dry_run) = (*api, *dry_run);
    match (t.subresource.as_deref(), method) {
        (Some("binding"), &Method::POST) if t.res.plural == "pods" => {
            let binding = request::decode_body(headers, body)?;
            api.bind(t, binding, dry_run).await?;
            let ok = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
            return Ok(Some(json_response(StatusCode::CREATED, &ok, &[])));
        }
        // Eviction: a delete that disruption budgets can refuse, with the Eviction's delete
        // options.
        (Some("eviction"), &Method::POST) if t.res.plural == "pods" => {
            let eviction = request::decode_body(headers, body)?;
            let opts = DeleteOptions::from_body(&eviction["deleteOptions"]);
            api.evict(t, opts, dry_run).await?;
            let ok = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
            return Ok(Some(json_response(StatusCode::CREATED, &ok, &[])));
        }
        (Some("scale"), m) if t.res.has_scale => {
            let scale = match *m {
                Method::GET => api.get_scale(t).await?,
                Method::PUT => {
                    let want = request::decode_body(headers, body)?;
                    api.set_scale(t, dry_run, move |_| Ok(want.clone())).await?
                }
                Method::PATCH => {
                    let patch = request::decode_body(headers, body)?;
                    let ct = request::content_type(headers);
                    api.set_scale(t, dry_run, move |cur| super::objects::apply_patch(cur, &ct, &patch)).await?
                }
                _ => return Err(ApiError::method_not_allowed(format!("{method} is not supported on scale"))),
            };
            return Ok(Some(json_response(StatusCode::OK, &scale, &[])));
        }
        _ => {}
    }
    Ok(None)
}

/// `GET` of a collection with `watch`: a stream of events.
async fn watch(c: &Call<'_>) -> Result<Response, ApiError> {
    let Call { api, t, view, p, headers, table, .. } = c;
    let (api, view, table) = (*api, *view, *table);
    let after = match p.get("resourceVersion") {
        None | Some("0") => None,
        Some(v) => {
            Some(v.parse::<u64>().map_err(|_| ApiError::bad_request(format!("resourceVersion: invalid value {v:?}")))?)
        }
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
        opts: list_options(t, p)?,
        after,
        send_initial_events,
        bookmarks: p.flag("allowWatchBookmarks"),
        view,
        timeout,
        protobuf: table.is_none() && request::wants_protobuf(headers),
        table,
    };
    Ok(watch::respond(api.clone(), req))
}

/// `GET` of a collection: a list, or a Table.
async fn list(c: &Call<'_>) -> Result<Response, ApiError> {
    let Call { api, t, view, p, table, .. } = c;
    let (api, view, table) = (*api, *view, *table);
    let show = |v: Value| convert::from_storage(view, v);
    let opts = list_options(t, p)?;
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

/// `GET` of one object (or its `status`).
async fn get(c: &Call<'_>) -> Result<Response, ApiError> {
    let Call { api, t, view, table, .. } = c;
    let (api, view, table) = (*api, *view, *table);
    let show = |v: Value| convert::from_storage(view, v);
    if t.subresource.as_deref().is_some_and(|s| s != "status") {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("{} has no subresource {:?}", t.res.kind, t.subresource.as_deref().unwrap_or("")),
        ));
    }
    let obj = api.get(t).await?;
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

/// The reply to a write: the object as the client's version shows it. In the stored version
/// that is the object itself, uncopied, and the bytes the store wrote when it has them (a
/// pod's JSON, serialized again for every status write's reply, was 5 % of the API server's
/// CPU while a node started thousands of pods).
fn written(
    code: StatusCode,
    view: &'static Resource,
    object: Stored,
    json: Option<bytes::Bytes>,
    warnings: &[String],
) -> Response {
    match (convert::converts(view), json) {
        (true, _) => json_response(code, &convert::from_storage(view, object.into_owned()), warnings),
        (false, Some(json)) => request::object_response(code, json, warnings),
        (false, None) => json_response(code, &object, warnings),
    }
}

/// `POST` to a collection.
async fn create(c: &Call<'_>) -> Result<Response, ApiError> {
    let Call { api, t, view, p, headers, body, mode, dry_run, .. } = c;
    let (api, view, mode, dry_run) = (*api, *view, *mode, *dry_run);
    let (obj, mut warnings) = convert::to_storage(view, request::decode_body(headers, body)?, mode)?;
    let w = api.create_by(t.res, t.namespace.as_deref(), obj, mode, dry_run, &writer(p, headers, false)?).await?;
    warnings.extend(w.warnings);
    Ok(written(StatusCode::CREATED, view, w.object, w.json, &warnings))
}

/// `PUT` of one object (or its `status`).
async fn update(c: &Call<'_>) -> Result<Response, ApiError> {
    let Call { api, t, view, p, headers, body, mode, dry_run, .. } = c;
    let (api, view, mode, dry_run) = (*api, *view, *mode, *dry_run);
    let (obj, mut warnings) = convert::to_storage(view, request::decode_body(headers, body)?, mode)?;
    let w = api.update_by(t, obj, mode, dry_run, writer(p, headers, false)?).await?;
    warnings.extend(w.warnings);
    Ok(written(StatusCode::OK, view, w.object, w.json, &warnings))
}

/// A JSON, merge or strategic patch sent to an alternate version (see [`patch_through`]).
async fn patch_converted(c: &Call<'_>) -> Result<Response, ApiError> {
    let Call { api, t, view, p, headers, body, mode, dry_run, .. } = c;
    let (api, view, mode, dry_run) = (*api, *view, *mode, *dry_run);
    let patch = request::decode_body(headers, body)?;
    let w =
        patch_through(api, t, view, &request::content_type(headers), &patch, mode, dry_run, writer(p, headers, false)?)
            .await?;
    Ok(written(StatusCode::OK, view, w.object, w.json, &w.warnings))
}

/// `PATCH` of one object: merge, JSON, strategic, or server-side apply (which creates what
/// does not exist yet).
async fn patch(c: &Call<'_>) -> Result<Response, ApiError> {
    let Call { api, t, view, p, headers, body, mode, dry_run, .. } = c;
    let (api, view, mode, dry_run) = (*api, *view, *mode, *dry_run);
    let (patch, mut warnings) = match convert::converts(view) {
        // An apply configuration is a (partial) object of the version it names.
        true => convert::to_storage(view, request::decode_body(headers, body)?, mode)?,
        false => (request::decode_body(headers, body)?, Vec::new()),
    };
    let ct = request::content_type(headers);
    let apply = ct == "application/apply-patch+yaml";
    let w = writer(p, headers, apply)?;
    match api.patch_by(t, &ct, patch.clone(), mode, dry_run, w.clone()).await {
        Ok(w) => {
            warnings.extend(w.warnings);
            Ok(written(StatusCode::OK, view, w.object, w.json, &warnings))
        }
        // Server-side apply creates what does not exist yet.
        Err(e) if e.code == 404 && ct == "application/apply-patch+yaml" && t.subresource.is_none() => {
            if object::name(&patch) != t.name.as_deref().unwrap_or("") {
                return Err(ApiError::bad_request("the name in the apply configuration does not match the URL"));
            }
            let w = api.create_by(t.res, t.namespace.as_deref(), patch, mode, dry_run, &w).await?;
            warnings.extend(w.warnings);
            Ok(written(StatusCode::CREATED, view, w.object, w.json, &warnings))
        }
        Err(e) => Err(e),
    }
}

/// `DELETE` of one object.
async fn delete(c: &Call<'_>) -> Result<Response, ApiError> {
    let Call { api, t, view, p, headers, body, dry_run, .. } = c;
    let (api, view, dry_run) = (*api, *view, *dry_run);
    if t.subresource.is_some() {
        return Err(ApiError::method_not_allowed("DELETE is not allowed on a subresource"));
    }
    let mut opts = if body.is_empty() {
        DeleteOptions::default()
    } else {
        DeleteOptions::from_body(&request::decode_body(headers, body)?)
    };
    if let Some(pp) = p.get("propagationPolicy") {
        opts.propagation = Some(pp.to_string());
    }
    if let Some(g) = p.get("gracePeriodSeconds") {
        let g = g.parse().map_err(|_| ApiError::bad_request(format!("gracePeriodSeconds: invalid value {g:?}")))?;
        opts.grace_period_seconds = Some(g);
    }
    let w = api.delete(t, opts, dry_run).await?;
    let code = if w.event == Some(EventType::Deleted) || dry_run { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok(written(code, view, w.object, w.json, &[]))
}

/// `DELETE` of a collection: each object its selectors pick.
async fn delete_collection(c: &Call<'_>) -> Result<Response, ApiError> {
    let Call { api, t, view, p, dry_run, .. } = c;
    let (api, view, dry_run) = (*api, *view, *dry_run);
    let show = |v: Value| convert::from_storage(view, v);
    let opts = list_options(t, p)?;
    let list = api.list(t.res, t.namespace.as_deref(), &opts).await?;
    let mut deleted = Vec::new();
    for o in list["items"].as_array().into_iter().flatten() {
        let mut it = t.clone();
        it.name = Some(object::name(o).to_string());
        it.namespace = t.res.namespaced.then(|| object::namespace(o).to_string());
        match api.delete(&it, DeleteOptions::default(), dry_run).await {
            Ok(w) => deleted.push(w.object.into_owned()),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let mut out = list.clone();
    out["items"] = Value::Array(deleted);
    Ok(json_response(StatusCode::OK, &show(out), &[]))
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
