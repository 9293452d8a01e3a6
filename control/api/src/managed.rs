//! Field ownership (`metadata.managedFields`) and server-side apply, as pure functions.
//!
//! A field set is Kubernetes' FieldsV1 tree: `{"f:spec": {"f:replicas": {}}}`, list elements
//! of keyed lists as `k:{"name":"web"}` (with `.` for the element itself), members of sets as
//! `v:"value"`. Which lists are keyed, by which keys, and which are sets comes from the
//! upstream markers in the protobuf table (`+listType=map`, `+listMapKey`, `+patchMergeKey`,
//! `+listType=set`). Every write records what changed under its manager (`Update`); an apply
//! owns exactly its configuration's fields (`Apply`): it conflicts with other owners of
//! fields whose value it would change (409, unless forced, which takes the fields over), and a
//! field it owned before and no longer sets is removed when no one else owns it.

use crate::protobuf::{self, Field, Message, Ty};
use serde_json::{Map, Value, json};

/// A path through a field set: `f:spec`, `k:{"name":"c"}`, `v:"x"`, `.`.
pub type Path = Vec<String>;

/// Top-level and metadata fields no manager owns (server-set or identity).
const UNOWNED_TOP: &[&str] = &["apiVersion", "kind", "status"];
const UNOWNED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The message of a field named `json` in `m`, looking through embedded messages.
fn field<'a>(m: &'a Message, json: &str) -> Option<&'a Field> {
    for f in m.fields {
        if f.json == json {
            return Some(f);
        }
        if f.json.is_empty()
            && let Ty::Message(i) = f.ty
            && let Some(found) = protobuf::messages().get(i).and_then(|c| field(c, json))
        {
            return Some(found);
        }
    }
    None
}

fn message(i: usize) -> Option<&'static Message> {
    protobuf::messages().get(i).filter(|m| !is_special(m))
}

fn is_special(m: &Message) -> bool {
    matches!(
        m.name,
        "apimachinery.pkg.api.resource.Quantity"
            | "apimachinery.pkg.util.intstr.IntOrString"
            | "apimachinery.pkg.apis.meta.v1.Time"
            | "apimachinery.pkg.apis.meta.v1.MicroTime"
            | "apimachinery.pkg.apis.meta.v1.Duration"
            | "apimachinery.pkg.runtime.RawExtension"
            | "apimachinery.pkg.apis.meta.v1.FieldsV1"
    )
}

/// How a repeated field merges.
enum ListKind {
    Keyed(Vec<&'static str>),
    Set,
    Atomic,
}

fn list_kind(f: &Field) -> ListKind {
    let keys: Vec<&'static str> = f.marker("listMapKey").collect();
    if !keys.is_empty() {
        return ListKind::Keyed(keys);
    }
    if let Some(k) = f.marker("patchMergeKey").next() {
        return ListKind::Keyed(vec![k]);
    }
    let set = f.marker("listType").any(|t| t == "set") || f.marker("patchStrategy").any(|s| s.contains("merge"));
    if set && !matches!(f.ty, Ty::Message(_)) { ListKind::Set } else { ListKind::Atomic }
}

fn key_of(elem: &Value, keys: &[&str]) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = elem.get(*k) {
            m.insert((*k).to_string(), v.clone());
        }
    }
    (!m.is_empty()).then(|| format!("k:{}", Value::Object(m)))
}

fn matches_key(elem: &Value, key: &str) -> bool {
    let Some(json) = key.strip_prefix("k:") else { return false };
    let Ok(Value::Object(want)) = serde_json::from_str::<Value>(json) else { return false };
    want.iter().all(|(k, v)| elem.get(k) == Some(v))
}

/// The field set of `obj` (a whole object of `apiVersion`/`kind`, or an apply configuration).
pub fn field_set(obj: &Value) -> Value {
    field_set_beside(obj, None)
}

/// The key of the marker that stands, in a set built beside another object, for a child
/// whose value is the same in both objects (and so is its set): `f:`, `k:`, `v:`, `i:` and
/// `.` are the keys of real sets.
const SAME: &str = "=";

/// Whether a path ends at a marker (`SAME`).
fn is_same(p: &[String]) -> bool {
    p.last().is_some_and(|k| k == SAME)
}

/// `obj`'s field set, built beside `other` (the same type's object the write compares it
/// with): where a field of an object or map has the same value in `other` at the same place,
/// its set is the same in both and is not built; a `SAME` marker stands for it, so no node
/// that has children in the whole set is left empty (a leaf) here. A path through neither
/// marker is in this set exactly when it is in the whole set. Lists are built whole.
fn field_set_beside<'a>(obj: &'a Value, other: Option<&'a Value>) -> Value {
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let m = protobuf::message_for(av, kind);
    let mut out = Map::new();
    let Some(o) = obj.as_object() else { return Value::Object(out) };
    for (k, v) in o {
        if UNOWNED_TOP.contains(&k.as_str()) {
            continue;
        }
        let f = m.and_then(|m| field(m, k));
        let there = other.and_then(|t| t.get(k));
        let node = if k == "metadata" {
            // Only what managers own: the rest is left out, not copied out.
            let owned = |m: &'a Map<String, Value>| m.iter().filter(|(k, _)| !UNOWNED_META.contains(&k.as_str()));
            match (v.as_object(), f) {
                (Some(mm), _) if owned(mm).next().is_none() => continue,
                // All that managers own is the same: as for any other field.
                (Some(mm), _) if there.and_then(Value::as_object).is_some_and(|t| owned(t).eq(owned(mm))) => same(),
                (Some(mm), None) => untyped_object(owned(mm), there),
                (Some(mm), Some(f)) => match meta_message(f) {
                    Some(meta) => Value::Object(object_node(meta, owned(mm), there)),
                    None => json!({}),
                },
                (None, _) => node_of(f, v, there),
            }
        } else if there == Some(v) {
            same()
        } else {
            node_of(f, v, there)
        };
        out.insert(format!("f:{k}"), node);
    }
    Value::Object(out)
}

fn same() -> Value {
    json!({SAME: {}})
}

/// The message of a message-typed field.
fn meta_message(f: &Field) -> Option<&'static Message> {
    match f.ty {
        Ty::Message(i) if !f.repeated => message(i),
        _ => None,
    }
}

/// The set of one value, typed by its field (`None`: unknown, its structure is its set),
/// beside its counterpart `there` in another object (see `field_set_beside`).
fn node_of(f: Option<&Field>, v: &Value, there: Option<&Value>) -> Value {
    let Some(f) = f else { return untyped(v, there) };
    if f.repeated {
        let Some(items) = v.as_array() else { return json!({}) };
        let mut out = Map::new();
        match list_kind(f) {
            ListKind::Keyed(keys) => {
                let m = match f.ty {
                    Ty::Message(i) => message(i),
                    _ => None,
                };
                for e in items {
                    let Some(k) = key_of(e, &keys) else { return json!({}) };
                    let mut node = match (m, e.as_object()) {
                        (Some(m), Some(eo)) => object_node(m, eo.iter(), None),
                        _ => Map::new(),
                    };
                    node.insert(".".into(), json!({}));
                    out.insert(k, Value::Object(node));
                }
            }
            ListKind::Set => {
                for e in items {
                    out.insert(format!("v:{e}"), json!({}));
                }
            }
            ListKind::Atomic => return json!({}),
        }
        return Value::Object(out);
    }
    match f.ty {
        Ty::Message(i) => match (message(i), v.as_object()) {
            (Some(m), Some(o)) => Value::Object(object_node(m, o.iter(), there)),
            _ => json!({}),
        },
        Ty::Map(mv) => {
            let Some(o) = v.as_object() else { return json!({}) };
            let inner = match mv {
                protobuf::MapValue::Message(i) => message(i),
                _ => None,
            };
            let mut out = Map::new();
            for (k, e) in o {
                let t = there.and_then(|t| t.get(k));
                let node = match (inner, e.as_object()) {
                    _ if t == Some(e) => same(),
                    (Some(m), Some(eo)) => Value::Object(object_node(m, eo.iter(), t)),
                    _ => json!({}),
                };
                out.insert(format!("f:{k}"), node);
            }
            Value::Object(out)
        }
        _ => json!({}),
    }
}

/// The set of a message's fields, beside the message `there` (see `field_set_beside`).
fn object_node<'a>(
    m: &Message,
    fields: impl Iterator<Item = (&'a String, &'a Value)>,
    there: Option<&Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, e) in fields {
        let t = there.and_then(|t| t.get(k));
        let node = if t == Some(e) { same() } else { node_of(field(m, k), e, t) };
        out.insert(format!("f:{k}"), node);
    }
    out
}

fn untyped(v: &Value, there: Option<&Value>) -> Value {
    match v.as_object() {
        Some(o) => untyped_object(o.iter(), there),
        None => json!({}),
    }
}

fn untyped_object<'a>(fields: impl Iterator<Item = (&'a String, &'a Value)>, there: Option<&Value>) -> Value {
    let mut out = Map::new();
    for (k, e) in fields {
        let t = there.and_then(|t| t.get(k));
        let node = if t == Some(e) { same() } else { untyped(e, t) };
        out.insert(format!("f:{k}"), node);
    }
    Value::Object(out)
}

/// Every path to a leaf of a set (an element's `.` included).
pub fn leaves(set: &Value) -> Vec<Path> {
    let mut out = Vec::new();
    fn walk(v: &Value, at: &mut Path, out: &mut Vec<Path>) {
        let Some(o) = v.as_object() else { return };
        if o.is_empty() && !at.is_empty() {
            out.push(at.clone());
            return;
        }
        for (k, c) in o {
            at.push(k.clone());
            walk(c, at, out);
            at.pop();
        }
    }
    walk(set, &mut Vec::new(), &mut out);
    out
}

pub fn contains(set: &Value, path: &[String]) -> bool {
    let mut cur = set;
    for p in path {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return false,
        }
    }
    true
}

fn insert(set: &mut Value, path: &[String]) {
    let mut cur = set;
    for p in path {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(o) = cur.as_object_mut() else { return };
        cur = o.entry(p.clone()).or_insert_with(|| json!({}));
    }
}

/// Remove `path` from a set, and parents left empty.
fn remove(set: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else { return };
    let Some(o) = set.as_object_mut() else { return };
    if rest.is_empty() {
        o.remove(first);
        return;
    }
    if let Some(child) = o.get_mut(first) {
        remove(child, rest);
        if child.as_object().is_some_and(Map::is_empty) {
            o.remove(first);
        }
    }
}

/// The value a path names in an object.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for p in path {
        cur = if p == "." {
            cur
        } else if let Some(k) = p.strip_prefix("f:") {
            cur.get(k)?
        } else if p.starts_with("k:") {
            cur.as_array()?.iter().find(|e| matches_key(e, p))?
        } else if let Some(v) = p.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur.as_array()?.iter().find(|e| **e == want)?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Remove what a path names from an object (a field, a keyed element, a set member).
fn remove_value(obj: &mut Value, path: &[String]) {
    let (last, parent) = match path.split_last() {
        Some((l, p)) if l == "." => match p.split_last() {
            Some((l2, p2)) => (l2, p2),
            None => return,
        },
        Some((l, p)) => (l, p),
        None => return,
    };
    let mut cur = obj;
    for p in parent {
        let next = if let Some(k) = p.strip_prefix("f:") {
            cur.get_mut(k)
        } else if p.starts_with("k:") {
            cur.as_array_mut().and_then(|a| a.iter_mut().find(|e| matches_key(e, p)))
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(k) = last.strip_prefix("f:") {
        if let Some(o) = cur.as_object_mut() {
            o.remove(k);
        }
    } else if last.starts_with("k:") {
        if let Some(a) = cur.as_array_mut() {
            a.retain(|e| !matches_key(e, last));
        }
    } else if let Some(v) = last.strip_prefix("v:")
        && let Ok(want) = serde_json::from_str::<Value>(v)
        && let Some(a) = cur.as_array_mut()
    {
        a.retain(|e| *e != want);
    }
}

/// `.spec.template.spec.containers[name="web"].image`, as Kubernetes prints a path.
pub fn display(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if let Some(k) = p.strip_prefix("f:") {
            s.push('.');
            s.push_str(k);
        } else if let Some(k) = p.strip_prefix("k:") {
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(k) {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
        } else if let Some(v) = p.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

fn entries(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default()
}

/// Whether a managedFields entry owns anything (entries that own nothing are dropped).
fn has_fields(e: &Value) -> bool {
    e.get("fieldsV1").is_some_and(|f| f.as_object().is_some_and(|m| !m.is_empty()))
}

fn set_entries(obj: &mut Value, mut list: Vec<Value>) {
    list.retain(has_fields);
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn is_entry(e: &Value, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
    e.get("manager").and_then(Value::as_str) == Some(manager)
        && e.get("operation").and_then(Value::as_str) == Some(operation)
        && e.get("subresource").and_then(Value::as_str) == subresource
}

fn entry(manager: &str, operation: &str, api_version: &str, now: &str, subresource: Option<&str>, set: Value) -> Value {
    let mut e = json!({"manager": manager, "operation": operation, "apiVersion": api_version, "time": now,
        "fieldsType": "FieldsV1", "fieldsV1": set});
    if let Some(s) = subresource {
        e["subresource"] = json!(s);
    }
    e
}

/// Record a non-apply write (create, update, patch) by `manager`: the fields it changed become
/// its own (`Update`), and no one else's. A client that sets `managedFields` itself (kubectl's
/// client-side → server-side apply migration) has them kept as sent.
///
/// Each object's set is built beside the other (`field_set_beside`): only where values
/// differ can a field have changed or gone, so a status write, the most common write of all
/// (every pod start and readiness change), builds nothing of `spec`, since status is no
/// one's, and a binding only `spec.nodeName`.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, now: &str, subresource: Option<&str>) {
    record(old, new, manager, now, subresource, true)
}

/// `record_update` building the whole field sets of both objects: the general algorithm,
/// which the unit tests and `bench-managed` hold the other against.
#[doc(hidden)]
pub fn record_update_everywhere(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    now: &str,
    subresource: Option<&str>,
) {
    record(old, new, manager, now, subresource, false)
}

fn record(old: Option<&Value>, new: &mut Value, manager: &str, now: &str, subresource: Option<&str>, beside: bool) {
    const MF: &str = "/metadata/managedFields";
    let sent = new.pointer(MF);
    if let Some(Value::Array(list)) = sent
        && old.is_none_or(|o| o.pointer(MF) != sent)
    {
        let list = list.clone();
        set_entries(new, list);
        return;
    }
    let api_version = new.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(old_obj) = old else {
        // A create: every field it sets is the manager's, so its set is the object's own.
        let new_set = field_set(new);
        let owned = new_set.as_object().is_some_and(|s| !s.is_empty());
        let list = if owned { vec![entry(manager, "Update", &api_version, now, subresource, new_set)] } else { vec![] };
        set_entries(new, list);
        return;
    };
    // Beside each other only for objects of one type: a set's shape follows the type.
    let beside = beside && ["apiVersion", "kind"].iter().all(|k| old_obj.get(k) == new.get(k));
    let new_set = field_set_beside(new, beside.then_some(old_obj));
    let old_set = field_set_beside(old_obj, beside.then_some(&*new));
    let changed: Vec<Path> = leaves(&new_set)
        .into_iter()
        .filter(|p| !is_same(p) && (value_at(new, p) != value_at(old_obj, p) || !contains(&old_set, p)))
        .collect();
    let gone: Vec<Path> = leaves(&old_set).into_iter().filter(|p| !is_same(p) && !contains(&new_set, p)).collect();
    if changed.is_empty() && gone.is_empty() {
        // Nothing moves: the entries stay as they were, with no copy when `new` has them.
        if new.pointer(MF) == old_obj.pointer(MF) {
            if let Some(Value::Array(list)) = new.pointer_mut(MF) {
                list.retain(has_fields);
                if list.is_empty()
                    && let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut)
                {
                    m.remove("managedFields");
                }
            }
        } else {
            set_entries(new, entries(old_obj));
        }
        return;
    }
    let mut list = entries(old_obj);
    for e in list.iter_mut() {
        if let Some(f) = e.get_mut("fieldsV1") {
            for p in changed.iter().chain(&gone) {
                remove(f, p);
            }
        }
    }
    if !changed.is_empty() {
        match list.iter_mut().find(|e| is_entry(e, manager, "Update", subresource)) {
            Some(e) => {
                let f = e.as_object_mut().and_then(|o| o.get_mut("fieldsV1"));
                if let Some(f) = f {
                    for p in &changed {
                        insert(f, p);
                    }
                }
                e["time"] = json!(now);
            }
            None => {
                let mut set = json!({});
                for p in &changed {
                    insert(&mut set, p);
                }
                list.push(entry(manager, "Update", &api_version, now, subresource, set));
            }
        }
    }
    set_entries(new, list);
}

/// A field another manager owns with a value an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: String,
}

/// Server-side apply of `config` by `manager` onto `live`, given `merged` (the configuration
/// merged into the live object). Returns the new object with its managed fields, or the
/// conflicts when not forced.
pub fn apply(
    live: &Value,
    config: &Value,
    mut merged: Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let set = field_set(config);
    let mut list = entries(live);
    let mut conflicts = Vec::new();
    let mut taken: Vec<Path> = Vec::new();
    for p in leaves(&set) {
        if p.last().is_some_and(|l| l == ".") {
            continue;
        }
        let Some(live_v) = value_at(live, &p) else { continue };
        if value_at(config, &p) == Some(live_v) {
            continue;
        }
        for e in &list {
            if e.get("manager").and_then(Value::as_str) == Some(manager) {
                continue;
            }
            if e.get("fieldsV1").is_some_and(|f| contains(f, &p)) {
                conflicts.push(Conflict {
                    manager: e.get("manager").and_then(Value::as_str).unwrap_or("").to_string(),
                    api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string(),
                    path: display(&p),
                });
                taken.push(p.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    // Fields this manager applied before and no longer does: removed unless someone else owns them.
    let previous = list.iter().find(|e| is_entry(e, manager, "Apply", None)).and_then(|e| e.get("fieldsV1")).cloned();
    if let Some(prev) = previous {
        for p in leaves(&prev) {
            if contains(&set, &p) {
                continue;
            }
            let owned_elsewhere = list
                .iter()
                .any(|e| !is_entry(e, manager, "Apply", None) && e.get("fieldsV1").is_some_and(|f| contains(f, &p)));
            if !owned_elsewhere {
                remove_value(&mut merged, &p);
                // A list or map the removal emptied goes too, unless someone owns it.
                for n in (1..p.len()).rev() {
                    let prefix = &p[..n];
                    if !prefix.last().is_some_and(|l| l.starts_with("f:")) {
                        continue;
                    }
                    let empty = value_at(&merged, prefix).is_some_and(|v| {
                        v.as_array().is_some_and(Vec::is_empty) || v.as_object().is_some_and(Map::is_empty)
                    });
                    let owned = contains(&set, prefix)
                        || list.iter().any(|e| {
                            !is_entry(e, manager, "Apply", None)
                                && e.get("fieldsV1").is_some_and(|f| contains(f, prefix))
                        });
                    if !empty || owned {
                        break;
                    }
                    remove_value(&mut merged, prefix);
                }
            }
        }
    }
    for e in list.iter_mut() {
        if e.get("manager").and_then(Value::as_str) != Some(manager)
            && let Some(f) = e.get_mut("fieldsV1")
        {
            for p in &taken {
                remove(f, p);
            }
        }
    }
    let api_version = config.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    list.retain(|e| !is_entry(e, manager, "Apply", None));
    list.insert(0, entry(manager, "Apply", &api_version, now, None, set));
    set_entries(&mut merged, list);
    Ok(merged)
}

/// The 409 message Kubernetes writes for apply conflicts.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    let list: Vec<String> = conflicts
        .iter()
        .map(|c| format!("conflict with \"{}\" using {}: {}", c.manager, c.api_version, c.path))
        .collect();
    if n == 1 {
        format!("Apply failed with 1 conflict: {}", list[0])
    } else {
        format!("Apply failed with {n} conflicts: {}", list.join("\n"))
    }
}

#[cfg(test)]
#[path = "managed_tests.rs"]
mod tests;
