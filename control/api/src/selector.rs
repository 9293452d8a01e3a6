//! Label selectors (full Kubernetes grammar) and field selectors.

use crate::object;
use crate::resources::{Resource, ResourceKind};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector: all requirements must hold. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.holds(|k| labels.get(k).map(String::as_str))
    }

    /// Whether the requirement holds for the labels `label` looks up.
    fn holds<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        match self {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        }
    }
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }

    /// Whether `obj`'s labels match, read in place (as [`object::labels`] reads them: labels
    /// whose value is not a string are absent). Lists, watches and controllers test every
    /// object of a kind; this copies none of them.
    pub fn selects(&self, obj: &serde_json::Value) -> bool {
        let labels = obj.get("metadata").and_then(|m| m.get("labels")).and_then(serde_json::Value::as_object);
        self.0.iter().all(|r| r.holds(|k| labels.and_then(|l| l.get(k)).and_then(serde_json::Value::as_str)))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parse the query-string form: `app=web,tier!=db,env in (a,b),!legacy,track`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_top_level(s)? {
            let part = part.trim();
            if part.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(SelectorError(format!("empty requirement in {s:?}")));
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(LabelSelector(reqs))
    }

    /// From a `metav1.LabelSelector` object (`matchLabels` + `matchExpressions`).
    /// `None`/null selects nothing in controllers' use; callers decide. An empty object selects everything.
    /// The pod selector of a workload: `spec.selector`, which a ReplicationController writes
    /// as a plain label map (an equality selector) and every other kind as a LabelSelector.
    pub fn of_workload(obj: &Value) -> Result<Self, SelectorError> {
        let sel = obj.get("spec").and_then(|s| s.get("selector")).cloned().unwrap_or(Value::Null);
        if obj.get("kind").and_then(Value::as_str) == Some("ReplicationController") {
            return Self::from_object(&serde_json::json!({ "matchLabels": sel }));
        }
        Self::from_object(&sel)
    }

    pub fn from_object(v: &Value) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for (k, val) in object::string_map(v.get("matchLabels")) {
            check_key(&k)?;
            check_value(&val)?;
            reqs.push(Requirement::Equals(k, val));
        }
        for e in v.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("").to_string();
            check_key(&key)?;
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default();
            let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
            reqs.push(match op {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(SelectorError(format!("{op} for key {key:?} needs at least one value")));
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(SelectorError(format!("{op} for key {key:?} takes no values")));
                }
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::NotExists(key),
                other => {
                    return Err(SelectorError(format!("{other:?} is not a valid label selector operator")));
                }
            });
        }
        Ok(LabelSelector(reqs))
    }
}

impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, v) => format!("{k} in ({})", v.join(",")),
                Requirement::NotIn(k, v) => format!("{k} notin ({})", v.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

fn split_top_level(s: &str) -> Result<Vec<&str>, SelectorError> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError(format!("unbalanced ')' in {s:?}")));
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!("unbalanced '(' in {s:?}")));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn parse_requirement(p: &str) -> Result<Requirement, SelectorError> {
    if let Some(k) = p.strip_prefix('!') {
        let k = k.trim();
        check_key(k)?;
        return Ok(Requirement::NotExists(k.to_string()));
    }
    if let Some(open) = p.find('(') {
        let head = p[..open].trim();
        let close = p.rfind(')').filter(|c| *c > open && p[*c + 1..].trim().is_empty());
        let close = close.ok_or_else(|| SelectorError(format!("missing ')' in {p:?}")))?;
        let mut words = head.split_whitespace();
        let (key, op) = match (words.next(), words.next(), words.next()) {
            (Some(k), Some(op), None) => (k, op),
            _ => {
                return Err(SelectorError(format!("expected 'KEY in (…)' or 'KEY notin (…)', got {p:?}")));
            }
        };
        check_key(key)?;
        let values: Vec<String> = p[open + 1..close].split(',').map(|v| v.trim().to_string()).collect();
        for v in &values {
            check_value(v)?;
        }
        let values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        if values.is_empty() {
            return Err(SelectorError(format!("{op} needs at least one value in {p:?}")));
        }
        return match op {
            "in" => Ok(Requirement::In(key.into(), values)),
            "notin" => Ok(Requirement::NotIn(key.into(), values)),
            _ => Err(SelectorError(format!("unknown operator {op:?} in {p:?}"))),
        };
    }
    for (op, neg) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = p.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            check_key(k)?;
            check_value(v)?;
            return Ok(if neg {
                Requirement::NotEquals(k.into(), v.into())
            } else {
                Requirement::Equals(k.into(), v.into())
            });
        }
    }
    if p.contains(['<', '>']) {
        return Err(SelectorError(format!("operators '<' and '>' are not supported in label selectors: {p:?}")));
    }
    check_key(p)?;
    Ok(Requirement::Exists(p.to_string()))
}

fn check_key(k: &str) -> Result<(), SelectorError> {
    crate::validation::qualified_name_errors(k)
        .map_or(Ok(()), |e| Err(SelectorError(format!("invalid label key {k:?}: {e}"))))
}

fn check_value(v: &str) -> Result<(), SelectorError> {
    crate::validation::label_value_errors(v)
        .map_or(Ok(()), |e| Err(SelectorError(format!("invalid label value {v:?}: {e}"))))
}

/// A field selector: `metadata.name=x,spec.nodeName!=n1`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parse and check each field is supported for `res`, as Kubernetes does (400 otherwise).
    pub fn parse(s: &str, res: &Resource) -> Result<Self, SelectorError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, neg, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, false, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid field selector {part:?}: expected FIELD=VALUE or FIELD!=VALUE"
                )));
            };
            let k = k.trim();
            if !supported_fields(res.kind_id).contains(&k) {
                return Err(SelectorError(format!(
                    "field label not supported: {k} (for {}: {})",
                    res.kind,
                    supported_fields(res.kind_id).join(", ")
                )));
            }
            out.push((k.to_string(), neg, v.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, neg, v)| (field_value(obj, k) == *v) != *neg)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The fields each kind may be selected by.
pub fn supported_fields(kind: ResourceKind) -> &'static [&'static str] {
    use ResourceKind::*;
    match kind {
        Pod => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        Event => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        Node => &["metadata.name", "spec.unschedulable"],
        Namespace => &["metadata.name", "status.phase"],
        Secret => &["metadata.name", "metadata.namespace", "type"],
        Job => &["metadata.name", "metadata.namespace", "status.successful"],
        ReplicaSet | ReplicationController => &["metadata.name", "metadata.namespace", "status.replicas"],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

/// The value a field selector compares: absent fields read as "", booleans and numbers as text.
fn field_value(obj: &Value, path: &str) -> String {
    let path = if path == "source" { "source.component" } else { path };
    match object::at(obj, path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ if path == "spec.unschedulable" => "false".into(),
        _ if path == "status.successful" || path == "status.replicas" => "0".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn full_grammar() {
        let s =
            LabelSelector::parse("app=web, tier!=db,env in (prod, staging),track notin (canary),!legacy,team").unwrap();
        assert_eq!(s.0.len(), 6);
        let good = l(&[("app", "web"), ("tier", "fe"), ("env", "prod"), ("team", "a")]);
        assert!(s.matches(&good));
        let mut bad = good.clone();
        bad.insert("legacy".into(), "1".into());
        assert!(!s.matches(&bad));
        let mut bad = good.clone();
        bad.insert("env".into(), "dev".into());
        assert!(!s.matches(&bad));
        let mut bad = good.clone();
        bad.remove("team");
        assert!(!s.matches(&bad));
        assert!(LabelSelector::parse("app==web").unwrap().matches(&l(&[("app", "web")])));
        assert!(LabelSelector::parse("").unwrap().is_empty());
        // notin and != hold for absent keys, as in Kubernetes.
        assert!(LabelSelector::parse("x!=1,y notin (a)").unwrap().matches(&l(&[])));
    }

    #[test]
    fn selecting_an_object_reads_its_labels_as_a_copy_would() {
        let s = LabelSelector::parse("app=web,env in (prod),!legacy,team,tier notin (db)").unwrap();
        let cases = [
            serde_json::json!({"metadata": {"labels": {"app": "web", "env": "prod", "team": "a"}}}),
            serde_json::json!({"metadata": {"labels": {"app": "web", "env": "prod", "team": "a", "legacy": "1"}}}),
            serde_json::json!({"metadata": {"labels": {"app": "web", "env": "prod", "team": 7}}}),
            serde_json::json!({"metadata": {"labels": {"app": "web", "env": "prod", "team": "a", "tier": "db"}}}),
            serde_json::json!({"metadata": {"labels": "not a map"}}),
            serde_json::json!({"metadata": {}}),
            serde_json::json!([1, 2]),
        ];
        for obj in &cases {
            assert_eq!(s.selects(obj), s.matches(&object::labels(obj)), "{obj}");
        }
        assert!(s.selects(&cases[0]));
        assert!(LabelSelector::default().selects(&cases[6]), "empty selects everything");
        assert!(LabelSelector::parse("x!=1").unwrap().selects(&cases[5]));
    }

    #[test]
    fn grammar_errors() {
        for bad in ["app in (a", "app in ()", "a b (c)", "-bad=x", "app=no spaces", "x>1", "a,,b", "k=v)"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn from_label_selector_object() {
        let v = serde_json::json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["a"]}]});
        let s = LabelSelector::from_object(&v).unwrap();
        assert!(s.matches(&l(&[("app", "web"), ("env", "a")])));
        assert!(!s.matches(&l(&[("app", "web")])));
        let bad = serde_json::json!({"matchExpressions": [{"key": "env", "operator": "Near"}]});
        assert!(LabelSelector::from_object(&bad).is_err());
    }

    #[test]
    fn field_selectors() {
        let pods = lookup("pods").unwrap();
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", pods).unwrap();
        let pod = serde_json::json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(f.matches(&pod));
        let unbound = FieldSelector::parse("spec.nodeName=", pods).unwrap();
        assert!(unbound.matches(&serde_json::json!({"spec": {}})));
        assert!(FieldSelector::parse("spec.foo=x", pods).is_err());
        let ev =
            FieldSelector::parse("involvedObject.name=web,involvedObject.kind=Deployment", lookup("events").unwrap())
                .unwrap();
        assert!(ev.matches(&serde_json::json!({"involvedObject": {"name": "web", "kind": "Deployment"}})));
        let nodes = FieldSelector::parse("spec.unschedulable=false", lookup("nodes").unwrap()).unwrap();
        assert!(nodes.matches(&serde_json::json!({"spec": {}})));
    }
}
