//! Custom resources: the kinds CustomResourceDefinitions define, served beside the built-in
//! ones. Pure: the API server loads the stored definitions into the registry here
//! ([`load`]); routing, discovery, validation, defaulting, pruning and Tables read it.
//!
//! Each served version of a definition becomes a [`Resource`] of kind
//! [`ResourceKind::Custom`], interned (`&'static`, like the built-in ones: one allocation per
//! distinct definition, however often it is loaded). All versions of a definition share the
//! storage version's store keys; conversion is `None` (only `apiVersion` changes), and every
//! version is validated by its own schema.

use crate::error::{ApiError, Cause};
use crate::object;
use crate::resources::{Resource, ResourceKind};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// One served version of a custom resource.
#[derive(Debug, Clone)]
pub struct Version {
    pub res: &'static Resource,
    /// The version objects are stored in (each definition has exactly one).
    pub storage: &'static Resource,
    /// The version's `openAPIV3Schema` (`Null`: anything goes, nothing is pruned).
    pub schema: Value,
    pub columns: Vec<Column>,
    pub scale: Option<Scale>,
    /// `metadata.name` of the definition.
    pub definition: String,
}

/// An `additionalPrinterColumns` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: String,
    pub format: String,
    pub description: String,
    pub priority: u8,
    pub json_path: String,
}

/// Where the `scale` subresource finds its numbers (JSON paths as `.spec.replicas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// The definitions each source (an API server of this process: one, except in tests that
/// run several) loaded, and their union as served.
#[derive(Default)]
struct Registry {
    by_source: HashMap<u64, Vec<Version>>,
    all: Arc<Vec<Version>>,
}

fn registry() -> &'static RwLock<Registry> {
    static R: OnceLock<RwLock<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Every served version of every loaded definition.
pub fn versions() -> Arc<Vec<Version>> {
    registry().read().unwrap_or_else(|e| e.into_inner()).all.clone()
}

/// The served version behind `res`, when it is a custom one.
pub fn version_of(res: &Resource) -> Option<Version> {
    if res.kind_id != ResourceKind::Custom {
        return None;
    }
    versions()
        .iter()
        .find(|v| v.res.group == res.group && v.res.version == res.version && v.res.plural == res.plural)
        .cloned()
}

/// Replace what `source` serves with what these stored definitions define.
pub fn load(source: u64, crds: &[Value]) {
    let mut out = Vec::new();
    for crd in crds {
        out.extend(definition(crd));
    }
    let mut r = registry().write().unwrap_or_else(|e| e.into_inner());
    r.by_source.insert(source, out);
    let mut all: Vec<Version> = Vec::new();
    for v in r.by_source.values().flatten() {
        if !all.iter().any(|a| std::ptr::eq(a.res, v.res)) {
            all.push(v.clone());
        }
    }
    r.all = Arc::new(all);
}

fn leak_strs(v: Vec<String>) -> &'static [&'static str] {
    let v: Vec<&'static str> = v.into_iter().map(|s| &*Box::leak(s.into_boxed_str())).collect();
    Box::leak(v.into_boxed_slice())
}

/// The fields of a custom resource's [`Resource`], owned: the interning key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Fields {
    group: String,
    version: String,
    kind: String,
    plural: String,
    singular: String,
    namespaced: bool,
    short: Vec<String>,
    status: bool,
    scale: bool,
    categories: Vec<String>,
}

/// The one `&'static Resource` for these fields (definitions are reloaded on every change:
/// the same fields give the same pointer, so memory grows only with distinct definitions).
fn intern(f: Fields) -> &'static Resource {
    static SEEN: OnceLock<Mutex<HashMap<Fields, &'static Resource>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = seen.get(&f) {
        return r;
    }
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let r: &'static Resource = Box::leak(Box::new(Resource {
        kind_id: ResourceKind::Custom,
        group: leak(&f.group),
        version: leak(&f.version),
        kind: leak(&f.kind),
        plural: leak(&f.plural),
        singular: leak(&f.singular),
        namespaced: f.namespaced,
        short_names: leak_strs(f.short.clone()),
        has_status: f.status,
        has_scale: f.scale,
        categories: leak_strs(f.categories.clone()),
    }));
    seen.insert(f, r);
    r
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
}

/// The served versions one stored CustomResourceDefinition defines.
fn definition(crd: &Value) -> Vec<Version> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let (group, kind, plural) = (s(&spec["group"]), s(&names["kind"]), s(&names["plural"]));
    if group.is_empty() || kind.is_empty() || plural.is_empty() {
        return Vec::new();
    }
    let singular = names["singular"].as_str().map(String::from).unwrap_or_else(|| kind.to_lowercase());
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let make = |v: &Value| {
        let subs = &v["subresources"];
        intern(Fields {
            group: group.clone(),
            version: v["name"].as_str().unwrap_or("").to_string(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short: strs(&names["shortNames"]),
            status: subs.get("status").is_some_and(|x| !x.is_null()),
            scale: subs.get("scale").is_some_and(|x| !x.is_null()),
            categories: strs(&names["categories"]),
        })
    };
    let all: Vec<&Value> = spec["versions"].as_array().into_iter().flatten().collect();
    let Some(storage) = all.iter().find(|v| v["storage"] == true).map(|v| make(v)) else { return Vec::new() };
    all.iter()
        .filter(|v| v["served"] == true)
        .map(|v| {
            let scale = v["subresources"].get("scale").filter(|x| !x.is_null()).map(|sc| Scale {
                spec_replicas: s(&sc["specReplicasPath"]),
                status_replicas: s(&sc["statusReplicasPath"]),
                label_selector: sc["labelSelectorPath"].as_str().map(String::from),
            });
            let columns = v["additionalPrinterColumns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| Column {
                    name: s(&c["name"]),
                    ty: s(&c["type"]),
                    format: s(&c["format"]),
                    description: s(&c["description"]),
                    priority: c["priority"].as_u64().unwrap_or(0).min(255) as u8,
                    json_path: s(&c["jsonPath"]),
                })
                .collect();
            Version {
                res: make(v),
                storage,
                schema: v.pointer("/schema/openAPIV3Schema").cloned().unwrap_or(Value::Null),
                columns,
                scale,
                definition: object::name(crd).to_string(),
            }
        })
        .collect()
}

// ---- schemas: defaults, pruning, validation ----

/// What a write of `obj` as version `v` becomes: defaults applied, unknown fields pruned
/// (their paths returned), or the causes it is invalid for.
pub fn admit(v: &Version, obj: &mut Value) -> Result<Vec<String>, Vec<Cause>> {
    let mut pruned = Vec::new();
    let mut causes = Vec::new();
    if v.schema.is_null() {
        return Ok(pruned);
    }
    let Some(m) = obj.as_object_mut() else { return Err(vec![Cause::invalid("", "", "must be an object")]) };
    let props = v.schema.get("properties").and_then(Value::as_object);
    let preserve = v.schema["x-kubernetes-preserve-unknown-fields"] == true;
    // Defaults of top-level fields.
    for (k, s) in props.into_iter().flatten() {
        if !m.contains_key(k)
            && !["apiVersion", "kind", "metadata"].contains(&k.as_str())
            && let Some(d) = s.get("default")
        {
            m.insert(k.clone(), d.clone());
        }
    }
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        if ["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
            continue;
        }
        match props.and_then(|p| p.get(&k)) {
            Some(s) => {
                if let Some(val) = m.get_mut(&k) {
                    walk(s, val, &k, &mut causes, &mut pruned);
                }
            }
            None if preserve => {}
            None => {
                m.remove(&k);
                pruned.push(k);
            }
        }
    }
    for r in strs(&v.schema["required"]) {
        if !["apiVersion", "kind", "metadata"].contains(&r.as_str()) && !m.contains_key(&r) {
            causes.push(Cause::required(r));
        }
    }
    if causes.is_empty() { Ok(pruned) } else { Err(causes) }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn walk(s: &Value, v: &mut Value, path: &str, causes: &mut Vec<Cause>, pruned: &mut Vec<String>) {
    if v.is_null() {
        if s["nullable"] != true {
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    s["type"].as_str().unwrap_or("object")
                ),
            ));
        }
        return;
    }
    let int_or_string = s["x-kubernetes-int-or-string"] == true;
    let want = s["type"].as_str().unwrap_or("");
    let have = type_name(v);
    let fits = match want {
        _ if int_or_string => matches!(have, "integer" | "string"),
        "" => true,
        "number" => matches!(have, "number" | "integer"),
        w => w == have,
    };
    if !fits {
        let want = if int_or_string { "integer or string" } else { want };
        causes.push(Cause::new(
            "FieldValueTypeInvalid",
            path,
            format!("Invalid value: \"{have}\": {path} in body must be of type {want}: \"{have}\""),
        ));
        return;
    }
    if let Some(e) = s["enum"].as_array()
        && !e.contains(v)
    {
        let list: Vec<String> = e.iter().map(shown).collect();
        causes.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!("Unsupported value: {}: supported values: {}", shown(v), list.join(", ")),
        ));
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = s["minimum"].as_f64() {
                let excl = s["exclusiveMinimum"] == true;
                if x < min || (excl && x == min) {
                    let rel = if excl { "greater than" } else { "greater than or equal to" };
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        path,
                        format!("Invalid value: {n}: {path} in body should be {rel} {}", s["minimum"]),
                    ));
                }
            }
            if let Some(max) = s["maximum"].as_f64() {
                let excl = s["exclusiveMaximum"] == true;
                if x > max || (excl && x == max) {
                    let rel = if excl { "less than" } else { "less than or equal to" };
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        path,
                        format!("Invalid value: {n}: {path} in body should be {rel} {}", s["maximum"]),
                    ));
                }
            }
        }
        Value::String(text) => {
            let len = text.chars().count() as u64;
            if let Some(min) = s["minLength"].as_u64().filter(|m| len < *m) {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!("Invalid value: {text:?}: {path} in body should be at least {min} chars long"),
                ));
            }
            if let Some(max) = s["maxLength"].as_u64().filter(|m| len > *m) {
                causes.push(Cause::new(
                    "FieldValueTooLong",
                    path,
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
            if let Some(p) = s["pattern"].as_str() {
                match pattern(p) {
                    Some(re) if !re.is_match(text) => causes.push(Cause::new(
                        "FieldValueInvalid",
                        path,
                        format!("Invalid value: {text:?}: {path} in body should match '{p}'"),
                    )),
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = s["minItems"].as_u64().filter(|m| n < *m) {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!("Invalid value: {n}: {path} in body should have at least {min} items"),
                ));
            }
            if let Some(max) = s["maxItems"].as_u64().filter(|m| n > *m) {
                causes.push(Cause::new(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
            if let Some(item) = s.get("items").filter(|i| i.is_object()) {
                for (i, x) in items.iter_mut().enumerate() {
                    walk(item, x, &format!("{path}[{i}]"), causes, pruned);
                }
            }
        }
        Value::Object(m) => object_fields(s, m, path, causes, pruned),
        _ => {}
    }
}

fn object_fields(s: &Value, m: &mut Map<String, Value>, path: &str, causes: &mut Vec<Cause>, pruned: &mut Vec<String>) {
    let props = s.get("properties").and_then(Value::as_object);
    for (k, ps) in props.into_iter().flatten() {
        if !m.contains_key(k)
            && let Some(d) = ps.get("default")
        {
            m.insert(k.clone(), d.clone());
        }
    }
    let preserve = s["x-kubernetes-preserve-unknown-fields"] == true;
    let additional = s.get("additionalProperties");
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        let child = format!("{path}.{k}");
        let schema = props.and_then(|p| p.get(&k)).or(additional.filter(|a| a.is_object()));
        match schema {
            Some(cs) => {
                if let Some(val) = m.get_mut(&k) {
                    walk(cs, val, &child, causes, pruned);
                }
            }
            None if preserve || additional == Some(&Value::Bool(true)) => {}
            // Without properties and additionalProperties a schema says nothing of its fields:
            // only `type: object` with neither, and no preserve, prunes everything.
            None => {
                m.remove(&k);
                pruned.push(child);
            }
        }
    }
    for r in strs(&s["required"]) {
        if !m.contains_key(&r) {
            causes.push(Cause::required(format!("{path}.{r}")));
        }
    }
    if let Some(min) = s["minProperties"].as_u64().filter(|x| (m.len() as u64) < *x) {
        causes.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {}: {path} in body should have at least {min} properties", m.len()),
        ));
    }
    if let Some(max) = s["maxProperties"].as_u64().filter(|x| (m.len() as u64) > *x) {
        causes.push(Cause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {}: must have at most {max} items", m.len()),
        ));
    }
}

/// A compiled `pattern`, from a bounded cache (patterns come from definitions, which are
/// few; a pattern that does not compile checks nothing, as the definition's validation
/// refused it already).
fn pattern(p: &str) -> Option<regex::Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let mut c = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = c.get(p) {
        return r.clone();
    }
    if c.len() >= 1024 {
        c.clear();
    }
    let re = regex::RegexBuilder::new(p).size_limit(1 << 20).build().ok();
    c.insert(p.to_string(), re.clone());
    re
}

/// Whether `p` is a pattern the validator can use (for the definition's own validation).
pub fn pattern_ok(p: &str) -> bool {
    regex::RegexBuilder::new(p).size_limit(1 << 20).build().is_ok()
}

/// Validate a CustomResourceDefinition beyond its schema (names, versions, scope).
pub fn validate_definition(crd: &Value, builtin_groups: &[&str], c: &mut Vec<Cause>) {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or("");
    let kind = names["kind"].as_str().unwrap_or("");
    if group.is_empty() || !group.contains('.') {
        c.push(Cause::invalid("spec.group", group, "should be a domain with at least one dot"));
    } else if builtin_groups.contains(&group) {
        c.push(Cause::invalid("spec.group", group, "is served by the API server itself"));
    }
    let lower_dns = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
    };
    if !lower_dns(plural) {
        c.push(Cause::invalid("spec.names.plural", plural, "a lowercase RFC 1123 label is required"));
    }
    if let Some(s) = names["singular"].as_str()
        && !lower_dns(s)
    {
        c.push(Cause::invalid("spec.names.singular", s, "a lowercase RFC 1123 label is required"));
    }
    if kind.is_empty()
        || !kind.chars().next().is_some_and(|ch| ch.is_ascii_alphabetic())
        || kind.contains(|ch: char| !ch.is_ascii_alphanumeric())
    {
        c.push(Cause::invalid("spec.names.kind", kind, "an alphanumeric name starting with a letter is required"));
    }
    let want = format!("{plural}.{group}");
    if object::name(crd) != want {
        c.push(Cause::invalid(
            "metadata.name",
            object::name(crd),
            &format!("must be spec.names.plural+\".\"+spec.group ({want})"),
        ));
    }
    match spec["scope"].as_str() {
        Some("Namespaced" | "Cluster") => {}
        other => c.push(Cause::new(
            "FieldValueNotSupported",
            "spec.scope",
            format!("Unsupported value: {:?}: supported values: \"Cluster\", \"Namespaced\"", other.unwrap_or("")),
        )),
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        c.push(Cause::required("spec.versions"));
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if !versions.is_empty() && storage != 1 {
        c.push(Cause::invalid("spec.versions", storage, "must have exactly one version marked as storage version"));
    }
    if !versions.is_empty() && !versions.iter().any(|v| v["served"] == true) {
        c.push(Cause::invalid("spec.versions", "[]", "must have at least one served version"));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, v) in versions.iter().enumerate() {
        let name = v["name"].as_str().unwrap_or("");
        if !lower_dns(name) {
            c.push(Cause::invalid(format!("spec.versions[{i}].name"), name, "a lowercase RFC 1123 label is required"));
        }
        if !seen.insert(name) {
            c.push(Cause::new(
                "FieldValueDuplicate",
                format!("spec.versions[{i}].name"),
                format!("Duplicate value: {name:?}"),
            ));
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None => c.push(Cause::required(format!("spec.versions[{i}].schema.openAPIV3Schema"))),
            Some(s) => check_schema(s, &format!("spec.versions[{i}].schema.openAPIV3Schema"), 0, c),
        }
    }
    if spec.pointer("/conversion/strategy").and_then(Value::as_str).is_some_and(|s| s != "None") {
        c.push(Cause::new(
            "FieldValueNotSupported",
            "spec.conversion.strategy",
            "Unsupported value: only \"None\" is served (no conversion webhooks)",
        ));
    }
}

/// A schema the validator understands: structural enough, patterns that compile.
fn check_schema(s: &Value, path: &str, depth: usize, c: &mut Vec<Cause>) {
    if depth > 64 {
        c.push(Cause::invalid(path, "...", "is nested too deeply"));
        return;
    }
    if !s.is_object() {
        c.push(Cause::invalid(path, s, "must be a schema object"));
        return;
    }
    if let Some(t) = s.get("type").and_then(Value::as_str)
        && !["object", "array", "string", "integer", "number", "boolean"].contains(&t)
    {
        c.push(Cause::new("FieldValueNotSupported", format!("{path}.type"), format!("Unsupported value: {t:?}")));
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str)
        && !pattern_ok(p)
    {
        c.push(Cause::invalid(format!("{path}.pattern"), p, "must be a valid regular expression"));
    }
    for (k, child) in s.get("properties").and_then(Value::as_object).into_iter().flatten() {
        check_schema(child, &format!("{path}.properties[{k}]"), depth + 1, c);
    }
    if let Some(i) = s.get("items") {
        check_schema(i, &format!("{path}.items"), depth + 1, c);
    }
    if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
        check_schema(a, &format!("{path}.additionalProperties"), depth + 1, c);
    }
}

/// The Table columns of version `v`: Name, then its printer columns (Age alone when it has
/// none), as Kubernetes prints custom resources.
pub fn column_definitions(v: &Version) -> Vec<Value> {
    let name = json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0});
    let mut out = vec![name];
    if v.columns.is_empty() {
        out.push(
            json!({"name": "Age", "type": "date", "format": "", "description": "CreationTimestamp", "priority": 0}),
        );
    }
    for c in &v.columns {
        out.push(json!({"name": c.name, "type": c.ty, "format": c.format, "description": c.description, "priority": c.priority}));
    }
    out
}

/// The cells of `obj` under [`column_definitions`]; `date` columns as ages (`5m`), as
/// Kubernetes prints them.
pub fn cells(v: &Version, obj: &Value, now: chrono::DateTime<chrono::Utc>) -> Vec<Value> {
    let mut out = vec![json!(object::name(obj))];
    if v.columns.is_empty() {
        out.push(json!(object::age(obj["metadata"]["creationTimestamp"].as_str(), now)));
    }
    for c in &v.columns {
        let cell = at_path(obj, &c.json_path).cloned().unwrap_or(Value::Null);
        out.push(match (c.ty.as_str(), cell.as_str()) {
            ("date", Some(ts)) => json!(object::age(Some(ts), now)),
            // Lists and objects in a string column print as JSON (`["a.example.com"]`), as
            // kube-apiserver prints them.
            ("string", None) if cell.is_array() || cell.is_object() => json!(cell.to_string()),
            _ => cell,
        });
    }
    out
}

/// [`admit`] as a write answers it: pruned fields judged by `mode`
/// ([`crate::validation::unknown_field_verdict`]), causes as a 422.
pub fn admit_write(
    v: &Version,
    obj: &mut Value,
    mode: crate::validation::FieldValidation,
) -> Result<Vec<String>, ApiError> {
    let pruned = admit(v, obj).map_err(|causes| invalid(v, obj, causes))?;
    crate::validation::unknown_field_verdict(&pruned, mode)
}

/// A write refused for its causes, as a 422 naming the kind.
pub fn invalid(v: &Version, obj: &Value, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(v.res.group, v.res.kind, object::name(obj), causes)
}

mod path;
pub use path::{at_path, set_path};

#[cfg(test)]
mod tests;
