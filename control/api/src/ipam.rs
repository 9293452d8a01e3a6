//! Node IPAM: each Node gets a pod range (`spec.podCIDR`/`spec.podCIDRs`) carved from the
//! cluster's range (`--cluster-cidr`, blocks of `--node-cidr-mask-size`), as Kubernetes'
//! node-ipam controller does. A range, once set, never changes; it is free again only when
//! its Node is deleted. Pure.
//!
//! The default, `127.64.0.0/10` in `/20` blocks, lies inside loopback (Linux delivers all of
//! 127/8 locally, so a node binds its pods' addresses without privileges) and gives 1 024
//! nodes 4 094 pod addresses each. It does not overlap the default Service range
//! (`127.43.0.0/16`).

use crate::services::IpRange;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The cluster's pod range and the size of each node's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRanges {
    pub cluster: IpRange,
    pub node_bits: u8,
}

impl Default for PodRanges {
    fn default() -> Self {
        PodRanges { cluster: "127.64.0.0/10".parse().expect("valid"), node_bits: 20 }
    }
}

impl PodRanges {
    pub fn new(cluster: IpRange, node_bits: u8) -> Result<PodRanges, String> {
        if node_bits < cluster.bits() || node_bits > 30 {
            return Err(format!(
                "node CIDR mask size /{node_bits} must be between the cluster CIDR's /{} and /30",
                cluster.bits()
            ));
        }
        if node_bits - cluster.bits() > 16 {
            return Err(format!("{cluster} in /{node_bits} blocks is more than 65 536 node ranges"));
        }
        Ok(PodRanges { cluster, node_bits })
    }

    /// How many node ranges there are.
    pub fn count(&self) -> u32 {
        1u32 << (self.node_bits - self.cluster.bits())
    }

    /// The `i`-th node range.
    pub fn block(&self, i: u32) -> IpRange {
        IpRange::new(Ipv4Addr::from(self.cluster.base() + (i << (32 - self.node_bits))), self.node_bits)
    }

    /// Which block `cidr` is, if it is exactly one of ours.
    pub fn index_of(&self, cidr: &str) -> Option<u32> {
        let r: IpRange = cidr.parse().ok()?;
        if r.bits() != self.node_bits || !self.cluster.contains(Ipv4Addr::from(r.base())) {
            return None;
        }
        Some((r.base() - self.cluster.base()) >> (32 - self.node_bits))
    }
}

/// A Node's pod range, if it has one.
pub fn pod_cidr(node: &Value) -> Option<&str> {
    node.get("spec").and_then(|s| s.get("podCIDR")).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// What to give each Node that has no range yet: `(node name, Some(range))`, or `None` when
/// the cluster range is exhausted. Nodes are served oldest first (by name among equals), and
/// each gets the lowest free block.
pub fn plan(nodes: &[Value], ranges: &PodRanges) -> Vec<(String, Option<String>)> {
    let used: BTreeSet<u32> = nodes.iter().filter_map(pod_cidr).filter_map(|c| ranges.index_of(c)).collect();
    let mut waiting: Vec<&Value> = nodes.iter().filter(|n| pod_cidr(n).is_none()).collect();
    let created =
        |n: &Value| n.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or_default().to_string();
    let name = |n: &Value| n.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    waiting.sort_by_key(|n| (created(n), name(n)));
    let mut free = (0..ranges.count()).filter(|i| !used.contains(i));
    waiting.into_iter().map(|n| (name(n), free.next().map(|i| ranges.block(i).to_string()))).collect()
}

/// Pod addresses of a node's range: the network and broadcast addresses are skipped.
#[derive(Debug, Clone)]
pub struct PodAddresses {
    range: IpRange,
    used: BTreeSet<u32>,
    /// No offset below this one is free: `take` looks from here, not from the start (a
    /// node starting 10 000 pods otherwise scanned the taken ones again for each).
    lowest_free: u32,
}

impl PodAddresses {
    pub fn new(range: IpRange) -> PodAddresses {
        PodAddresses { range, used: BTreeSet::new(), lowest_free: 1 }
    }

    pub fn range(&self) -> IpRange {
        self.range
    }

    fn offset(&self, ip: &str) -> Option<u32> {
        let ip: Ipv4Addr = ip.parse().ok()?;
        self.range.contains(ip).then(|| u32::from(ip) - self.range.base())
    }

    /// The lowest free address, or `None` when the range is full.
    pub fn take(&mut self) -> Option<String> {
        let last = self.range.size() - 1;
        let n = (self.lowest_free.max(1)..last).find(|n| !self.used.contains(n))?;
        self.used.insert(n);
        self.lowest_free = n + 1;
        Some(Ipv4Addr::from(self.range.base() + n).to_string())
    }

    /// Mark an address as in use (a pod already running with it); false if it is not ours.
    pub fn reserve(&mut self, ip: &str) -> bool {
        match self.offset(ip) {
            Some(n) => {
                self.used.insert(n);
                true
            }
            None => false,
        }
    }

    pub fn give_back(&mut self, ip: &str) {
        if let Some(n) = self.offset(ip) {
            self.used.remove(&n);
            self.lowest_free = self.lowest_free.min(n);
        }
    }

    /// Whether `ip` lies in this range.
    pub fn contains(&self, ip: &str) -> bool {
        self.offset(ip).is_some()
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, created: &str, cidr: Option<&str>) -> Value {
        let mut n = json!({"metadata": {"name": name, "creationTimestamp": created}, "spec": {}});
        if let Some(c) = cidr {
            n["spec"]["podCIDR"] = json!(c);
        }
        n
    }

    #[test]
    fn blocks() {
        let r = PodRanges::default();
        assert_eq!(r.count(), 1024);
        assert_eq!(r.block(0).to_string(), "127.64.0.0/20");
        assert_eq!(r.block(1).to_string(), "127.64.16.0/20");
        assert_eq!(r.block(1023).to_string(), "127.127.240.0/20");
        assert_eq!(r.index_of("127.64.16.0/20"), Some(1));
        assert_eq!(r.index_of("127.64.16.0/24"), None, "another mask");
        assert_eq!(r.index_of("10.0.0.0/20"), None, "outside");
        assert!(PodRanges::new("127.0.0.0/16".parse().unwrap(), 12).is_err());
        assert!(PodRanges::new("10.0.0.0/8".parse().unwrap(), 30).is_err(), "too many blocks");
    }

    #[test]
    fn plan_gives_lowest_free_oldest_first_and_reuses_after_delete() {
        let r = PodRanges::new("127.70.0.0/16".parse().unwrap(), 18).unwrap(); // 4 blocks
        let nodes = vec![
            node("b", "2026-01-01T00:00:02Z", None),
            node("a", "2026-01-01T00:00:01Z", Some("127.70.64.0/18")),
            node("c", "2026-01-01T00:00:01Z", None),
        ];
        assert_eq!(
            plan(&nodes, &r),
            vec![("c".into(), Some("127.70.0.0/18".into())), ("b".into(), Some("127.70.128.0/18".into()))]
        );
        // Exhaustion: the fifth node waits.
        let mut full: Vec<Value> = (0..4).map(|i| node(&format!("n{i}"), "t", Some(&r.block(i).to_string()))).collect();
        full.push(node("late", "t", None));
        assert_eq!(plan(&full, &r), vec![("late".into(), None)]);
        // A deleted node's block is free again.
        full.remove(2);
        assert_eq!(plan(&full, &r), vec![("late".into(), Some("127.70.128.0/18".into()))]);
        // Nothing to do when every node has a range; foreign ranges do not block ours.
        let nodes = vec![node("x", "t", Some("10.0.0.0/24")), node("y", "t", None)];
        assert_eq!(plan(&nodes, &r), vec![("y".into(), Some("127.70.0.0/18".into()))]);
    }

    #[test]
    fn addresses_in_a_range() {
        let mut a = PodAddresses::new("127.70.4.0/30".parse().unwrap());
        assert_eq!(a.take().as_deref(), Some("127.70.4.1"));
        assert_eq!(a.take().as_deref(), Some("127.70.4.2"));
        assert_eq!(a.take(), None, "network and broadcast addresses are never handed out");
        a.give_back("127.70.4.1");
        assert!(!a.reserve("127.71.0.1"));
        assert_eq!(a.take().as_deref(), Some("127.70.4.1"));
        assert_eq!(a.in_use(), 2);
    }

    #[test]
    fn the_lowest_free_address_is_taken_whatever_was_given_back_or_reserved() {
        let mut a = PodAddresses::new("10.1.0.0/24".parse().unwrap());
        // Reserved ahead (a node restart keeps its pods' addresses): taken ones skip them.
        assert!(a.reserve("10.1.0.2"));
        assert_eq!(a.take().as_deref(), Some("10.1.0.1"));
        assert_eq!(a.take().as_deref(), Some("10.1.0.3"));
        for _ in 0..10 {
            a.take();
        }
        a.give_back("10.1.0.7");
        a.give_back("10.1.0.3");
        assert_eq!(a.take().as_deref(), Some("10.1.0.3"));
        assert_eq!(a.take().as_deref(), Some("10.1.0.7"));
        assert_eq!(a.take().as_deref(), Some("10.1.0.14"));
        // Matches the plain scan from the bottom, step by step.
        let mut b = PodAddresses::new("10.2.0.0/28".parse().unwrap());
        for step in 0..200u32 {
            let ip = format!("10.2.0.{}", 1 + (step * 7) % 14);
            if step % 3 == 0 {
                b.give_back(&ip);
            } else if step % 5 == 0 {
                b.reserve(&ip);
            } else {
                let want = (1..15).find(|n| !b.used.contains(n)).map(|n| format!("10.2.0.{n}"));
                assert_eq!(b.take(), want, "step {step}");
            }
        }
    }
}
