//! hello-http: a `wasi:http/incoming-handler` component. One fresh instance per request.
//!
//! `GET /` answers `Hello from wasmorch` with the pod name (`POD_NAME`, set by the host) and the
//! request path; `GET /env/NAME` answers the value of an environment variable; `GET /sleep/MS`
//! answers after MS milliseconds (a slow request, for drain tests); `GET /file?path=P` answers a
//! file's contents and `PUT /file?path=P` writes the request body to it (volume tests: the
//! path is taken from the query, which clients do not normalize, so `..` reaches the host);
//! `GET /ls?path=P` lists a directory; `GET /bytes/N` answers N bytes (at most 64 MiB; transfer
//! tests and benchmarks); `GET /headers…` answers the pod, the path, the authority and every request header
//! (`name: value` lines; routing tests).

use wasip2::http::types::{Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};

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

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(body) = request.consume() else { return out };
    let stream = body.stream().expect("stream once");
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        out.extend_from_slice(&chunk);
    }
    drop(stream);
    IncomingBody::finish(body);
    out
}

fn io_status(e: &std::io::Error) -> u16 {
    match e.kind() {
        std::io::ErrorKind::NotFound => 404,
        std::io::ErrorKind::PermissionDenied => 403,
        _ => 500,
    }
}

/// `GET|PUT /file?path=P` and `GET /ls?path=P`; `None` if the path is not one of these.
fn files(request: &IncomingRequest, path: &str) -> Option<(u16, String)> {
    let (route, query) = path.split_once('?')?;
    let target = query.strip_prefix("path=")?;
    Some(match (route, request.method()) {
        ("/file", Method::Get) => match std::fs::read(target) {
            Ok(b) => (200, String::from_utf8_lossy(&b).into_owned()),
            Err(e) => (io_status(&e), format!("error: {e}\n")),
        },
        ("/file", Method::Put) => {
            let body = read_body(request);
            match std::fs::write(target, &body) {
                Ok(()) => (200, format!("wrote {} bytes\n", body.len())),
                Err(e) => (io_status(&e), format!("error: {e}\n")),
            }
        }
        ("/ls", Method::Get) => match std::fs::read_dir(target) {
            Ok(entries) => {
                let mut names: Vec<String> =
                    entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                names.sort();
                (200, names.into_iter().map(|n| n + "\n").collect())
            }
            Err(e) => (io_status(&e), format!("error: {e}\n")),
        },
        _ => return None,
    })
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
        if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse::<usize>().ok()) {
            respond(out, 200, &"x".repeat(n.min(64 << 20)));
            return;
        }
        if let Some((status, text)) = files(&request, &path) {
            respond(out, status, &text);
            return;
        }
        if path.starts_with("/headers") {
            let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into());
            let authority = request.authority().unwrap_or_default();
            let mut text = format!("pod={pod} path={path}\nauthority: {authority}\n");
            for (name, value) in request.headers().entries() {
                text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(&value)));
            }
            respond(out, 200, &text);
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
