//! hello-http: a `wasi:http/incoming-handler` component. One fresh instance per request.
//!
//! `GET /` answers `Hello from wasmorch` with the pod name (`POD_NAME`, set by the host) and the
//! request path; `GET /env/NAME` answers the value of an environment variable; `GET /sleep/MS`
//! answers after MS milliseconds (a slow request, for drain tests).

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hello;

fn respond(out: ResponseOutparam, status: u16, text: &str) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain; charset=utf-8".to_vec())]).expect("valid header");
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(status).expect("valid status");
    let body = resp.body().expect("body once");
    ResponseOutparam::set(out, Ok(resp));
    let stream = body.write().expect("stream once");
    for chunk in text.as_bytes().chunks(4096) {
        stream.blocking_write_and_flush(chunk).expect("write body");
    }
    drop(stream);
    OutgoingBody::finish(body, None).expect("finish body");
}

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".into());
        eprintln!("hello-http: {:?} {path}", request.method());
        if let Some(ms) = path.strip_prefix("/sleep/").and_then(|m| m.parse::<u64>().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms.min(60_000)));
            respond(out, 200, &format!("slept {ms} ms\n"));
            return;
        }
        if let Some(var) = path.strip_prefix("/env/") {
            match std::env::var(var) {
                Ok(v) => respond(out, 200, &format!("{v}\n")),
                Err(_) => respond(out, 404, &format!("{var} is not set\n")),
            }
            return;
        }
        let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into());
        respond(out, 200, &format!("Hello from wasmorch! pod={pod} path={path}\n"));
    }
}

wasip2::http::proxy::export!(Hello);
