//! sdk-demo: routes
//! - `POST /echo` answers the request body;
//! - `GET /config/KEY` answers a configuration value (404 when unset);
//! - `GET /fetch?URL` tries an outbound request and answers its status or the error;
//! - `GET /call/SERVICE/PATH` calls a Service by name and answers `SERVICE said: BODY` (a
//!   frontend in front of a backend);
//! - `GET /connect?ADDR` opens a `wasi:sockets` TCP connection to `IP:PORT`, sends a line and
//!   answers `connected: REPLY` (a socket client, e.g. of tcp-echo) or 502 with the error;
//!   `GET /connect?ADDR&peer` adds ` (peer IP:PORT)`, the address the socket says it reached;
//! - `GET /time?N&URL` sends N requests to URL one after another and answers the latency
//!   of each as `p50 P50_US p99 P99_US` (microseconds), for benchmarks;
//! - `GET /resolve?NAME` answers every address a `wasi:sockets` name lookup gives, sorted and
//!   comma-separated.

use wasmorch_sdk::http::{Handler, Request, Response, send};
use wasmorch_sdk::{config, log};

struct Demo;

impl Handler for Demo {
    fn handle(req: Request) -> Response {
        log::info(&format!("{} {}", req.method, req.path));
        if req.path == "/echo" {
            return Response::new(200, req.body);
        }
        if let Some(key) = req.path.strip_prefix("/config/") {
            return match config::get(key) {
                Some(v) => Response::text(200, v),
                None => Response::text(404, format!("{key} is not set")),
            };
        }
        if let Some(rest) = req.path.strip_prefix("/call/") {
            let (svc, path) = rest.split_once('/').unwrap_or((rest, ""));
            return match wasmorch_sdk::service::get(svc, &format!("/{path}")) {
                Ok(r) => Response::text(r.status, format!("{svc} said: {}", String::from_utf8_lossy(&r.body))),
                Err(e) => Response::text(502, format!("calling {svc}: {e}")),
            };
        }
        if let Some(url) = req.path.strip_prefix("/fetch?") {
            return match send("GET", url, b"") {
                Ok(r) => Response::text(200, format!("fetched: {}", r.status)),
                Err(e) => {
                    log::warn(&format!("fetch {url}: {e}"));
                    Response::text(502, e.to_string())
                }
            };
        }
        if let Some(q) = req.path.strip_prefix("/time?") {
            let Some((n, url)) = q.split_once('&').and_then(|(n, u)| Some((n.parse::<usize>().ok()?, u))) else {
                return Response::text(400, "usage: /time?N&URL");
            };
            let mut took = Vec::with_capacity(n);
            for _ in 0..n {
                let t = std::time::Instant::now();
                match send("GET", url, b"") {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => return Response::text(502, format!("{url}: status {}", r.status)),
                    Err(e) => return Response::text(502, format!("{url}: {e}")),
                }
                took.push(t.elapsed().as_micros());
            }
            took.sort_unstable();
            let at = |q: usize| took.get((took.len() * q / 100).min(took.len().saturating_sub(1))).copied().unwrap_or(0);
            return Response::text(200, format!("p50 {} p99 {}", at(50), at(99)));
        }
        if let Some(name) = req.path.strip_prefix("/resolve?") {
            use std::net::ToSocketAddrs;
            return match (name, 0).to_socket_addrs() {
                Ok(addrs) => {
                    let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                    ips.sort();
                    Response::text(200, ips.join(","))
                }
                Err(e) => Response::text(502, format!("resolve {name}: {e}")),
            };
        }
        if let Some(q) = req.path.strip_prefix("/connect?") {
            let (addr, peer) = match q.strip_suffix("&peer") {
                Some(a) => (a, true),
                None => (q, false),
            };
            return match talk(addr) {
                Ok((reply, at)) if peer => Response::text(200, format!("connected: {reply} (peer {at})")),
                Ok((reply, _)) => Response::text(200, format!("connected: {reply}")),
                Err(e) => Response::text(502, format!("connect {addr}: {e}")),
            };
        }
        Response::text(404, "no such route")
    }
}

/// Connect, send `ping`, read the answer; with the peer's address.
fn talk(addr: &str) -> std::io::Result<(String, std::net::SocketAddr)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    let peer = s.peer_addr()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    s.write_all(b"ping\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    Ok((String::from_utf8_lossy(&buf[..n]).trim().to_string(), peer))
}

wasmorch_sdk::http_component!(Demo);
