//! Layer 7: one request to a Service ([`Proxy::forward`]) or to a pod, the API server or a
//! socket endpoint — answered in process on this node when it can be, else buffered and sent
//! through the endpoint's socket or its node's gateway, with one retry elsewhere.

use super::*;

fn boxed<B>(r: hyper::Response<B>) -> hyper::Response<ProxyBody>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    r.map(|b| b.map_err(Into::into).boxed_unsync())
}

/// A request to send on from this node: its body buffered (to be sent again on a retry), its
/// source named for the receiving gateway. Too large a body is a 413.
async fn buffered<B>(
    from: policy::Source,
    req: hyper::Request<B>,
) -> Result<(http::request::Parts, Bytes), hyper::Response<ProxyBody>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    if let policy::Source::Ip(ip) = from
        && let Ok(v) = http::HeaderValue::from_str(&ip.to_string())
    {
        parts.headers.insert(policy::SOURCE_HEADER, v);
    }
    match http_body_util::Limited::new(body, MAX_BUFFERED).collect().await {
        Ok(b) => Ok((parts, b.to_bytes())),
        Err(e) => Err(text(413, &format!("request body: {e}\n"))),
    }
}

impl Proxy {
    /// One buffered request to an endpoint not answered in process: its socket, or its
    /// node's gateway.
    async fn send(
        &self,
        to: &Chosen,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, Failed> {
        match self.way(to) {
            Way::Here | Way::Direct => {
                let mut up = self
                    .to_socket(parts, to.addr, body)
                    .map_err(|message| Failed { before_endpoint: true, message })?;
                up.headers_mut().remove(policy::SOURCE_HEADER);
                self.forwarded.fetch_add(1, Ordering::Relaxed);
                self.client.request(up).await.map_err(|e| Failed {
                    before_endpoint: e.is_connect(),
                    message: format!("upstream {}: {e}", to.addr),
                })
            }
            Way::Gateway { node, at } => {
                self.via_gateway.fetch_add(1, Ordering::Relaxed);
                self.gateways
                    .request(&node, at, to.addr, parts, body)
                    .await
                    .map_err(|f| Failed { before_endpoint: f.before_pod, message: f.message })
            }
            Way::Unreachable(message) => Err(Failed { before_endpoint: true, message }),
        }
    }

    /// A request like `parts` to the socket serving `addr` (its real one if mapped), naming
    /// `addr` as its host unless it names one.
    pub(crate) fn to_socket(
        &self,
        parts: &http::request::Parts,
        addr: SocketAddr,
        body: Bytes,
    ) -> Result<hyper::Request<Full<Bytes>>, String> {
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut up = gateway::resend(parts, format!("http://{}{path}", self.ports.dialable(addr)), body)?;
        if !up.headers().contains_key(http::header::HOST)
            && let Ok(host) = http::HeaderValue::from_str(&addr.to_string())
        {
            up.headers_mut().insert(http::header::HOST, host);
        }
        Ok(up)
    }

    /// One request from a pod's `wasi:http` to a pod address, wherever that pod runs
    /// (no balancing, no retry: the caller named the pod).
    pub async fn to_pod<B>(
        &self,
        from: policy::Source,
        to: Chosen,
        mut req: hyper::Request<B>,
    ) -> hyper::Response<ProxyBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError> + Into<wasmtime_wasi_http::Error>,
    {
        if let Err(why) = self.judge(from, to.addr) {
            return policy::denied(&why);
        }
        req.headers_mut().remove(policy::SOURCE_HEADER);
        if self.way(&to) == Way::Here
            && let Some(w) = self.local_workload(to.addr)
        {
            self.in_process.fetch_add(1, Ordering::Relaxed);
            // The instance's task charges the container for its request (`HttpWorkload::answer`).
            return boxed(w.handle(req).await);
        }
        let (parts, body) = match buffered(from, req).await {
            Ok(x) => x,
            Err(resp) => return resp,
        };
        match self.send(&to, &parts, body).await {
            Ok(resp) => boxed(resp),
            Err(f) => text(502, &format!("{}\n", f.message)),
        }
    }

    /// A pod's `wasi:http` request to the API server through the `kubernetes` Service: the
    /// API server speaks only TLS, so the node makes the TLS connection for the pod, to the
    /// endpoint the Service names, trusting only the cluster CA and presenting no
    /// certificate (the request carries the pod's token, never the node's identity).
    /// NetworkPolicy judges it like any other request of the pod.
    pub async fn to_api<B>(
        &self,
        route: &Route,
        from: policy::Source,
        req: hyper::Request<B>,
    ) -> hyper::Response<ProxyBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(to) = self.choose(route, None, None) else {
            return text(503, "no endpoints available for service \"default/kubernetes\"\n");
        };
        if let Err(why) = self.judge(from, to.addr) {
            self.done(route, to.addr, true);
            return policy::denied(&why);
        }
        let tls = match self
            .gateways
            .member()
            .ok_or("this node has no cluster CA".to_string())
            .and_then(|m| m.anonymous_tls())
        {
            Ok(t) => t,
            Err(e) => {
                self.done(route, to.addr, false);
                return text(502, &format!("the API server: {e}\n"));
            }
        };
        let (mut parts, body) = match buffered(policy::Source::Node, req).await {
            Ok(x) => x,
            Err(resp) => return resp,
        };
        parts.headers.remove(http::header::HOST);
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        let up = match gateway::resend(&parts, format!("https://{}{path}", to.addr), body) {
            Ok(r) => r,
            Err(e) => return text(400, &format!("{e}\n")),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only()
            .enable_http1()
            .build();
        let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        match client.request(up).await {
            Ok(resp) => {
                self.done(route, to.addr, true);
                boxed(resp)
            }
            Err(e) => {
                self.done(route, to.addr, false);
                text(502, &format!("the API server at {}: {e}\n", to.addr))
            }
        }
    }

    /// Layer 7: one request to the Service behind `route`, from a client connection or from a
    /// pod's `wasi:http` (`from`, judged by NetworkPolicies; `client` for session affinity).
    pub async fn forward<B>(
        &self,
        route: &Route,
        from: policy::Source,
        client: Option<IpAddr>,
        mut req: hyper::Request<B>,
    ) -> hyper::Response<ProxyBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError> + Into<wasmtime_wasi_http::Error>,
    {
        let first = match self.choose(route, client, None) {
            Some(c) => c,
            // None ready: perhaps asleep (scaled to zero); wait while it wakes.
            None => match self.hold(route).await {
                Ok(()) => match self.choose(route, client, None) {
                    Some(c) => c,
                    None => {
                        return text(
                            503,
                            &format!("no endpoints available for service \"{}/{}\"\n", route.ns, route.name),
                        );
                    }
                },
                Err(why) => return text(503, &format!("{why}\n")),
            },
        };
        if let Err(why) = self.judge(from, first.addr) {
            self.done(route, first.addr, true);
            return policy::denied(&why);
        }
        // Only this node says where a request comes from (to a peer's gateway).
        req.headers_mut().remove(policy::SOURCE_HEADER);
        let mut to = first;
        // On this node: in process, no socket hop. A replica that refuses before any instance
        // ran (stopping, or its queue full) leaves the request to one other.
        let mut refusals = 0;
        while self.way(&to) == Way::Here
            && let Some(w) = self.local_workload(to.addr)
        {
            match w.admit().await {
                Ok(admitted) => {
                    self.in_process.fetch_add(1, Ordering::Relaxed);
                    let resp = w.run(admitted, req).await;
                    self.done(route, to.addr, true);
                    return boxed(resp);
                }
                Err(refused) => {
                    self.done(route, to.addr, true);
                    refusals += 1;
                    // A stopping replica may still be the only endpoint this node knows of
                    // (its successor's not arrived yet): wait for the table then. A full
                    // one answers at once.
                    let next = match refusals {
                        1 if crate::runtime::http::refused_stopping(&refused) => {
                            self.elsewhere(route, client, to.addr, from).await
                        }
                        1 => self.next_allowed(route, client, to.addr, from),
                        _ => None,
                    };
                    match next {
                        Some(next) => to = next,
                        None => return boxed(refused),
                    }
                }
            }
        }
        // Elsewhere: buffer the body so a failed connection can be retried on another endpoint.
        let (parts, body) = match buffered(from, req).await {
            Ok(x) => x,
            Err(resp) => return resp,
        };
        for attempt in 0..2 {
            match self.send(&to, &parts, body.clone()).await {
                Ok(resp) if attempt == 0 && resp.headers().contains_key(crate::runtime::http::OVERLOADED) => {
                    // Refused before any instance ran: another replica may have room (or,
                    // this one stopping, be on its way).
                    self.done(route, to.addr, true);
                    let next = if crate::runtime::http::refused_stopping(&resp) {
                        self.elsewhere(route, client, to.addr, from).await
                    } else {
                        self.next_allowed(route, client, to.addr, from)
                    };
                    match next {
                        Some(next) => to = next,
                        None => return boxed(resp),
                    }
                }
                Ok(resp) => {
                    self.done(route, to.addr, true);
                    return boxed(resp);
                }
                Err(f) => {
                    // Only a request that never reached a server is safe to send again.
                    let retry = f.before_endpoint || parts.method.is_idempotent();
                    self.done(route, to.addr, !f.before_endpoint);
                    tracing::debug!("service {}/{}: {}", route.ns, route.name, f.message);
                    if attempt == 1 || !retry {
                        return text(502, &format!("{}\n", f.message));
                    }
                    let next = if f.before_endpoint {
                        self.elsewhere(route, client, to.addr, from).await
                    } else {
                        self.next_allowed(route, client, to.addr, from)
                    };
                    match next {
                        Some(next) => to = next,
                        None => return text(502, &format!("{}\n", f.message)),
                    }
                }
            }
        }
        text(502, "no endpoint answered\n")
    }
}
