//! The API's operations over the store, independent of HTTP. The HTTP handlers and the
//! in-process controllers both call these: one code path.

use super::objects::{self, DeleteOptions, WriteOpts};
use super::request::Target;
use crate::store::{EventType, Outcome, Store, Stored};
use base64::Engine;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wasmorch_api::resources::{self, Resource, ResourceKind};
use wasmorch_api::selector::{FieldSelector, LabelSelector};
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object};

#[derive(Clone)]
pub struct Api {
    pub store: Store,
    /// Ends open watches when the server stops.
    pub shutdown: CancellationToken,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Where Services get their cluster IPs.
    pub service_range: wasmorch_api::services::IpRange,
    /// The RBAC objects the authorizer reads (set once the server follows them; until then,
    /// and in servers without it, only admins and nodes are authorized).
    pub rbac: Arc<std::sync::OnceLock<Arc<super::rbac::Cache>>>,
    /// What admission reads, followed into memory (set once the server follows it; until
    /// then, and in servers without it, admission reads the store).
    pub lookups: Arc<std::sync::OnceLock<Arc<super::lookups::Lookups>>>,
}

/// The store lock held while a Service's addresses are allocated and written.
const ALLOCATIONS: &str = "service-allocations";

/// Options of a list (and of a watch's initial state).
#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: usize,
    pub continue_token: Option<String>,
}

impl ListOptions {
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.selects(obj) && self.fields.matches(obj)
    }
}

/// The result of a write: the object, warnings, and whether the store changed.
pub struct Written {
    /// Shared with the write's event when it changed something: `into_owned` copies.
    pub object: Stored,
    pub warnings: Vec<String>,
    pub event: Option<EventType>,
    /// The object's JSON as the store wrote it, when it has it ([`crate::store::Committed::json`]).
    pub json: Option<bytes::Bytes>,
}

fn ns_of(res: &Resource, ns: Option<&str>) -> String {
    if res.namespaced { ns.unwrap_or("").to_string() } else { String::new() }
}

impl Api {
    pub fn new(store: Store, shutdown: CancellationToken) -> Api {
        Api {
            store,
            shutdown,
            bookmark_interval: Duration::from_secs(30),
            service_range: Default::default(),
            rbac: Default::default(),
            lookups: Default::default(),
        }
    }

    fn key(t: &Target) -> Result<String, ApiError> {
        let name =
            t.name.as_deref().ok_or_else(|| ApiError::method_not_allowed("this operation needs an object name"))?;
        if t.res.namespaced && t.namespace.is_none() {
            return Err(ApiError::bad_request("a namespace is required"));
        }
        Ok(t.res.key(t.namespace.as_deref().unwrap_or(""), name))
    }

    fn not_found(t: &Target) -> ApiError {
        ApiError::not_found(t.res.group, t.res.plural, t.name.as_deref().unwrap_or(""))
    }

    pub async fn get(&self, t: &Target) -> Result<Value, ApiError> {
        self.store.get(&Self::key(t)?).await?.ok_or_else(|| Self::not_found(t))
    }

    /// List objects; returns the `…List` object.
    pub async fn list(&self, res: &Resource, ns: Option<&str>, opts: &ListOptions) -> Result<Value, ApiError> {
        let prefix = res.key_prefix(ns);
        let (mut start, mut rev0) = (None, None);
        if let Some(tok) = &opts.continue_token {
            let (k, rv) = decode_continue(tok)?;
            if rv < self.store.compacted_rev() {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            start = Some(k);
            rev0 = Some(rv);
        }
        let mut items = Vec::new();
        let mut next_token = None;
        let chunk = if opts.limit == 0 { 0 } else { opts.limit.max(500) };
        loop {
            // Every page at the first one's revision, where the engine keeps old states (etcd).
            let (page, rev, more) = self.store.list_at(&prefix, start.clone(), chunk, rev0).await?;
            let rev = *rev0.get_or_insert(rev);
            let last_key = page.last().map(|o| res.key(object::namespace(o), object::name(o)));
            for o in page {
                if opts.matches(&o) {
                    if opts.limit > 0 && items.len() == opts.limit {
                        break;
                    }
                    items.push(o);
                }
            }
            if opts.limit > 0 && items.len() == opts.limit {
                let last = items.last().map(|o| res.key(object::namespace(o), object::name(o)));
                // More may remain if this page had more, or if the page was cut by the limit.
                if more || last != last_key {
                    next_token = last.map(|k| encode_continue(&k, rev));
                }
                break;
            }
            if !more {
                break;
            }
            start = last_key;
        }
        let rev = rev0.unwrap_or(0);
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if let Some(t) = next_token {
            meta["continue"] = json!(t);
        }
        Ok(
            json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": meta, "items": items}),
        )
    }

    async fn check_namespace(&self, res: &Resource, ns: &str) -> Result<(), ApiError> {
        if !res.namespaced {
            return Ok(());
        }
        match self.lookup_with(ResourceKind::Namespace, "", ns, object::is_deleting).await? {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(true) => Err(ApiError::forbidden(format!(
                "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                res.qualified_plural()
            ))),
            Some(false) => Ok(()),
        }
    }

    pub async fn create(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        body: Value,
        mode: FieldValidation,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        self.create_by(res, ns, body, mode, dry_run, &WriteOpts::default()).await
    }

    /// [`Api::create`] by a field manager.
    pub async fn create_by(
        &self,
        res: &'static Resource,
        ns: Option<&str>,
        body: Value,
        mode: FieldValidation,
        dry_run: bool,
        w: &WriteOpts,
    ) -> Result<Written, ApiError> {
        let ns = ns_of(res, ns);
        let (mut obj, warnings) = objects::prepare_create_by(res, Some(&ns), body, mode, w)?;
        self.check_namespace(res, &ns).await?;
        let _quota = self.admit(res, &ns, &mut obj).await?;
        let mut _alloc = None;
        if res.kind_id == ResourceKind::Service {
            // Held across the write: two Services never get the same address, whichever API
            // servers create them.
            _alloc = Some(self.store.lock(ALLOCATIONS).await?);
            let others = self.other_services(None).await?;
            wasmorch_api::services::allocate(&mut obj, &others, &self.service_range)?;
        }
        let name = object::name(&obj).to_string();
        let key = res.key(&ns, &name);
        // The object moves into the store (no copy). A mutation may run again after a
        // conflict (on etcd): a create then finds the key taken, or — created and deleted
        // meanwhile — answers a conflict the client retries.
        let mut obj = Some(obj);
        let c = self
            .store
            .mutate(
                key,
                dry_run,
                Box::new(move |cur| match (cur, obj.take()) {
                    (Some(_), _) => Err(ApiError::already_exists(res.group, res.plural, &name)),
                    (None, Some(o)) => Ok(Outcome::Put(o)),
                    (None, None) => Err(ApiError::conflict(
                        res.group,
                        res.plural,
                        &name,
                        "the object was created and deleted while this create was written; try again",
                    )),
                }),
            )
            .await?;
        self.noted_write(res, dry_run, &c);
        Ok(Written { object: c.object, warnings, event: c.event, json: c.json })
    }

    fn noted_write(&self, res: &Resource, dry_run: bool, c: &crate::store::Committed) {
        if !dry_run && c.event.is_some() {
            self.noted(res, object::resource_version(&c.object));
        }
    }

    /// PUT, to the object or its `status` subresource.
    pub async fn update(
        &self,
        t: &Target,
        body: Value,
        mode: FieldValidation,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        self.update_by(t, body, mode, dry_run, WriteOpts::default()).await
    }

    pub async fn update_by(
        &self,
        t: &Target,
        body: Value,
        mode: FieldValidation,
        dry_run: bool,
        w: WriteOpts,
    ) -> Result<Written, ApiError> {
        self.modify(t, dry_run, move |res, cur, sub| objects::prepare_update_by(res, cur, body.clone(), sub, mode, &w))
            .await
    }

    pub async fn patch(
        &self,
        t: &Target,
        content_type: &str,
        patch: Value,
        mode: FieldValidation,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        self.patch_by(t, content_type, patch, mode, dry_run, WriteOpts::default()).await
    }

    /// [`Api::patch`] by a field manager; a server-side apply (`application/apply-patch+yaml`)
    /// checks ownership conflicts and removes the fields its manager stopped applying.
    pub async fn patch_by(
        &self,
        t: &Target,
        content_type: &str,
        patch: Value,
        mode: FieldValidation,
        dry_run: bool,
        w: WriteOpts,
    ) -> Result<Written, ApiError> {
        let ct = content_type.to_string();
        self.modify(t, dry_run, move |res, cur, sub| {
            let new = objects::apply_patch(cur, &ct, &patch)?;
            if ct != "application/apply-patch+yaml" {
                return objects::prepare_update_by(res, cur, new, sub, mode, &w);
            }
            let mut patch = patch.clone();
            if let Some(m) = patch.as_object_mut() {
                m.entry("apiVersion").or_insert_with(|| json!(res.api_version()));
                m.entry("kind").or_insert_with(|| json!(res.kind));
            }
            let now = object::now_rfc3339();
            let new = wasmorch_api::managed::apply(cur, &patch, new, &w.manager, w.force, &now)
                .map_err(|c| objects::apply_conflict(res, object::name(cur), &c))?;
            objects::prepare_update_by(res, cur, new, sub, mode, &WriteOpts { apply: true, ..w.clone() })
        })
        .await
    }

    async fn modify(
        &self,
        t: &Target,
        dry_run: bool,
        mut f: impl FnMut(&Resource, &Value, Option<&str>) -> Result<(Outcome, Vec<String>), ApiError> + Send + 'static,
    ) -> Result<Written, ApiError> {
        let res = t.res;
        let sub = match t.subresource.as_deref() {
            None => None,
            Some("status") if res.has_status => Some("status".to_string()),
            Some(other) => {
                return Err(ApiError::new(404, "NotFound", format!("{} has no subresource {other:?}", res.kind)));
            }
        };
        let nf = Self::not_found(t);
        // Services: addresses allocated under the lock, against every other Service.
        let mut _alloc = None;
        let mut others = None;
        if res.kind_id == ResourceKind::Service && sub.is_none() {
            // Held across the write: two Services never get the same address, whichever API
            // servers create them.
            _alloc = Some(self.store.lock(ALLOCATIONS).await?);
            others = Some(self.other_services(Some(Self::key(t)?)).await?);
        }
        let range = self.service_range;
        // std Mutex: the closure runs on the writer thread; this only carries warnings out.
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let w2 = warnings.clone();
        let c = self
            .store
            .mutate(
                Self::key(t)?,
                dry_run,
                Box::new(move |cur| {
                    let cur = cur.ok_or_else(|| nf.clone())?;
                    let (mut outcome, w) = f(res, cur, sub.as_deref())?;
                    if let (Some(others), Outcome::Put(new)) = (&others, &mut outcome) {
                        wasmorch_api::services::allocate(new, others, &range)?;
                    }
                    *w2.lock().unwrap_or_else(|e| e.into_inner()) = w;
                    Ok(outcome)
                }),
            )
            .await?;
        self.noted_write(res, dry_run, &c);
        let warnings = std::mem::take(&mut *warnings.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(Written { object: c.object, warnings, event: c.event, json: c.json })
    }

    /// `pods/eviction`: delete the pod unless a PodDisruptionBudget selecting it has no
    /// disruption left (429, as Kubernetes answers). An unhealthy pod may always go.
    pub async fn evict(&self, t: &Target, opts: DeleteOptions, dry_run: bool) -> Result<Written, ApiError> {
        use wasmorch_api::disruption;
        // Held while the budgets are checked and the pod deleted, across API servers: two
        // evictions cannot both spend the last allowed disruption.
        let _one = self.store.lock("evictions").await?;
        let pod = self.get(t).await?;
        if disruption::healthy(&pod) {
            let ns = object::namespace(&pod);
            let pdbs = resources::of(resources::ResourceKind::PodDisruptionBudget);
            let list = self.list(pdbs, Some(ns), &ListOptions::default()).await?;
            let budgets: Vec<Value> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| disruption::selects(b, &pod))
                .cloned()
                .collect();
            if !budgets.is_empty() {
                let pods = resources::of(resources::ResourceKind::Pod);
                let list = self.list(pods, Some(ns), &ListOptions::default()).await?;
                let all = list["items"].as_array().cloned().unwrap_or_default();
                for b in &budgets {
                    let state = disruption::budget(b, &all);
                    if state.allowed < 1 {
                        let mut e = ApiError::new(
                            429,
                            "TooManyRequests",
                            "Cannot evict pod as it would violate the pod's disruption budget.",
                        );
                        e.causes.push(wasmorch_api::error::Cause::new(
                            "DisruptionBudget",
                            "",
                            format!(
                                "The disruption budget {} needs {} healthy pods and has {} currently",
                                object::name(b),
                                state.desired_healthy,
                                state.healthy
                            ),
                        ));
                        return Err(e);
                    }
                }
            }
        }
        let mut p = t.clone();
        p.subresource = None;
        self.delete(&p, opts, dry_run).await
    }

    /// Every Service but the one at `except`.
    async fn other_services(&self, except: Option<String>) -> Result<Vec<Value>, ApiError> {
        let svc = wasmorch_api::resources::of(wasmorch_api::resources::ResourceKind::Service);
        let (items, _, _) = self.store.list(&svc.key_prefix(None), None, 0).await?;
        Ok(items
            .into_iter()
            .filter(|o| except.as_deref() != Some(svc.key(object::namespace(o), object::name(o)).as_str()))
            .collect())
    }

    /// A write decided by `f` from the current object alone (subresources with their own rules).
    /// `f` may run more than once (the store's contract).
    pub(crate) async fn modify_raw(
        &self,
        t: &Target,
        dry_run: bool,
        mut f: impl FnMut(&Value) -> Result<Outcome, ApiError> + Send + 'static,
    ) -> Result<Written, ApiError> {
        let nf = Self::not_found(t);
        let c = self
            .store
            .mutate(
                Self::key(t)?,
                dry_run,
                Box::new(move |cur| {
                    let cur = cur.ok_or_else(|| nf.clone())?;
                    f(cur)
                }),
            )
            .await?;
        self.noted_write(t.res, dry_run, &c);
        Ok(Written { object: c.object, warnings: Vec::new(), event: c.event, json: c.json })
    }

    /// Delete (or mark deleting). `Written.event` is `Deleted` when the object is gone.
    pub async fn delete(&self, t: &Target, opts: DeleteOptions, dry_run: bool) -> Result<Written, ApiError> {
        let res = t.res;
        self.modify_raw(t, dry_run, move |cur| objects::prepare_delete(res, cur, &opts)).await
    }
}

fn encode_continue(key: &str, rev: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"k": key, "rv": rev}).to_string())
}

fn decode_continue(tok: &str) -> Result<(String, u64), ApiError> {
    let bad = || ApiError::bad_request("invalid continue token");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tok).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((v["k"].as_str().ok_or_else(bad)?.to_string(), v["rv"].as_u64().ok_or_else(bad)?))
}
