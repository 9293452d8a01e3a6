//! sdk-demo: routes
//! - `POST /echo` answers the request body;
//! - `GET /config/KEY` answers a configuration value (404 when unset);
//! - `GET /fetch?URL` tries an outbound request and answers its status or the error;
//! - `GET /call/SERVICE/PATH` calls a Service by name and answers `SERVICE said: BODY` (a
//!   frontend in front of a backend).

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
        Response::text(404, "no such route")
    }
}

wasmorch_sdk::http_component!(Demo);
