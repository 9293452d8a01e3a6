//! The `kubernetes` Service in `default`: how pods find the API server, as in every
//! Kubernetes cluster. Its cluster address is the first of the Service range, port 443 (name
//! `https`); it has no selector, and its EndpointSlice and Endpoints name this server's
//! advertised address and port. Re-made when deleted and corrected when changed, checked
//! every [`RECHECK`] by the control plane that leads.
//!
//! With several API servers, the one that leads writes its own address (Kubernetes lists
//! every server's; that comes with the shared store).

use super::replicaset::{merge_patch, target};
use crate::apiserver::api::Api;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use wasmorch_api::ApiError;
use wasmorch_api::resources::{self, ResourceKind};
use wasmorch_api::validation::FieldValidation;

pub const NAME: &str = "kubernetes";
const RECHECK: Duration = Duration::from_secs(30);

pub async fn run(api: Api, advertise: SocketAddr, first_ip: Ipv4Addr) {
    loop {
        if let Err(e) = ensure(&api, advertise, first_ip).await {
            tracing::debug!("the kubernetes Service: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(RECHECK) => {}
            _ = api.shutdown.cancelled() => return,
        }
    }
}

/// What the Service, its EndpointSlice and its Endpoints should hold: (kind, object, the
/// fields a merge patch keeps right).
pub fn desired(advertise: SocketAddr, first_ip: Ipv4Addr) -> Vec<(ResourceKind, Value, Value)> {
    let port = advertise.port();
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let spec = json!({"type": "ClusterIP", "sessionAffinity": "None",
        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]});
    let mut svc_spec = spec.clone();
    svc_spec["clusterIP"] = json!(first_ip.to_string());
    let mut out = vec![(
        ResourceKind::Service,
        json!({"metadata": {"name": NAME, "labels": labels}, "spec": svc_spec}),
        json!({"spec": {"ports": spec["ports"]}}),
    )];
    let family = if matches!(advertise.ip(), IpAddr::V4(_)) { "IPv4" } else { "IPv6" };
    let endpoints = json!([{"addresses": [advertise.ip().to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}]);
    let ports = json!([{"name": "https", "port": port, "protocol": "TCP"}]);
    out.push((
        ResourceKind::EndpointSlice,
        json!({"metadata": {"name": NAME, "labels": {"kubernetes.io/service-name": NAME, "endpointslice.kubernetes.io/managed-by": "wasmorch-apiserver"}},
            "addressType": family, "endpoints": endpoints, "ports": ports}),
        json!({"endpoints": endpoints, "ports": ports}),
    ));
    let subsets = json!([{"addresses": [{"ip": advertise.ip().to_string()}], "ports": ports}]);
    out.push((
        ResourceKind::Endpoints,
        json!({"metadata": {"name": NAME, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}, "subsets": subsets}),
        json!({"subsets": subsets}),
    ));
    out
}

async fn ensure(api: &Api, advertise: SocketAddr, first_ip: Ipv4Addr) -> Result<(), ApiError> {
    for (kind, mut obj, want) in desired(advertise, first_ip) {
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
    fn the_service_points_at_the_advertised_server() {
        let d = desired("10.0.0.5:6443".parse().unwrap(), "127.43.0.1".parse().unwrap());
        let svc = &d[0].1;
        assert_eq!(svc["spec"]["clusterIP"], "127.43.0.1");
        assert_eq!(svc["spec"]["ports"][0]["port"], 443);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 6443);
        assert!(svc["spec"].get("selector").is_none());
        let slice = &d[1].1;
        assert_eq!(slice["endpoints"][0]["addresses"][0], "10.0.0.5");
        assert_eq!(slice["ports"][0]["port"], 6443);
        assert_eq!(d[2].1["subsets"][0]["addresses"][0]["ip"], "10.0.0.5");
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
