//! Access reviews (`authorization.k8s.io/v1`), answered by the same decision every request
//! gets (`authz::check`): `SelfSubjectAccessReview` (what `kubectl auth can-i` asks),
//! `SelfSubjectRulesReview` (`kubectl auth can-i --list`), and `SubjectAccessReview` /
//! `LocalSubjectAccessReview` (for another user, to whoever may create them).

use super::ServerState;
use super::authz;
use crate::pki::Identity;
use serde_json::{Value, json};
use wasmorch_api::ApiError;
use wasmorch_api::rbac::{Attributes, Subject};

pub const GROUP: &str = "authorization.k8s.io";

/// The attributes a review's spec asks about.
fn attributes(spec: &Value) -> Result<Attributes, ApiError> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        return Ok(Attributes {
            verb: s(r, "verb"),
            group: s(r, "group"),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            name: s(r, "name"),
            namespace: s(r, "namespace"),
            path: None,
        });
    }
    if let Some(n) = spec.get("nonResourceAttributes").filter(|r| r.is_object()) {
        return Ok(Attributes { verb: s(n, "verb"), path: Some(s(n, "path")), ..Default::default() });
    }
    Err(ApiError::invalid(
        GROUP,
        "SubjectAccessReview",
        "",
        vec![wasmorch_api::error::Cause::required("spec.resourceAttributes")],
    ))
}

fn answer(mut review: Value, allowed: Result<String, String>) -> Value {
    review["status"] = match allowed {
        Ok(reason) => json!({"allowed": true, "reason": format!("RBAC: {reason}")}),
        // As Kubernetes' RBAC authorizer: no opinion, no reason (kubectl prints a bare "no").
        Err(_) => json!({"allowed": false}),
    };
    review["metadata"] = json!({"creationTimestamp": null});
    review
}

/// `POST /apis/authorization.k8s.io/v1/…`: `kind` is the plural, `ns` the namespace of a
/// local review.
pub fn review(
    state: &ServerState,
    id: &Identity,
    kind: &str,
    ns: Option<&str>,
    body: Value,
) -> Result<Value, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    match kind {
        "selfsubjectaccessreviews" => Ok(answer(body, authz::check(&state.api, id, &attributes(&spec)?))),
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let mut may =
                Attributes { verb: "create".into(), group: GROUP.into(), resource: kind.into(), ..Default::default() };
            may.namespace = ns.unwrap_or("").to_string();
            authz::require(&state.api, id, &may)?;
            let mut a = attributes(&spec)?;
            if let Some(ns) = ns {
                a.namespace = ns.to_string();
            }
            let user = spec.get("user").and_then(Value::as_str).unwrap_or("").to_string();
            let groups = wasmorch_api::object::strings(spec.get("groups"));
            let who = Identity { user, groups };
            Ok(answer(body, authz::check(&state.api, &who, &a)))
        }
        "selfsubjectrulesreviews" => {
            let ns = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
            let mut out = body;
            let Some(p) = state.api.rbac.get() else {
                out["status"] = json!({"resourceRules": [], "nonResourceRules": [], "incomplete": true,
                    "evaluationError": "no RBAC policy is loaded"});
                return Ok(out);
            };
            let snap = p.snapshot();
            let rules = snap.rules_for(&Subject { user: &id.user, groups: &id.groups }, ns);
            let (mut resource, mut non) = (Vec::new(), Vec::new());
            for (_, r) in rules {
                let v = r.to_value();
                if r.urls.is_empty() {
                    if !resource.contains(&v) {
                        resource.push(v);
                    }
                } else if !non.contains(&v) {
                    non.push(v);
                }
            }
            out["status"] = json!({"resourceRules": resource, "nonResourceRules": non, "incomplete": false});
            out["metadata"] = json!({"creationTimestamp": null});
            Ok(out)
        }
        _ => Err(ApiError::new(404, "NotFound", format!("the server could not find the requested resource ({kind})"))),
    }
}
