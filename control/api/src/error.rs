//! API errors and their single rendering as a Kubernetes `Status` object.

use serde_json::{Value, json};

/// One field-level reason an object was rejected (`Status.details.causes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueDuplicate`,
    /// `FieldValueTooLong`, `FieldValueTypeInvalid`, `FieldValueForbidden`.
    pub reason: &'static str,
    /// Path of the field, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn new(reason: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause { reason, field: field.into(), message: message.into() }
    }
    pub fn required(field: impl Into<String>) -> Self {
        Cause::new("FieldValueRequired", field, "Required value")
    }
    pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, why: &str) -> Self {
        Cause::new("FieldValueInvalid", field, format!("Invalid value: {value}: {why}"))
    }
    /// The message as kubectl prints it: `field: message`.
    pub fn describe(&self) -> String {
        if self.field.is_empty() { self.message.clone() } else { format!("{}: {}", self.field, self.message) }
    }
}

/// An error answered to an API client. Rendered by [`ApiError::to_status`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    /// Kubernetes `StatusReason`: `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, …
    pub reason: &'static str,
    pub message: String,
    pub kind: String,
    pub group: String,
    pub name: String,
    pub causes: Vec<Cause>,
    /// For 429/503/504 answers.
    pub retry_after_seconds: Option<u32>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            kind: String::new(),
            group: String::new(),
            name: String::new(),
            causes: Vec::new(),
            retry_after_seconds: None,
        }
    }
    fn with_target(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.group = group.to_string();
        self.kind = kind.to_string();
        self.name = name.to_string();
        self
    }
    /// `resource` is the qualified plural as Kubernetes prints it: `deployments.apps`, `pods`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(plural, group)))
            .with_target(group, plural, name)
    }
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(plural, group)))
            .with_target(group, plural, name)
    }
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(plural, group)),
        )
        .with_target(group, plural, name)
    }
    /// 422: `Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must be >= 0`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let list: Vec<String> = causes.iter().map(Cause::describe).collect();
        let joined = if list.len() == 1 { list[0].clone() } else { format!("[{}]", list.join(", ")) };
        let mut e =
            ApiError::new(422, "Invalid", format!("{} \"{name}\" is invalid: {joined}", qualified(kind, group)))
                .with_target(group, kind, name);
        e.causes = causes;
        e
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }
    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }
    pub fn unauthorized() -> Self {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }
    /// 403 for one object, as admission writes it: `pods "web" is forbidden: {why}`.
    pub fn forbidden_object(group: &str, plural: &str, name: &str, why: &str) -> Self {
        ApiError::new(403, "Forbidden", format!("{} \"{name}\" is forbidden: {why}", qualified(plural, group)))
            .with_target(group, plural, name)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "Forbidden", message)
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", message)
    }
    pub fn too_large(limit: usize) -> Self {
        ApiError::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"))
    }
    pub fn unsupported_media_type(ct: &str) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/json-patch+json; got {ct:?}"
            ),
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = ApiError::new(503, "ServiceUnavailable", message);
        e.retry_after_seconds = Some(1);
        e
    }

    /// The one place an error becomes a wire `Status`.
    /// The `Status` as kube-apiserver writes it, field for field in its order (`kind`,
    /// `apiVersion`, `metadata`, `status`, `message`, `reason`, `details`, `code`; details:
    /// `name`, `group`, `kind`, `causes`, `retryAfterSeconds`; a cause: `reason`, `message`,
    /// `field`). Some clients compare error bodies as strings.
    pub fn to_status_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct CauseBody<'a> {
            reason: &'a str,
            message: &'a str,
            field: &'a str,
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Details<'a> {
            #[serde(skip_serializing_if = "str::is_empty")]
            name: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            group: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            kind: &'a str,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            causes: Vec<CauseBody<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            retry_after_seconds: Option<u32>,
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Status<'a> {
            kind: &'a str,
            api_version: &'a str,
            metadata: serde_json::Map<String, Value>,
            status: &'a str,
            message: &'a str,
            reason: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<Details<'a>>,
            code: u16,
        }
        let has_details = !self.kind.is_empty()
            || !self.name.is_empty()
            || !self.causes.is_empty()
            || self.retry_after_seconds.is_some();
        let body = Status {
            kind: "Status",
            api_version: "v1",
            metadata: Default::default(),
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            details: has_details.then(|| Details {
                name: &self.name,
                group: &self.group,
                kind: &self.kind,
                causes: self
                    .causes
                    .iter()
                    .map(|c| CauseBody { reason: c.reason, message: &c.message, field: &c.field })
                    .collect(),
                retry_after_seconds: self.retry_after_seconds,
            }),
            code: self.code,
        };
        serde_json::to_string(&body).unwrap_or_else(|_| self.to_status().to_string())
    }

    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.kind.is_empty()
            || !self.name.is_empty()
            || !self.causes.is_empty()
            || self.retry_after_seconds.is_some()
        {
            let mut details = json!({});
            if !self.name.is_empty() {
                details["name"] = json!(self.name);
            }
            if !self.group.is_empty() {
                details["group"] = json!(self.group);
            }
            if !self.kind.is_empty() {
                details["kind"] = json!(self.kind);
            }
            if !self.causes.is_empty() {
                details["causes"] = Value::Array(
                    self.causes
                        .iter()
                        .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                        .collect(),
                );
            }
            if let Some(s) = self.retry_after_seconds {
                details["retryAfterSeconds"] = json!(s);
            }
            status["details"] = details;
        }
        status
    }
}

fn qualified(name: &str, group: &str) -> String {
    if group.is_empty() { name.to_string() } else { format!("{name}.{group}") }
}

/// A `Status` for a successful delete of an object that is gone.
pub fn success_status(group: &str, kind: &str, name: &str, uid: &str) -> Value {
    let mut details = json!({"name": name, "kind": kind, "uid": uid});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_every_field() {
        let e = ApiError::invalid(
            "apps",
            "Deployment",
            "web",
            vec![
                Cause::required("spec.selector"),
                Cause::invalid("spec.replicas", -1, "must be greater than or equal to 0"),
            ],
        );
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Deployment.apps \"web\" is invalid: [spec.selector: Required value, spec.replicas: Invalid value: -1: must be greater than or equal to 0]"
        );
        let s = e.to_status();
        assert_eq!(s["details"]["causes"][1]["field"], "spec.replicas");
        assert_eq!(s["reason"], "Invalid");
    }

    #[test]
    fn not_found_message_matches_kubernetes() {
        let e = ApiError::not_found("", "pods", "x");
        assert_eq!(e.message, "pods \"x\" not found");
        assert_eq!(ApiError::not_found("apps", "deployments", "w").message, "deployments.apps \"w\" not found");
    }
}
