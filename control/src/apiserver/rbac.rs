//! RBAC on the API server: the policy objects followed into memory (every API server keeps
//! its own copy, as each authorizes its own requests), the default roles written at start,
//! and the escalation rule for writes of roles and bindings (`wasmorch_api::rbac::covers`:
//! you may grant only what you hold, unless you may `escalate` or `bind`).

use super::api::Api;
use super::authz;
use crate::controllers::runtime::Informer;
use crate::pki::Identity;
use serde_json::Value;
use std::sync::Arc;
use wasmorch_api::rbac::{Attributes, Policies, Rule, Subject};
use wasmorch_api::resources::{self, ResourceKind};
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object};

/// Roles and bindings, as the informers keep them.
pub struct Cache {
    roles: Arc<Informer>,
    cluster_roles: Arc<Informer>,
    bindings: Arc<Informer>,
    cluster_bindings: Arc<Informer>,
}

impl Policies for Cache {
    fn cluster_role(&self, name: &str) -> Option<Value> {
        self.cluster_roles.cache.get(name)
    }
    fn role(&self, namespace: &str, name: &str) -> Option<Value> {
        self.roles.cache.get(&format!("{namespace}/{name}"))
    }
    fn cluster_role_bindings(&self) -> Vec<Value> {
        self.cluster_bindings.cache.list(None)
    }
    fn role_bindings(&self, namespace: &str) -> Vec<Value> {
        self.bindings.cache.list(Some(namespace))
    }
}

/// Follow the RBAC objects and hand them to the authorizer of `api`.
pub fn start(api: &Api) {
    let informer = |k| Informer::new(resources::of(k));
    let c = Arc::new(Cache {
        roles: informer(ResourceKind::Role),
        cluster_roles: informer(ResourceKind::ClusterRole),
        bindings: informer(ResourceKind::RoleBinding),
        cluster_bindings: informer(ResourceKind::ClusterRoleBinding),
    });
    for i in [&c.roles, &c.cluster_roles, &c.bindings, &c.cluster_bindings] {
        tokio::spawn(i.clone().run(api.clone()));
    }
    let _ = api.rbac.set(c);
}

/// Write the default roles and bindings that are missing (an edited one is left alone).
pub async fn bootstrap(api: &Api) {
    for o in wasmorch_api::rbac::defaults() {
        let kind =
            if o["kind"] == "ClusterRole" { ResourceKind::ClusterRole } else { ResourceKind::ClusterRoleBinding };
        match api.create(resources::of(kind), None, o, FieldValidation::Strict, false).await {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => tracing::warn!("default RBAC object: {e}"),
        }
    }
}

fn rules(v: &Value) -> Vec<Rule> {
    v.get("rules").and_then(Value::as_array).into_iter().flatten().map(Rule::of).collect()
}

/// Refuse a write of a role or binding that grants more than `id` holds (Kubernetes'
/// escalation check), unless `id` may `escalate` (roles) or `bind` (bindings). `obj` is the
/// object as it would be stored.
pub fn check_escalation(api: &Api, id: &Identity, kind: ResourceKind, obj: &Value) -> Result<(), ApiError> {
    if id.is_admin() {
        return Ok(());
    }
    let Some(p) = api.rbac.get() else { return Err(ApiError::forbidden("no RBAC policy is loaded")) };
    let ns = object::namespace(obj).to_string();
    let subject = Subject { user: &id.user, groups: &id.groups };
    let held: Vec<Rule> =
        wasmorch_api::rbac::rules_for(p.as_ref(), &subject, &ns).into_iter().map(|(_, r)| r).collect();
    let (wanted, bypass_verb, role_res, role_name) = match kind {
        ResourceKind::Role | ResourceKind::ClusterRole => {
            let res = if kind == ResourceKind::Role { "roles" } else { "clusterroles" };
            (rules(obj), "escalate", res, object::name(obj).to_string())
        }
        _ => {
            let r = &obj["roleRef"];
            let name = r["name"].as_str().unwrap_or("").to_string();
            let (res, role) = match r["kind"].as_str() {
                Some("Role") => ("roles", p.role(&ns, &name)),
                _ => ("clusterroles", p.cluster_role(&name)),
            };
            // Binding a role that does not exist grants nothing yet: Kubernetes refuses it too.
            let Some(role) = role else {
                return Err(ApiError::forbidden(format!(
                    "user \"{}\" is attempting to grant RBAC permissions not currently held: {res} \"{name}\" not found",
                    id.user
                )));
            };
            (rules(&role), "bind", res, name)
        }
    };
    let bypass = Attributes {
        verb: bypass_verb.into(),
        group: "rbac.authorization.k8s.io".into(),
        resource: role_res.into(),
        name: role_name,
        namespace: if role_res == "roles" { ns.clone() } else { String::new() },
        ..Default::default()
    };
    if authz::check(api, id, &bypass).is_ok() {
        return Ok(());
    }
    wasmorch_api::rbac::covers(&held, &wanted).map_err(|missing| {
        ApiError::forbidden(format!(
            "user \"{}\" (groups={:?}) is attempting to grant RBAC permissions not currently held: {missing}",
            id.user, id.groups
        ))
    })
}
