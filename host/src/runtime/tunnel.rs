//! `wasi:sockets` TCP connections to pod addresses on other machines. A pod address is a
//! loopback address of its node's machine, so a socket connecting to a pod that runs on
//! another machine would reach nothing on this one. `start-connect` is shadowed here: when
//! the sandbox allows the connection and the cluster says the address is a pod on another
//! machine, the socket connects instead to a one-connection tunnel the node opens on
//! 127.0.0.1 for this pod alone, whose other end is a stream through the far node's gateway
//! ([`super::Cluster::tunnel`]). `remote-address` answers the address the guest asked for.
//!
//! With mapped pod ports ([`super::ports`]) a pod address is not a socket of this machine at
//! all: `start-connect` to a mapped address connects to its real socket (the cluster's
//! `tunnel` answers it), and `start-bind` of the pod's own address binds a port of 127.0.0.1
//! instead and maps the pod's address and port onto it; `local-address` answers the address
//! the guest asked for. Everything else about the socket is wasmtime-wasi's own.

use super::state::InstanceState;
use std::net::SocketAddr;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpSocketAddress, Network};
use wasmtime_wasi::p2::bindings::sockets::tcp::{HostTcpSocket, TcpSocket};
use wasmtime_wasi::sockets::WasiSocketsCtxView;

/// The `wasi:sockets` version wasmtime-wasi 48 defines (guests' older 0.2 imports resolve to
/// it); the test `shadowing_takes_effect` fails if an upgrade moves it.
const TCP: &str = "wasi:sockets/tcp@0.2.12";

/// Sockets of one instance connected through a tunnel: (socket handle, tunnel address,
/// address the guest asked for). Handles are reused after a socket is dropped, so an entry
/// is believed only while the socket's real peer is still the tunnel; bounded by the
/// instance's resource table, and a new connect on a handle replaces its entry.
#[derive(Default)]
pub struct Tunnels(Vec<(u32, SocketAddr, SocketAddr)>);

impl Tunnels {
    fn set(&mut self, socket: u32, entry: Option<(SocketAddr, SocketAddr)>) {
        self.0.retain(|(s, ..)| *s != socket);
        if let Some((via, asked)) = entry {
            self.0.push((socket, via, asked));
        }
    }

    /// What the guest asked for, if `peer` is the tunnel of `socket`.
    fn asked(&self, socket: u32, peer: SocketAddr) -> Option<SocketAddr> {
        self.0.iter().find(|(s, via, _)| *s == socket && *via == peer).map(|(.., asked)| *asked)
    }
}

/// Replace wasmtime-wasi's `start-connect`, `remote-address`, `start-bind` and
/// `local-address` (added before) in `linker`.
pub fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let r = (|| {
        let mut tcp = linker.instance(TCP)?;
        tcp.func_wrap("[method]tcp-socket.start-connect", start_connect)?;
        tcp.func_wrap("[method]tcp-socket.remote-address", remote_address)?;
        tcp.func_wrap_async("[method]tcp-socket.start-bind", |store, args: Bind| Box::new(start_bind(store, args)))?;
        tcp.func_wrap("[method]tcp-socket.local-address", local_address)
    })();
    linker.allow_shadowing(false);
    r.map_err(Into::into)
}

type Connect = (Resource<TcpSocket>, Resource<Network>, IpSocketAddress);

fn start_connect(
    mut store: StoreContextMut<'_, InstanceState>,
    (socket, network, to): Connect,
) -> wasmtime::Result<(Result<(), ErrorCode>,)> {
    let s = store.data_mut();
    let asked = SocketAddr::from(to);
    let rep = socket.rep();
    // Only a connection the sandbox would allow gets a tunnel; any other goes on as asked
    // and is refused by wasmtime-wasi's own check.
    let via = match &s.hooks.cluster {
        Some(c) if super::may_connect(&s.hooks.net, Some(c), asked, "TCP") => c.tunnel(asked),
        _ => None,
    };
    let mut view = WasiSocketsCtxView { ctx: s.wasi.sockets(), table: &mut s.table };
    let r = HostTcpSocket::start_connect(&mut view, socket, network, via.map_or(to, IpSocketAddress::from));
    let r = match r {
        Ok(()) => Ok(()),
        Err(e) => Err(wasmtime_wasi::p2::bindings::sockets::network::Host::convert_error_code(&mut view, e)?),
    };
    s.tunnels.set(rep, via.filter(|_| r.is_ok()).map(|v| (v, asked)));
    Ok((r,))
}

/// One of the socket's addresses (`get`), as the guest should see it (`seen`: the address it
/// asked for, where the socket stands in for another).
fn shadowed(
    mut store: StoreContextMut<'_, InstanceState>,
    socket: Resource<TcpSocket>,
    get: fn(&mut WasiSocketsCtxView<'_>, Resource<TcpSocket>) -> wasmtime_wasi::p2::SocketResult<IpSocketAddress>,
    seen: fn(&InstanceState, u32, SocketAddr) -> Option<SocketAddr>,
) -> wasmtime::Result<(Result<IpSocketAddress, ErrorCode>,)> {
    let s = store.data_mut();
    let rep = socket.rep();
    let mut view = WasiSocketsCtxView { ctx: s.wasi.sockets(), table: &mut s.table };
    let r = match get(&mut view, socket) {
        Ok(a) => {
            let a = SocketAddr::from(a);
            Ok(IpSocketAddress::from(seen(s, rep, a).unwrap_or(a)))
        }
        Err(e) => Err(wasmtime_wasi::p2::bindings::sockets::network::Host::convert_error_code(&mut view, e)?),
    };
    Ok((r,))
}

fn remote_address(
    store: StoreContextMut<'_, InstanceState>,
    (socket,): (Resource<TcpSocket>,),
) -> wasmtime::Result<(Result<IpSocketAddress, ErrorCode>,)> {
    shadowed(store, socket, |v, s| HostTcpSocket::remote_address(v, s), |st, rep, peer| st.tunnels.asked(rep, peer))
}

type Bind = (Resource<TcpSocket>, Resource<Network>, IpSocketAddress);

/// Mapped, a bind of the pod's own address binds a port of 127.0.0.1 (the check lets only
/// that through), and the pod's address and asked port are mapped onto it. Any other bind
/// goes on as asked.
async fn start_bind(
    mut store: StoreContextMut<'_, InstanceState>,
    (socket, network, at): Bind,
) -> wasmtime::Result<(Result<(), ErrorCode>,)> {
    let s = store.data_mut();
    let asked = SocketAddr::from(at);
    let rep = socket.rep();
    let ports = s.ports.clone();
    let mapped = ports.mapped() && s.hooks.net.pod_ip == Some(asked.ip());
    if mapped && !s.hooks.net.may_bind(asked) {
        return Ok((Err(ErrorCode::AccessDenied),));
    }
    let real = if mapped { ports.bind_addr(asked) } else { asked };
    let mut view = WasiSocketsCtxView { ctx: s.wasi.sockets(), table: &mut s.table };
    if let Err(e) = HostTcpSocket::start_bind(&mut view, socket, network, IpSocketAddress::from(real)).await {
        return Ok((Err(wasmtime_wasi::p2::bindings::sockets::network::Host::convert_error_code(&mut view, e)?),));
    }
    let bound = match mapped {
        true => HostTcpSocket::local_address(&mut view, Resource::new_borrow(rep)).ok().map(SocketAddr::from),
        false => None,
    };
    let entry = bound.map(|real| {
        let virt = SocketAddr::new(asked.ip(), if asked.port() == 0 { real.port() } else { asked.port() });
        // Only a declared port can listen: an ephemeral one is not served to anyone.
        if asked.port() != 0 {
            ports.insert(virt, real);
        }
        (real, virt)
    });
    s.binds.set(rep, entry);
    Ok((Ok(()),))
}

fn local_address(
    store: StoreContextMut<'_, InstanceState>,
    (socket,): (Resource<TcpSocket>,),
) -> wasmtime::Result<(Result<IpSocketAddress, ErrorCode>,)> {
    // An accepted connection's local address is its listener's.
    shadowed(
        store,
        socket,
        |v, s| HostTcpSocket::local_address(v, s),
        |st, rep, local| st.binds.asked(rep, local).or_else(|| st.ports.virtual_of(local)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_handle_is_not_taken_for_a_tunnel() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mut t = Tunnels::default();
        t.set(3, Some((a("127.64.0.2:40000"), a("127.64.16.9:7000"))));
        assert_eq!(t.asked(3, a("127.64.0.2:40000")), Some(a("127.64.16.9:7000")));
        assert_eq!(t.asked(3, a("127.64.0.7:8080")), None, "the handle now names another socket");
        t.set(3, None);
        assert_eq!(t.asked(3, a("127.64.0.2:40000")), None);
    }

    #[test]
    fn wasmtime_wasi_defines_the_shadowed_interface() {
        // Were the name off (an upgrade moved the version), add_to_linker would define an
        // unused interface beside wasmtime-wasi's: defining over it without shadowing must fail.
        let engine = wasmtime::Engine::default();
        let mut linker = Linker::<InstanceState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        let clash = linker.instance(TCP).unwrap().func_wrap("[method]tcp-socket.start-connect", start_connect);
        assert!(clash.is_err(), "wasmtime-wasi defines {TCP}");
        add_to_linker(&mut linker).unwrap();
    }
}
