//! Turning HTTP requests into API operations: paths, query parameters, bodies, and replies.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::HashMap;
use wasmorch_api::resources::{self, Resource};
use wasmorch_api::{ApiError, decode, protobuf};

/// Largest request body accepted (as Kubernetes: 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What a resource path names.
#[derive(Debug, Clone)]
pub struct Target {
    pub res: &'static Resource,
    /// Namespace from the path; `None` for cluster-scoped paths (and all-namespace lists).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Legacy `/watch/` path form.
    pub watch_path: bool,
}

impl Target {
    /// One object of a built-in kind in namespace `ns`.
    pub fn object(kind: resources::ResourceKind, ns: &str, name: &str) -> Target {
        Target {
            res: resources::of(kind),
            namespace: Some(ns.to_string()),
            name: Some(name.to_string()),
            subresource: None,
            watch_path: false,
        }
    }
}

/// Parse `/api/v1/...` or `/apis/{group}/{version}/...` below the version.
pub fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let (watch_path, rest) = match rest.first() {
        Some(&"watch") => (true, &rest[1..]),
        _ => (false, rest),
    };
    let unknown = |plural: &str| {
        let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        ApiError::new(404, "NotFound", format!("the server could not find the requested resource ({plural} in {gv})"))
    };
    let lookup = |plural: &str| resources::by_path(group, version, plural).ok_or_else(|| unknown(plural));
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if resources::by_path(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            let res = lookup(plural)?;
            match tail {
                [] => Target { res, namespace: Some(ns.to_string()), name: None, subresource: None, watch_path },
                [name] => Target {
                    res,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    subresource: None,
                    watch_path,
                },
                [name, sub] => Target {
                    res,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    subresource: Some(sub.to_string()),
                    watch_path,
                },
                _ => return Err(unknown(plural)),
            }
        }
        [plural] => Target { res: lookup(plural)?, namespace: None, name: None, subresource: None, watch_path },
        [plural, name] => {
            let res = lookup(plural)?;
            if res.namespaced {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("{} is namespaced: use /namespaces/NAMESPACE/{plural}/{name}", res.kind),
                ));
            }
            Target { res, namespace: None, name: Some(name.to_string()), subresource: None, watch_path }
        }
        ["namespaces", _, other, ..] if !matches!(*other, "status" | "finalize") || rest.len() > 3 => {
            return Err(unknown(other));
        }
        [plural, name, sub] => {
            let res = lookup(plural)?;
            if res.namespaced {
                return Err(unknown(plural));
            }
            Target {
                res,
                namespace: None,
                name: Some(name.to_string()),
                subresource: Some(sub.to_string()),
                watch_path,
            }
        }
        _ => {
            return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
        }
    };
    if let Some(n) = &target.namespace
        && let Some(e) = wasmorch_api::validation::dns1123_label_errors(n)
    {
        return Err(ApiError::bad_request(format!("invalid namespace {n:?}: {e}")));
    }
    Ok(target)
}

/// Query parameters, decoded once.
#[derive(Debug, Default, Clone)]
pub struct Params(pub HashMap<String, String>);

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        let mut m = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(pct_decode(k), pct_decode(v));
        }
        Params(m)
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.0.get(k).map(String::as_str), Some("true" | "1"))
    }
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => {
                Err(ApiError::bad_request(format!("dryRun: Unsupported value: {other:?}: supported values: \"All\"")))
            }
        }
    }
    pub fn u64(&self, k: &str) -> Result<Option<u64>, ApiError> {
        self.get(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("{k}: invalid value {v:?}: must be a non-negative integer"))
                })
            })
            .transpose()
    }
}

fn pct_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body as a JSON value, by content type (JSON or YAML), with the size limit applied.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match ct.as_str() {
        "application/yaml" | "application/x-yaml" | "text/yaml" | "application/apply-patch+yaml" => {
            let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?;
            decode::yaml(text).map_err(ApiError::bad_request)
        }
        protobuf::MEDIA_TYPE => protobuf::decode(body).map_err(ApiError::bad_request),
        _ => decode::json(body).map_err(ApiError::bad_request),
    }
}

/// The media type of the body, without parameters (`application/json` by default).
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "application/json".into())
}

/// Whether the client asked for a `meta.k8s.io` Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    accept(headers).split(',').next().is_some_and(|first| first.contains("as=Table"))
}

pub fn accept(headers: &HeaderMap) -> String {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// Whether the client prefers protobuf: its first `Accept` type is Kubernetes' protobuf (and
/// it did not ask for a Table, which has no protobuf form here).
pub fn wants_protobuf(headers: &HeaderMap) -> bool {
    let accept = accept(headers);
    let first = accept.split(',').next().unwrap_or("");
    first.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(protobuf::MEDIA_TYPE))
        && !first.contains("as=")
}

/// Marks a reply whose JSON body is one API object, which [`negotiate`] may re-encode.
#[derive(Clone, Copy)]
struct ApiObject;

/// Answers in protobuf the clients that ask for it first: object replies (errors included)
/// are re-encoded from their JSON form; kinds without a protobuf form stay JSON.
pub async fn negotiate(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let proto = wants_protobuf(req.headers());
    let resp = next.run(req).await;
    if !proto || resp.extensions().get::<ApiObject>().is_none() {
        return resp;
    }
    use http_body_util::BodyExt;
    let (mut parts, body) = resp.into_parts();
    let Ok(collected) = body.collect().await else {
        return error_response(&ApiError::new(500, "InternalError", "reading the reply"));
    };
    let bytes = collected.to_bytes();
    let encoded = serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string()).and_then(|v| protobuf::encode(&v));
    match encoded {
        Ok(b) => {
            parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(protobuf::MEDIA_TYPE));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(b))
        }
        Err(e) => {
            tracing::debug!("answering JSON to a protobuf client: {e}");
            Response::from_parts(parts, Body::from(bytes))
        }
    }
}

/// A JSON reply with warnings as `Warning` headers.
pub fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut resp = (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if body.get("kind").is_some() {
        resp.extensions_mut().insert(ApiObject);
    }
    with_warnings(resp, warnings)
}

/// A reply of an API object already serialized (it has a `kind`, as every stored object has).
pub fn object_response(code: StatusCode, json: bytes::Bytes, warnings: &[String]) -> Response {
    let mut resp = (code, [(header::CONTENT_TYPE, "application/json")], json).into_response();
    resp.extensions_mut().insert(ApiObject);
    with_warnings(resp, warnings)
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'"))) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// The one place an [`ApiError`] becomes an HTTP reply.
pub fn error_response(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (code, [(header::CONTENT_TYPE, "application/json")], e.to_status_json()).into_response();
    resp.extensions_mut().insert(ApiObject);
    if let Some(s) = e.retry_after_seconds {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

pub struct Reply(pub Result<Response, ApiError>);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(r) => r,
            Err(e) => error_response(&e),
        }
    }
}

/// Read the whole body, refusing more than [`MAX_BODY`] bytes with 413.
pub async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(ApiError::too_large(MAX_BODY)),
        Err(e) => Err(ApiError::bad_request(format!("reading the request body: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_target("apps", "v1", &["namespaces", "default", "deployments", "web", "status"]).unwrap();
        assert_eq!(
            (t.res.kind, t.namespace.as_deref(), t.name.as_deref(), t.subresource.as_deref()),
            ("Deployment", Some("default"), Some("web"), Some("status"))
        );
        let t = parse_target("", "v1", &["namespaces", "kube-system"]).unwrap();
        assert_eq!((t.res.kind, t.name.as_deref()), ("Namespace", Some("kube-system")));
        let t = parse_target("", "v1", &["namespaces", "x", "finalize"]).unwrap();
        assert_eq!((t.res.kind, t.subresource.as_deref()), ("Namespace", Some("finalize")));
        let t = parse_target("", "v1", &["pods"]).unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        let t = parse_target("", "v1", &["watch", "namespaces", "d", "pods"]).unwrap();
        assert!(t.watch_path);
        assert_eq!(parse_target("", "v1", &["widgets"]).unwrap_err().code, 404);
        assert_eq!(parse_target("", "v1", &["pods", "x"]).unwrap_err().code, 404);
        assert_eq!(parse_target("", "v1", &["namespaces", "Bad_NS", "pods"]).unwrap_err().code, 400);
    }

    #[test]
    fn query() {
        let p = Params::parse(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=true&limit=5"));
        assert_eq!(p.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(p.flag("watch"));
        assert_eq!(p.u64("limit").unwrap(), Some(5));
        assert!(!Params::parse(Some("watch=false")).flag("watch"));
        assert_eq!(pct_decode("a%2"), "a%2");
    }
}
