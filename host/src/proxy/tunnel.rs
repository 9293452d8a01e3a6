//! Tunnels for pods' sockets to pods on other machines (see `runtime::tunnel`, which hands
//! the tunnel's address to the pod's socket in place of the pod address it asked for).

use super::dial::Way;
use super::{Chosen, Proxy, policy};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a socket tunnel waits for its pod's connection (which follows at once).
pub const TUNNEL_WAIT: Duration = Duration::from_secs(10);

impl Proxy {
    /// A tunnel for one socket connection of the pod at `from` to `to`, when `to` is on
    /// another machine (`None`: the pod's socket reaches it as it is): a listener on
    /// 127.0.0.1 that takes one connection, within [`TUNNEL_WAIT`], and splices it to a stream
    /// through `to`'s node gateway, opened at once so that both handshakes overlap. Only the
    /// pod at `from` may connect to it (see [`Proxy::tunnel_owner`]; other pods reach
    /// 127.0.0.1 only with an egress grant). The far gateway judges the stream as coming from
    /// `from`. If that stream cannot be opened, the pod's connection is reset.
    pub fn tunnel(self: &Arc<Self>, from: IpAddr, to: Chosen) -> std::io::Result<Option<SocketAddr>> {
        if !matches!(self.way(&to), Way::Gateway { .. }) {
            return Ok(None);
        }
        let l = std::net::TcpListener::bind(SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), 0))?;
        l.set_nonblocking(true)?;
        let at = l.local_addr()?;
        let l = TcpListener::from_std(l)?;
        self.tunnels.lock().unwrap_or_else(|e| e.into_inner()).insert(at, from);
        let this = self.clone();
        tokio::spawn(async move {
            let up = this.open(&to, policy::Source::Ip(from));
            let accepted = async { tokio::time::timeout(TUNNEL_WAIT, l.accept()).await };
            let (up, accepted) = tokio::join!(up, accepted);
            this.tunnels.lock().unwrap_or_else(|e| e.into_inner()).remove(&at);
            let Ok(Ok((mut tcp, _))) = accepted else { return };
            match up {
                Ok(mut up) => {
                    let _ = tcp.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut up).await;
                }
                Err(why) => {
                    tracing::debug!("socket of pod {from} to {}: {why}", to.addr);
                    // Reset, as a refused connection would be seen, rather than a clean end.
                    let _ = tcp.set_zero_linger();
                }
            }
        });
        Ok(Some(at))
    }

    /// The pod whose tunnel `addr` is, while it waits for that pod's connection.
    pub fn tunnel_owner(&self, addr: SocketAddr) -> Option<IpAddr> {
        self.tunnels.lock().unwrap_or_else(|e| e.into_inner()).get(&addr).copied()
    }
}
