//! `kubectl port-forward`'s far end: a SPDY/3.1 session (raw after `Upgrade: SPDY/3.1`, or
//! tunnelled in WebSocket binary messages under `SPDY/3.1+portforward.k8s.io`) in which the
//! client opens, per forwarded connection, an error stream and a data stream with headers
//! `streamtype`, `port` and `requestid`. The data stream's bytes go to the pod's port as a TCP
//! connection from this node; whatever goes wrong with that connection is written on the
//! error stream. Both streams are closed (FIN) when the connection ends.

use super::spdy::{self, Codec, Frame};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Largest data frame this side writes.
const CHUNK: usize = 32 << 10;
/// Streams one session may hold open (kubectl opens two per forwarded connection).
const MAX_STREAMS: usize = 1024;
/// How long connecting to the pod's port may take.
const CONNECT: Duration = Duration::from_secs(10);

/// Where the pod's ports are, from this node.
pub trait Dialer: Send + Sync + 'static {
    fn dialable(&self, addr: SocketAddr) -> SocketAddr;
}

impl Dialer for crate::runtime::ports::PortMap {
    fn dialable(&self, addr: SocketAddr) -> SocketAddr {
        crate::runtime::ports::PortMap::dialable(self, addr)
    }
}

/// What a stream's headers ask for.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamKind {
    Error { request: String, port: u16 },
    Data { request: String, port: u16 },
}

/// Read a new stream's headers; `Err` says what is wrong with them.
pub fn stream_kind(headers: &[(String, String)]) -> Result<StreamKind, String> {
    let get = |k: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str());
    let port = get("port").ok_or("the stream names no port")?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| format!("invalid port {port:?}: 1 to 65535"))?;
    // Before request ids (kubectl of 2015) each stream pair stood alone: the port names it.
    let request = get("requestid").map(String::from).unwrap_or_else(|| port.to_string());
    match get("streamtype") {
        Some("error") => Ok(StreamKind::Error { request, port }),
        Some("data") => Ok(StreamKind::Data { request, port }),
        other => Err(format!("invalid stream type {other:?}: error or data")),
    }
}

#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Bytes>)>,
    port: u16,
}

/// Serve one session until the client hangs up or `stop`.
pub async fn serve<S>(io: S, pod: IpAddr, dialer: Arc<dyn Dialer>, what: String, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out, mut out_rx) = mpsc::channel::<Bytes>(64);
    let writer = tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let session = stop.child_token();
    let mut codec = Codec::new();
    // Data from the client, per data stream; dropped on the client's FIN.
    let mut inbound: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut resets: HashMap<u32, CancellationToken> = HashMap::new();
    let mut last = 0;
    loop {
        let frame = tokio::select! {
            f = codec.read(&mut rd) => f,
            _ = session.cancelled() => break,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("port-forward to {what}: {e}");
                break;
            }
        };
        match frame {
            Frame::SynStream { stream, fin, headers } => {
                last = stream;
                let kind = match stream_kind(&headers) {
                    Ok(k) if resets.len() + pairs.len() < MAX_STREAMS => k,
                    Ok(_) => {
                        let _ = out.send(spdy::rst_stream(stream, spdy::REFUSED_STREAM)).await;
                        continue;
                    }
                    Err(why) => {
                        tracing::debug!("port-forward to {what}: stream {stream}: {why}");
                        let _ = out.send(spdy::rst_stream(stream, spdy::PROTOCOL_ERROR)).await;
                        continue;
                    }
                };
                let _ = out.send(codec.syn_reply(stream, &[])).await;
                let (request, port) = match kind {
                    StreamKind::Error { request, port } => {
                        let p = pairs.entry(request.clone()).or_default();
                        p.error = Some(stream);
                        (request, port)
                    }
                    StreamKind::Data { request, port } => {
                        let (tx, rx) = mpsc::channel(16);
                        if !fin {
                            inbound.insert(stream, tx);
                        }
                        let p = pairs.entry(request.clone()).or_default();
                        p.data = Some((stream, rx));
                        (request, port)
                    }
                };
                let p = pairs.get_mut(&request).expect("just inserted");
                p.port = port;
                if p.error.is_some() && p.data.is_some() {
                    let p = pairs.remove(&request).expect("present");
                    let (Some(error), Some((data, rx))) = (p.error, p.data) else { continue };
                    let cancel = session.child_token();
                    resets.insert(error, cancel.clone());
                    resets.insert(data, cancel.clone());
                    let (out, dialer, what) = (out.clone(), dialer.clone(), what.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = forward(out, error, data, rx, SocketAddr::new(pod, p.port), dialer, &what) => {}
                            _ = cancel.cancelled() => {}
                        }
                        // Done: its entries go at the next frame.
                        cancel.cancel();
                    });
                }
            }
            Frame::Data { stream, fin, data } => {
                if let Some(tx) = inbound.get(&stream)
                    && !data.is_empty()
                    && tx.send(data).await.is_err()
                {
                    inbound.remove(&stream);
                }
                if fin {
                    inbound.remove(&stream);
                }
            }
            Frame::RstStream { stream, .. } => {
                inbound.remove(&stream);
                if let Some(c) = resets.remove(&stream) {
                    c.cancel();
                }
            }
            Frame::Ping { id } => {
                let _ = out.send(spdy::ping(id)).await;
            }
            Frame::GoAway { .. } => break,
            Frame::SynReply { .. } | Frame::Ignored => {}
        }
        resets.retain(|_, c| !c.is_cancelled());
    }
    session.cancel();
    let _ = out.send(spdy::goaway(last)).await;
    drop(out);
    let _ = writer.await;
}

/// One forwarded connection: the pod's port ↔ the data stream.
async fn forward(
    out: mpsc::Sender<Bytes>,
    error: u32,
    data: u32,
    mut from_client: mpsc::Receiver<Bytes>,
    addr: SocketAddr,
    dialer: Arc<dyn Dialer>,
    what: &str,
) {
    let conn = tokio::time::timeout(CONNECT, tokio::net::TcpStream::connect(dialer.dialable(addr))).await;
    let tcp = match conn {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            return fail(&out, error, data, &format!("error forwarding port {} to {what}: {e}", addr.port())).await;
        }
        Err(_) => {
            let why = format!("error forwarding port {} to {what}: connecting timed out", addr.port());
            return fail(&out, error, data, &why).await;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut rd, mut wr) = tcp.into_split();
    let to_pod = async move {
        while let Some(b) = from_client.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let out2 = out.clone();
    let from_pod = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out2.send(spdy::data(data, false, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = out2.send(spdy::data(data, true, b"")).await;
    };
    // The connection ends when the pod's side does (as a kubelet's forwarder: the client's
    // half-close is passed on, the pod's close ends it).
    let to_pod = tokio::spawn(to_pod);
    from_pod.await;
    to_pod.abort();
    let _ = out.send(spdy::data(error, true, b"")).await;
}

async fn fail(out: &mpsc::Sender<Bytes>, error: u32, data: u32, why: &str) {
    let _ = out.send(spdy::data(error, false, why.as_bytes())).await;
    let _ = out.send(spdy::data(error, true, b"")).await;
    let _ = out.send(spdy::data(data, true, b"")).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn stream_headers_are_read_or_refused() {
        assert_eq!(
            stream_kind(&h(&[("streamtype", "data"), ("port", "80"), ("requestid", "3")])),
            Ok(StreamKind::Data { request: "3".into(), port: 80 })
        );
        assert_eq!(
            stream_kind(&h(&[("streamtype", "error"), ("port", "80")])),
            Ok(StreamKind::Error { request: "80".into(), port: 80 })
        );
        assert!(stream_kind(&h(&[("streamtype", "data")])).unwrap_err().contains("no port"));
        assert!(stream_kind(&h(&[("streamtype", "data"), ("port", "0")])).unwrap_err().contains("invalid port"));
        assert!(stream_kind(&h(&[("streamtype", "data"), ("port", "70000")])).is_err());
        assert!(stream_kind(&h(&[("streamtype", "x"), ("port", "80")])).unwrap_err().contains("stream type"));
    }

    struct Direct;
    impl Dialer for Direct {
        fn dialable(&self, addr: SocketAddr) -> SocketAddr {
            addr
        }
    }

    /// A client's side of a session: frames in, frames out.
    struct Client {
        codec: Codec,
        io: tokio::io::DuplexStream,
    }

    impl Client {
        async fn open(&mut self, id: u32, kind: &str, port: u16, request: &str, fin: bool) {
            let hs = h(&[("streamtype", kind), ("port", &port.to_string()), ("requestid", request)]);
            let f = spdy::syn_stream(&mut self.codec, id, fin, &hs);
            self.io.write_all(&f).await.unwrap();
        }
        async fn next(&mut self) -> Frame {
            self.codec.read(&mut self.io).await.unwrap().expect("a frame")
        }
    }

    #[tokio::test]
    async fn a_session_forwards_a_connection_and_reports_a_refused_one() {
        // An echo server standing in for the pod's port.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(&buf[..n]).await.unwrap();
        });
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let stop = CancellationToken::new();
        tokio::spawn(serve(theirs, "127.0.0.1".parse().unwrap(), Arc::new(Direct), "pod p".into(), stop.clone()));
        let mut c = Client { codec: Codec::new(), io: ours };
        c.open(1, "error", port, "0", true).await;
        c.open(3, "data", port, "0", false).await;
        c.io.write_all(&spdy::data(3, false, b"hello")).await.unwrap();
        let mut got = Vec::new();
        let mut closed = (false, false);
        while closed != (true, true) {
            match c.next().await {
                Frame::SynReply { .. } => {}
                Frame::Data { stream: 3, fin, data } => {
                    got.extend_from_slice(&data);
                    closed.0 |= fin;
                }
                Frame::Data { stream: 1, fin, data } => {
                    assert!(data.is_empty(), "no error: {data:?}");
                    closed.1 |= fin;
                }
                f => panic!("unexpected {f:?}"),
            }
        }
        assert_eq!(got, b"hello");
        // Nothing listens on port 1: the error stream says so.
        c.open(5, "error", 1, "1", true).await;
        c.open(7, "data", 1, "1", false).await;
        let mut error = Vec::new();
        loop {
            match c.next().await {
                Frame::Data { stream: 5, fin: false, data } => error.extend_from_slice(&data),
                Frame::Data { stream: 5, fin: true, .. } => break,
                _ => {}
            }
        }
        let error = String::from_utf8(error).unwrap();
        assert!(error.contains("error forwarding port 1 to pod p"), "{error}");
        // A ping is answered; a bad stream is reset.
        c.io.write_all(&spdy::ping(9)).await.unwrap();
        c.open(9, "bogus", 80, "2", false).await;
        let mut seen = (false, false);
        while seen != (true, true) {
            match c.next().await {
                Frame::Ping { id: 9 } => seen.0 = true,
                Frame::RstStream { stream: 9, status } => {
                    assert_eq!(status, spdy::PROTOCOL_ERROR);
                    seen.1 = true
                }
                _ => {}
            }
        }
        stop.cancel();
    }
}
