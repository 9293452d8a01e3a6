//! The node's membership of a cluster: its key, its certificate, joining and renewal.
//!
//! Joining (`wasmorch node --server URL --token K10<hash>::<id>.<secret>`):
//! 1. fetch the CA from `GET /cacerts` over TLS **without** trusting the server yet, and check
//!    its SHA-256 against the token's pin — on a mismatch stop, having sent nothing secret;
//! 2. make (or reuse) the node's key, which never leaves `<data-dir>/pki/node.key`;
//! 3. over TLS that now verifies the server against that CA, send a certificate request with
//!    the token's credential; the server answers with a certificate for
//!    `system:node:<name>`.
//!
//! From then on the node talks mutual TLS with that certificate, which also serves its own
//! endpoint (logs) to the API server. Before two thirds of its lifetime have passed it asks
//! for a new one with the current one ([`renew_loop`]); the API client and the served
//! identity switch to it without a restart. A node that restarts with valid credentials needs
//! no token; its identity is its name and key, so a changed address changes nothing.

use crate::client::Client;
use anyhow::Context;
use futures::StreamExt;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wasmorch_api::join::JoinToken;

/// What a member holds: the cluster CA, its certificate and its key (PEM).
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Credentials {
    /// When the certificate starts and stops being valid.
    fn validity(&self) -> anyhow::Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
        let der = first_der(&self.cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow::anyhow!("parsing the node certificate: {e}"))?;
        let at = |t: i64| chrono::DateTime::from_timestamp(t, 0).context("certificate time out of range");
        Ok((at(cert.validity().not_before.timestamp())?, at(cert.validity().not_after.timestamp())?))
    }

    /// When the certificate stops being valid.
    pub fn not_after(&self) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
        Ok(self.validity()?.1)
    }

    /// The node name the certificate is for (`system:node:<name>`).
    pub fn node_name(&self) -> Option<String> {
        let cn = peer_common_name(&first_der(&self.cert_pem).ok()?)?;
        cn.strip_prefix(wasmorch_api::join::NODE_USER_PREFIX).map(String::from)
    }

    /// When to renew: two thirds into the certificate's life (kubelet renews at 70–90 %).
    pub fn renew_at(&self) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
        let (from, to) = self.validity()?;
        Ok(from + (to - from) * 2 / 3)
    }

    /// A kube-rs client for `server` authenticating with this certificate.
    pub async fn client(&self, server: &str) -> anyhow::Result<kube::Client> {
        let b64 = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        let kc = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "node",
            "clusters": [{"name": "node", "cluster": {"server": server, "certificate-authority-data": b64(&self.ca_pem)}}],
            "users": [{"name": "node", "user": {"client-certificate-data": b64(&self.cert_pem), "client-key-data": b64(&self.key_pem)}}],
            "contexts": [{"name": "node", "context": {"cluster": "node", "user": "node"}}],
        });
        kube_client(kc).await
    }

    /// The TLS identity the node's own endpoint serves.
    pub fn certified_key(&self) -> anyhow::Result<Arc<rustls::sign::CertifiedKey>> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()).collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())?;
        let provider = rustls::crypto::ring::default_provider();
        Ok(Arc::new(rustls::sign::CertifiedKey::from_der(certs, key, &provider)?))
    }
}

fn first_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    Ok(CertificateDer::pem_slice_iter(pem.as_bytes()).next().context("no certificate in PEM")??.to_vec())
}

/// SHA-256 (hex) of a PEM certificate's DER: what a join token pins.
pub fn ca_hash(ca_pem: &str) -> anyhow::Result<String> {
    Ok(hex::encode(Sha256::digest(first_der(ca_pem)?)))
}

async fn kube_client(kubeconfig: Value) -> anyhow::Result<kube::Client> {
    let kc: kube::config::Kubeconfig = serde_json::from_value(kubeconfig)?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    // The node retries on its own terms (relist, status reports); no minutes-long back-off.
    cfg.default_retry = false;
    cfg.connect_timeout = Some(Duration::from_secs(5));
    http2_client(cfg)
}

/// How often the node pings its HTTP/2 connection to the API server, and how long it waits
/// for the answer before closing it.
const H2_PING_EVERY: Duration = Duration::from_secs(5);

/// A kube-rs client that speaks HTTP/2 where the server offers it (ALPN; wasmorch's API server
/// does): every request and watch of the node shares one TLS connection. kube-rs' own stack
/// speaks HTTP/1.1 only, and its pool opens a connection per request in flight and keeps it
/// idle afterwards: a node starting a few thousand pods held hundreds of TLS connections to
/// the API server (a handshake each on the server, ~14 KB each on the node).
pub fn http2_client(cfg: kube::Config) -> anyhow::Result<kube::Client> {
    use kube::client::ConfigExt;
    let tls = cfg.rustls_client_config()?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(cfg.connect_timeout);
    http.set_nodelay(true);
    let mut https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    if let Some(name) = cfg.tls_server_name.as_ref() {
        let name = rustls::pki_types::ServerName::try_from(name.clone()).context("the TLS server name")?;
        https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let https = https.enable_http1().enable_http2().wrap_connector(http);
    // A connection that stops answering (the server gone, the network cut) is closed after a
    // missed ping, so the next request dials anew (and a node can switch servers) instead of
    // waiting on it for TCP's retransmission back-off, as client-go's HTTP/2 health check does.
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .http2_keep_alive_interval(H2_PING_EVERY)
        .http2_keep_alive_timeout(H2_PING_EVERY)
        .http2_keep_alive_while_idle(true)
        .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(cfg.base_uri_layer())
        .option_layer(cfg.auth_layer()?)
        .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
        .service(hyper);
    Ok(kube::Client::new(service, cfg.default_namespace))
}

/// Where a node keeps its credentials.
pub fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

/// The node's key: made once, kept (mode 0600), never sent anywhere.
pub fn load_or_create_key(dir: &Path) -> anyhow::Result<rcgen::KeyPair> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("node.key");
    let pem = match std::fs::read_to_string(&path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = rcgen::KeyPair::generate()?.serialize_pem();
            write_private(&path, &k)?;
            k
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    rcgen::KeyPair::from_pem(&pem).with_context(|| format!("parsing {}", path.display()))
}

/// A certificate request for `name` signed with the node's key (the server sets the subject).
pub fn csr(key: &rcgen::KeyPair, name: &str) -> anyhow::Result<String> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(rcgen::DnType::CommonName, format!("{}{name}", wasmorch_api::join::NODE_USER_PREFIX));
    Ok(p.serialize_request(key)?.pem()?)
}

fn write_private(path: &Path, data: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    {
        use std::io::Write;
        let mut f = o.open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(data.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Store a certificate (and the CA) beside the key.
pub fn install(dir: &Path, ca_pem: &str, cert_pem: &str) -> anyhow::Result<Credentials> {
    write_private(&dir.join("ca.crt"), ca_pem)?;
    write_private(&dir.join("node.crt"), cert_pem)?;
    load(dir)?.context("the stored credentials do not read back")
}

/// The stored credentials, if all three files are there.
pub fn load(dir: &Path) -> anyhow::Result<Option<Credentials>> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f));
    match (read("ca.crt"), read("node.crt"), read("node.key")) {
        (Ok(ca_pem), Ok(cert_pem), Ok(key_pem)) => Ok(Some(Credentials { ca_pem, cert_pem, key_pem })),
        _ => Ok(None),
    }
}

/// Fetch the server's CA without trusting the server, and check it against `pin`.
pub async fn fetch_ca(server: &str, pin: &str) -> anyhow::Result<String> {
    let kc = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "join",
        "clusters": [{"name": "join", "cluster": {"server": server, "insecure-skip-tls-verify": true}}],
        "users": [{"name": "join", "user": {}}],
        "contexts": [{"name": "join", "context": {"cluster": "join", "user": "join"}}],
    });
    let client = kube_client(kc).await?;
    let req = http::Request::get("/cacerts").body(Vec::new())?;
    let ca = client.request_text(req).await.with_context(|| format!("fetching the CA from {server}"))?;
    let have = ca_hash(&ca).with_context(|| format!("{server}/cacerts is not a certificate"))?;
    if have != pin {
        anyhow::bail!(
            "the server at {server} presents a CA with sha256 {have}, but the token pins {pin}: not sending the token (wrong server, or a token of another cluster)"
        );
    }
    Ok(ca)
}

/// Ask `server` (verified against `ca_pem`) for a certificate for `name`, authenticated by
/// `auth` (a join token's credential, or current credentials when renewing).
async fn request_certificate(
    server: &str,
    ca_pem: &str,
    auth: Auth<'_>,
    name: &str,
    key: &rcgen::KeyPair,
) -> anyhow::Result<String> {
    let client = match auth {
        Auth::Token(credential) => {
            use base64::Engine;
            let kc = json!({
                "apiVersion": "v1", "kind": "Config", "current-context": "join",
                "clusters": [{"name": "join", "cluster": {"server": server,
                    "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem)}}],
                "users": [{"name": "join", "user": {"token": credential}}],
                "contexts": [{"name": "join", "context": {"cluster": "join", "user": "join"}}],
            });
            kube_client(kc).await?
        }
        Auth::Current(creds) => creds.client(server).await?,
    };
    let body = serde_json::to_vec(&json!({"nodeName": name, "csr": csr(key, name)?}))?;
    let req =
        http::Request::post("/wasmorch/v1/node-certificates").header("content-type", "application/json").body(body)?;
    let resp = client.send(req.map(kube::client::Body::from)).await.context("asking for a node certificate")?;
    let status = resp.status();
    let bytes = resp.into_body().collect_bytes().await?;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = v["message"].as_str().map(String::from).unwrap_or_else(|| String::from_utf8_lossy(&bytes).into());
        if status.as_u16() == 401 {
            anyhow::bail!("the server refused the join token (unknown, deleted or expired)");
        }
        anyhow::bail!("the server refused a certificate for {name}: {status} {msg}");
    }
    v["certificate"].as_str().map(String::from).context("the server's answer holds no certificate")
}

enum Auth<'a> {
    Token(&'a str),
    Current(&'a Credentials),
}

/// Join with a token: check the server, then obtain and store a certificate.
pub async fn join(
    server: &str,
    token: &JoinToken,
    ca_file_pem: Option<&str>,
    name: &str,
    dir: &Path,
) -> anyhow::Result<Credentials> {
    let ca = match (&token.ca_hash, ca_file_pem) {
        (Some(pin), Some(ca)) => {
            let have = ca_hash(ca)?;
            anyhow::ensure!(&have == pin, "the CA file's sha256 {have} is not the token's pin {pin}");
            ca.to_string()
        }
        (Some(pin), None) => fetch_ca(server, pin).await?,
        (None, Some(ca)) => ca.to_string(),
        (None, None) => {
            anyhow::bail!("the token has no CA pin (K10<hash>::…); give the full token, or the CA with --ca-file")
        }
    };
    let key = load_or_create_key(dir)?;
    let cert = request_certificate(server, &ca, Auth::Token(&token.credential()), name, &key).await?;
    install(dir, &ca, &cert)
}

/// The node's current credentials, shared by the API client and the node's own endpoint,
/// and the API servers it may use (one at a time; see [`Membership::fail_over`]): those
/// given with `--server`, then those learned from the cluster ([`learn_loop`]).
pub struct Membership {
    /// The `--server` URLs, in order.
    configured: Vec<String>,
    /// Every server known, and the index of the one in use. std RwLock: never held across an
    /// await.
    servers: RwLock<(Vec<String>, usize)>,
    pub name: String,
    pub dir: PathBuf,
    current: RwLock<Credentials>,
}

/// The servers to use: the configured ones in their order, then the learned ones, then the
/// one in use if it is neither (it keeps working until it fails).
fn merged(configured: &[String], learned: &[String], active: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in configured.iter().chain(learned).map(String::as_str).chain(Some(active)) {
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    out
}

impl Membership {
    /// `servers`: API server URLs of one cluster (`--server URL,URL,…`), the first used first.
    pub fn new(servers: Vec<String>, name: String, dir: PathBuf, creds: Credentials) -> Arc<Membership> {
        Arc::new(Membership {
            servers: RwLock::new((servers.clone(), 0)),
            configured: servers,
            name,
            dir,
            current: RwLock::new(creds),
        })
    }

    /// The API server in use.
    pub fn server(&self) -> String {
        let g = self.servers.read().unwrap_or_else(|e| e.into_inner());
        g.0.get(g.1).or(g.0.first()).cloned().unwrap_or_default()
    }

    /// Every API server this node may use, the one in use among them.
    pub fn servers(&self) -> Vec<String> {
        self.servers.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Take the API servers the cluster names (the `kubernetes` Service's endpoints) into the
    /// list; `true` when it changed. The server in use stays in use.
    pub fn learn(&self, learned: &[String]) -> bool {
        let mut g = self.servers.write().unwrap_or_else(|e| e.into_inner());
        let active = g.0.get(g.1).cloned().unwrap_or_default();
        let list = merged(&self.configured, learned, &active);
        if list == g.0 {
            return false;
        }
        let index = list.iter().position(|s| *s == active).unwrap_or(0);
        *g = (list, index);
        true
    }

    /// `client`'s server did not answer a request made at `generation`: move the client to
    /// the next server (in order, wrapping), unless it moved since. Pods keep running; the
    /// node's watches resume from the new server.
    pub async fn fail_over(&self, client: &Client, generation: u64) {
        let (list, from) = self.servers.read().unwrap_or_else(|e| e.into_inner()).clone();
        if list.len() < 2 || client.generation() != generation {
            return;
        }
        let next = (from + 1) % list.len();
        let url = &list[next];
        match self.current().client(url).await {
            Ok(c) => {
                if client.replace_if(generation, c) {
                    let mut g = self.servers.write().unwrap_or_else(|e| e.into_inner());
                    // The list may have been relearned meanwhile: find the server by name.
                    g.1 = g.0.iter().position(|s| s == url).unwrap_or(0);
                    tracing::warn!(from = list[from], to = url.as_str(), "API server unreachable: switched");
                }
            }
            Err(e) => tracing::warn!("switching to API server {url}: {e:#}"),
        }
    }

    /// Make `client` fail over between this node's servers when one is unreachable.
    pub fn fail_over_with(self: &Arc<Self>, client: &Client) {
        let member = Arc::downgrade(self);
        client.on_unreachable(Arc::new(move |c: &Client, generation| {
            if let Some(m) = member.upgrade() {
                let c = c.clone();
                tokio::spawn(async move { m.fail_over(&c, generation).await });
            }
        }));
    }

    /// A snapshot (a lock held for a clone only; renewal replaces the whole value).
    pub fn current(&self) -> Credentials {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A TLS client configuration that trusts the cluster CA and presents no certificate:
    /// what a pod's requests to the API server (the `kubernetes` Service) go out with, so
    /// they carry only the pod's own token, never the node's identity.
    pub fn anonymous_tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let creds = self.current();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(creds.ca_pem.as_bytes()) {
            roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(cfg))
    }

    /// A TLS client configuration that trusts the cluster CA and presents this node's
    /// certificate (the gateway's connections to peers, pulls from the cluster registry),
    /// offering `alpn`; built from the current credentials, so renewals take effect.
    pub fn client_tls(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, String> {
        let creds = self.current();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(creds.ca_pem.as_bytes()) {
            roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(creds.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes()).map_err(|e| e.to_string())?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| e.to_string())?;
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(Arc::new(cfg))
    }

    /// Obtain a new certificate with the current one, store it, and switch to it.
    pub async fn renew(&self, client: &Client) -> anyhow::Result<()> {
        let creds = self.current();
        let key = load_or_create_key(&self.dir)?;
        let server = self.server();
        let cert = request_certificate(&server, &creds.ca_pem, Auth::Current(&creds), &self.name, &key).await?;
        let fresh = install(&self.dir, &creds.ca_pem, &cert)?;
        client.replace(fresh.client(&server).await?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

/// Renew the certificate two thirds into its life, retrying failures, until `stop`.
pub async fn renew_loop(member: Arc<Membership>, client: Client, stop: CancellationToken) {
    loop {
        let creds = member.current();
        let wait = match creds.renew_at() {
            Ok(at) => (at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO),
            Err(e) => {
                tracing::warn!("node certificate: {e:#}");
                Duration::from_secs(60)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        match member.renew(&client).await {
            Ok(()) => {
                tracing::info!(node = member.name, "renewed the node certificate");
                // However the server dates certificates, never renew in a tight loop.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return,
                }
            }
            Err(e) => {
                // Retry soon, but not in a tight loop; past expiry the node needs a token again.
                let left = creds.not_after().map(|t| (t - chrono::Utc::now()).to_std().unwrap_or_default());
                let pause = left.map(|l| (l / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)));
                tracing::warn!("renewing the node certificate: {e:#}");
                tokio::select! {
                    _ = tokio::time::sleep(pause.unwrap_or(Duration::from_secs(10))) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Learn the cluster's API servers from the `kubernetes` Service's Endpoints (every server
/// keeps itself listed there), as k3s agents do: a node given one `--server` can still move
/// to another when that one dies. Read, then watched; read again through whichever server
/// the node uses after an error.
pub async fn learn_loop(member: Arc<Membership>, client: Client, stop: CancellationToken) {
    const PATH: &str = "/api/v1/namespaces/default/endpoints";
    let take = |ep: &Value| {
        let urls = wasmorch_api::services::api_server_urls(ep);
        if !urls.is_empty() && member.learn(&urls) {
            tracing::info!(node = member.name, servers = member.servers().join(","), "API servers");
        }
    };
    loop {
        let follow = async {
            let ep = client.get(&format!("{PATH}/kubernetes")).await?;
            take(&ep);
            let rv = ep.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("0");
            let mut events = Box::pin(
                client
                    .watch(&format!("{PATH}?watch=true&fieldSelector=metadata.name%3Dkubernetes&resourceVersion={rv}"))
                    .await?,
            );
            while let Some(ev) = events.next().await {
                if let Some(ep) = ev?.get("object") {
                    take(ep);
                }
            }
            Ok::<(), crate::client::ApiError>(())
        };
        tokio::select! {
            r = follow => if let Err(e) = r {
                tracing::debug!("following the API servers: {e}");
            },
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Serves the node's current certificate on each TLS handshake, so a renewal takes effect
/// for new connections at once (the parsed key is cached until the certificate changes).
pub struct CurrentCert {
    member: Arc<Membership>,
    cached: RwLock<(String, Arc<rustls::sign::CertifiedKey>)>,
}

impl std::fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl CurrentCert {
    pub fn new(member: Arc<Membership>) -> anyhow::Result<CurrentCert> {
        let c = member.current();
        let key = c.certified_key()?;
        Ok(CurrentCert { member, cached: RwLock::new((c.cert_pem, key)) })
    }
}

impl rustls::server::ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let c = self.member.current();
        {
            let cached = self.cached.read().unwrap_or_else(|e| e.into_inner());
            if cached.0 == c.cert_pem {
                return Some(cached.1.clone());
            }
        }
        let key = c.certified_key().ok()?;
        *self.cached.write().unwrap_or_else(|e| e.into_inner()) = (c.cert_pem, key.clone());
        Some(key)
    }
}

/// TLS configuration of the node's endpoint: its own certificate, and only clients with a
/// certificate from the cluster CA (who they are is decided per connection, see
/// [`crate::endpoint`]). HTTP/2 for the gateway, HTTP/1.1 for the API server.
pub fn endpoint_tls(member: &Arc<Membership>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(member.current().ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(CurrentCert::new(member.clone())?));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The common name of a verified peer certificate.
pub fn peer_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject().iter_common_name().next()?.as_str().ok().map(String::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn learned_servers_follow_the_configured_ones_and_the_one_in_use_stays() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let configured = v(&["https://a:6443"]);
        assert_eq!(
            super::merged(&configured, &v(&["https://b:6443", "https://a:6443", "https://c:6443"]), "https://a:6443"),
            v(&["https://a:6443", "https://b:6443", "https://c:6443"])
        );
        // A server that left the Endpoints but is in use stays until it fails.
        assert_eq!(
            super::merged(&configured, &v(&["https://c:6443"]), "https://b:6443"),
            v(&["https://a:6443", "https://c:6443", "https://b:6443"])
        );
        assert_eq!(super::merged(&configured, &[], ""), configured);
    }

    use super::*;

    #[test]
    fn keys_persist_and_requests_verify() {
        let d = tempfile::tempdir().unwrap();
        let a = load_or_create_key(d.path()).unwrap();
        let b = load_or_create_key(d.path()).unwrap();
        assert_eq!(a.public_key_raw(), b.public_key_raw(), "the key is made once");
        let req = csr(&a, "n1").unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&req).unwrap();
        assert_eq!(rcgen::PublicKeyData::der_bytes(&parsed.public_key), a.public_key_raw());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path().join("node.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
