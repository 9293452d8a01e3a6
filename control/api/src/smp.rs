//! Strategic merge patch (`application/strategic-merge-patch+json`), as Kubernetes applies
//! it to built-in kinds: maps merge key by key, `null` deletes, lists of objects with a merge
//! key merge element by element, a few primitive lists merge as sets, other lists are
//! replaced. Directives: `$patch` (`replace`, `delete`, `merge`), `$retainKeys`,
//! `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`.

use serde_json::{Map, Value};

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListKind {
    /// Objects merged by this key.
    Keyed(&'static str),
    /// Primitives merged as a set (`finalizers`).
    PrimitiveSet,
    /// Replaced whole.
    Atomic,
}

/// The merge strategy of the list at `path` (field names from the object's root), from the
/// `patchStrategy`/`patchMergeKey` tags of Kubernetes' types.
fn list_kind(path: &[&str]) -> ListKind {
    let Some(&field) = path.last() else { return ListKind::Atomic };
    let parent = path.len().checked_sub(2).map(|i| path[i]);
    let in_container = path.iter().any(|p| matches!(*p, "containers" | "initContainers" | "ephemeralContainers"));
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "env"
        | "resourceClaims" => ListKind::Keyed("name"),
        "volumeMounts" => ListKind::Keyed("mountPath"),
        "volumeDevices" => ListKind::Keyed("devicePath"),
        "ports" if in_container => ListKind::Keyed("containerPort"),
        "ports" if parent == Some("spec") => ListKind::Keyed("port"),
        "conditions" => ListKind::Keyed("type"),
        "ownerReferences" => ListKind::Keyed("uid"),
        "hostAliases" => ListKind::Keyed("ip"),
        "topologySpreadConstraints" => ListKind::Keyed("topologyKey"),
        "taints" => ListKind::Keyed("key"),
        "addresses" if parent == Some("status") => ListKind::Keyed("type"),
        "finalizers" => ListKind::PrimitiveSet,
        _ => ListKind::Atomic,
    }
}

/// Apply `patch` to `original`.
pub fn apply(original: &Value, patch: &Value) -> Result<Value, String> {
    if !patch.is_object() {
        return Err("a strategic merge patch must be a JSON object".into());
    }
    Ok(merge_map(original, patch, &mut Vec::new())?.unwrap_or(Value::Object(Map::new())))
}

/// Merge a patch map into a value; `None` means the value is deleted (`$patch: delete`).
fn merge_map<'a>(orig: &Value, patch: &'a Value, path: &mut Vec<&'a str>) -> Result<Option<Value>, String> {
    let p = patch.as_object().ok_or("expected an object")?;
    match p.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut out = p.clone();
            out.remove("$patch");
            return Ok(Some(Value::Object(strip_directives(out))));
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch directive $patch: {other:?}")),
    }
    let mut out = match orig {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    if let Some(keep) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep
            .as_array()
            .ok_or("$retainKeys must be a list")?
            .iter()
            .map(|k| k.as_str().ok_or("$retainKeys must list strings"))
            .collect::<Result<_, _>>()?;
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut orders: Vec<(&str, &Vec<Value>)> = Vec::new();
    // Deletions apply after the lists merge, so a value both added and deleted is deleted
    // (and applying the patch twice gives what applying it once gave; found by fuzzing).
    let mut deletes: Vec<(&str, &Vec<Value>)> = Vec::new();
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field, v.as_array().ok_or("$setElementOrder must be a list")?));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            deletes.push((field, v.as_array().ok_or("$deleteFromPrimitiveList must be a list")?));
            continue;
        }
        if k.starts_with('$') {
            return Err(format!("unknown patch directive {k:?}"));
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        path.push(k.as_str());
        let cur = out.get(k).cloned().unwrap_or(Value::Null);
        let merged = match v {
            Value::Object(_) => merge_map(&cur, v, path)?,
            Value::Array(items) => Some(merge_list(&cur, items, path)?),
            _ => Some(v.clone()),
        };
        path.pop();
        match merged {
            Some(m) => {
                out.insert(k.clone(), m);
            }
            None => {
                out.remove(k);
            }
        }
    }
    for (field, remove) in deletes {
        if let Some(Value::Array(list)) = out.get_mut(field) {
            list.retain(|x| !remove.contains(x));
        }
    }
    for (field, order) in orders {
        path.push(field);
        let kind = list_kind(path);
        path.pop();
        if let Some(Value::Array(list)) = out.get_mut(field) {
            reorder(list, order, kind);
        }
    }
    Ok(Some(Value::Object(out)))
}

/// Remove directive keys from a value that replaces rather than merges.
fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    for v in m.values_mut() {
        if let Value::Object(inner) = v {
            *inner = strip_directives(std::mem::take(inner));
        }
    }
    m
}

/// An element's merge key: a string, number or boolean. Anything else is no key (found by
/// fuzzing: a `null` or object key made a patch append a keyless element each time it was
/// applied).
fn key_of<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?.get(key).filter(|k| k.is_string() || k.is_number() || k.is_boolean())
}

fn merge_list<'a>(orig: &Value, items: &'a [Value], path: &mut Vec<&'a str>) -> Result<Value, String> {
    // `[{"$patch": "replace"}, …]`: the list is replaced by the other elements.
    if items.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        let rest: Vec<Value> = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(|i| match i {
                Value::Object(m) => Value::Object(strip_directives(m.clone())),
                other => other.clone(),
            })
            .collect();
        return Ok(Value::Array(rest));
    }
    let cur: Vec<Value> = orig.as_array().cloned().unwrap_or_default();
    match list_kind(path) {
        ListKind::Atomic => Ok(Value::Array(items.to_vec())),
        ListKind::PrimitiveSet => {
            let mut out = cur;
            for i in items {
                if !out.contains(i) {
                    out.push(i.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ListKind::Keyed(key) => {
            let mut out = cur;
            for item in items {
                if !item.is_object() {
                    // A primitive in a list of objects: Kubernetes rejects it.
                    return Err(format!("{}: expected objects with a {key:?} key", path.join(".")));
                }
                let Some(k) = key_of(item, key) else {
                    return Err(format!("{}: an element lacks its merge key {key:?}", path.join(".")));
                };
                let pos = out.iter().position(|o| key_of(o, key) == Some(k));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => match merge_map(&out[i], item, path)? {
                        Some(m) => out[i] = m,
                        None => {
                            out.remove(i);
                        }
                    },
                    (None, false) => {
                        if let Some(m) = merge_map(&Value::Null, item, path)? {
                            out.push(m);
                        }
                    }
                }
            }
            Ok(Value::Array(out))
        }
    }
}

/// `$setElementOrder`: the listed elements first, in that order; others keep their place after.
fn reorder(list: &mut Vec<Value>, order: &[Value], kind: ListKind) {
    let ident = |v: &Value| -> Option<Value> {
        match kind {
            ListKind::Keyed(key) => key_of(v, key).cloned(),
            _ => Some(v.clone()),
        }
    };
    let mut ordered = Vec::with_capacity(list.len());
    let mut rest = std::mem::take(list);
    for o in order {
        let want = match kind {
            ListKind::Keyed(key) => key_of(o, key).cloned(),
            _ => Some(o.clone()),
        };
        if let Some(i) = rest.iter().position(|x| ident(x) == want && want.is_some()) {
            ordered.push(rest.remove(i));
        }
    }
    ordered.extend(rest);
    *list = ordered;
}

/// The properties the fuzz target (`control/api/fuzz`) checks, shared with a unit test that
/// runs them over pseudo-random inputs on stable Rust.
#[doc(hidden)]
pub mod fuzz {
    use super::apply;
    use serde_json::{Map, Value, json};

    /// Field names that exercise every strategy: keyed lists, primitive sets, atomic lists,
    /// directives, and plain maps.
    const KEYS: &[&str] = &[
        "containers",
        "name",
        "env",
        "value",
        "ports",
        "containerPort",
        "finalizers",
        "args",
        "spec",
        "a",
        "b",
        "$patch",
        "$retainKeys",
        "$setElementOrder/containers",
        "$setElementOrder/env",
        "$deleteFromPrimitiveList/finalizers",
    ];

    /// Builds JSON values from fuzzer bytes (structure-aware: every input is a document).
    struct Gen<'a>(&'a [u8]);

    impl Gen<'_> {
        fn byte(&mut self) -> u8 {
            match self.0.split_first() {
                Some((b, rest)) => {
                    self.0 = rest;
                    *b
                }
                None => 0,
            }
        }

        fn value(&mut self, depth: u32, directives: bool) -> Value {
            let b = self.byte();
            match if depth == 0 { b % 4 } else { b % 7 } {
                0 => json!(self.byte() % 4),
                1 => json!(["web", "side", "x", "replace", "delete", "merge"][self.byte() as usize % 6]),
                2 => Value::Null,
                3 => json!(self.byte().is_multiple_of(2)),
                4 => Value::Array((0..self.byte() % 4).map(|_| self.value(depth - 1, directives)).collect()),
                _ => {
                    let mut m = Map::new();
                    for _ in 0..self.byte() % 5 {
                        let k = KEYS[self.byte() as usize % KEYS.len()];
                        if directives || !k.starts_with('$') {
                            m.insert(k.to_string(), self.value(depth - 1, directives));
                        }
                    }
                    Value::Object(m)
                }
            }
        }
    }

    /// Whether a directive key appears in `v`; inside lists only when `in_lists` (an atomic
    /// list is replaced verbatim, as Kubernetes does, so the result's lists are not checked).
    fn has_directive(v: &Value, in_lists: bool) -> bool {
        match v {
            Value::Object(m) => m.iter().any(|(k, v)| k.starts_with('$') || has_directive(v, in_lists)),
            Value::Array(a) => in_lists && a.iter().any(|v| has_directive(v, in_lists)),
            _ => false,
        }
    }

    fn has_list(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.values().any(has_list),
            Value::Array(_) => true,
            _ => false,
        }
    }

    fn strip_nulls(v: &mut Value) {
        if let Value::Object(m) = v {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
    }

    /// JSON merge patch (RFC 7386), the reference for map-only patches.
    pub fn json_merge(target: &mut Value, patch: &Value) {
        if let Value::Object(p) = patch {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    json_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        } else {
            *target = patch.clone();
        }
    }

    /// Decode a document and a patch from `data` and check: no panic; a result never carries
    /// a directive; a map-only patch agrees with RFC 7386; applying a patch twice gives what
    /// applying it once gave.
    pub fn check(data: &[u8]) {
        let mut g = Gen(data);
        let mut doc = Value::Object(Map::new());
        if let Value::Object(m) = g.value(4, false) {
            doc = Value::Object(m);
        }
        strip_nulls(&mut doc);
        let patch = g.value(4, true);
        let Ok(once) = apply(&doc, &patch) else { return };
        assert!(!has_directive(&once, false), "directive left in result\ndoc {doc}\npatch {patch}\nresult {once}");
        if !has_directive(&patch, true) && !has_list(&patch) {
            let mut reference = doc.clone();
            json_merge(&mut reference, &patch);
            assert_eq!(once, reference, "differs from RFC 7386\ndoc {doc}\npatch {patch}");
        }
        match apply(&once, &patch) {
            Ok(twice) => assert_eq!(once, twice, "not idempotent\ndoc {doc}\npatch {patch}"),
            Err(e) => panic!("applies once but not twice ({e})\ndoc {doc}\npatch {patch}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy() -> Value {
        json!({"metadata": {"name": "web", "labels": {"app": "web", "tier": "x"}, "finalizers": ["a"]},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "web", "image": "v1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
             "ports": [{"containerPort": 8080, "name": "http"}], "args": ["x", "y"]},
            {"name": "side", "image": "s1"}
        ]}}}})
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let out =
            apply(&deploy(), &json!({"metadata": {"labels": {"tier": null, "new": "1"}}, "spec": {"replicas": 3}}))
                .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "1"}));
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["spec"]["template"], deploy()["spec"]["template"], "untouched parts stay");
    }

    #[test]
    fn keyed_lists_merge_by_name() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "v2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
            {"name": "new", "image": "n"}
        ]}}}});
        let out = apply(&deploy(), &patch).unwrap();
        let cs = out["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 3);
        assert_eq!(cs[0]["image"], "v2");
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(cs[0]["ports"], json!([{"containerPort": 8080, "name": "http"}]), "ports kept");
        assert_eq!(cs[1]["name"], "side");
        assert_eq!(cs[2]["name"], "new");
        // Atomic lists are replaced.
        let out = apply(
            &deploy(),
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "args": ["z"]}]}}}}),
        )
        .unwrap();
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["args"], json!(["z"]));
    }

    #[test]
    fn directives() {
        // $patch: delete on a list element.
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}});
        let out = apply(&deploy(), &p).unwrap();
        assert_eq!(out["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
        // $patch: replace on a map.
        let p = json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}});
        assert_eq!(apply(&deploy(), &p).unwrap()["metadata"]["labels"], json!({"only": "this"}));
        // $patch: replace in a list.
        let p = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "solo", "image": "i"}]}}}});
        assert_eq!(
            apply(&deploy(), &p).unwrap()["spec"]["template"]["spec"]["containers"],
            json!([{"name": "solo", "image": "i"}])
        );
        // $setElementOrder.
        let p = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "web"}]}}}});
        let out = apply(&deploy(), &p).unwrap();
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["name"], "side");
        // $deleteFromPrimitiveList and primitive set merge.
        let p = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["b"]}});
        assert_eq!(apply(&deploy(), &p).unwrap()["metadata"]["finalizers"], json!(["b"]));
        let p = json!({"metadata": {"finalizers": ["b", "a"]}});
        assert_eq!(apply(&deploy(), &p).unwrap()["metadata"]["finalizers"], json!(["a", "b"]));
        // $retainKeys.
        let p = json!({"spec": {"$retainKeys": ["template"], "template": {}}});
        let out = apply(&deploy(), &p).unwrap();
        assert!(out["spec"].get("replicas").is_none());
        assert!(apply(&deploy(), &json!({"$bogus": 1})).unwrap_err().contains("$bogus"));
        assert!(
            apply(&deploy(), &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}))
                .unwrap_err()
                .contains("merge key")
        );
    }

    /// Fuzz: random patches over random documents never panic, and a patch built only from
    /// map merges and null deletes agrees with JSON merge patch (RFC 7386).
    #[test]
    fn fuzz_against_json_merge_patch() {
        let mut seed: u64 = 42;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        fn random_value(rnd: &mut dyn FnMut(u64) -> u64, depth: u32, allow_null: bool) -> Value {
            match rnd(if depth == 0 { 3 } else { 5 }) {
                0 => json!(rnd(100)),
                1 => json!(format!("s{}", rnd(10))),
                2 if allow_null => Value::Null,
                2 => json!(true),
                _ => {
                    let mut m = Map::new();
                    for _ in 0..rnd(4) {
                        m.insert(format!("k{}", rnd(5)), random_value(rnd, depth - 1, allow_null));
                    }
                    Value::Object(m)
                }
            }
        }
        for _ in 0..3000 {
            let doc = random_value(&mut rnd, 4, false);
            let patch = random_value(&mut rnd, 4, true);
            if !patch.is_object() || !doc.is_object() {
                continue;
            }
            let ours = apply(&doc, &patch).unwrap();
            let mut theirs = doc.clone();
            super::fuzz::json_merge(&mut theirs, &patch);
            assert_eq!(ours, theirs, "doc {doc} patch {patch}");
        }
        // Arbitrary lists and directives: errors are fine, panics are not.
        for _ in 0..3000 {
            let doc = deploy();
            let directive = ["delete", "replace", "merge", "x"][rnd(4) as usize];
            let item = random_value(&mut rnd, 3, true);
            let patch =
                json!({"spec": {"template": {"spec": {"containers": [item, {"name": "web", "$patch": directive}]}}}});
            let _ = apply(&doc, &patch);
        }
    }

    /// The fuzz target's properties over pseudo-random inputs (the target itself runs under
    /// `cargo fuzz` on nightly; this keeps its checks in every test run).
    #[test]
    fn fuzz_properties_on_random_inputs() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 24) as u8
                })
                .collect();
            super::fuzz::check(&bytes);
        }
    }
}
