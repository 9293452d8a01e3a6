//! NetworkPolicy (`networking.k8s.io/v1`) as a pure decision: may this connection be made?
//!
//! Kubernetes' rules: a pod is isolated for ingress (egress) when some policy of its
//! namespace selects it (`spec.podSelector`) and lists `Ingress` (`Egress`) in
//! `policyTypes` (default: `Ingress`, plus `Egress` when the policy has `egress` rules).
//! An isolated pod accepts (opens) only what at least one of those policies' rules allows;
//! policies add up, there is no deny rule. A connection needs both ends' consent: the
//! source's egress and the destination's ingress. A rule's peer is `podSelector` (pods of
//! the policy's namespace), `namespaceSelector` (all pods of those namespaces), both (those
//! pods of those namespaces) or `ipBlock` (`cidr` minus `except`); no peers means everyone.
//! Ports are numbers (with `endPort` for a range) or names of the destination pod's
//! container ports; no ports means every port. Unparseable selectors select nothing (the API
//! rejects them on write).

use crate::selector::LabelSelector;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

pub type Labels = BTreeMap<String, String>;

/// A container port of a pod (for named ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: String,
}

/// A pod, as policies see it.
#[derive(Debug, Clone, Copy)]
pub struct PodView<'a> {
    pub namespace: &'a str,
    pub labels: &'a Labels,
    pub namespace_labels: &'a Labels,
    pub ports: &'a [NamedPort],
}

/// One end of a connection: an address, and the pod behind it if it is one.
#[derive(Debug, Clone, Copy)]
pub struct Party<'a> {
    pub ip: IpAddr,
    pub pod: Option<PodView<'a>>,
}

/// The traffic: destination port and protocol (`TCP`, `UDP`, `SCTP`).
#[derive(Debug, Clone, Copy)]
pub struct Traffic<'a> {
    pub port: u16,
    pub protocol: &'a str,
}

fn selector(v: Option<&Value>) -> Option<LabelSelector> {
    LabelSelector::from_object(v?).ok()
}

/// Which directions a policy governs: (ingress, egress).
pub fn policy_types(p: &Value) -> (bool, bool) {
    let spec = p.get("spec");
    match spec.and_then(|s| s.get("policyTypes")).and_then(Value::as_array) {
        Some(types) => {
            let has = |t: &str| types.iter().any(|x| x.as_str() == Some(t));
            (has("Ingress"), has("Egress"))
        }
        None => (true, spec.and_then(|s| s.get("egress")).is_some_and(|e| !e.is_null())),
    }
}

fn namespace_of(p: &Value) -> &str {
    p.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default")
}

/// Whether policy `p` selects `pod`.
pub fn selects(p: &Value, pod: &PodView) -> bool {
    namespace_of(p) == pod.namespace && selector(p.pointer("/spec/podSelector")).is_some_and(|s| s.matches(pod.labels))
}

/// `cidr` contains `ip` (same family).
fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else { return false };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else { return false };
    in_block(ip, net, bits)
}

/// The block `net/bits` contains `ip` (same family; a prefix too long for the family holds nothing).
pub fn in_block(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Whether one peer entry of a rule (of a policy in namespace `policy_ns`) matches `other`.
fn peer_matches(peer: &Value, policy_ns: &str, other: &Party) -> bool {
    if let Some(block) = peer.get("ipBlock") {
        let Some(cidr) = block.get("cidr").and_then(Value::as_str) else { return false };
        let excepted = block
            .get("except")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|e| in_cidr(other.ip, e));
        return in_cidr(other.ip, cidr) && !excepted;
    }
    let Some(pod) = other.pod else { return false };
    let pods = peer.get("podSelector").filter(|v| !v.is_null());
    let namespaces = peer.get("namespaceSelector").filter(|v| !v.is_null());
    let pod_ok = || pods.is_none_or(|s| selector(Some(s)).is_some_and(|s| s.matches(pod.labels)));
    match namespaces {
        Some(ns) => selector(Some(ns)).is_some_and(|s| s.matches(pod.namespace_labels)) && pod_ok(),
        None if pods.is_some() => pod.namespace == policy_ns && pod_ok(),
        None => false,
    }
}

/// Kubernetes' defaults: `protocol: TCP` on every port, `policyTypes` spelled out
/// (`Ingress`, plus `Egress` when there are egress rules), an empty `podSelector`. Tolerates
/// any shape (validation, which runs next, names what is wrong).
pub fn set_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    if spec.get("podSelector").is_none_or(Value::is_null) {
        spec.insert("podSelector".into(), Value::Object(Default::default()));
    }
    for (dir, _) in [("ingress", "from"), ("egress", "to")] {
        for rule in spec.get_mut(dir).and_then(Value::as_array_mut).into_iter().flatten() {
            let ports = rule.get_mut("ports").and_then(Value::as_array_mut);
            for port in ports.into_iter().flatten().filter_map(Value::as_object_mut) {
                if port.get("protocol").is_none_or(Value::is_null) {
                    port.insert("protocol".into(), Value::String("TCP".into()));
                }
            }
        }
    }
    if spec.get("policyTypes").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        let mut types = vec![Value::String("Ingress".into())];
        if spec.get("egress").and_then(Value::as_array).is_some_and(|e| !e.is_empty()) {
            types.push(Value::String("Egress".into()));
        }
        spec.insert("policyTypes".into(), Value::Array(types));
    }
}

/// Whether `cidr` is a valid CIDR block (`10.0.0.0/8`, `fd00::/8`).
pub fn valid_cidr(cidr: &str) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else { return false };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else { return false };
    bits <= if net.is_ipv4() { 32 } else { 128 }
}

/// Whether block `inner` lies strictly inside `outer` (an `except` entry of an `ipBlock`).
pub fn strictly_inside(inner: &str, outer: &str) -> bool {
    let bits = |c: &str| c.split_once('/').and_then(|(_, b)| b.parse::<u32>().ok());
    let (Some(ib), Some(ob)) = (bits(inner), bits(outer)) else { return false };
    let Some(net) = inner.split_once('/').and_then(|(n, _)| n.parse::<IpAddr>().ok()) else { return false };
    ib > ob && in_cidr(net, outer)
}

/// Whether a rule's `ports` admit `t` to a destination with `dest_ports`.
fn ports_match(ports: Option<&Value>, t: &Traffic, dest_ports: &[NamedPort]) -> bool {
    let Some(list) = ports.and_then(Value::as_array).filter(|l| !l.is_empty()) else { return true };
    list.iter().any(|p| {
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !proto.eq_ignore_ascii_case(t.protocol) {
            return false;
        }
        match p.get("port") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => {
                let from = n.as_u64().unwrap_or(u64::MAX);
                let to = p.get("endPort").and_then(Value::as_u64).unwrap_or(from);
                (from..=to).contains(&u64::from(t.port))
            }
            Some(Value::String(name)) => dest_ports
                .iter()
                .any(|np| &np.name == name && np.port == t.port && np.protocol.eq_ignore_ascii_case(proto)),
            Some(_) => false,
        }
    })
}

/// Whether `rules` (a policy's `ingress` or `egress`) allow the traffic with `other`
/// (`key`: `from` or `to`).
fn rules_allow(
    rules: Option<&Value>,
    key: &str,
    policy_ns: &str,
    other: &Party,
    t: &Traffic,
    dest: &[NamedPort],
) -> bool {
    rules.and_then(Value::as_array).into_iter().flatten().any(|rule| {
        let peers_ok = match rule.get(key).and_then(Value::as_array).filter(|p| !p.is_empty()) {
            None => true,
            Some(peers) => peers.iter().any(|peer| peer_matches(peer, policy_ns, other)),
        };
        peers_ok && ports_match(rule.get("ports"), t, dest)
    })
}

/// Why a connection is refused, or `Ok`.
pub fn decide(policies: &[Value], from: &Party, to: &Party, t: &Traffic) -> Result<(), String> {
    let dest_ports = to.pod.map(|p| p.ports).unwrap_or_default();
    if let Some(src) = from.pod {
        let governing: Vec<&Value> = policies.iter().filter(|p| policy_types(p).1 && selects(p, &src)).collect();
        if !governing.is_empty()
            && !governing
                .iter()
                .any(|p| rules_allow(p.pointer("/spec/egress"), "to", namespace_of(p), to, t, dest_ports))
        {
            return Err(format!(
                "egress from {}/{} to {}:{} is not allowed by its NetworkPolicies",
                src.namespace, from.ip, to.ip, t.port
            ));
        }
    }
    if let Some(dst) = to.pod {
        let governing: Vec<&Value> = policies.iter().filter(|p| policy_types(p).0 && selects(p, &dst)).collect();
        if !governing.is_empty()
            && !governing
                .iter()
                .any(|p| rules_allow(p.pointer("/spec/ingress"), "from", namespace_of(p), from, t, dest_ports))
        {
            return Err(format!(
                "ingress to {}/{}:{} from {} is not allowed by its NetworkPolicies",
                dst.namespace, to.ip, t.port, from.ip
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    struct World {
        web: Labels,
        db: Labels,
        prod: Labels,
        dev: Labels,
        db_ports: Vec<NamedPort>,
    }

    fn world() -> World {
        World {
            web: labels(&[("app", "web")]),
            db: labels(&[("app", "db")]),
            prod: labels(&[("kubernetes.io/metadata.name", "prod"), ("env", "prod")]),
            dev: labels(&[("kubernetes.io/metadata.name", "dev")]),
            db_ports: vec![NamedPort { name: "pg".into(), port: 5432, protocol: "TCP".into() }],
        }
    }

    fn pod<'a>(ns: &'a str, l: &'a Labels, nsl: &'a Labels, ports: &'a [NamedPort], ip: &str) -> Party<'a> {
        Party { ip: ip.parse().unwrap(), pod: Some(PodView { namespace: ns, labels: l, namespace_labels: nsl, ports }) }
    }

    fn external(ip: &str) -> Party<'static> {
        Party { ip: ip.parse().unwrap(), pod: None }
    }

    const TCP: &str = "TCP";

    fn policy(ns: &str, spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": ns}, "spec": spec})
    }

    #[test]
    fn without_policies_everything_is_allowed_and_default_deny_closes_a_namespace() {
        let w = world();
        let web = pod("prod", &w.web, &w.prod, &[], "127.64.0.2");
        let db = pod("prod", &w.db, &w.prod, &w.db_ports, "127.64.0.3");
        let t = Traffic { port: 5432, protocol: TCP };
        assert!(decide(&[], &web, &db, &t).is_ok());
        let deny = policy("prod", json!({"podSelector": {}}));
        let e = decide(std::slice::from_ref(&deny), &web, &db, &t).unwrap_err();
        assert!(e.contains("ingress to prod/127.64.0.3:5432"), "{e}");
        // Ingress isolation only: the web pod may still open connections elsewhere.
        assert!(decide(std::slice::from_ref(&deny), &web, &external("10.0.0.1"), &t).is_ok());
        let deny_out = policy("prod", json!({"podSelector": {}, "policyTypes": ["Egress"]}));
        assert!(
            decide(std::slice::from_ref(&deny_out), &web, &external("10.0.0.1"), &t).unwrap_err().contains("egress")
        );
        // Another namespace's policy does not govern these pods.
        let elsewhere = policy("dev", json!({"podSelector": {}}));
        assert!(decide(&[elsewhere], &web, &db, &t).is_ok());
    }

    #[test]
    fn peers_by_pod_namespace_and_address() {
        let w = world();
        let db = pod("prod", &w.db, &w.prod, &w.db_ports, "127.64.0.3");
        let web = pod("prod", &w.web, &w.prod, &[], "127.64.0.2");
        let dev_web = pod("dev", &w.web, &w.dev, &[], "127.64.16.2");
        let t = Traffic { port: 5432, protocol: TCP };
        let from_web = policy(
            "prod",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
        );
        assert!(decide(std::slice::from_ref(&from_web), &web, &db, &t).is_ok());
        assert!(
            decide(std::slice::from_ref(&from_web), &dev_web, &db, &t).is_err(),
            "podSelector alone: own namespace"
        );
        let from_dev = policy(
            "prod",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dev"}}}]}]}),
        );
        assert!(decide(std::slice::from_ref(&from_dev), &dev_web, &db, &t).is_ok());
        assert!(decide(std::slice::from_ref(&from_dev), &web, &db, &t).is_err());
        let both = policy(
            "prod",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}]}]}),
        );
        assert!(decide(std::slice::from_ref(&both), &dev_web, &db, &t).is_err(), "both must hold");
        let block = policy(
            "prod",
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]}),
        );
        assert!(decide(std::slice::from_ref(&block), &external("10.2.3.4"), &db, &t).is_ok());
        assert!(decide(std::slice::from_ref(&block), &external("10.1.3.4"), &db, &t).is_err(), "except");
        assert!(decide(std::slice::from_ref(&block), &external("192.0.2.1"), &db, &t).is_err());
        // Policies add up.
        assert!(decide(&[from_web.clone(), from_dev.clone()], &dev_web, &db, &t).is_ok());
        assert!(decide(&[from_web, from_dev], &web, &db, &t).is_ok());
    }

    #[test]
    fn ports_by_number_range_and_name() {
        let w = world();
        let db = pod("prod", &w.db, &w.prod, &w.db_ports, "127.64.0.3");
        let web = pod("prod", &w.web, &w.prod, &[], "127.64.0.2");
        let rule = |ports: Value| policy("prod", json!({"podSelector": {}, "ingress": [{"ports": ports}]}));
        let pg = Traffic { port: 5432, protocol: TCP };
        let other = Traffic { port: 6000, protocol: TCP };
        let named = rule(json!([{"port": "pg"}]));
        assert!(decide(std::slice::from_ref(&named), &web, &db, &pg).is_ok());
        assert!(decide(std::slice::from_ref(&named), &web, &db, &other).is_err());
        let range = rule(json!([{"port": 5000, "endPort": 6000}]));
        assert!(decide(std::slice::from_ref(&range), &web, &db, &other).is_ok());
        assert!(decide(std::slice::from_ref(&range), &web, &db, &Traffic { port: 6001, protocol: TCP }).is_err());
        let udp = rule(json!([{"port": 5432, "protocol": "UDP"}]));
        assert!(decide(std::slice::from_ref(&udp), &web, &db, &pg).is_err());
        // Egress to a named port resolves it on the destination pod.
        let out = policy(
            "prod",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{"ports": [{"port": "pg"}]}]}),
        );
        assert_eq!(policy_types(&out), (true, true));
        assert!(decide(std::slice::from_ref(&out), &web, &db, &pg).is_ok());
        assert!(decide(std::slice::from_ref(&out), &web, &external("10.0.0.1"), &pg).is_err());
    }
}
