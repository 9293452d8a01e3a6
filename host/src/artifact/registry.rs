//! Registries: credentials from pull secrets, OCI clients (plain HTTP where allowed), push.

use super::{PullError, WASM_CONFIG, WASM_LAYER, invalid};

/// Credentials for a private registry, from a pod's `imagePullSecrets`.
#[derive(Clone, PartialEq, Eq)]
pub struct Basic {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Basic({}, <password>)", self.username)
    }
}

/// What the OCI client presents: basic credentials, or nothing.
pub(super) fn registry_auth(basic: Option<Basic>) -> oci_client::secrets::RegistryAuth {
    match basic {
        Some(b) => oci_client::secrets::RegistryAuth::Basic(b.username, b.password),
        None => oci_client::secrets::RegistryAuth::Anonymous,
    }
}

/// The registry host (`host[:port]`) a docker config key names: `https://index.docker.io/v1/`,
/// `http://host:5000/path`, `host:5000` all reduce to their host and port, Docker Hub's to
/// `docker.io` (as references name it).
fn config_key_registry(key: &str) -> String {
    let k = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = k.split('/').next().unwrap_or("").to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".into(),
        _ => host,
    }
}

/// The credentials for `registry` in docker config documents (the decoded
/// `.dockerconfigjson` of `kubernetes.io/dockerconfigjson` Secrets, `{"auths": {…}}`, or the
/// legacy `.dockercfg` map), first match in order; `username`/`password` or `auth`
/// (base64 of `user:password`).
pub fn auth_for(configs: &[serde_json::Value], registry: &str) -> Option<Basic> {
    use base64::Engine as _;
    let registry = config_key_registry(registry);
    configs.iter().find_map(|doc| {
        let entries = doc.get("auths").unwrap_or(doc).as_object()?;
        entries.iter().filter(|(k, _)| config_key_registry(k) == registry).find_map(|(_, e)| {
            let field = |k: &str| e.get(k).and_then(serde_json::Value::as_str).filter(|v| !v.is_empty());
            if let (Some(u), Some(p)) = (field("username"), field("password")) {
                return Some(Basic { username: u.into(), password: p.into() });
            }
            let decoded = base64::engine::general_purpose::STANDARD.decode(field("auth")?).ok()?;
            let (u, p) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
            Some(Basic { username: u.into(), password: p.into() })
        })
    })
}

/// Whether a registry host is on this machine (plain HTTP allowed, as Docker does).
pub(super) fn is_loopback_registry(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .map_or(registry, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { registry });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An OCI client for one registry, plain HTTP where allowed.
pub fn oci_client(registry: &str, insecure: &[String]) -> oci_client::Client {
    let plain = is_loopback_registry(registry) || insecure.iter().any(|r| r == registry);
    oci_client_with(plain, None)
}

fn oci_client_with(plain: bool, ca_pem: Option<&[u8]>) -> oci_client::Client {
    use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
    oci_client::Client::new(ClientConfig {
        protocol: if plain { ClientProtocol::Http } else { ClientProtocol::Https },
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        extra_root_certificates: ca_pem
            .map(|pem| vec![Certificate { encoding: CertificateEncoding::Pem, data: pem.to_vec() }])
            .unwrap_or_default(),
        ..Default::default()
    })
}

/// Where a push goes: plain HTTP (besides loopback registries, which always are), basic
/// credentials, and a CA to trust besides the system's (the cluster's, for its registry,
/// which is then spoken to over HTTPS even on loopback).
#[derive(Default)]
pub struct Registry {
    pub insecure: bool,
    pub auth: Option<Basic>,
    pub ca_pem: Option<Vec<u8>>,
}

/// Parse an OCI reference, saying what is wrong with a bad one.
pub fn parse_oci(image: &str) -> Result<oci_client::Reference, PullError> {
    image
        .parse::<oci_client::Reference>()
        .map_err(|e| invalid(format!("image {image:?} is not a valid reference: {e}")))
}

/// Push a component as a wasm OCI artifact; returns the manifest URL.
pub async fn push(component: Vec<u8>, image: &str, to: Registry) -> anyhow::Result<String> {
    let reference = parse_oci(image).map_err(|e| anyhow::anyhow!(e.message))?;
    if !component.starts_with(b"\0asm") {
        anyhow::bail!("not a WebAssembly binary");
    }
    let layer = oci_client::client::ImageLayer::new(component, WASM_LAYER.to_string(), None);
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer.sha256_digest()],
        "created": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    let config = oci_client::client::Config::new(serde_json::to_vec(&config)?, WASM_CONFIG.to_string(), None);
    let plain = to.ca_pem.is_none() && (to.insecure || is_loopback_registry(reference.resolve_registry()));
    let client = oci_client_with(plain, to.ca_pem.as_deref());
    let r = client.push(&reference, &[layer], config, &registry_auth(to.auth), None).await?;
    Ok(r.manifest_url)
}
