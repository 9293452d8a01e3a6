//! Validation of incoming objects, before anything is stored.
//!
//! Three layers, each naming the field it rejects:
//! 1. **Schema**: the object must deserialize into its typed `k8s-openapi` struct
//!    (wrong types and missing required fields → 422 with the field path).
//! 2. **Unknown fields**: a field the schema does not know is dropped by that typed round
//!    trip; comparing input and round trip finds it. `fieldValidation=Strict` rejects it (400),
//!    `Warn` (the default) answers with a warning, `Ignore` says nothing. The stored object is
//!    always the input as sent, so unknown-but-valid fields survive.
//! 3. **Semantics**: names, labels, selectors, ports, quantities, per-kind rules (422).

mod kinds;
mod names;
mod network;
mod pod;

pub use names::*;

use crate::error::{ApiError, Cause};
use crate::object;
use crate::resources::{Resource, ResourceKind};
use k8s_openapi::api::{
    apps::v1 as apps, autoscaling, batch::v1 as batch, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
    storage::v1 as storage,
};
use serde_json::Value;

/// The `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Strict,
    #[default]
    Warn,
    Ignore,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// Collects field-level causes while walking an object.
#[derive(Default)]
pub(crate) struct Causes(pub Vec<Cause>);

impl Causes {
    pub fn required(&mut self, field: impl Into<String>) {
        self.0.push(Cause::required(field));
    }
    pub fn invalid(&mut self, field: impl Into<String>, value: impl std::fmt::Display, why: impl AsRef<str>) {
        self.0.push(Cause::invalid(field, value, why.as_ref()));
    }
    pub fn not_supported(&mut self, field: impl Into<String>, value: &str, allowed: &[&str]) {
        let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        self.0.push(Cause::new(
            "FieldValueNotSupported",
            field,
            format!("Unsupported value: \"{value}\": supported values: {}", list.join(", ")),
        ));
    }
    pub fn duplicate(&mut self, field: impl Into<String>, value: &str) {
        self.0.push(Cause::new("FieldValueDuplicate", field, format!("Duplicate value: \"{value}\"")));
    }
    pub fn forbidden(&mut self, field: impl Into<String>, why: impl Into<String>) {
        self.0.push(Cause::new("FieldValueForbidden", field, format!("Forbidden: {}", why.into())));
    }
    /// Check `s` with a syntax function from [`names`]; records an Invalid cause.
    pub fn syntax(&mut self, field: impl Into<String>, s: &str, check: fn(&str) -> Option<String>) {
        if let Some(e) = check(s) {
            self.invalid(field, format!("\"{s}\""), e);
        }
    }
}

/// The first check of a write, before anything reads the object's fields (defaulting
/// included): it is an object of `res`'s apiVersion and kind, and every field has its schema's
/// type at any depth. A failure is a 400 or a 422 naming the field.
pub fn check_schema(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    check_fields(res, obj, FieldValidation::Ignore).map(|_| ())
}

/// [`check_schema`], and the body's unknown fields under `mode` (a 400 under `Strict`,
/// else warnings): the one typed decoding of a write. What the server then does to the
/// object (defaults, its own metadata) keeps it in its schema, so [`validate_checked`]
/// finishes the validation without another.
pub fn check_fields(res: &Resource, obj: &Value, mode: FieldValidation) -> Result<Vec<String>, ApiError> {
    check_type_meta(res, obj)?;
    let unknown = typed_check(res.kind_id, obj, mode)
        .map_err(|c| ApiError::invalid(res.group, res.kind, object::name(obj), vec![c]))?;
    unknown_field_verdict(&unknown, mode)
}

fn check_type_meta(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON or YAML object"));
    }
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if av != res.api_version() || kind != res.kind {
        return Err(ApiError::bad_request(format!(
            "the object's apiVersion/kind ({av:?}, {kind:?}) does not match the resource ({}, {})",
            res.api_version(),
            res.kind
        )));
    }
    Ok(())
}

/// Validate an object about to be created or updated as `res`.
/// Returns warnings (unknown fields under `Warn`); any rejection is an [`ApiError`] and nothing is stored.
pub fn validate(res: &Resource, obj: &Value, mode: FieldValidation) -> Result<Vec<String>, ApiError> {
    let warnings = check_fields(res, obj, mode)?;
    validate_checked(res, obj)?;
    Ok(warnings)
}

/// The rest of [`validate`] for an object that passed [`check_fields`] and was changed since
/// only by the server (defaulted, named, given its namespace or a stored status): its
/// metadata and its kind's rules.
pub fn validate_checked(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    check_type_meta(res, obj)?;
    let mut causes = Causes::default();
    validate_metadata(res, obj, &mut causes);
    kinds::validate_kind(res.kind_id, obj, &mut causes);
    if causes.0.is_empty() { Ok(()) } else { Err(ApiError::invalid(res.group, res.kind, object::name(obj), causes.0)) }
}

/// What `fieldValidation` makes of these unknown (or pruned) field paths: nothing under
/// `Ignore`, warnings under `Warn`, a 400 naming them under `Strict`.
pub fn unknown_field_verdict(paths: &[String], mode: FieldValidation) -> Result<Vec<String>, ApiError> {
    if mode == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let msgs: Vec<String> = paths.iter().map(|p| format!("unknown field \"{p}\"")).collect();
    if mode == FieldValidation::Strict && !msgs.is_empty() {
        return Err(ApiError::bad_request(format!("strict decoding error: {}", msgs.join(", "))));
    }
    Ok(msgs)
}

/// A body written through an alternate served version (`autoscaling/v1`), before it is
/// converted to the stored one: its apiVersion and kind, its schema in that version, and its
/// unknown fields under `mode` (conversion keeps only known fields). Returns warnings.
pub fn check_served(res: &Resource, obj: &Value, mode: FieldValidation) -> Result<Vec<String>, ApiError> {
    check_type_meta(res, obj)?;
    let unknown = match (res.kind_id, res.version) {
        (ResourceKind::HorizontalPodAutoscaler, "v1") => {
            check_as::<autoscaling::v1::HorizontalPodAutoscaler>(obj, mode)
        }
        _ => typed_check(res.kind_id, obj, mode),
    }
    .map_err(|c| ApiError::invalid(res.group, res.kind, object::name(obj), vec![c]))?;
    unknown_field_verdict(&unknown, mode)
}

/// Decode `obj` as `T`: a field of the wrong type fails, named. Unless `mode` ignores them,
/// returns the paths of the non-null fields `T` does not know, found in the same pass.
fn check_as<T: serde::de::DeserializeOwned>(obj: &Value, mode: FieldValidation) -> Result<Vec<String>, Cause> {
    if mode == FieldValidation::Ignore {
        return serde_path_to_error::deserialize::<_, T>(obj).map(|_| Vec::new()).map_err(schema_cause);
    }
    let mut ignored: Vec<Vec<Segment>> = Vec::new();
    let mut note = |path: serde_ignored::Path| ignored.push(segments(&path));
    let de = serde_ignored::Deserializer::new(obj, &mut note);
    serde_path_to_error::deserialize::<_, T>(de).map_err(schema_cause)?;
    // A null is no value: as Kubernetes, an unknown field set to null is not reported.
    Ok(ignored.iter().filter(|p| !value_at(obj, p).is_none_or(Value::is_null)).map(|p| field_path(p)).collect())
}

/// One step of a field path.
enum Segment {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_ignored::Path) -> Vec<Segment> {
    use serde_ignored::Path as P;
    let mut out = Vec::new();
    let mut at = path;
    loop {
        at = match at {
            P::Root => break,
            P::Map { parent, key } => {
                out.push(Segment::Key(key.clone()));
                parent
            }
            P::Seq { parent, index } => {
                out.push(Segment::Index(*index));
                parent
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => parent,
        };
    }
    out.reverse();
    out
}

fn value_at<'a>(obj: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, s| match s {
        Segment::Key(k) => v.get(k.as_str()),
        Segment::Index(i) => v.get(*i),
    })
}

/// `spec.containers[0].name`, as Kubernetes names a field.
fn field_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Segment::Key(k) if out.is_empty() => out.push_str(k),
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => {
                use std::fmt::Write;
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// [`check_as`] the kind's typed struct.
fn typed_check(kind: ResourceKind, obj: &Value, mode: FieldValidation) -> Result<Vec<String>, Cause> {
    macro_rules! rt {
        ($t:ty) => {
            check_as::<$t>(obj, mode)
        };
    }
    use ResourceKind::*;
    match kind {
        Namespace => rt!(core::Namespace),
        Node => rt!(core::Node),
        Pod => rt!(core::Pod),
        Service => rt!(core::Service),
        Endpoints => rt!(core::Endpoints),
        ConfigMap => rt!(core::ConfigMap),
        Secret => rt!(core::Secret),
        ServiceAccount => rt!(core::ServiceAccount),
        Event => rt!(core::Event),
        Deployment => rt!(apps::Deployment),
        ReplicaSet => rt!(apps::ReplicaSet),
        ReplicationController => rt!(core::ReplicationController),
        ResourceQuota => rt!(core::ResourceQuota),
        LimitRange => rt!(core::LimitRange),
        DaemonSet => rt!(apps::DaemonSet),
        Job => rt!(batch::Job),
        CronJob => rt!(batch::CronJob),
        Lease => rt!(coordination::Lease),
        PersistentVolumeClaim => rt!(core::PersistentVolumeClaim),
        PersistentVolume => rt!(core::PersistentVolume),
        StorageClass => rt!(storage::StorageClass),
        EndpointSlice => rt!(discovery::EndpointSlice),
        PodDisruptionBudget => rt!(policy::PodDisruptionBudget),
        NetworkPolicy => rt!(networking::NetworkPolicy),
        Ingress => rt!(networking::Ingress),
        IngressClass => rt!(networking::IngressClass),
        HorizontalPodAutoscaler => rt!(autoscaling::v2::HorizontalPodAutoscaler),
        Role => rt!(rbac::Role),
        ClusterRole => rt!(rbac::ClusterRole),
        RoleBinding => rt!(rbac::RoleBinding),
        ClusterRoleBinding => rt!(rbac::ClusterRoleBinding),
        CustomResourceDefinition => {
            rt!(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition)
        }
        // Checked by its definition's schema (`custom::admit`), not a typed struct.
        Custom => Ok(Vec::new()),
    }
}

fn schema_cause(e: serde_path_to_error::Error<serde_json::Error>) -> Cause {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let msg = e.inner().to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.trim_end_matches('`');
        let full = if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
        return Cause::required(full);
    }
    Cause::new("FieldValueTypeInvalid", path, format!("Invalid value: {msg}"))
}

fn validate_metadata(res: &Resource, obj: &Value, c: &mut Causes) {
    let meta = object::meta(obj);
    let name = object::name(obj);
    let generate = meta.get("generateName").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        if generate.is_empty() {
            c.0.push(Cause::new(
                "FieldValueRequired",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
    } else {
        let check: fn(&str) -> Option<String> = match res.kind_id {
            ResourceKind::Namespace | ResourceKind::Service => dns1123_label_errors,
            // As Kubernetes: RBAC objects may have any name that is a path segment
            // (`system:basic-user`).
            ResourceKind::Role
            | ResourceKind::ClusterRole
            | ResourceKind::RoleBinding
            | ResourceKind::ClusterRoleBinding => names::path_segment_errors,
            _ => dns1123_subdomain_errors,
        };
        c.syntax("metadata.name", name, check);
    }
    for (k, v) in object::string_map(meta.get("labels")) {
        c.syntax("metadata.labels", &k, qualified_name_errors);
        if let Some(e) = label_value_errors(&v) {
            c.invalid(format!("metadata.labels[{k}]"), format!("\"{v}\""), e);
        }
    }
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            c.syntax("metadata.annotations", k, qualified_name_errors);
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            c.0.push(Cause::new(
                "FieldValueTooLong",
                "metadata.annotations",
                "Too long: must have at most 262144 bytes",
            ));
        }
    }
    if !res.namespaced && !object::namespace(obj).is_empty() {
        c.forbidden("metadata.namespace", format!("{} is cluster-scoped and has no namespace", res.kind));
    }
}

#[cfg(test)]
mod tests;

/// The admission pipeline under coverage-guided fuzzing: `cargo +nightly fuzz run admission --features fuzzing`
/// (from `control/api`). The first byte picks a kind; the rest is a body in JSON, or in
/// protobuf when the magic leads. Properties: nothing panics; what passes the schema check
/// defaults and validates without panicking; an accepted object survives protobuf and back.
pub mod fuzz {
    use crate::resources::RESOURCES;
    use crate::{decode, defaults, protobuf};

    pub fn check(data: &[u8]) {
        let Some((&pick, body)) = data.split_first() else { return };
        let res = &RESOURCES[usize::from(pick) % RESOURCES.len()];
        let parsed =
            if body.starts_with(protobuf::MAGIC) { protobuf::decode(body).ok() } else { decode::json(body).ok() };
        let Some(mut obj) = parsed else { return };
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), res.api_version().into());
            m.insert("kind".into(), res.kind.into());
        }
        if super::check_schema(res, &obj).is_err() {
            return;
        }
        defaults::apply(res.kind_id, &mut obj);
        if super::validate(res, &obj, super::FieldValidation::Ignore).is_ok()
            && let Ok(bytes) = protobuf::encode(&obj)
        {
            protobuf::decode(&bytes).expect("what protobuf::encode writes, protobuf::decode reads");
        }
    }
}
