//! The API server's one way of calling another party of the cluster over HTTPS — a node's
//! endpoint (logs, stats) or another API server (the registry's fill-in): TLS that trusts only
//! the cluster CA and presents the API server's client certificate, HTTP/1.1, bounded waits.

use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a connection (TCP and TLS) may take.
const CONNECT: Duration = Duration::from_secs(5);

/// A bodiless request (GET, HEAD) for `path` to `addr`, whose certificate must name `name`;
/// `headers` go with it (`host` is `name`).
pub async fn request(
    method: http::Method,
    tls: Arc<rustls::ClientConfig>,
    name: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        // Small writes go out at once: an upgraded connection (exec, port-forward) carries
        // interactive traffic, which Nagle's algorithm would hold back for an ACK.
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(tls).connect(server_name, tcp).await.map_err(|e| format!("TLS: {e}"))
    };
    let tls = tokio::time::timeout(CONNECT, connect).await.map_err(|_| "connect timed out".to_string())??;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    // With upgrades: the connect subresources (exec, port-forward) take the connection over.
    tokio::spawn(conn.with_upgrades());
    let mut req = http::Request::builder().method(method).uri(path).header("host", name);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::<bytes::Bytes>::new()).map_err(|e| e.to_string())?;
    send.send_request(req).await.map_err(|e| e.to_string())
}
