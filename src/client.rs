//! The CLI's API client: kube-rs for configuration, TLS and HTTP; raw requests so that any
//! kind, Table output and watch streams work the same way.

use anyhow::Context;
use bytes::Bytes;
use futures::{AsyncBufReadExt, Stream, StreamExt, TryStreamExt};
use http::{Method, Request};
use serde_json::Value;
use wasmorch_api::resources::Resource;

pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// Marker: the failure was already printed (kubectl-style); just exit 1.
#[derive(Debug)]
pub struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}
impl std::error::Error for Failed {}

/// An error the server answered with a `Status`.
#[derive(Debug)]
pub struct ApiFailure {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

impl ApiFailure {
    /// kubectl's wording: `Error from server (NotFound): pods "x" not found`.
    pub fn kubectl_line(&self) -> String {
        format!(
            "Error from server ({}): {}",
            if self.reason.is_empty() { "InternalError" } else { &self.reason },
            self.message
        )
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.kubectl_line())
    }
}
impl std::error::Error for ApiFailure {}

pub struct Client {
    kube: kube::Client,
    /// The context's namespace (or `default`).
    pub namespace: String,
}

impl Client {
    pub async fn new(context: Option<String>) -> anyhow::Result<Client> {
        let opts = kube::config::KubeConfigOptions { context: context.clone(), cluster: None, user: None };
        let loaded = kube::config::Kubeconfig::read();
        let servers =
            loaded.as_ref().map(|kc| crate::kubeconfig::servers_of(kc, context.as_deref())).unwrap_or_default();
        let cfg = match loaded {
            Ok(kc) => kube::Config::from_custom_kubeconfig(kc, &opts).await,
            Err(_) => kube::Config::from_kubeconfig(&opts).await,
        };
        let mut cfg = cfg.context("loading kubeconfig (is a cluster running? try `wasmorch up`)")?;
        // Commands see 429 and 503 themselves (as kubectl does): kube-rs would otherwise retry
        // them with back-off for minutes (a drain held by a disruption budget would hang).
        cfg.default_retry = false;
        if servers.len() > 1 {
            cfg.cluster_url = first_answering(&cfg, &servers).await;
        }
        let namespace = cfg.default_namespace.clone();
        let kube = kube::Client::try_from(cfg).context("building the API client")?;
        Ok(Client { kube, namespace })
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        accept: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut req = Request::builder().method(method).uri(path).header(http::header::ACCEPT, accept);
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        let req = req.body(kube::client::Body::from(body))?;
        let resp = self.kube.send(req).await.with_context(|| format!("contacting the API server ({path})"))?;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect_bytes().await.context("reading the response")?;
        Ok((code, body))
    }

    /// A request whose non-2xx answers become [`ApiFailure`].
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        accept: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<Value> {
        let (code, bytes) = self.send(method, path, content_type, accept, body).await?;
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if (200..300).contains(&code) {
            return Ok(v);
        }
        Err(ApiFailure {
            code,
            reason: v["reason"].as_str().unwrap_or("").to_string(),
            message: v["message"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("the server answered {code}: {v}")),
        }
        .into())
    }

    /// Learn the cluster's custom kinds (its CustomResourceDefinitions), so that names and
    /// manifests of them resolve here as built-in ones do. Quietly nothing when they cannot
    /// be listed (an identity without that right).
    pub async fn learn_custom_kinds(&self) {
        if let Ok(list) = self.get_json("/apis/apiextensions.k8s.io/v1/customresourcedefinitions").await {
            let items = list["items"].as_array().cloned().unwrap_or_default();
            wasmorch_api::custom::load(0, &items);
        }
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        self.json(Method::GET, path, None, "application/json", Vec::new()).await
    }

    /// A streamed response body; a non-2xx answer becomes [`ApiFailure`].
    pub async fn stream(&self, path: &str) -> anyhow::Result<impl futures::AsyncRead + Unpin + use<>> {
        let req = Request::builder().method(Method::GET).uri(path).body(Vec::new())?;
        match self.kube.request_stream(req).await {
            Ok(r) => Ok(Box::pin(r)),
            Err(kube::Error::Api(s)) => {
                Err(ApiFailure { code: s.code, reason: s.reason.clone(), message: s.message.clone() }.into())
            }
            Err(e) => Err(anyhow::anyhow!("{path}: {e}")),
        }
    }

    /// Watch events (one JSON value per line) from `path` (which carries `watch=true`).
    pub async fn watch(
        &self,
        path: &str,
        accept: &str,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<Value>> + use<>> {
        let req =
            Request::builder().method(Method::GET).uri(path).header(http::header::ACCEPT, accept).body(Vec::new())?;
        let reader = self.kube.request_stream(req).await.map_err(|e| anyhow::anyhow!("watch {path}: {e}"))?;
        Ok(reader
            .lines()
            .map_err(anyhow::Error::from)
            .and_then(|line| async move { serde_json::from_str::<Value>(&line).map_err(anyhow::Error::from) })
            .boxed())
    }
}

/// How long a listed API server has to answer before the next is tried.
const PROBE: std::time::Duration = std::time::Duration::from_secs(3);

/// The first of `servers` that answers HTTP at all (any status: a 401 is a server), else the
/// first, so that the failure names it.
async fn first_answering(cfg: &kube::Config, servers: &[String]) -> http::Uri {
    let first = cfg.cluster_url.clone();
    for s in servers {
        let Ok(url) = s.parse::<http::Uri>() else { continue };
        let mut c = cfg.clone();
        c.cluster_url = url.clone();
        let Ok(client) = kube::Client::try_from(c) else { continue };
        let Ok(req) = Request::builder().uri("/readyz").body(kube::client::Body::empty()) else { continue };
        match tokio::time::timeout(PROBE, client.send(req)).await {
            Ok(Ok(_)) => return url,
            _ => tracing::debug!("API server {s} did not answer; trying the next"),
        }
    }
    first
}

/// The path of an object or a collection.
pub fn path(res: &Resource, ns: Option<&str>, name: Option<&str>) -> String {
    let base = res.collection_path(ns);
    match name {
        Some(n) => format!("{base}/{n}"),
        None => base,
    }
}

/// Percent-encode a query value.
pub fn q(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
