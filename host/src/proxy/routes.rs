//! The Gateway API on the node: a request to a Gateway listener's port reaches the rule the
//! HTTPRoutes' precedence picks (`wasmorch_api::gateway::Table::route`); its filters run in
//! order (rule's, then the chosen backend's), a backend is drawn by weight, and the request
//! then takes the same path as one to that Service ([`Proxy::forward`]: load balancing,
//! in-process answers, a retry on another endpoint, NetworkPolicies, wake-up).
//!
//! Answers of its own: a redirect (`RequestRedirect`), 500 for a backend that does not
//! resolve or a rule whose weights are all 0 (the specification's choice), 504 when
//! `timeouts.request` or `timeouts.backendRequest` passes first.

use super::{Proxy, ProxyBody, text};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use wasmorch_api::gateway::{self, Filter, HeaderChanges, Rule};

/// Apply a header modifier: set replaces, add appends, remove drops. Names or values that are
/// not valid HTTP are skipped (the API validated their shape already).
pub(super) fn change_headers(h: &mut HeaderMap, c: &HeaderChanges) {
    for (n, v) in &c.set {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(v)) {
            h.insert(n, v);
        }
    }
    for (n, v) in &c.add {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(v)) {
            h.append(n, v);
        }
    }
    for n in &c.remove {
        if let Ok(n) = HeaderName::from_bytes(n.as_bytes()) {
            h.remove(n);
        }
    }
}

fn redirect(status: u16, location: &str) -> hyper::Response<ProxyBody> {
    let mut r = text(status, "");
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

/// `req` with its path (keeping the query) replaced.
fn with_path<B>(mut req: hyper::Request<B>, path: &str) -> hyper::Request<B> {
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = format!("{path}{query}").parse() {
        parts.path_and_query = Some(pq);
        if let Ok(u) = http::Uri::from_parts(parts) {
            *req.uri_mut() = u;
        }
    }
    req
}

/// `req` addressed to `host` (the `Host` header, and the authority when the URI has one).
fn with_host<B>(mut req: hyper::Request<B>, host: &str) -> hyper::Request<B> {
    if let Ok(v) = HeaderValue::from_str(host) {
        req.headers_mut().insert(http::header::HOST, v);
    }
    if req.uri().authority().is_some() {
        let mut parts = req.uri().clone().into_parts();
        if let Ok(a) = host.parse() {
            parts.authority = Some(a);
            if let Ok(u) = http::Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    }
    req
}

impl Proxy {
    /// A request to `port` through the Gateway routes: `Err(req)` when no route of this port
    /// matches it (the caller tries the Ingresses).
    pub(super) async fn gateway_request(
        &self,
        port: u16,
        secure: bool,
        peer: SocketAddr,
        req: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<ProxyBody>, hyper::Request<Incoming>> {
        let table = self.gateway_routes();
        let host = super::ingress::host_of(&req);
        let host_only = host
            .rsplit_once(':')
            .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            .map_or(host.as_str(), |(h, _)| h)
            .to_string();
        let (path, query) = (req.uri().path().to_string(), req.uri().query().unwrap_or("").to_string());
        let hit = {
            let headers = req.headers();
            let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(String::from);
            let view = gateway::Request {
                host: &host_only,
                method: req.method().as_str(),
                path: &path,
                query: &query,
                headers: &header,
            };
            table.route(port, &view).map(|h| (h.rule.clone(), h.prefix.map(String::from)))
        };
        let Some((rule, prefix)) = hit else { return Err(req) };
        Ok(self.through_rule(&rule, prefix.as_deref(), port, secure, &host, peer, req).await)
    }

    #[allow(clippy::too_many_arguments)]
    async fn through_rule(
        &self,
        rule: &Arc<Rule>,
        prefix: Option<&str>,
        port: u16,
        secure: bool,
        host: &str,
        peer: SocketAddr,
        mut req: hyper::Request<Incoming>,
    ) -> hyper::Response<ProxyBody> {
        let picked = gateway::pick(&rule.backends, self.random().0);
        let mut response_changes = Vec::new();
        for f in rule.filters.iter().chain(picked.map(|b| b.filters.iter()).into_iter().flatten()) {
            match f {
                Filter::Redirect(r) => {
                    let scheme = if secure { "https" } else { "http" };
                    let (path, query) = (req.uri().path(), req.uri().query().unwrap_or(""));
                    return redirect(r.status, &gateway::location(r, scheme, host, port, prefix, path, query));
                }
                Filter::RequestHeaders(c) => change_headers(req.headers_mut(), c),
                Filter::ResponseHeaders(c) => response_changes.push(c),
                Filter::Rewrite(w) => {
                    if let Some(p) = &w.path {
                        let path = gateway::changed_path(p, prefix, req.uri().path());
                        req = with_path(req, &path);
                    }
                    if let Some(h) = &w.hostname {
                        req = with_host(req, h);
                    }
                }
            }
        }
        let Some(b) = picked else {
            return text(
                500,
                &format!("HTTPRoute {}/{}: the rule has no backend to send to\n", rule.namespace, rule.route),
            );
        };
        let Some(backend) = &b.backend else {
            return text(
                500,
                &format!(
                    "HTTPRoute {}/{}: a backendRef does not resolve (see its status)\n",
                    rule.namespace, rule.route
                ),
            );
        };
        let Some(route) = self.table().route_to(backend) else {
            return text(
                500,
                &format!(
                    "HTTPRoute {}/{}: the Service {}/{} has no such port\n",
                    rule.namespace, rule.route, backend.namespace, backend.service
                ),
            );
        };
        let limit = match (rule.request_timeout, rule.backend_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let answer = self.forward(&route, self.source_of(peer.ip()), Some(peer.ip()), req);
        let mut resp = match limit {
            None => answer.await,
            Some(t) => match tokio::time::timeout(t, answer).await {
                Ok(r) => r,
                Err(_) => {
                    return text(
                        504,
                        &format!("HTTPRoute {}/{}: no answer within {t:?}\n", rule.namespace, rule.route),
                    );
                }
            },
        };
        for c in response_changes {
            change_headers(resp.headers_mut(), c);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_changes_set_add_and_remove() {
        let mut h = HeaderMap::new();
        h.insert("x-old", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("a"));
        let c = HeaderChanges {
            set: vec![("X-Keep".into(), "b".into()), ("bad name".into(), "x".into())],
            add: vec![("x-keep".into(), "c".into())],
            remove: vec!["x-old".into()],
        };
        change_headers(&mut h, &c);
        let keep: Vec<&str> = h.get_all("x-keep").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(keep, ["b", "c"]);
        assert!(h.get("x-old").is_none() && h.len() == 2);
    }

    #[test]
    fn rewrites_keep_the_query_and_the_authority_follows_the_host() {
        let req = hyper::Request::builder().uri("/old/x?q=1").body(()).unwrap();
        assert_eq!(with_path(req, "/new/x").uri().to_string(), "/new/x?q=1");
        let req = hyper::Request::builder().uri("http://a.example.com/p").body(()).unwrap();
        let req = with_host(req, "b.example.com");
        assert_eq!(req.uri().to_string(), "http://b.example.com/p");
        assert_eq!(req.headers()[http::header::HOST], "b.example.com");
    }
}
