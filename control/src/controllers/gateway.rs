//! The Gateway API's control side: the built-in definitions are stored at start
//! ([`ensure_definitions`], from `server::bootstrap`); once they are served, the GatewayClass
//! `wasmorch` is created and the status of every GatewayClass, Gateway and HTTPRoute that is
//! wasmorch's is kept as the specification asks (`wasmorch_api::gateway::status` decides it).
//! The routing itself is every node's (`host::proxy::routes`).
//!
//! One key is reconciled: any change to a class, Gateway, route, ReferenceGrant, Service, Node
//! or Namespace
//! looks at all of them again (a small cluster's handful of Gateways; each write happens only
//! when a status differs).

use super::endpoints::{lb_changed, load_balancer_status};
use super::replicaset::target;
use super::runtime::{Action, Informer, Queue, run_workers};
use crate::apiserver::api::Api;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wasmorch_api::gateway::{self, GROUP, status};
use wasmorch_api::resources::{self, Resource, ResourceKind};
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, custom, object};

const ALL: &str = "all";

/// Store the built-in definitions, or bring stored ones up to this version's.
pub async fn ensure_definitions(api: &Api) -> Result<(), ApiError> {
    let res = resources::of(ResourceKind::CustomResourceDefinition);
    for crd in gateway::crds::all() {
        let name = object::name(&crd).to_string();
        match api.create(res, None, crd.clone(), Default::default(), false).await {
            Ok(_) => {}
            Err(e) if e.code == 409 => {
                let cur = api.get(&target(res, "", &name, None)).await?;
                let built_in = cur.pointer("/metadata/annotations/wasmorch.io~1built-in").and_then(Value::as_str);
                if built_in == Some("true") && cur.get("spec") != crd.get("spec") {
                    let patch =
                        json!({"spec": crd["spec"], "metadata": {"annotations": crd["metadata"]["annotations"]}});
                    let t = target(res, "", &name, None);
                    api.patch(&t, "application/merge-patch+json", patch, FieldValidation::Ignore, false).await?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The served (storage) version of a built-in kind, once the definitions are loaded.
fn served(plural: &str) -> Option<&'static Resource> {
    custom::versions().iter().find(|v| v.res.group == GROUP && v.res.plural == plural).map(|v| v.storage)
}

pub async fn start(api: Api, services: Arc<Informer>, nodes: Arc<Informer>) {
    let queue = Queue::new();
    let poke = |i: &Informer, q: &Arc<Queue>| {
        let q = q.clone();
        i.on_change(Arc::new(move |_, _| q.add(ALL)));
    };
    poke(&services, &queue);
    {
        // Gateways carry the Ready nodes' addresses; heartbeats change nothing here.
        let q = queue.clone();
        nodes.on_change(Arc::new(move |old, new| {
            if lb_changed(old, new) {
                q.add(ALL)
            }
        }));
    }
    // The definitions are served once the API server's CRD informer has loaded them.
    let (classes_res, gateways_res, routes_res, grants_res) = loop {
        if let (Some(c), Some(g), Some(r), Some(rg)) =
            (served("gatewayclasses"), served("gateways"), served("httproutes"), served("referencegrants"))
        {
            break (c, g, r, rg);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = api.shutdown.cancelled() => return,
        }
    };
    match api.create(classes_res, None, status::default_class(), Default::default(), false).await {
        Ok(_) => {}
        Err(e) if e.code == 409 => {}
        Err(e) => tracing::warn!("gateway: creating GatewayClass {}: {e}", gateway::CLASS),
    }
    let classes = Informer::new(classes_res);
    let gateways = Informer::new(gateways_res);
    let routes = Informer::new(routes_res);
    let grants = Informer::new(grants_res);
    let namespaces = Informer::new(resources::of(ResourceKind::Namespace));
    for i in [&classes, &gateways, &routes, &grants, &namespaces] {
        poke(i, &queue);
        tokio::spawn(i.clone().run(api.clone()));
    }
    for i in [&classes, &gateways, &routes, &grants, &namespaces, &services, &nodes] {
        i.cache.wait_synced().await;
    }
    queue.add(ALL);
    let informers = Arc::new(Informers { classes, gateways, routes, grants, namespaces, services, nodes });
    run_workers(api.clone(), "gateway", queue, 1, move |_| {
        let (api, i) = (api.clone(), informers.clone());
        async move { reconcile(&api, &i).await }
    })
    .await;
}

struct Informers {
    classes: Arc<Informer>,
    gateways: Arc<Informer>,
    routes: Arc<Informer>,
    grants: Arc<Informer>,
    namespaces: Arc<Informer>,
    services: Arc<Informer>,
    nodes: Arc<Informer>,
}

/// Whether a Secret is a usable `kubernetes.io/tls` one.
async fn certificate(api: &Api, ns: &str, name: &str) -> Result<(), String> {
    let t = target(resources::of(ResourceKind::Secret), ns, name, None);
    let s = api.get(&t).await.map_err(|e| if e.code == 404 { "not found".to_string() } else { e.message })?;
    let data = s.get("data");
    for k in ["tls.crt", "tls.key"] {
        if data.and_then(|d| d.get(k)).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(format!("has no {k}"));
        }
    }
    Ok(())
}

async fn write_status(api: &Api, res: &'static Resource, obj: &Value, want: Value) -> Result<(), ApiError> {
    if obj.get("status") == Some(&want) {
        return Ok(());
    }
    let t = target(res, object::namespace(obj), object::name(obj), Some("status"));
    match api.patch(&t, "application/merge-patch+json", json!({"status": want}), FieldValidation::Ignore, false).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn reconcile(api: &Api, i: &Informers) -> Result<Action, ApiError> {
    let now = object::now_rfc3339();
    let ours: Vec<Value> = i.classes.cache.list(None).into_iter().filter(status::is_ours).collect();
    for c in &ours {
        write_status(api, i.classes.res, c, status::class_status(c, &now)).await?;
    }
    let names: Vec<&str> = ours.iter().map(object::name).collect();
    let gateways: Vec<Value> = i
        .gateways
        .cache
        .list(None)
        .into_iter()
        .filter(|g| g.pointer("/spec/gatewayClassName").and_then(Value::as_str).is_some_and(|c| names.contains(&c)))
        .collect();
    let routes = i.routes.cache.list(None);
    // Certificates of HTTPS listeners, read now (a Secret changing is seen on the next pass).
    let mut certs: HashMap<(String, String), Result<(), String>> = HashMap::new();
    for g in &gateways {
        for l in gateway::listeners(g).0 {
            for (ns, name) in l.certificates {
                if !certs.contains_key(&(ns.clone(), name.clone())) {
                    let r = certificate(api, &ns, &name).await;
                    certs.insert((ns, name), r);
                }
            }
        }
    }
    let lb = i.nodes.cache.with_all(|n| load_balancer_status(n));
    let addresses: Vec<String> = lb
        .get("ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("ip").and_then(Value::as_str).map(String::from))
        .collect();
    let grants = gateway::Grants::new(&i.grants.cache.list(None));
    // The ports Services take on the nodes (node ports; LoadBalancer ports), read once.
    let taken_ports: std::collections::HashSet<u16> = i.services.cache.with_all(|all| {
        all.flat_map(|s| {
            let lb = s.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer");
            let ports = s.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
            ports.into_iter().flat_map(move |p| {
                let node_port = p.get("nodePort").and_then(Value::as_u64);
                let lb_port = p.get("port").and_then(Value::as_u64).filter(|_| lb);
                [node_port, lb_port].into_iter().flatten().filter_map(|n| u16::try_from(n).ok())
            })
        })
        .collect()
    });
    // Decide every status first (pure), then write those that differ.
    let writes: Vec<(&'static Resource, &Value, Value)> = {
        let labels = |ns: &str| i.namespaces.cache.get(ns).map(|n| object::labels(&n));
        let exists = |ns: &str, name: &str| i.services.cache.get(&format!("{ns}/{name}")).is_some();
        let taken = |port: u16| taken_ports.contains(&port);
        let cert = |ns: &str, name: &str| {
            certs.get(&(ns.to_string(), name.to_string())).cloned().unwrap_or_else(|| Err("not read".into()))
        };
        let world = status::World {
            gateways: &gateways,
            routes: &routes,
            addresses: &addresses,
            namespace_labels: &labels,
            refs: gateway::Refs { service_exists: &exists, grants: &grants },
            port_taken: &taken,
            certificate: &cert,
            now: &now,
        };
        let mut w: Vec<(&'static Resource, &Value, Value)> =
            gateways.iter().map(|g| (i.gateways.res, g, status::gateway_status(g, &world))).collect();
        for r in &routes {
            let want = status::route_status(r, &world);
            let empty_before = r.pointer("/status/parents").and_then(Value::as_array).is_none_or(Vec::is_empty);
            if !(want["parents"].as_array().is_some_and(Vec::is_empty) && empty_before) {
                w.push((i.routes.res, r, want));
            }
        }
        w
    };
    for (res, obj, want) in writes {
        write_status(api, res, obj, want).await?;
    }
    // A Secret that is missing or wrong may be fixed without any watched object changing.
    if certs.values().any(Result::is_err) {
        return Ok(Action::Requeue(Duration::from_secs(10)));
    }
    Ok(Action::AwaitChange)
}
