//! How writes change objects: create, update, status update, patch and delete decisions.
//! Pure functions over JSON values, run inside the store's mutation closures.

use crate::store::Outcome;
use serde_json::{Value, json};
use wasmorch_api::error::Cause;
use wasmorch_api::object::{self, meta_mut};
use wasmorch_api::resources::{Resource, ResourceKind};
use wasmorch_api::validation::{self, FieldValidation};
use wasmorch_api::{ApiError, custom, defaults, managed};

/// Fields the server owns: a client's value is ignored on update.
const SERVER_META: &[&str] =
    &["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "selfLink"];

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
}

/// Fill and check a new object. Returns the object to store and any warnings.
/// A body without `apiVersion`/`kind` takes them from the request's resource, as Kubernetes'
/// decoder does (some clients leave them out); a mismatch is still rejected by validation.
fn fill_type_meta(res: &Resource, obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        for (k, v) in [("apiVersion", res.api_version()), ("kind", res.kind.to_string())] {
            if m.get(k).is_none_or(|x| x.is_null() || x == "") {
                m.insert(k.into(), json!(v));
            }
        }
    }
}

/// Who writes, for field ownership (`metadata.managedFields`).
#[derive(Debug, Clone)]
pub struct WriteOpts {
    /// The field manager: `?fieldManager=`, else the client's User-Agent product.
    pub manager: String,
    /// Server-side apply only: take over conflicting fields.
    pub force: bool,
    /// The write is a server-side apply (a create from an apply configuration).
    pub apply: bool,
}

impl Default for WriteOpts {
    fn default() -> Self {
        WriteOpts { manager: "wasmorch-controller-manager".into(), force: false, apply: false }
    }
}

pub fn prepare_create(
    res: &Resource,
    ns: Option<&str>,
    obj: Value,
    mode: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    prepare_create_by(res, ns, obj, mode, &WriteOpts::default())
}

pub fn prepare_create_by(
    res: &Resource,
    ns: Option<&str>,
    mut obj: Value,
    mode: FieldValidation,
    w: &WriteOpts,
) -> Result<(Value, Vec<String>), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON or YAML object"));
    }
    fill_type_meta(res, &mut obj);
    defaults::normalize(res.kind_id, &mut obj);
    let mut warnings = validation::check_fields(res, &obj, mode)?;
    let body_ns = object::namespace(&obj).to_string();
    if res.namespaced {
        let ns = ns.unwrap_or("");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
            )));
        }
        meta_mut(&mut obj).insert("namespace".into(), json!(ns));
    }
    if object::resource_version(&obj) != 0
        || object::meta(&obj).get("resourceVersion").is_some_and(|v| !v.is_null() && v != "")
    {
        return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
    }
    if object::name(&obj).is_empty()
        && let Some(g) = object::meta(&obj).get("generateName").and_then(Value::as_str).filter(|g| !g.is_empty())
    {
        let name = format!("{g}{}", random_suffix());
        meta_mut(&mut obj).insert("name".into(), json!(name));
    }
    let config = w.apply.then(|| obj.clone());
    defaults::apply(res.kind_id, &mut obj);
    warnings.extend(custom_admit(res, &mut obj, mode)?);
    validation::validate_checked(res, &obj)?;
    let now = object::now_rfc3339();
    match config {
        Some(cfg) => {
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
            // Nothing exists yet, so nothing conflicts.
            obj = managed::apply(&json!({}), &cfg, obj, &w.manager, true, &now)
                .map_err(|_| ApiError::internal("recording field ownership"))?;
        }
        None => managed::record_update(None, &mut obj, &w.manager, &now, None),
    }
    let m = meta_mut(&mut obj);
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
    m.insert("generation".into(), json!(1));
    for k in ["deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "selfLink"] {
        m.remove(k);
    }
    match res.kind_id {
        ResourceKind::Pod => obj["status"] = json!({"phase": "Pending"}),
        ResourceKind::Namespace => {
            obj["status"] = json!({"phase": "Active"});
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
        }
        ResourceKind::Node => {}
        // Its objects are deleted before it goes (controllers/crd.rs).
        ResourceKind::CustomResourceDefinition => {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
            let mut f = object::finalizers(&obj);
            if !f.iter().any(|x| x == "customresourcecleanup.apiextensions.k8s.io") {
                f.push("customresourcecleanup.apiextensions.k8s.io".into());
            }
            meta_mut(&mut obj).insert("finalizers".into(), json!(f));
        }
        // As Kubernetes writes it: a Service always has a (possibly empty) load-balancer status.
        ResourceKind::Service => obj["status"] = json!({"loadBalancer": {}}),
        _ if res.has_status => {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        _ => {}
    }
    Ok((obj, warnings))
}

/// Everything but metadata and status: what `generation` tracks.
fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// Decide an update of `cur` to `new` (PUT or the result of a patch). `sub` is `status` or
/// `None`. Returns the outcome (an update, or the final delete when the last finalizer of a
/// deleting object goes) and warnings.
pub fn prepare_update(
    res: &Resource,
    cur: &Value,
    new: Value,
    sub: Option<&str>,
    mode: FieldValidation,
) -> Result<(Outcome, Vec<String>), ApiError> {
    prepare_update_by(res, cur, new, sub, mode, &WriteOpts::default())
}

/// For a write to the status subresource whose object differs from the stored one in its
/// status alone (what a status patch or a read-modify-write of status sends): the object's
/// status with its type and name, all of it that is new.
fn status_only(sub: Option<&str>, cur: &Value, new: &Value) -> Option<Value> {
    if sub != Some("status") {
        return None;
    }
    let (c, n) = (cur.as_object()?, new.as_object()?);
    // A client's copy may carry an older resourceVersion (checked below) or none.
    let same = equal_but(c, n, "status", |k, a, b| match (k, a.as_object(), b.as_object()) {
        ("metadata", Some(a), Some(b)) => equal_but(a, b, "resourceVersion", |_, a, b| a == b),
        _ => a == b,
    });
    same.then(|| {
        let mut shell = serde_json::Map::new();
        for k in ["apiVersion", "kind"] {
            shell.insert(k.into(), n.get(k).cloned().unwrap_or(Value::Null));
        }
        shell.insert("metadata".into(), json!({"name": object::name(new)}));
        if let Some(st) = n.get("status") {
            shell.insert("status".into(), st.clone());
        }
        Value::Object(shell)
    })
}

/// Whether two maps have the same keys but `skip`, and `same` holds for each one's values.
fn equal_but(
    a: &serde_json::Map<String, Value>,
    b: &serde_json::Map<String, Value>,
    skip: &str,
    same: impl Fn(&str, &Value, &Value) -> bool,
) -> bool {
    let rest = |m: &'_ serde_json::Map<String, Value>| m.keys().filter(|k| *k != skip).count();
    rest(a) == rest(b) && b.iter().filter(|(k, _)| *k != skip).all(|(k, v)| a.get(k).is_some_and(|w| same(k, w, v)))
}

/// The stored object with the status `new` carries: `new` itself, its other top-level fields
/// put back to the stored ones where they differ. A status write's body is nearly always the
/// stored object with a new status (a patch of the stored object, or what the client read), so
/// this compares where a copy of the stored object would clone all of it and drop `new` (a
/// clone and a drop of a whole pod per status write).
fn with_status_of(cur: &Value, new: Value) -> Value {
    let mut out = match new {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let status = out.remove("status").unwrap_or(Value::Null);
    let empty = serde_json::Map::new();
    let stored = cur.as_object().unwrap_or(&empty);
    out.retain(|k, _| stored.contains_key(k));
    for (k, v) in stored.iter().filter(|(k, _)| *k != "status") {
        if out.get(k) != Some(v) {
            out.insert(k.clone(), v.clone());
        }
    }
    out.insert("status".into(), status);
    Value::Object(out)
}

/// [`prepare_update`] by a field manager. An apply (`w.apply`) has already recorded its
/// ownership (`managed::apply`); any other write records what it changed.
pub fn prepare_update_by(
    res: &Resource,
    cur: &Value,
    mut new: Value,
    sub: Option<&str>,
    mode: FieldValidation,
    w: &WriteOpts,
) -> Result<(Outcome, Vec<String>), ApiError> {
    if !new.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON or YAML object"));
    }
    fill_type_meta(res, &mut new);
    defaults::normalize(res.kind_id, &mut new);
    let shell = status_only(sub, cur, &new);
    let mut warnings = match &shell {
        // The rest is the stored object, checked when it was written: only the status
        // needs its typed round trip (that of a whole pod was 7.6 % of the API server's CPU
        // while a node reported thousands of pod starts).
        Some(shell) => validation::check_fields(res, shell, mode)?,
        None => validation::check_fields(res, &new, mode)?,
    };
    let name = object::name(cur).to_string();
    let new_name = object::name(&new);
    if !new_name.is_empty() && new_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        )));
    }
    let new_ns = object::namespace(&new);
    if res.namespaced && !new_ns.is_empty() && new_ns != object::namespace(cur) {
        return Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({new_ns}) does not match the namespace sent on the request ({})",
            object::namespace(cur)
        )));
    }
    let want_rv =
        object::meta(&new).get("resourceVersion").and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
    if let Some(rv) = want_rv
        && rv != object::resource_version(cur).to_string()
    {
        return Err(ApiError::conflict(
            res.group,
            res.plural,
            &name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    if sub == Some("status") {
        // The status subresource changes status only.
        let mut out = if shell.is_some() {
            // Already the stored object but for its status (and resourceVersion, which the
            // store sets): no second comparison.
            let mut new = new;
            if let Some(m) = new.as_object_mut() {
                m.entry("status").or_insert(Value::Null);
            }
            new
        } else {
            with_status_of(cur, new)
        };
        custom_admit(res, &mut out, FieldValidation::Ignore)?;
        // A built-in kind's rules read no status: the rest is the stored object, valid when
        // it was written, and a rule added since must not stop its status from being
        // reported (a pod stored with an annotation refused today still reports its start).
        if res.kind_id == ResourceKind::Custom {
            validation::validate_checked(res, &out)?;
        }
        managed::record_update(Some(cur), &mut out, &w.manager, &object::now_rfc3339(), Some("status"));
        return Ok((Outcome::Put(out), warnings));
    }
    // Server-owned metadata comes from the stored object.
    {
        let cur_meta = object::meta(cur);
        let m = meta_mut(&mut new);
        m.insert("name".into(), json!(name));
        if res.namespaced {
            m.insert("namespace".into(), cur_meta["namespace"].clone());
        }
        for k in SERVER_META {
            match cur_meta.get(*k) {
                Some(v) => m.insert((*k).to_string(), v.clone()),
                None => m.remove(*k),
            };
        }
    }
    if res.has_status || res.kind_id == ResourceKind::Namespace {
        match cur.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => drop(new.as_object_mut().map(|m| m.remove("status"))),
        }
    }
    if res.kind_id == ResourceKind::Namespace && sub != Some("finalize") {
        // spec.finalizers change only through the finalize subresource.
        new["spec"] = cur.get("spec").cloned().unwrap_or(Value::Null);
    }
    defaults::apply(res.kind_id, &mut new);
    warnings.extend(custom_admit(res, &mut new, mode)?);
    validation::validate_checked(res, &new)?;
    check_immutable(res, cur, &new)?;
    if !w.apply {
        managed::record_update(Some(cur), &mut new, &w.manager, &object::now_rfc3339(), sub);
    }
    if spec_part(&new) != spec_part(cur) {
        let g = object::meta(cur).get("generation").and_then(Value::as_i64).unwrap_or(0) + 1;
        meta_mut(&mut new).insert("generation".into(), json!(g));
    }
    if object::is_deleting(cur) && object::finalizers(&new).is_empty() && namespace_finalized(res, &new) {
        return Ok((Outcome::Delete, warnings));
    }
    Ok((Outcome::Put(new), warnings))
}

/// A custom resource through its definition's schema: defaults, pruning of unknown fields
/// (named in warnings, or a 400 under `fieldValidation=Strict`, as Kubernetes does), and
/// validation (422 naming each field).
fn custom_admit(res: &Resource, obj: &mut Value, mode: FieldValidation) -> Result<Vec<String>, ApiError> {
    if res.kind_id != ResourceKind::Custom {
        return Ok(Vec::new());
    }
    let Some(v) = custom::version_of(res) else {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({})", res.qualified_plural()),
        ));
    };
    custom::admit_write(&v, obj, mode)
}

fn namespace_finalized(res: &Resource, obj: &Value) -> bool {
    res.kind_id != ResourceKind::Namespace || obj["spec"]["finalizers"].as_array().is_none_or(Vec::is_empty)
}

fn check_immutable(res: &Resource, cur: &Value, new: &Value) -> Result<(), ApiError> {
    use ResourceKind::*;
    let mut causes = Vec::new();
    let mut same = |path: &str, field: &str| {
        let (a, b) = (cur.pointer(path), new.pointer(path));
        if a.is_some() && a != b {
            causes.push(Cause::new(
                "FieldValueInvalid",
                field,
                format!("Invalid value: {}: field is immutable", b.cloned().unwrap_or(Value::Null)),
            ));
        }
    };
    match res.kind_id {
        Deployment | ReplicaSet | DaemonSet => same("/spec/selector", "spec.selector"),
        Job => {
            same("/spec/selector", "spec.selector");
            same("/spec/template", "spec.template");
            same("/spec/completions", "spec.completions");
        }
        Service => same("/spec/clusterIP", "spec.clusterIP"),
        RoleBinding | ClusterRoleBinding => same("/roleRef", "roleRef"),
        // What its objects are stored under (Kubernetes lets names change through
        // acceptedNames; here they are fixed for the definition's life).
        CustomResourceDefinition => {
            same("/spec/group", "spec.group");
            same("/spec/scope", "spec.scope");
            same("/spec/names/plural", "spec.names.plural");
            same("/spec/names/kind", "spec.names.kind");
        }
        // A pod range, once given, is the node's for its life (Kubernetes: "may not be changed").
        Node => {
            same("/spec/podCIDR", "spec.podCIDR");
            same("/spec/podCIDRs", "spec.podCIDRs");
        }
        ConfigMap | Secret if cur["immutable"] == true => {
            same("/data", "data");
            same("/binaryData", "binaryData");
            same("/immutable", "immutable");
        }
        _ => {}
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(res.group, res.kind, object::name(cur), causes)) }
}

/// Apply a patch document to `cur`, by patch media type.
/// 409 for apply conflicts, as Kubernetes writes it (causes name each field and manager).
pub fn apply_conflict(res: &Resource, name: &str, conflicts: &[managed::Conflict]) -> ApiError {
    let mut e = ApiError::new(409, "Conflict", managed::conflict_message(conflicts));
    e.kind = res.plural.to_string();
    e.group = res.group.to_string();
    e.name = name.to_string();
    e.causes = conflicts
        .iter()
        .map(|c| {
            Cause::new(
                "FieldManagerConflict",
                c.path.clone(),
                format!("conflict with \"{}\" using {}", c.manager, c.api_version),
            )
        })
        .collect();
    e
}

pub fn apply_patch(cur: &Value, content_type: &str, patch: &Value) -> Result<Value, ApiError> {
    let doc = match content_type {
        "application/merge-patch+json" => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a JSON merge patch must be an object"));
            }
            let mut doc = cur.clone();
            json_patch::merge(&mut doc, patch);
            doc
        }
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            let mut doc = cur.clone();
            json_patch::patch(&mut doc, &p)
                .map_err(|e| ApiError::new(422, "Invalid", format!("the JSON patch could not be applied: {e}")))?;
            doc
        }
        // A strategic merge builds its result from `cur`: no copy first.
        "application/strategic-merge-patch+json" => {
            wasmorch_api::smp::apply(cur, patch).map_err(ApiError::bad_request)?
        }
        // Server-side apply, at its core: the applied configuration merges into the live
        // object as a strategic merge; `Api::patch_by` then settles ownership
        // (`wasmorch_api::managed::apply`: conflicts, removal of dropped fields).
        "application/apply-patch+yaml" => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("an apply configuration must be an object"));
            }
            wasmorch_api::smp::apply(cur, patch).map_err(ApiError::bad_request)?
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "patch type {other:?} is not supported; use application/merge-patch+json, application/json-patch+json or application/strategic-merge-patch+json"
                ),
            ));
        }
    };
    Ok(doc)
}

/// `DeleteOptions` fields that matter here.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// `gracePeriodSeconds`: 0 deletes a pod at once (what the node sends when it has stopped it).
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`: `Background` (default), `Foreground` or `Orphan`.
    pub propagation: Option<String>,
}

/// Finalizers the garbage collector acts on.
pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

impl DeleteOptions {
    pub fn from_body(v: &Value) -> DeleteOptions {
        DeleteOptions {
            uid: v["preconditions"]["uid"].as_str().map(String::from),
            resource_version: v["preconditions"]["resourceVersion"].as_str().map(String::from),
            grace_period_seconds: v["gracePeriodSeconds"].as_i64(),
            propagation: v["propagationPolicy"]
                .as_str()
                .map(String::from)
                .or_else(|| (v["orphanDependents"] == true).then(|| "Orphan".to_string())),
        }
    }
}

/// Decide a delete: remove now, or mark deleting (finalizers, namespaces) and let the
/// finalizer's owner finish it.
pub fn prepare_delete(res: &Resource, cur: &Value, opts: &DeleteOptions) -> Result<Outcome, ApiError> {
    let name = object::name(cur);
    if opts.uid.as_deref().is_some_and(|u| u != object::uid(cur)) {
        return Err(ApiError::conflict(
            res.group,
            res.plural,
            name,
            &format!(
                "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                opts.uid.as_deref().unwrap_or(""),
                object::uid(cur)
            ),
        ));
    }
    if opts.resource_version.as_deref().is_some_and(|r| r != object::resource_version(cur).to_string()) {
        return Err(ApiError::conflict(
            res.group,
            res.plural,
            name,
            "Precondition failed: the resourceVersion in the precondition does not match",
        ));
    }
    let mut out = cur.clone();
    // Foreground and orphan deletion: the garbage collector finishes them (finalizers).
    let gc_finalizer = match opts.propagation.as_deref() {
        None | Some("Background") => None,
        Some("Foreground") => Some(FOREGROUND),
        Some("Orphan") => Some(ORPHAN),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Orphan\", \"Background\", \"Foreground\""
            )));
        }
    };
    if let Some(f) = gc_finalizer
        && res.kind_id != ResourceKind::Pod
        && !object::finalizers(cur).iter().any(|x| x == f)
    {
        let mut fins = object::finalizers(cur);
        fins.push(f.to_string());
        meta_mut(&mut out).insert("finalizers".into(), json!(fins));
        if !object::is_deleting(cur) {
            let m = meta_mut(&mut out);
            m.insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        return Ok(Outcome::Put(out));
    }
    if let Some(grace) = pod_grace(res, cur, opts) {
        // A pod on a node stops gracefully: mark it, and the node deletes it once stopped.
        if object::is_deleting(cur) {
            return Ok(Outcome::Put(out));
        }
        let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
        let m = meta_mut(&mut out);
        m.insert("deletionTimestamp".into(), json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        return Ok(Outcome::Put(out));
    }
    let pending = res.kind_id == ResourceKind::Namespace || !object::finalizers(cur).is_empty();
    if !pending {
        return Ok(Outcome::Delete);
    }
    if !object::is_deleting(cur) {
        let m = meta_mut(&mut out);
        m.insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
    }
    if res.kind_id == ResourceKind::Namespace {
        out["status"]["phase"] = json!("Terminating");
    }
    Ok(Outcome::Put(out))
}

/// The grace period a pod deletion waits for, if it must wait: the pod is bound to a node, not
/// finished, and the request did not ask for 0.
fn pod_grace(res: &Resource, cur: &Value, opts: &DeleteOptions) -> Option<i64> {
    if res.kind_id != ResourceKind::Pod || object::str_at(cur, "spec.nodeName").is_none_or(str::is_empty) {
        return None;
    }
    if matches!(object::str_at(cur, "status.phase"), Some("Succeeded" | "Failed")) {
        return None;
    }
    let grace =
        opts.grace_period_seconds.or_else(|| cur["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(30);
    (grace > 0).then_some(grace)
}

#[cfg(test)]
#[path = "objects_tests.rs"]
mod tests;
