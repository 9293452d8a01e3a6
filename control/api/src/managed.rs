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
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let m = protobuf::message_for(av, kind);
    let mut out = Map::new();
    if let Some(o) = obj.as_object() {
        for (k, v) in o {
            if UNOWNED_TOP.contains(&k.as_str()) {
                continue;
            }
            let f = m.and_then(|m| field(m, k));
            let node = if k == "metadata" {
                let mut meta = v.clone();
                if let Some(mm) = meta.as_object_mut() {
                    mm.retain(|k, _| !UNOWNED_META.contains(&k.as_str()));
                    if mm.is_empty() {
                        continue;
                    }
                }
                node_of(f, &meta)
            } else {
                node_of(f, v)
            };
            out.insert(format!("f:{k}"), node);
        }
    }
    Value::Object(out)
}

/// The set of one value, typed by its field (`None`: unknown, its structure is its set).
fn node_of(f: Option<&Field>, v: &Value) -> Value {
    let Some(f) = f else { return untyped(v) };
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
                    let mut node = match m {
                        Some(m) => object_node(m, e),
                        None => Map::new(),
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
        Ty::Message(i) => match message(i) {
            Some(m) if v.is_object() => Value::Object(object_node(m, v)),
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
                let node = match inner {
                    Some(m) if e.is_object() => Value::Object(object_node(m, e)),
                    _ => json!({}),
                };
                out.insert(format!("f:{k}"), node);
            }
            Value::Object(out)
        }
        _ => json!({}),
    }
}

fn object_node(m: &Message, v: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, e) in v.as_object().into_iter().flatten() {
        out.insert(format!("f:{k}"), node_of(field(m, k), e));
    }
    out
}

fn untyped(v: &Value) -> Value {
    match v.as_object() {
        Some(o) if !o.is_empty() => Value::Object(o.iter().map(|(k, e)| (format!("f:{k}"), untyped(e))).collect()),
        _ => json!({}),
    }
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

fn set_entries(obj: &mut Value, mut list: Vec<Value>) {
    list.retain(|e| e.get("fieldsV1").is_some_and(|f| f.as_object().is_some_and(|m| !m.is_empty())));
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
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, now: &str, subresource: Option<&str>) {
    let sent = new.pointer("/metadata/managedFields").cloned();
    let before = old.map(entries).unwrap_or_default();
    if let Some(Value::Array(list)) = &sent
        && old.is_none_or(|o| o.pointer("/metadata/managedFields") != sent.as_ref())
    {
        set_entries(new, list.clone());
        return;
    }
    let new_set = field_set(new);
    let api_version = new.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(old_obj) = old else {
        // A create: every field it sets is the manager's, so its set is the object's own.
        let owned = new_set.as_object().is_some_and(|s| !s.is_empty());
        let list = if owned { vec![entry(manager, "Update", &api_version, now, subresource, new_set)] } else { vec![] };
        set_entries(new, list);
        return;
    };
    let old_set = field_set(old_obj);
    let changed: Vec<Path> = leaves(&new_set)
        .into_iter()
        .filter(|p| value_at(new, p) != value_at(old_obj, p) || !contains(&old_set, p))
        .collect();
    let gone: Vec<Path> = leaves(&old_set).into_iter().filter(|p| !contains(&new_set, p)).collect();
    let mut list = before;
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
mod tests {
    use super::*;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"a": "b"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn sets_use_merge_keys_from_the_upstream_markers() {
        let s = field_set(&deploy(1, "i"));
        let c = &s["f:spec"]["f:template"]["f:spec"]["f:containers"][r#"k:{"name":"c"}"#];
        assert_eq!(c, &json!({".": {}, "f:image": {}, "f:name": {}}));
        assert_eq!(s["f:metadata"], json!({"f:labels": {"f:a": {}}}));
        let svc = json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}});
        assert!(field_set(&svc)["f:spec"]["f:ports"].get(r#"k:{"port":80,"protocol":"TCP"}"#).is_some());
    }

    #[test]
    fn a_create_owns_exactly_what_an_update_from_nothing_would() {
        let now = "2026-01-01T00:00:00Z";
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "annotations": {"k": "v"}},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web"}}});
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let bare = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "empty"}});
        for obj in [deploy(2, "i"), svc, cm, bare] {
            let (mut created, mut from_nothing) = (obj.clone(), obj);
            record_update(None, &mut created, "m", now, None);
            record_update(Some(&json!({})), &mut from_nothing, "m", now, None);
            assert_eq!(created, from_nothing);
            let owned = created.pointer("/metadata/managedFields/0/fieldsV1").cloned();
            assert_eq!(owned.is_some(), created["metadata"]["name"] != "empty", "{created}");
        }
    }

    #[test]
    fn updates_own_what_they_change_and_nothing_else() {
        let now = "2026-01-01T00:00:00Z";
        let mut live = deploy(1, "i");
        record_update(None, &mut live, "a", now, None);
        let owned_by = |o: &Value, who: &str| {
            o["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["manager"] == who)
                .map(|e| e["fieldsV1"].clone())
        };
        let sets = |o: &Value| o["metadata"]["managedFields"].as_array().unwrap().len();

        // A status write (and server-set metadata) changes no one's fields.
        let mut status = live.clone();
        status["status"] = json!({"replicas": 1});
        status["metadata"]["resourceVersion"] = json!("7");
        record_update(Some(&live), &mut status, "node", now, Some("status"));
        assert_eq!(status["metadata"]["managedFields"], live["metadata"]["managedFields"]);

        // A new label is b's alone; a keeps the rest.
        let mut labelled = status.clone();
        labelled["metadata"]["labels"]["x"] = json!("y");
        record_update(Some(&status), &mut labelled, "b", now, None);
        assert_eq!(owned_by(&labelled, "b"), Some(json!({"f:metadata": {"f:labels": {"f:x": {}}}})));
        assert_eq!(owned_by(&labelled, "a"), owned_by(&live, "a"));

        // Changing a's image makes it b's; removing replicas takes it from a's set.
        let mut changed = labelled.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("j");
        changed["spec"].as_object_mut().unwrap().remove("replicas");
        record_update(Some(&labelled), &mut changed, "b", now, None);
        let a = owned_by(&changed, "a").unwrap();
        let b = owned_by(&changed, "b").unwrap();
        let image: Path = ["f:spec", "f:template", "f:spec", "f:containers", r#"k:{"name":"c"}"#, "f:image"]
            .map(String::from)
            .to_vec();
        assert!(contains(&b, &image) && !contains(&a, &image), "a {a} b {b}");
        assert!(!contains(&a, &["f:spec".into(), "f:replicas".into()]), "{a}");
        assert!(contains(&a, &["f:spec".into(), "f:selector".into()]), "{a}");
        assert_eq!(sets(&changed), 2);
    }

    #[test]
    fn apply_conflicts_force_and_removal() {
        let now = "2026-01-01T00:00:00Z";
        let mut live = deploy(1, "i");
        record_update(None, &mut live, "creator", now, None);
        // Another manager's apply that changes replicas conflicts with the creator.
        let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let mut merged = live.clone();
        merged["spec"]["replicas"] = json!(3);
        let err = apply(&live, &cfg, merged.clone(), "ssa", false, now).unwrap_err();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"creator\" using apps/v1: .spec.replicas"
        );
        let forced = apply(&live, &cfg, merged, "ssa", true, now).unwrap();
        let mf = forced["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf[0]["manager"], "ssa");
        assert!(!contains(&mf[1]["fieldsV1"], &["f:spec".into(), "f:replicas".into()]));
        // Applying again without a label it applied before removes the label (no one else owns it).
        let cfg2 = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"x": "y"}}, "spec": {"replicas": 3}});
        let mut m2 = forced.clone();
        m2["metadata"]["labels"]["x"] = json!("y");
        let with_label = apply(&forced, &cfg2, m2, "ssa", false, now).unwrap();
        let m3 = with_label.clone();
        let without = apply(&with_label, &cfg, m3, "ssa", false, now).unwrap();
        assert!(without["metadata"]["labels"].get("x").is_none(), "{}", without["metadata"]);
        assert_eq!(without["metadata"]["labels"]["a"], "b", "owned by the creator: kept");
    }
}
