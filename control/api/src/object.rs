//! Accessors over objects held as `serde_json::Value`.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    obj["metadata"].as_object_mut().expect("metadata is an object")
}

pub fn str_at<'a>(obj: &'a Value, path: &str) -> Option<&'a str> {
    at(obj, path).and_then(Value::as_str)
}

/// Value at a dotted path (`spec.nodeName`); no array indexing.
pub fn at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, k| v.get(k))
}

pub fn name(obj: &Value) -> &str {
    str_at(obj, "metadata.name").unwrap_or("")
}

pub fn namespace(obj: &Value) -> &str {
    str_at(obj, "metadata.namespace").unwrap_or("")
}

pub fn uid(obj: &Value) -> &str {
    str_at(obj, "metadata.uid").unwrap_or("")
}

pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    string_map(meta(obj).get("labels"))
}

pub fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default()
}

/// The strings of a JSON array (other elements skipped); anything but an array: none.
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
}

pub fn resource_version(obj: &Value) -> u64 {
    str_at(obj, "metadata.resourceVersion").and_then(|s| s.parse().ok()).unwrap_or(0)
}

pub fn set_resource_version(obj: &mut Value, rev: u64) {
    meta_mut(obj).insert("resourceVersion".into(), Value::String(rev.to_string()));
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    meta(obj).get("deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// RFC 3339 timestamp with second precision, as Kubernetes writes `metav1.Time`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Kubernetes' human duration (`5s`, `3m2s`, `4h`, `2d3h`, `400d`), as `kubectl get` prints AGE.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        let rem = s % 60;
        return if rem == 0 { format!("{m}m") } else { format!("{m}m{rem}s") };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = s / 3600;
    if h < 8 {
        let rem = (s % 3600) / 60;
        return if rem == 0 { format!("{h}h") } else { format!("{h}h{rem}m") };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        let d = h / 24;
        let rem = h % 24;
        return if rem == 0 { format!("{d}d") } else { format!("{d}d{rem}h") };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    if h < 24 * 365 * 8 {
        let y = h / (24 * 365);
        let d = (h / 24) % 365;
        return if d == 0 { format!("{y}y") } else { format!("{y}y{d}d") };
    }
    format!("{}y", h / (24 * 365))
}

/// Age of an RFC 3339 timestamp against `now`, in kubectl's format; `<unknown>` when absent.
pub fn age(ts: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    match ts.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => human_duration((now - t.with_timezone(&chrono::Utc)).num_seconds()),
        None => "<unknown>".into(),
    }
}

/// `conditions` with `cond` in place of any condition of the same type.
pub fn with_condition(conditions: &Value, cond: Value) -> Value {
    let mut out: Vec<Value> =
        conditions.as_array().into_iter().flatten().filter(|c| c["type"] != cond["type"]).cloned().collect();
    out.push(cond);
    Value::Array(out)
}

/// Parse a duration the way Go and kubectl write them: `90s`, `1h30m`, `500ms`, `24h`, plus
/// `d` for days (`365d`). A bare number is seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid duration {s:?}: use a number with s, m, h or d (like 90s, 1h30m, 24h)");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(n));
    }
    let mut total = std::time::Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => std::time::Duration::from_millis(1),
            "s" => std::time::Duration::from_secs(1),
            "m" => std::time::Duration::from_secs(60),
            "h" => std::time::Duration::from_secs(3600),
            "d" => std::time::Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        total += unit.checked_mul(u32::try_from(n).map_err(|_| bad())?).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        use std::time::Duration;
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("365d"), Ok(Duration::from_secs(365 * 86_400)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        for bad in ["", "h", "5x", "1h30", "-5s", "s5"] {
            assert!(parse_duration(bad).unwrap_err().contains("invalid duration"), "{bad}");
        }
    }

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(182), "3m2s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(human_duration(10 * 3600), "10h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(30 * 86400), "30d");
    }

    #[test]
    fn paths_and_meta() {
        let o = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "12", "labels": {"x": "y"}}, "spec": {"nodeName": "n"}});
        assert_eq!(name(&o), "a");
        assert_eq!(resource_version(&o), 12);
        assert_eq!(str_at(&o, "spec.nodeName"), Some("n"));
        assert_eq!(labels(&o).get("x").map(String::as_str), Some("y"));
    }
}
