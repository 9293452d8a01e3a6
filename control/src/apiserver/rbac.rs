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
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmorch_api::rbac::{Attributes, Rule, Snapshot, Subject};
use wasmorch_api::resources::{self, ResourceKind};
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object};

/// Roles and bindings, as the informers keep them, compiled into a [`Snapshot`] that is
/// rebuilt (once, by the first request to need it) after any of them changed.
pub struct Cache {
    roles: Arc<Informer>,
    cluster_roles: Arc<Informer>,
    bindings: Arc<Informer>,
    cluster_bindings: Arc<Informer>,
    /// Bumped by every change; a snapshot is good while it was built at the current one.
    generation: AtomicU64,
    snapshot: RwLock<Option<(u64, Arc<Snapshot>)>>,
}

impl Cache {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some((g, s)) = self.snapshot.read().unwrap_or_else(|e| e.into_inner()).as_ref()
            && *g == generation
        {
            return s.clone();
        }
        let (cr, r, crb, rb) = (
            self.cluster_roles.cache.list(None),
            self.roles.cache.list(None),
            self.cluster_bindings.cache.list(None),
            self.bindings.cache.list(None),
        );
        let s = Arc::new(Snapshot::build(&cr, &r, &crb, &rb));
        // Kept only if nothing changed while it was built (else the next request builds anew).
        let mut slot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            *slot = Some((generation, s.clone()));
        }
        s
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
        generation: AtomicU64::new(0),
        snapshot: RwLock::new(None),
    });
    for i in [&c.roles, &c.cluster_roles, &c.bindings, &c.cluster_bindings] {
        // The handler runs after the informer's cache took the change.
        let weak = Arc::downgrade(&c);
        i.on_change(Arc::new(move |_, _| {
            if let Some(c) = weak.upgrade() {
                c.generation.fetch_add(1, Ordering::AcqRel);
            }
        }));
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
    let Some(cache) = api.rbac.get() else { return Err(ApiError::forbidden("no RBAC policy is loaded")) };
    let p = cache.snapshot();
    let ns = object::namespace(obj).to_string();
    let subject = Subject { user: &id.user, groups: &id.groups };
    let held: Vec<Rule> = p.rules_for(&subject, &ns).into_iter().map(|(_, r)| r.clone()).collect();
    let (wanted, bypass_verb, role_res, role_name) = match kind {
        ResourceKind::Role | ResourceKind::ClusterRole => {
            let res = if kind == ResourceKind::Role { "roles" } else { "clusterroles" };
            (rules(obj), "escalate", res, object::name(obj).to_string())
        }
        _ => {
            let r = &obj["roleRef"];
            let name = r["name"].as_str().unwrap_or("").to_string();
            let (res, role) = match r["kind"].as_str() {
                Some("Role") => ("roles", p.role_rules(Some(&ns), &name)),
                _ => ("clusterroles", p.role_rules(None, &name)),
            };
            // Binding a role that does not exist grants nothing yet: Kubernetes refuses it too.
            let Some(role) = role else {
                return Err(ApiError::forbidden(format!(
                    "user \"{}\" is attempting to grant RBAC permissions not currently held: {res} \"{name}\" not found",
                    id.user
                )));
            };
            (role.to_vec(), "bind", res, name)
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
