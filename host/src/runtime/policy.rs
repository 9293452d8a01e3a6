//! What a pod may do on the network, as pure rules. Deny by default:
//! - **bind/listen**: only on the pod's own address, and only on ports its containers declare
//!   (`containerPort`); a wildcard bind (`0.0.0.0`) would open the port on every interface of
//!   the node, so it is refused, except the implicit `0.0.0.0:0` bind a client socket makes
//!   before it connects;
//! - **connect** (sockets) and **outgoing `wasi:http`**: to the pod's own address (its
//!   containers reach each other), and to destinations the pod's annotation
//!   `wasmorch.io/egress` allows; nothing else.
//!
//! `wasmorch.io/egress` is a comma-separated list of `DEST[:PORT]`, where `DEST` is an IP
//! address, a CIDR block (`10.0.0.0/8`), a host name, or `*.suffix`; a missing port or `*`
//! allows every port. Host names apply to outgoing `wasi:http` (which names its host);
//! sockets connect to addresses, so they need an IP or CIDR rule.

use std::net::{IpAddr, SocketAddr};

/// The annotation that grants egress.
pub const EGRESS_ANNOTATION: &str = "wasmorch.io/egress";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Net(IpAddr, u8),
    Host(String),
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    dest: Dest,
    port: Option<u16>,
}

/// One pod's network policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    /// The pod's address; `None` for an instance with no address of its own.
    pub pod_ip: Option<IpAddr>,
    /// Ports the pod's containers declare (TCP and UDP alike).
    pub ports: Vec<u16>,
    egress: Vec<Rule>,
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    wasmorch_api::netpol::in_block(ip, net, u32::from(bits))
}

fn parse_rule(item: &str) -> Result<Rule, String> {
    let bad = |why: &str| format!("{EGRESS_ANNOTATION}: {item:?}: {why}");
    // `[v6]:port`, `v6`, `v4:port`, `host:port`, `cidr:port`.
    let (dest, port) = if let Some(rest) = item.strip_prefix('[') {
        let (d, p) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        (d, p.strip_prefix(':'))
    } else if item.matches(':').count() > 1 {
        (item, None)
    } else {
        match item.rsplit_once(':') {
            Some((d, p)) => (d, Some(p)),
            None => (item, None),
        }
    };
    let port = match port {
        None | Some("*") => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("the port must be 1-65535 or *"))?),
    };
    let dest = if let Some((net, bits)) = dest.split_once('/') {
        let ip: IpAddr = net.parse().map_err(|_| bad("not a CIDR block"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits.parse().ok().filter(|b| *b <= max).ok_or_else(|| bad("bad prefix length"))?;
        Dest::Net(ip, bits)
    } else if let Ok(ip) = dest.parse::<IpAddr>() {
        Dest::Net(ip, if ip.is_ipv4() { 32 } else { 128 })
    } else if let Some(s) = dest.strip_prefix("*.") {
        Dest::Suffix(format!(".{}", s.to_ascii_lowercase()))
    } else if !dest.is_empty() && dest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        Dest::Host(dest.to_ascii_lowercase())
    } else {
        return Err(bad("not an IP address, CIDR block or host name"));
    };
    Ok(Rule { dest, port })
}

impl NetPolicy {
    /// The policy of a pod from its address, declared ports and egress annotation.
    pub fn new(pod_ip: Option<IpAddr>, ports: Vec<u16>, egress: Option<&str>) -> Result<NetPolicy, String> {
        let egress = egress
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_rule)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NetPolicy { pod_ip, ports, egress })
    }

    /// Whether the pod has any egress rule (and so may look names up).
    pub fn has_egress(&self) -> bool {
        !self.egress.is_empty()
    }

    fn own(&self, ip: IpAddr) -> bool {
        self.pod_ip == Some(ip)
    }

    /// Binding a socket (explicitly, or implicitly before connect with `0.0.0.0:0`).
    pub fn may_bind(&self, addr: SocketAddr) -> bool {
        (addr.ip().is_unspecified() && addr.port() == 0)
            || (self.own(addr.ip()) && (addr.port() == 0 || self.ports.contains(&addr.port())))
    }

    /// Listening: only on the pod's address and a declared port.
    pub fn may_listen(&self, addr: SocketAddr) -> bool {
        self.own(addr.ip()) && self.ports.contains(&addr.port())
    }

    /// Connecting to (or sending a datagram to) an address.
    pub fn may_connect(&self, addr: SocketAddr) -> bool {
        self.own(addr.ip())
            || self.egress.iter().any(|r| {
                r.port.is_none_or(|p| p == addr.port()) && matches!(r.dest, Dest::Net(n, b) if in_net(addr.ip(), n, b))
            })
    }

    /// An outgoing `wasi:http` request to `host` (name or address) and `port`.
    pub fn may_request(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.may_connect(SocketAddr::new(ip, port));
        }
        self.egress.iter().any(|r| {
            r.port.is_none_or(|p| p == port)
                && match &r.dest {
                    Dest::Host(h) => *h == host,
                    Dest::Suffix(s) => host.ends_with(s.as_str()),
                    Dest::Net(..) => false,
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn pod(egress: &str) -> NetPolicy {
        NetPolicy::new(Some("127.100.0.2".parse().unwrap()), vec![7000], Some(egress)).unwrap()
    }

    #[test]
    fn binds_only_own_address_and_declared_ports() {
        let p = pod("");
        assert!(p.may_bind(sa("127.100.0.2:7000")));
        assert!(p.may_bind(sa("127.100.0.2:0")));
        assert!(p.may_bind(sa("0.0.0.0:0")), "implicit bind before connect");
        assert!(!p.may_bind(sa("0.0.0.0:7000")), "wildcard would open the port on every interface");
        assert!(!p.may_bind(sa("127.100.0.2:7001")), "undeclared port");
        assert!(!p.may_bind(sa("127.0.0.1:7000")), "another address");
        assert!(p.may_listen(sa("127.100.0.2:7000")));
        assert!(!p.may_listen(sa("127.100.0.2:40000")), "ephemeral port from a port-0 bind");
        assert!(!p.may_listen(sa("0.0.0.0:7000")));
        let none = NetPolicy::new(None, vec![7000], None).unwrap();
        assert!(!none.may_listen(sa("127.100.0.2:7000")));
    }

    #[test]
    fn connects_only_to_self_and_allowed_destinations() {
        let p = pod("10.1.0.0/16:443, 192.168.1.5, [::1]:8080, api.example.com:443, *.svc.local");
        assert!(p.may_connect(sa("127.100.0.2:7000")), "containers of the pod reach each other");
        assert!(p.may_connect(sa("10.1.200.3:443")));
        assert!(!p.may_connect(sa("10.1.200.3:80")));
        assert!(!p.may_connect(sa("10.2.0.1:443")));
        assert!(p.may_connect(sa("192.168.1.5:22")));
        assert!(p.may_connect(sa("[::1]:8080")));
        assert!(!p.may_connect(sa("[::1]:8081")));
        assert!(!p.may_connect(sa("127.0.0.1:6443")), "the node and the API server are not the pod");
        assert!(p.may_request("api.example.com", 443));
        assert!(p.may_request("API.example.com", 443));
        assert!(!p.may_request("api.example.com", 80));
        assert!(p.may_request("a.b.svc.local", 80));
        assert!(!p.may_request("svc.local.evil.com", 80));
        assert!(p.may_request("10.1.0.9", 443));
        assert!(p.may_request("[::1]", 8080));
        assert!(!p.may_request("example.org", 443));
        assert!(!pod("").may_request("api.example.com", 443));
        assert!(!pod("").has_egress());
    }

    #[test]
    fn bad_rules_are_named() {
        for bad in ["10.0.0.0/40", "host:99999", "a b", "[::1", "x:0"] {
            let e = NetPolicy::new(None, vec![], Some(bad)).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
