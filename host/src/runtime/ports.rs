//! Pod addressing: how a pod address becomes a socket on this machine.
//!
//! - **Loopback** (Linux's default): a pod address is a loopback address of its node's
//!   machine; Linux (and Windows) deliver all of 127/8 locally, so pods bind their own address.
//! - **Mapped** (where only 127.0.0.1 is local, as on macOS without `ifconfig lo0 alias`):
//!   pod and cluster addresses stay virtual. Whatever would listen on one (an HTTP pod's port,
//!   a process pod's `wasi:sockets` bind, the proxy's cluster-address listeners) listens on a
//!   port of 127.0.0.1 the OS picks, and this node keeps the map between them. Every local
//!   dialer of the node (proxy, gateway, probes, pods' sockets) asks [`PortMap::dialable`]
//!   before it connects; other machines and other node processes reach this node's pods
//!   through its gateway, which does the same.
//!
//! The map is one-to-one (a real port reused by another bind takes its entry away from the
//! old address), and a pod's entries go with the pod.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::RwLock;

/// The `--pod-addressing` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodAddressing {
    /// Loopback where the machine delivers all of 127/8 locally, else mapped.
    #[default]
    Auto,
    Loopback,
    Mapped,
}

impl std::str::FromStr for PodAddressing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(PodAddressing::Auto),
            "loopback" => Ok(PodAddressing::Loopback),
            "mapped" => Ok(PodAddressing::Mapped),
            other => Err(format!("{other:?}: want auto, loopback or mapped")),
        }
    }
}

impl std::fmt::Display for PodAddressing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PodAddressing::Auto => "auto",
            PodAddressing::Loopback => "loopback",
            PodAddressing::Mapped => "mapped",
        })
    }
}

impl PodAddressing {
    /// Whether pod ports are mapped; `loopback_routed` says whether an address of 127/8
    /// other than 127.0.0.1 can be bound here (asked only for `Auto`). Pure.
    pub fn mapped(self, loopback_routed: impl FnOnce() -> bool) -> bool {
        match self {
            PodAddressing::Auto => !loopback_routed(),
            PodAddressing::Loopback => false,
            PodAddressing::Mapped => true,
        }
    }
}

/// Whether this machine delivers 127/8 beyond 127.0.0.1 locally (a socket can bind 127.0.0.2).
pub fn loopback_routed() -> bool {
    std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0)).is_ok()
}

#[derive(Default)]
struct Maps {
    real: HashMap<SocketAddr, SocketAddr>,
    virt: HashMap<SocketAddr, SocketAddr>,
}

/// The node's map of virtual addresses (pod and cluster addresses with a port) to the real
/// sockets that serve them. Empty, and every address dialable as it is, unless mapped.
#[derive(Default)]
pub struct PortMap {
    mapped: bool,
    maps: RwLock<Maps>,
}

impl PortMap {
    pub fn new(mapped: bool) -> PortMap {
        PortMap { mapped, maps: RwLock::default() }
    }

    pub fn mapped(&self) -> bool {
        self.mapped
    }

    /// Where a listener for the virtual `addr` binds: `addr` itself, or, mapped, a port of
    /// 127.0.0.1 the OS picks.
    pub fn bind_addr(&self, addr: SocketAddr) -> SocketAddr {
        if self.mapped { SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0) } else { addr }
    }

    /// `virt` is now served at `real` (replacing whatever either was mapped to).
    pub fn insert(&self, virt: SocketAddr, real: SocketAddr) {
        if !self.mapped || virt == real {
            return;
        }
        let mut m = self.maps.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = m.real.insert(virt, real) {
            m.virt.remove(&old);
        }
        if let Some(old) = m.virt.insert(real, virt)
            && old != virt
        {
            m.real.remove(&old);
        }
    }

    /// `virt` is served no more.
    pub fn remove(&self, virt: SocketAddr) {
        let mut m = self.maps.write().unwrap_or_else(|e| e.into_inner());
        if let Some(real) = m.real.remove(&virt) {
            m.virt.remove(&real);
        }
    }

    /// Every port of the address `ip` is served no more (its pod is gone).
    pub fn remove_ip(&self, ip: IpAddr) {
        let mut m = self.maps.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<SocketAddr> = m.real.keys().filter(|a| a.ip() == ip).copied().collect();
        for virt in gone {
            if let Some(real) = m.real.remove(&virt) {
                m.virt.remove(&real);
            }
        }
    }

    /// The real socket serving `virt`, if it is mapped.
    pub fn real(&self, virt: SocketAddr) -> Option<SocketAddr> {
        if !self.mapped {
            return None;
        }
        self.maps.read().unwrap_or_else(|e| e.into_inner()).real.get(&virt).copied()
    }

    /// The virtual address `real` serves, if it serves one.
    pub fn virtual_of(&self, real: SocketAddr) -> Option<SocketAddr> {
        if !self.mapped {
            return None;
        }
        self.maps.read().unwrap_or_else(|e| e.into_inner()).virt.get(&real).copied()
    }

    /// What to connect to for `addr`: its real socket when mapped, else `addr` itself.
    pub fn dialable(&self, addr: SocketAddr) -> SocketAddr {
        self.real(addr).unwrap_or(addr)
    }

    /// Mapped addresses (for figures and tests).
    pub fn len(&self) -> usize {
        self.maps.read().unwrap_or_else(|e| e.into_inner()).real.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn auto_maps_only_where_127_8_is_not_routed() {
        assert!(!PodAddressing::Auto.mapped(|| true));
        assert!(PodAddressing::Auto.mapped(|| false));
        assert!(PodAddressing::Mapped.mapped(|| true));
        assert!(!PodAddressing::Loopback.mapped(|| false));
        assert_eq!("mapped".parse(), Ok(PodAddressing::Mapped));
        assert!("tun".parse::<PodAddressing>().unwrap_err().contains("auto, loopback or mapped"));
    }

    #[test]
    fn unmapped_every_address_is_dialled_as_it_is() {
        let m = PortMap::new(false);
        m.insert(a("127.64.0.2:8080"), a("127.0.0.1:40000"));
        assert_eq!(m.dialable(a("127.64.0.2:8080")), a("127.64.0.2:8080"));
        assert_eq!(m.bind_addr(a("127.64.0.2:8080")), a("127.64.0.2:8080"));
        assert!(m.is_empty());
    }

    #[test]
    fn the_map_is_one_to_one_and_a_pod_s_entries_go_with_it() {
        let m = PortMap::new(true);
        assert_eq!(m.bind_addr(a("127.64.0.2:8080")), a("127.0.0.1:0"));
        m.insert(a("127.64.0.2:8080"), a("127.0.0.1:40000"));
        m.insert(a("127.64.0.2:9090"), a("127.0.0.1:40001"));
        m.insert(a("127.64.0.3:8080"), a("127.0.0.1:40002"));
        assert_eq!(m.dialable(a("127.64.0.2:8080")), a("127.0.0.1:40000"));
        assert_eq!(m.virtual_of(a("127.0.0.1:40002")), Some(a("127.64.0.3:8080")));
        assert_eq!(m.dialable(a("127.64.0.9:8080")), a("127.64.0.9:8080"), "unknown: as it is");

        // A rebind moves the address; a real port taken by another address leaves the old one.
        m.insert(a("127.64.0.2:8080"), a("127.0.0.1:40003"));
        assert_eq!(m.virtual_of(a("127.0.0.1:40000")), None);
        m.insert(a("127.64.0.4:8080"), a("127.0.0.1:40002"));
        assert_eq!(m.real(a("127.64.0.3:8080")), None, "40002 now serves another address");

        m.remove_ip("127.64.0.2".parse().unwrap());
        assert_eq!(m.real(a("127.64.0.2:8080")), None);
        assert_eq!(m.real(a("127.64.0.2:9090")), None);
        assert_eq!(m.len(), 1);
        m.remove(a("127.64.0.4:8080"));
        assert!(m.is_empty());
    }
}
