//! The `kubernetes` Service in `default`: how pods find the API servers, as in every
//! Kubernetes cluster. Its cluster address is the first of the Service range, port 443 (name
//! `https`); it has no selector, and its EndpointSlices and Endpoints name every live API
//! server (kube-apiserver's lease endpoint reconciler): each server renews a Lease of its own,
//! `kube-system/wasmorch-apiserver-<hash>` labelled `apiserver.kubernetes.io/identity` and
//! annotated with its advertised address ([`announce`]); the control plane that leads
//! lists them every [`RECHECK`], writes the addresses of those not expired, re-makes what was
//! deleted, corrects what was changed and forgets Leases expired for [`FORGET_AFTER`].
//! Nodes learn the servers from these Endpoints (`wasmorch node`).

use super::replicaset::{merge_patch, target};
use crate::apiserver::api::{Api, ListOptions};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use wasmorch_api::ApiError;
use wasmorch_api::resources::{self, ResourceKind};
use wasmorch_api::selector::LabelSelector;
use wasmorch_api::validation::FieldValidation;

pub const NAME: &str = "kubernetes";
const RECHECK: Duration = Duration::from_secs(5);
/// How often a server renews its Lease, and how long the Lease lasts.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);
const LEASE_SECONDS: i64 = 15;
/// An API server's Lease expired this long ago is deleted (a bound on what departed servers
/// leave behind).
const FORGET_AFTER: Duration = Duration::from_secs(3600);
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
pub const IDENTITY: &str = "wasmorch-apiserver";
const ADDRESS_ANNOTATION: &str = "wasmorch.io/advertise-address";
pub const LEASE_NAMESPACE: &str = "kube-system";
const SLICE_MANAGER: &str = "wasmorch-apiserver";

/// The name of the Lease of the API server advertised at `addr`.
pub fn lease_name(addr: SocketAddr) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(addr.to_string().as_bytes());
    format!("{IDENTITY}-{}", hex::encode(&digest[..5]))
}

fn micro_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Every API server: keep this server's Lease renewed.
pub async fn announce(api: Api, advertise: SocketAddr) {
    loop {
        if let Err(e) = renew(&api, advertise).await {
            tracing::debug!("renewing this API server's Lease: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
            _ = api.shutdown.cancelled() => return,
        }
    }
}

async fn renew(api: &Api, advertise: SocketAddr) -> Result<(), ApiError> {
    let res = resources::of(ResourceKind::Lease);
    let name = lease_name(advertise);
    let t = target(res, LEASE_NAMESPACE, &name, None);
    let spec = json!({"holderIdentity": advertise.to_string(), "leaseDurationSeconds": LEASE_SECONDS,
        "renewTime": micro_time(Utc::now())});
    match api.get(&t).await {
        Ok(_) => merge_patch(api, &t, json!({"spec": spec})).await.map(drop),
        Err(e) if e.code == 404 => {
            let lease = json!({"apiVersion": res.api_version(), "kind": res.kind,
                "metadata": {"name": name, "labels": {IDENTITY_LABEL: IDENTITY},
                    "annotations": {ADDRESS_ANNOTATION: advertise.to_string()}},
                "spec": spec});
            match api.create(res, Some(LEASE_NAMESPACE), lease, FieldValidation::Ignore, false).await {
                Err(e) if e.code != 409 => Err(e),
                _ => Ok(()),
            }
        }
        Err(e) => Err(e),
    }
}

fn text<'a>(v: Option<&'a Value>, k: &str) -> Option<&'a str> {
    v.and_then(|v| v.get(k)).and_then(Value::as_str)
}

/// From the API servers' Leases: the addresses of those live at `now`, and the names of those
/// expired for longer than [`FORGET_AFTER`].
pub fn servers_at(leases: &[Value], now: DateTime<Utc>) -> (Vec<SocketAddr>, Vec<String>) {
    let (mut live, mut forget) = (Vec::new(), Vec::new());
    for l in leases {
        let meta = l.get("metadata");
        if text(meta.and_then(|m| m.get("labels")), IDENTITY_LABEL) != Some(IDENTITY) {
            continue;
        }
        let spec = l.get("spec");
        let renewed =
            text(spec, "renewTime").and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc));
        let secs = spec.and_then(|s| s.get("leaseDurationSeconds")).and_then(Value::as_i64).unwrap_or(LEASE_SECONDS);
        let addr = text(meta.and_then(|m| m.get("annotations")), ADDRESS_ANNOTATION).and_then(|a| a.parse().ok());
        let expired_at = renewed.map(|r| r + chrono::Duration::seconds(secs.clamp(1, 3600)));
        match (addr, expired_at) {
            (Some(a), Some(exp)) if exp > now => live.push(a),
            (_, exp) => {
                let forget_after = chrono::Duration::from_std(FORGET_AFTER).unwrap_or_default();
                if exp.is_none_or(|e| e + forget_after < now)
                    && let Some(n) = text(meta, "name")
                {
                    forget.push(n.to_string());
                }
            }
        }
    }
    (live, forget)
}

pub async fn run(api: Api, advertise: SocketAddr, first_ip: Ipv4Addr) {
    loop {
        if let Err(e) = reconcile(&api, advertise, first_ip).await {
            tracing::debug!("the kubernetes Service: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(RECHECK) => {}
            _ = api.shutdown.cancelled() => return,
        }
    }
}

/// The API servers whose Lease is current, and the Leases expired long enough to forget.
pub async fn leases(api: &Api) -> Result<(Vec<SocketAddr>, Vec<String>), ApiError> {
    let opts = ListOptions {
        labels: LabelSelector::parse(&format!("{IDENTITY_LABEL}={IDENTITY}")).unwrap_or_default(),
        ..Default::default()
    };
    let list = api.list(resources::of(ResourceKind::Lease), Some(LEASE_NAMESPACE), &opts).await?;
    let items = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(servers_at(&items, Utc::now()))
}

async fn reconcile(api: &Api, advertise: SocketAddr, first_ip: Ipv4Addr) -> Result<(), ApiError> {
    let leases = resources::of(ResourceKind::Lease);
    let (mut servers, forget) = self::leases(api).await?;
    // This server is live whether or not its Lease was written yet.
    servers.push(advertise);
    ensure(api, &servers, advertise, first_ip).await?;
    for name in forget {
        let _ = api.delete(&target(leases, LEASE_NAMESPACE, &name, None), Default::default(), false).await;
    }
    Ok(())
}

/// What the Service, its EndpointSlices and its Endpoints should hold: (kind, object, the
/// fields a merge patch keeps right). One slice per address family and port (servers may
/// listen on different ports), the one holding `own` named `kubernetes`.
pub fn desired(servers: &[SocketAddr], own: SocketAddr, first_ip: Ipv4Addr) -> Vec<(ResourceKind, Value, Value)> {
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let spec = json!({"type": "ClusterIP", "sessionAffinity": "None",
        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": own.port()}]});
    let mut svc_spec = spec.clone();
    svc_spec["clusterIP"] = json!(first_ip.to_string());
    let mut out = vec![(
        ResourceKind::Service,
        json!({"metadata": {"name": NAME, "labels": labels}, "spec": svc_spec}),
        json!({"spec": {"ports": spec["ports"]}}),
    )];
    // (IPv4?, port) → addresses, sorted: the same servers always give the same objects.
    let mut groups: BTreeMap<(bool, u16), Vec<IpAddr>> = BTreeMap::new();
    for s in servers {
        let g = groups.entry((s.is_ipv4(), s.port())).or_default();
        if !g.contains(&s.ip()) {
            g.push(s.ip());
        }
    }
    groups.entry((own.is_ipv4(), own.port())).or_default();
    let ports = |port: u16| json!([{"name": "https", "port": port, "protocol": "TCP"}]);
    for ((v4, port), ips) in groups.iter_mut() {
        ips.sort();
        let name = if (*v4, *port) == (own.is_ipv4(), own.port()) {
            NAME.to_string()
        } else {
            format!("{NAME}-{}{port}", if *v4 { "" } else { "v6-" })
        };
        let endpoints: Vec<Value> = ips
            .iter()
            .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}))
            .collect();
        out.push((
            ResourceKind::EndpointSlice,
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/service-name": NAME, "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER}},
                "addressType": if *v4 { "IPv4" } else { "IPv6" }, "endpoints": endpoints, "ports": ports(*port)}),
            json!({"endpoints": endpoints, "ports": ports(*port)}),
        ));
    }
    let subsets: Vec<Value> = groups
        .iter()
        .map(|((_, port), ips)| {
            let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
            json!({"addresses": addresses, "ports": ports(*port)})
        })
        .collect();
    out.push((
        ResourceKind::Endpoints,
        json!({"metadata": {"name": NAME, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}, "subsets": subsets}),
        json!({"subsets": subsets}),
    ));
    out
}

async fn ensure(api: &Api, servers: &[SocketAddr], own: SocketAddr, first_ip: Ipv4Addr) -> Result<(), ApiError> {
    let wanted = desired(servers, own, first_ip);
    let slice_names: Vec<String> = wanted
        .iter()
        .filter(|(k, _, _)| *k == ResourceKind::EndpointSlice)
        .filter_map(|(_, o, _)| o.pointer("/metadata/name").and_then(Value::as_str).map(String::from))
        .collect();
    for (kind, mut obj, want) in wanted {
        let res = resources::of(kind);
        let t = target(res, "default", NAME, None);
        match api.get(&t).await {
            Ok(cur) => {
                if want.as_object().into_iter().flatten().any(|(k, v)| !same(k, cur.get(k), v)) {
                    merge_patch(api, &t, want).await?;
                }
            }
            Err(e) if e.code == 404 => {
                obj["apiVersion"] = json!(res.api_version());
                obj["kind"] = json!(res.kind);
                match api.create(res, Some("default"), obj.clone(), FieldValidation::Ignore, false).await {
                    // The first address is taken (by a Service made before this one was
                    // kept): any address will do.
                    Err(e) if e.code == 422 && kind == ResourceKind::Service => {
                        obj["spec"].as_object_mut().map(|s| s.remove("clusterIP"));
                        api.create(res, Some("default"), obj, FieldValidation::Ignore, false).await?;
                    }
                    Err(e) if e.code != 409 => return Err(e),
                    _ => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
    // Slices of a port no live server listens on any more.
    let slices = resources::of(ResourceKind::EndpointSlice);
    let opts = ListOptions {
        labels: LabelSelector::parse(&format!(
            "kubernetes.io/service-name={NAME},endpointslice.kubernetes.io/managed-by={SLICE_MANAGER}"
        ))
        .unwrap_or_default(),
        ..Default::default()
    };
    let list = api.list(slices, Some("default"), &opts).await?;
    for s in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        let name = wasmorch_api::object::name(s);
        if !slice_names.iter().any(|n| n == name) {
            api.delete(&target(slices, "default", name, None), Default::default(), false).await?;
        }
    }
    Ok(())
}

/// Whether the stored `cur` holds what `want` says for field `k` (the server fills in
/// defaults such as a Service port's `targetPort` form, so compare what was asked).
fn same(k: &str, cur: Option<&Value>, want: &Value) -> bool {
    match (k, cur) {
        ("spec", Some(c)) => c.get("ports").is_some_and(|p| covers(p, &want["ports"])),
        (_, Some(c)) => covers(c, want),
        (_, None) => false,
    }
}

/// `want`'s fields all present with the same values in `cur` (recursively; lists by position
/// and length).
fn covers(cur: &Value, want: &Value) -> bool {
    match (cur, want) {
        (Value::Object(c), Value::Object(w)) => w.iter().all(|(k, v)| c.get(k).is_some_and(|cv| covers(cv, v))),
        (Value::Array(c), Value::Array(w)) => c.len() == w.len() && c.iter().zip(w).all(|(a, b)| covers(a, b)),
        (c, w) => c == w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_points_at_every_live_server() {
        let own: SocketAddr = "10.0.0.5:6443".parse().unwrap();
        let d = desired(&[own], own, "127.43.0.1".parse().unwrap());
        let svc = &d[0].1;
        assert_eq!(svc["spec"]["clusterIP"], "127.43.0.1");
        assert_eq!(svc["spec"]["ports"][0]["port"], 443);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 6443);
        assert!(svc["spec"].get("selector").is_none());
        let slice = &d[1].1;
        assert_eq!(slice["endpoints"][0]["addresses"][0], "10.0.0.5");
        assert_eq!(slice["ports"][0]["port"], 6443);
        assert_eq!(d[2].1["subsets"][0]["addresses"][0]["ip"], "10.0.0.5");

        // Three servers, one on another port: two slices, sorted, the own one named `kubernetes`.
        let all: Vec<SocketAddr> = ["10.0.0.7:6443", "10.0.0.5:6443", "10.0.0.6:7443", "10.0.0.5:6443"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let d = desired(&all, own, "127.43.0.1".parse().unwrap());
        let slices: Vec<&Value> =
            d.iter().filter(|(k, _, _)| *k == ResourceKind::EndpointSlice).map(|(_, o, _)| o).collect();
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0]["metadata"]["name"], "kubernetes");
        assert_eq!(slices[0]["endpoints"].as_array().unwrap().len(), 2);
        assert_eq!(slices[0]["endpoints"][0]["addresses"][0], "10.0.0.5");
        assert_eq!(slices[1]["metadata"]["name"], "kubernetes-7443");
        let endpoints = &d.last().unwrap().1;
        assert_eq!(
            wasmorch_api::services::api_server_urls(endpoints),
            ["https://10.0.0.5:6443", "https://10.0.0.7:6443", "https://10.0.0.6:7443"],
            "what nodes learn from the Endpoints"
        );
    }

    #[test]
    fn live_servers_are_those_whose_lease_has_not_expired() {
        let now: DateTime<Utc> = "2026-12-05T10:00:00Z".parse().unwrap();
        let lease = |name: &str, addr: &str, renewed: &str| {
            json!({"metadata": {"name": name, "labels": {IDENTITY_LABEL: IDENTITY}, "annotations": {ADDRESS_ANNOTATION: addr}},
                "spec": {"holderIdentity": addr, "leaseDurationSeconds": 15, "renewTime": renewed}})
        };
        let leases = vec![
            lease("a", "10.0.0.1:6443", "2026-12-05T09:59:50.000000Z"),
            lease("b", "10.0.0.2:6443", "2026-12-05T09:59:40.000000Z"),
            lease("c", "10.0.0.3:6443", "2026-12-05T08:00:00.000000Z"),
            lease("d", "not an address", "2026-12-05T09:59:59.000000Z"),
            json!({"metadata": {"name": "other"}, "spec": {}}),
            json!("garbage"),
        ];
        let (live, forget) = servers_at(&leases, now);
        assert_eq!(live, vec!["10.0.0.1:6443".parse::<SocketAddr>().unwrap()]);
        assert_eq!(forget, ["c"], "expired an hour ago: deleted; expired seconds ago: kept");
        assert_ne!(lease_name("10.0.0.1:6443".parse().unwrap()), lease_name("10.0.0.2:6443".parse().unwrap()));
    }

    #[test]
    fn defaults_added_by_the_server_are_not_a_difference() {
        let cur = json!({"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443, "appProtocol": null}], "clusterIP": "x"});
        let want = json!({"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]});
        assert!(same("spec", Some(&cur), &want));
        let moved = json!({"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 7000}]});
        assert!(!same("spec", Some(&moved), &want));
        assert!(!same("endpoints", None, &want));
    }
}
