//! JSON paths of custom resources: printer columns and the scale subresource's paths.

use serde_json::{Value, json};

/// The value at a simple JSON path: `.spec.replicas`, `.status.conditions[0].type`,
/// `.metadata.labels['app.kubernetes.io/name']`, `.status.addresses[*].value` and
/// `.status.conditions[?(@.type=="Ready")].status` (the first element that has the rest of
/// the path, as kube-apiserver's printer takes the first result). `None` when absent or not
/// understood.
pub fn at_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let rest = path.trim().trim_start_matches('{').trim_end_matches('}').trim_start_matches('.');
    at_rest(obj, rest, 0)
}

fn at_rest<'a>(cur: &'a Value, rest: &str, depth: usize) -> Option<&'a Value> {
    if rest.is_empty() {
        return Some(cur);
    }
    if depth > 32 {
        return None;
    }
    if let Some(r) = rest.strip_prefix('[') {
        // A filter's closing bracket is the one after its `)`.
        let end = if r.starts_with("?(") { r.find(")]")? + 1 } else { r.find(']')? };
        let inner = &r[..end];
        let after = r[end + 1..].trim_start_matches('.');
        if inner == "*" {
            return cur.as_array()?.iter().find_map(|e| at_rest(e, after, depth + 1));
        }
        if let Some(cond) = inner.strip_prefix("?(").and_then(|c| c.strip_suffix(')')) {
            let (lhs, rhs) = cond.split_once("==")?;
            let key = lhs.trim().strip_prefix("@.")?;
            let want = rhs.trim().trim_matches(|c| c == '\'' || c == '"');
            return cur
                .as_array()?
                .iter()
                .filter(|e| at_rest(e, key, depth + 1).and_then(Value::as_str) == Some(want))
                .find_map(|e| at_rest(e, after, depth + 1));
        }
        let next = if let Ok(i) = inner.parse::<usize>() {
            cur.get(i)?
        } else {
            cur.get(inner.trim_matches(|c| c == '\'' || c == '"'))?
        };
        return at_rest(next, after, depth + 1);
    }
    let end = rest.find(['.', '[']).unwrap_or(rest.len());
    at_rest(cur.get(&rest[..end])?, rest[end..].trim_start_matches('.'), depth + 1)
}

/// Set the value at a simple dotted path (`.spec.replicas`), making objects on the way.
pub fn set_path(obj: &mut Value, path: &str, value: Value) -> bool {
    let parts: Vec<&str> = path.trim_start_matches('.').split('.').filter(|p| !p.is_empty()).collect();
    let Some((last, init)) = parts.split_last() else { return false };
    let mut cur = obj;
    for p in init {
        let Some(m) = cur.as_object_mut() else { return false };
        cur = m.entry(p.to_string()).or_insert_with(|| json!({}));
    }
    match cur.as_object_mut() {
        Some(m) => {
            m.insert(last.to_string(), value);
            true
        }
        None => false,
    }
}
