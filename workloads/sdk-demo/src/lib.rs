//! sdk-demo: routes
//! - `POST /echo` answers the request body;
//! - `GET /config/KEY` answers a configuration value (404 when unset);
//! - `GET /fetch?URL` tries an outbound request and answers its status or the error.

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
