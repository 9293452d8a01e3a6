//! HTTP for workloads: handle incoming requests, send outgoing ones.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

/// Largest body read into memory (incoming requests and outgoing responses).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path and query, e.g. `/items?limit=5`.
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response { status, headers: Vec::new(), body: body.into() }
    }
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status, body.into()).with_header("content-type", "text/plain; charset=utf-8")
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.as_bytes().to_vec()));
        self
    }
}

/// What a workload implements to answer HTTP requests.
pub trait Handler {
    fn handle(req: Request) -> Response;
}

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(s) => s.clone(),
    }
}

fn read_all(stream: &InputStream) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if out.len() + chunk.len() > MAX_BODY {
                    return Err(format!("body larger than {MAX_BODY} bytes"));
                }
                out.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(out),
            Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
        }
    }
}

fn write_all(stream: &OutputStream, data: &[u8]) -> Result<(), String> {
    for chunk in data.chunks(4096) {
        stream.blocking_write_and_flush(chunk).map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}

fn fields(headers: &[(String, Vec<u8>)]) -> Fields {
    Fields::from_list(headers).unwrap_or_else(|_| Fields::new())
}

#[doc(hidden)]
pub fn __serve<H: Handler>(req: IncomingRequest, out: ResponseOutparam) {
    let request = (|| -> Result<Request, String> {
        let body = req.consume().map_err(|_| "request body already taken".to_string())?;
        let bytes = {
            let stream = body.stream().map_err(|_| "request body stream".to_string())?;
            read_all(&stream)?
        };
        IncomingBody::finish(body);
        Ok(Request {
            method: method_name(&req.method()),
            path: req.path_with_query().unwrap_or_else(|| "/".into()),
            headers: req.headers().entries(),
            body: bytes,
        })
    })();
    let response = match request {
        Ok(r) => H::handle(r),
        Err(e) => Response::text(400, format!("{e}\n")),
    };
    let resp = OutgoingResponse::new(fields(&response.headers));
    let _ = resp.set_status_code(response.status);
    let Ok(body) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(stream) = body.write() {
        let _ = write_all(&stream, &response.body);
    }
    let _ = OutgoingBody::finish(body, None);
}

/// Why an outgoing request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The URL could not be used.
    BadUrl(String),
    /// The node refused or the transfer failed (`HttpRequestDenied` when egress is not allowed).
    Http(String),
    /// A streamed request was answered with this status and body.
    Status(u16, String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::BadUrl(u) => write!(f, "bad URL: {u}"),
            SendError::Http(e) => write!(f, "request failed: {e}"),
            SendError::Status(code, body) => write!(f, "status {code}: {body}"),
        }
    }
}

fn code(e: ErrorCode) -> SendError {
    SendError::Http(format!("{e:?}"))
}

/// Send a request: `url` is `http://host[:port]/path`; the host may be a Service name
/// (see [`crate::service`]).
pub fn send(method: &str, url: &str, body: &[u8]) -> Result<Response, SendError> {
    send_with(method, url, &[], body)
}

/// [`send`] with request headers.
pub fn send_with(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response, SendError> {
    let resp = start(method, url, headers, body)?;
    let status = resp.status();
    let headers = resp.headers().entries();
    let body = resp.consume().map_err(|_| SendError::Http("response body".into()))?;
    let bytes = {
        let stream = body.stream().map_err(|_| SendError::Http("response body stream".into()))?;
        read_all(&stream).map_err(SendError::Http)?
    };
    Ok(Response { status, headers, body: bytes })
}

/// Send a request and hand its response body to `on_chunk` as it arrives (a watch, a log
/// follow), until the body ends or `on_chunk` returns false. Returns the status; a status
/// other than 2xx is answered with the whole (bounded) body instead, as `Err`.
pub fn stream_with(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    mut on_chunk: impl FnMut(&[u8]) -> bool,
) -> Result<u16, SendError> {
    let resp = start(method, url, headers, body)?;
    let status = resp.status();
    let body = resp.consume().map_err(|_| SendError::Http("response body".into()))?;
    let stream = body.stream().map_err(|_| SendError::Http("response body stream".into()))?;
    if !(200..300).contains(&status) {
        let bytes = read_all(&stream).map_err(SendError::Http)?;
        return Err(SendError::Status(status, String::from_utf8_lossy(&bytes).into_owned()));
    }
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) if chunk.is_empty() => continue,
            Ok(chunk) => {
                if !on_chunk(&chunk) {
                    return Ok(status);
                }
            }
            Err(StreamError::Closed) => return Ok(status),
            Err(StreamError::LastOperationFailed(e)) => return Err(SendError::Http(e.to_debug_string())),
        }
    }
}

fn start(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<wasip2::http::types::IncomingResponse, SendError> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return Err(SendError::BadUrl(url.to_string()));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let list: Vec<(String, Vec<u8>)> = headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
    let fields = Fields::from_list(&list).map_err(|e| SendError::Http(format!("request headers: {e:?}")))?;
    let req = OutgoingRequest::new(fields);
    let m = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_string()),
    };
    let ok = req.set_method(&m).is_ok()
        && req.set_scheme(Some(&scheme)).is_ok()
        && req.set_authority(Some(authority)).is_ok()
        && req.set_path_with_query(Some(path)).is_ok();
    if !ok {
        return Err(SendError::BadUrl(url.to_string()));
    }
    let out_body = req.body().map_err(|_| SendError::Http("request body".into()))?;
    let future = outgoing_handler::handle(req, None).map_err(code)?;
    if let Ok(stream) = out_body.write() {
        write_all(&stream, body).map_err(SendError::Http)?;
    }
    OutgoingBody::finish(out_body, None).map_err(code)?;
    let resp = loop {
        match future.get() {
            Some(r) => break r,
            None => future.subscribe().block(),
        }
    };
    resp.map_err(|_| SendError::Http("response already taken".into()))?.map_err(code)
}
