//! Endpoints and EndpointSlices: for each Service with a selector, the addresses of the pods
//! it selects — ready ones as ready, terminating ones marked terminating (and still serving
//! while their Ready condition holds), `targetPort` resolved by number or by the container
//! port's name. Also the `LoadBalancer` status, done as k3s does: every node serves the port,
//! so the ingress lists every Ready node's address. [`desired`] is pure.

use super::replicaset::{is_ready, owner_ref, target};
use super::runtime::{Action, Informer, Queue, key_of, run_workers, split_key};
use crate::apiserver::api::Api;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmorch_api::selector::LabelSelector;
use wasmorch_api::validation::FieldValidation;
use wasmorch_api::{ApiError, object, resources};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "wasmorch-endpoints-controller";

/// The selector of a Service that has one (a Service without one has hand-made endpoints).
fn selector(svc: &Value) -> Option<LabelSelector> {
    let m = svc["spec"]["selector"].as_object().filter(|m| !m.is_empty())?;
    LabelSelector::from_object(&json!({"matchLabels": m})).ok()
}

/// The port a Service port reaches on `pod`: its number, or the named container port.
pub fn target_port(port: &Value, pod: &Value) -> Option<u64> {
    let t = &port["targetPort"];
    if let Some(n) = t.as_u64() {
        return Some(n);
    }
    if let Some(name) = t.as_str() {
        if let Ok(n) = name.parse::<u64>() {
            return Some(n);
        }
        return pod["spec"]["containers"]
            .as_array()?
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64());
    }
    port["port"].as_u64()
}

/// One endpoint: a pod, its conditions, and the ports it serves the Service on.
struct Ep<'a> {
    pod: &'a Value,
    ready: bool,
    serving: bool,
    terminating: bool,
    ports: Vec<Value>,
}

fn endpoints_of<'a>(svc: &Value, pods: &'a [Value]) -> Vec<Ep<'a>> {
    let Some(sel) = selector(svc) else { return Vec::new() };
    let publish_not_ready = svc["spec"]["publishNotReadyAddresses"] == true;
    let ns = object::namespace(svc);
    let mut out: Vec<Ep> = pods
        .iter()
        .filter(|p| object::namespace(p) == ns && sel.selects(p))
        .filter(|p| p["status"]["podIP"].as_str().is_some_and(|ip| !ip.is_empty()))
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .filter_map(|p| {
            let ports: Option<Vec<Value>> = svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|sp| {
                    let port = target_port(sp, p)?;
                    let mut v = json!({"port": port, "protocol": sp["protocol"].as_str().unwrap_or("TCP")});
                    if let Some(n) = sp["name"].as_str() {
                        v["name"] = json!(n);
                    }
                    if let Some(a) = sp["appProtocol"].as_str() {
                        v["appProtocol"] = json!(a);
                    }
                    Some(v)
                })
                .collect();
            // A pod without the named port is not an endpoint (as Kubernetes).
            let ports = ports?;
            let terminating = object::is_deleting(p);
            let serving = is_ready(p) || publish_not_ready;
            Some(Ep { pod: p, ready: serving && !terminating, serving, terminating, ports })
        })
        .collect();
    out.sort_by(|a, b| object::name(a.pod).cmp(object::name(b.pod)));
    out
}

fn target_ref(p: &Value) -> Value {
    json!({"kind": "Pod", "namespace": object::namespace(p), "name": object::name(p), "uid": object::uid(p)})
}

fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The Endpoints object and the EndpointSlices (one per distinct port list) of `svc`.
pub fn desired(svc: &Value, pods: &[Value]) -> (Value, Vec<Value>) {
    let ns = object::namespace(svc);
    let name = object::name(svc);
    let eps = endpoints_of(svc, pods);
    let mut groups: BTreeMap<String, (Vec<Value>, Vec<&Ep>)> = BTreeMap::new();
    for e in &eps {
        let key = serde_json::to_string(&e.ports).unwrap_or_default();
        groups.entry(key).or_insert_with(|| (e.ports.clone(), Vec::new())).1.push(e);
    }
    let owner = owner_ref(svc);
    let subsets: Vec<Value> = groups
        .values()
        .map(|(ports, list)| {
            let addr = |e: &&Ep| json!({"ip": e.pod["status"]["podIP"], "nodeName": e.pod["spec"]["nodeName"], "targetRef": target_ref(e.pod)});
            let ready: Vec<Value> = list.iter().filter(|e| e.ready).map(addr).collect();
            let not_ready: Vec<Value> = list.iter().filter(|e| !e.ready).map(addr).collect();
            let mut s = json!({"ports": ports});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            s
        })
        .collect();
    let mut endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns, "labels": {"endpoints.kubernetes.io/managed-by": MANAGER}},
    });
    if !subsets.is_empty() {
        endpoints["subsets"] = json!(subsets);
    }
    let mut slices: Vec<Value> = groups
        .into_iter()
        .map(|(key, (ports, list))| {
            let endpoints: Vec<Value> = list
                .iter()
                .map(|e| {
                    json!({
                        "addresses": [e.pod["status"]["podIP"]],
                        "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
                        "nodeName": e.pod["spec"]["nodeName"],
                        "targetRef": target_ref(e.pod),
                    })
                })
                .collect();
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{name}-{:05x}", fnv(&key) & 0xfffff), "namespace": ns,
                    "labels": {SERVICE_NAME_LABEL: name, MANAGED_BY: MANAGER},
                    "ownerReferences": [owner.clone()]},
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": ports,
            })
        })
        .collect();
    if slices.is_empty() && selector(svc).is_some() {
        // An empty slice says "no endpoints" (rather than "not computed yet").
        slices.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-empty"), "namespace": ns,
                "labels": {SERVICE_NAME_LABEL: name, MANAGED_BY: MANAGER}, "ownerReferences": [owner]},
            "addressType": "IPv4", "endpoints": [], "ports": null,
        }));
    }
    (endpoints, slices)
}

/// The address a node lends LoadBalancer Services, Ingresses and Gateways: its InternalIP,
/// while it is Ready.
pub fn lb_address(node: &Value) -> Option<&str> {
    let is = |v: &Value, k: &str, want: &str| v.get(k).and_then(Value::as_str) == Some(want);
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| is(c, "type", "Ready") && is(c, "status", "True")));
    if !ready {
        return None;
    }
    node.pointer("/status/addresses")?
        .as_array()?
        .iter()
        .find(|a| is(a, "type", "InternalIP"))?
        .get("address")?
        .as_str()
}

/// Whether a node change can change what [`load_balancer_status`] says (heartbeats do not).
pub fn lb_changed(old: Option<&Value>, new: Option<&Value>) -> bool {
    old.and_then(lb_address) != new.and_then(lb_address)
}

/// `status.loadBalancer` of a LoadBalancer Service: every Ready node's InternalIP.
pub fn load_balancer_status<'a>(nodes: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut ips: Vec<&str> = nodes.into_iter().filter_map(lb_address).collect();
    ips.sort_unstable();
    ips.dedup();
    let ingress: Vec<Value> = ips.into_iter().map(|ip| json!({"ip": ip, "ipMode": "VIP"})).collect();
    json!({"ingress": ingress})
}

struct Ctl {
    api: Api,
    services: Arc<Informer>,
    pods: Arc<Informer>,
    nodes: Arc<Informer>,
}

/// Write `want` unless the stored object already says the same (ignoring server fields).
async fn put(api: &Api, res: &'static resources::Resource, want: Value) -> Result<(), ApiError> {
    let t = target(res, object::namespace(&want), object::name(&want), None);
    match api.get(&t).await {
        Ok(cur) => {
            let same = ["subsets", "endpoints", "ports", "addressType"].iter().all(|k| cur.get(*k) == want.get(*k))
                && cur["metadata"]["labels"] == want["metadata"]["labels"];
            if !same {
                let mut next = want;
                next["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
                api.update(&t, next, FieldValidation::Ignore, false).await?;
            }
            Ok(())
        }
        Err(e) if e.code == 404 => {
            let ns = object::namespace(&want).to_string();
            api.create(res, Some(&ns), want, FieldValidation::Ignore, false).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

impl Ctl {
    async fn reconcile(&self, key: String) -> Result<Action, ApiError> {
        let (ns, name) = split_key(&key);
        let ns = ns.unwrap_or("default");
        let ep_res = resources::of(resources::ResourceKind::Endpoints);
        let slice_res = resources::of(resources::ResourceKind::EndpointSlice);
        let Some(svc) = self.services.cache.get(&key) else {
            // Gone: its endpoints go too (slices also by owner reference).
            let _ = self.api.delete(&target(ep_res, ns, name, None), Default::default(), false).await;
            self.delete_slices(ns, name, &[]).await?;
            return Ok(Action::AwaitChange);
        };
        if selector(&svc).is_none() {
            return Ok(Action::AwaitChange);
        }
        let pods = self.pods.cache.list(Some(ns));
        let (endpoints, slices) = desired(&svc, &pods);
        put(&self.api, ep_res, endpoints).await?;
        let names: Vec<String> = slices.iter().map(|s| object::name(s).to_string()).collect();
        for s in slices {
            put(&self.api, slice_res, s).await?;
        }
        self.delete_slices(ns, name, &names).await?;
        if svc["spec"]["type"] == "LoadBalancer" {
            let lb = self.nodes.cache.with_all(|n| load_balancer_status(n));
            if svc["status"]["loadBalancer"] != lb {
                let t = target(resources::of(resources::ResourceKind::Service), ns, name, Some("status"));
                let patch = json!({"status": {"loadBalancer": lb}});
                self.api.patch(&t, "application/merge-patch+json", patch, FieldValidation::Ignore, false).await?;
            }
        }
        Ok(Action::AwaitChange)
    }

    /// Delete this Service's slices other than `keep`.
    async fn delete_slices(&self, ns: &str, svc: &str, keep: &[String]) -> Result<(), ApiError> {
        let slice_res = resources::of(resources::ResourceKind::EndpointSlice);
        let opts = crate::apiserver::api::ListOptions {
            labels: LabelSelector::parse(&format!("{SERVICE_NAME_LABEL}={svc}"))
                .map_err(|e| ApiError::internal(format!("selector for {svc}: {e:?}")))?,
            ..Default::default()
        };
        let list = self.api.list(slice_res, Some(ns), &opts).await?;
        for s in list["items"].as_array().into_iter().flatten() {
            let n = object::name(s);
            if s["metadata"]["labels"][MANAGED_BY] == MANAGER && !keep.iter().any(|k| k == n) {
                let _ = self.api.delete(&target(slice_res, ns, n, None), Default::default(), false).await;
            }
        }
        Ok(())
    }
}

/// Services in `pod`'s namespace whose selector matches it.
fn services_of_pod(services: &Informer, pod: &Value) -> Vec<String> {
    let labels = object::labels(pod);
    services
        .cache
        .list(Some(object::namespace(pod)))
        .iter()
        .filter(|s| selector(s).is_some_and(|sel| sel.matches(&labels)))
        .map(key_of)
        .collect()
}

pub fn start(api: Api, services: Arc<Informer>, pods: Arc<Informer>, nodes: Arc<Informer>) -> impl Future<Output = ()> {
    let queue = Queue::new();
    {
        let q = queue.clone();
        services.on_change(Arc::new(move |old, new| {
            if let Some(s) = new.or(old) {
                q.add(key_of(s));
            }
        }));
    }
    {
        let (q, s) = (queue.clone(), services.clone());
        pods.on_change(Arc::new(move |old, new| {
            // Only what an endpoint shows: address, readiness, deletion, labels.
            // Read in place, not copied: this runs for every change of every pod.
            type Shown<'a> = (Option<&'a Value>, bool, bool, Option<&'a Value>, Option<&'a Value>);
            fn shown(p: &Value) -> Shown<'_> {
                (
                    p.pointer("/status/podIP"),
                    is_ready(p),
                    object::is_deleting(p),
                    p.pointer("/metadata/labels"),
                    p.pointer("/status/phase"),
                )
            }
            if let (Some(o), Some(n)) = (old, new)
                && shown(o) == shown(n)
            {
                return;
            }
            for p in [old, new].into_iter().flatten() {
                for k in services_of_pod(&s, p) {
                    q.add(k);
                }
            }
        }));
    }
    {
        let (q, s) = (queue.clone(), services.clone());
        nodes.on_change(Arc::new(move |old, new| {
            if lb_changed(old, new) {
                s.cache.for_each(|svc| {
                    if svc.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer") {
                        q.add(key_of(svc));
                    }
                });
            }
        }));
    }
    let ctl = Arc::new(Ctl { api: api.clone(), services: services.clone(), pods: pods.clone(), nodes: nodes.clone() });
    async move {
        services.cache.wait_synced().await;
        pods.cache.wait_synced().await;
        run_workers(api, "endpoints", queue, 2, move |k| {
            let c = ctl.clone();
            async move { c.reconcile(k).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "d", "uid": "s1"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]}})
    }

    fn pod(name: &str, ip: &str, ready: bool, port: u64) -> Value {
        json!({"metadata": {"name": name, "namespace": "d", "uid": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "web", "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    #[test]
    fn ready_not_ready_and_terminating_pods_with_named_ports() {
        let mut gone = pod("c", "10.0.0.3", true, 8080);
        gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let mut other = pod("x", "10.0.0.9", true, 8080);
        other["metadata"]["labels"]["app"] = json!("db");
        let mut done = pod("y", "10.0.0.8", true, 8080);
        done["status"]["phase"] = json!("Succeeded");
        let pods = vec![
            pod("a", "10.0.0.1", true, 8080),
            pod("b", "10.0.0.2", false, 8080),
            gone,
            other,
            done,
            pod("d", "", true, 8080),
        ];
        let (ep, slices) = desired(&svc(), &pods);
        assert_eq!(ep["subsets"][0]["addresses"].as_array().unwrap().len(), 1);
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.0.0.1");
        assert_eq!(ep["subsets"][0]["notReadyAddresses"].as_array().unwrap().len(), 2);
        assert_eq!(ep["subsets"][0]["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
        assert_eq!(slices.len(), 1);
        let eps = slices[0]["endpoints"].as_array().unwrap();
        let cond = |ip: &str| eps.iter().find(|e| e["addresses"][0] == ip).unwrap()["conditions"].clone();
        assert_eq!(cond("10.0.0.1"), json!({"ready": true, "serving": true, "terminating": false}));
        assert_eq!(cond("10.0.0.2"), json!({"ready": false, "serving": false, "terminating": false}));
        assert_eq!(cond("10.0.0.3"), json!({"ready": false, "serving": true, "terminating": true}));
        assert_eq!(slices[0]["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(slices[0]["metadata"]["ownerReferences"][0]["uid"], "s1");
    }

    #[test]
    fn differing_named_ports_make_separate_slices_and_no_selector_means_hands_off() {
        let pods = vec![pod("a", "10.0.0.1", true, 8080), pod("b", "10.0.0.2", true, 9090)];
        let (ep, slices) = desired(&svc(), &pods);
        assert_eq!(slices.len(), 2);
        assert_eq!(ep["subsets"].as_array().unwrap().len(), 2);
        let mut no_sel = svc();
        no_sel["spec"]["selector"] = json!({});
        let (ep, slices) = desired(&no_sel, &pods);
        assert!(ep.get("subsets").is_none() && slices.is_empty());
        let (_, slices) = desired(&svc(), &[]);
        assert_eq!(slices.len(), 1, "an empty slice");
        assert_eq!(target_port(&json!({"port": 80}), &pods[0]), Some(80));
        assert_eq!(target_port(&json!({"port": 80, "targetPort": 81}), &pods[0]), Some(81));
        assert_eq!(target_port(&json!({"port": 80, "targetPort": "nope"}), &pods[0]), None);
    }

    #[test]
    fn load_balancer_ingress_lists_ready_nodes() {
        let node = |ip: &str, ready: &str| json!({"status": {"conditions": [{"type": "Ready", "status": ready}], "addresses": [{"type": "InternalIP", "address": ip}]}});
        let st =
            load_balancer_status(&[node("10.0.0.2", "True"), node("10.0.0.1", "True"), node("10.0.0.3", "Unknown")]);
        assert_eq!(st, json!({"ingress": [{"ip": "10.0.0.1", "ipMode": "VIP"}, {"ip": "10.0.0.2", "ipMode": "VIP"}]}));
    }
}
