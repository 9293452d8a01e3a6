//! Service address allocation: cluster IPs from a configurable range and node ports from
//! 30000–32767, unique across the cluster. Pure: the API server calls it with every other
//! Service while holding its allocation lock.

use crate::error::{ApiError, Cause};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::net::Ipv4Addr;

pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// An IPv4 range in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    base: u32,
    bits: u8,
}

impl std::str::FromStr for IpRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, bits) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR (like 127.43.0.0/16)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let bits: u8 =
            bits.parse().ok().filter(|b| (8..=30).contains(b)).ok_or_else(|| format!("{s:?}: prefix must be 8..30"))?;
        let mask = u32::MAX << (32 - bits);
        Ok(IpRange { base: u32::from(ip) & mask, bits })
    }
}

impl Default for IpRange {
    /// Inside loopback: every node can listen on a cluster address without privileges or
    /// packet rewriting (Linux routes all of 127/8 to `lo`).
    fn default() -> Self {
        "127.43.0.0/16".parse().expect("valid")
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.bits)
    }
}

impl IpRange {
    /// The range of `bits` around `ip` (host bits cleared).
    pub fn new(ip: Ipv4Addr, bits: u8) -> IpRange {
        let bits = bits.clamp(1, 32);
        IpRange { base: u32::from(ip) & (u32::MAX << (32 - bits as u32)), bits }
    }
    pub fn base(&self) -> u32 {
        self.base
    }
    pub fn bits(&self) -> u8 {
        self.bits
    }
    pub fn size(&self) -> u32 {
        1u32 << (32 - self.bits)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & (u32::MAX << (32 - self.bits)) == self.base
    }
    /// The n-th usable address (network and broadcast addresses skipped).
    /// The first usable address: the `kubernetes` Service's, as in Kubernetes.
    pub fn first(&self) -> Ipv4Addr {
        self.nth(0)
    }
    fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1 + n % (self.size() - 2))
    }
}

fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

fn invalid(svc: &Value, field: &str, value: impl std::fmt::Display, msg: &str) -> ApiError {
    let name = svc["metadata"]["name"].as_str().unwrap_or("");
    ApiError::invalid(
        "",
        "Service",
        name,
        vec![Cause::new("FieldValueInvalid", field, format!("Invalid value: {value}: {msg}"))],
    )
}

/// Fill in `spec.clusterIP(s)` and missing `nodePort`s of `svc` (already defaulted and
/// validated), given every other Service. A requested address or port must be free.
pub fn allocate(svc: &mut Value, others: &[Value], range: &IpRange) -> Result<(), ApiError> {
    let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP").to_string();
    if ty == "ExternalName" {
        return Ok(());
    }
    let used_ips: HashSet<&str> = others.iter().filter_map(|o| o["spec"]["clusterIP"].as_str()).collect();
    let key = format!(
        "{}/{}",
        svc["metadata"]["namespace"].as_str().unwrap_or(""),
        svc["metadata"]["name"].as_str().unwrap_or("")
    );
    match svc["spec"]["clusterIP"].as_str().filter(|s| !s.is_empty()) {
        Some("None") => {}
        Some(ip) => {
            let parsed: Ipv4Addr =
                ip.parse().map_err(|_| invalid(svc, "spec.clusterIP", ip, "must be a valid IP address"))?;
            if !range.contains(parsed) {
                let msg = format!("provided IP is not in the valid range. The range of valid IPs is {range}");
                return Err(invalid(svc, "spec.clusterIP", ip, &msg));
            }
            if used_ips.contains(ip) {
                return Err(invalid(svc, "spec.clusterIP", ip, "provided IP is already allocated"));
            }
        }
        None => {
            let start = fnv(&key);
            let ip = (0..range.size() - 2)
                .map(|i| range.nth(start.wrapping_add(i)).to_string())
                .find(|ip| !used_ips.contains(ip.as_str()))
                .ok_or_else(|| ApiError::new(500, "InternalError", format!("no cluster IP is free in {range}")))?;
            svc["spec"]["clusterIP"] = json!(ip);
        }
    }
    let ip = svc["spec"]["clusterIP"].clone();
    svc["spec"]["clusterIPs"] = json!([ip]);
    if svc["spec"]["clusterIP"] != "None" {
        svc["spec"]["ipFamilies"] = json!(["IPv4"]);
        svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
    }
    if svc["spec"].get("internalTrafficPolicy").is_none() {
        svc["spec"]["internalTrafficPolicy"] = json!("Cluster");
    }
    let wants_node_ports = ty == "NodePort" || ty == "LoadBalancer";
    let Some(ports) = svc["spec"]["ports"].as_array().cloned() else { return Ok(()) };
    let mut used_ports: HashSet<u64> = others
        .iter()
        .flat_map(|o| o["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["nodePort"].as_u64())
        .filter(|&np| np != 0)
        .collect();
    let mut out = Vec::with_capacity(ports.len());
    for (i, mut p) in ports.into_iter().enumerate() {
        if !wants_node_ports {
            if let Some(m) = p.as_object_mut() {
                m.remove("nodePort");
            }
            out.push(p);
            continue;
        }
        // 0 is Go's zero value: not set (protobuf clients always send it).
        match p["nodePort"].as_u64().filter(|&np| np != 0) {
            Some(np) => {
                if !used_ports.insert(np) {
                    return Err(invalid(
                        svc,
                        &format!("spec.ports[{i}].nodePort"),
                        np,
                        "provided port is already allocated",
                    ));
                }
            }
            None => {
                let span = u32::from(*NODE_PORTS.end() - *NODE_PORTS.start()) + 1;
                let start = fnv(&format!("{key}/{i}"));
                let np = (0..span)
                    .map(|k| u64::from(*NODE_PORTS.start()) + u64::from(start.wrapping_add(k) % span))
                    .find(|np| !used_ports.contains(np))
                    .ok_or_else(|| ApiError::new(500, "InternalError", "no node port is free in 30000-32767"))?;
                used_ports.insert(np);
                p["nodePort"] = json!(np);
            }
        }
        out.push(p);
    }
    svc["spec"]["ports"] = Value::Array(out);
    if wants_node_ports && svc["spec"].get("externalTrafficPolicy").is_none() {
        svc["spec"]["externalTrafficPolicy"] = json!("Cluster");
    }
    Ok(())
}

/// The API server URLs an Endpoints object of the `kubernetes` Service names (what nodes
/// learn the servers from).
pub fn api_server_urls(endpoints: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for subset in endpoints.get("subsets").and_then(Value::as_array).into_iter().flatten() {
        let ports = subset.get("ports").and_then(Value::as_array);
        let Some(port) = ports.into_iter().flatten().find_map(|p| p.get("port").and_then(Value::as_u64)) else {
            continue;
        };
        for a in subset.get("addresses").and_then(Value::as_array).into_iter().flatten() {
            if let Some(ip) = a.get("ip").and_then(Value::as_str).and_then(|s| s.parse::<std::net::IpAddr>().ok()) {
                out.push(format!("https://{}", std::net::SocketAddr::new(ip, port as u16)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ty: &str, ports: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"type": ty, "ports": ports}})
    }

    #[test]
    fn cluster_ips_are_unique_in_range_and_requests_are_checked() {
        let range: IpRange = "127.43.0.0/29".parse().unwrap();
        let mut taken = Vec::new();
        for i in 0..6 {
            let mut s = svc(&format!("s{i}"), "ClusterIP", json!([{"port": 80}]));
            allocate(&mut s, &taken, &range).unwrap();
            let ip: Ipv4Addr = s["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
            assert!(range.contains(ip) && ip != Ipv4Addr::new(127, 43, 0, 0) && ip != Ipv4Addr::new(127, 43, 0, 7));
            assert_eq!(s["spec"]["clusterIPs"][0], s["spec"]["clusterIP"]);
            taken.push(s);
        }
        let mut full = svc("x", "ClusterIP", json!([{"port": 80}]));
        assert_eq!(allocate(&mut full, &taken, &range).unwrap_err().code, 500, "range exhausted");
        let mut dup = svc("y", "ClusterIP", json!([{"port": 80}]));
        dup["spec"]["clusterIP"] = taken[0]["spec"]["clusterIP"].clone();
        assert!(allocate(&mut dup.clone(), &taken, &range).is_err(), "taken by s0");
        assert!(allocate(&mut dup.clone(), &taken[1..], &range).is_ok(), "s0 itself is not among the others");
        dup["spec"]["clusterIP"] = json!("10.0.0.1");
        let e = allocate(&mut dup, &[], &range).unwrap_err();
        assert!(e.message.contains("not in the valid range"), "{}", e.message);
        let mut headless = svc("h", "ClusterIP", json!([]));
        headless["spec"]["clusterIP"] = json!("None");
        allocate(&mut headless, &taken, &range).unwrap();
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }

    #[test]
    fn node_ports_are_allocated_unique_and_only_for_node_port_types() {
        let range = IpRange::default();
        let mut a =
            svc("a", "NodePort", json!([{"name": "http", "port": 80}, {"name": "x", "port": 81, "nodePort": 30080}]));
        allocate(&mut a, &[], &range).unwrap();
        let np = a["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!(NODE_PORTS.contains(&(np as u16)) && np != 30080);
        assert_eq!(a["spec"]["ports"][1]["nodePort"], 30080);
        let mut b = svc("b", "LoadBalancer", json!([{"port": 80, "nodePort": 30080}]));
        let e = allocate(&mut b, std::slice::from_ref(&a), &range).unwrap_err();
        assert!(e.message.contains("already allocated"), "{}", e.message);
        let mut c = svc("c", "ClusterIP", json!([{"port": 80}]));
        allocate(&mut c, &[a], &range).unwrap();
        assert!(c["spec"]["ports"][0].get("nodePort").is_none());
    }
}
