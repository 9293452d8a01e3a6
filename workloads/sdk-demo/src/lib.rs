//! sdk-demo: routes
//! - `POST /echo` answers the request body;
//! - `GET /config/KEY` answers a configuration value (404 when unset);
//! - `GET /fetch?URL` tries an outbound request and answers its status or the error;
//! - `GET /call/SERVICE/PATH` calls a Service by name and answers `SERVICE said: BODY` (a
//!   frontend in front of a backend);
//! - `GET /connect?ADDR` opens a `wasi:sockets` TCP connection to `IP:PORT`, sends a line and
//!   answers `connected: REPLY` (a socket client, e.g. of tcp-echo) or 502 with the error.

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
        if let Some(addr) = req.path.strip_prefix("/connect?") {
            return match talk(addr) {
                Ok(reply) => Response::text(200, format!("connected: {reply}")),
                Err(e) => Response::text(502, format!("connect {addr}: {e}")),
            };
        }
        Response::text(404, "no such route")
    }
}

/// Connect, send `ping`, read the answer.
fn talk(addr: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    s.write_all(b"ping\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

wasmorch_sdk::http_component!(Demo);
