//! Fetching a container's component. References:
//! - `file:///path/x.wasm`: a file on the node (local development);
//! - `http(s)://host/path/x.wasm@sha256:<hex>`: downloaded once, verified against the digest,
//!   kept in a content-addressed cache (`<node-data>/images/<hex>.wasm`), `imagePullPolicy`
//!   honoured (`IfNotPresent` uses the cache, `Always` downloads again, `Never` only the cache).
//! - anything else is an OCI reference (`registry/repo:tag`, `registry/repo@sha256:<manifest>`,
//!   Docker Hub's `name:tag` shorthand), pulled with an OCI distribution client. The manifest
//!   must carry exactly one `application/wasm` layer (the wasm OCI artifact layout, as
//!   `wasmorch push`, `wkg` and `oras` write it). Loopback registries and those named with
//!   `--insecure-registry` are spoken to over plain HTTP, others over HTTPS. A tag's last
//!   resolved layer digest is remembered, so `IfNotPresent` needs no registry once pulled.
//!
//! Every component lands in one content-addressed cache, `<node-data>/images/<sha256>.wasm`,
//! whatever its source, and is verified against its digest before it is used.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Largest component downloaded.
pub const MAX_IMAGE: usize = 64 * 1024 * 1024;

/// Why an image could not be had, as a waiting reason and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullError {
    /// `ErrImagePull`, `ErrImageNeverPull` or `InvalidImage`.
    pub reason: &'static str,
    pub message: String,
}

fn invalid(message: String) -> PullError {
    PullError { reason: "InvalidImage", message }
}

fn pull_err(message: String) -> PullError {
    PullError { reason: "ErrImagePull", message }
}

/// Split `url@sha256:<hex>` into the URL and the lowercase hex digest.
pub fn parse_pinned(image: &str) -> Result<(String, String), PullError> {
    let Some((url, digest)) = image.rsplit_once("@sha256:") else {
        return Err(invalid(format!(
            "image {image:?}: http(s) images must be pinned: append @sha256:<digest of the file>"
        )));
    };
    if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid(format!("image {image:?}: the digest must be 64 hex digits")));
    }
    Ok((url.to_string(), digest.to_ascii_lowercase()))
}

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

pub struct Puller {
    cache: PathBuf,
    client: Client<Https, Empty<Bytes>>,
    /// Registries (`host:port`) spoken to over plain HTTP besides loopback ones.
    insecure: Vec<String>,
}

/// Media type of the one layer of a wasm OCI artifact.
pub const WASM_LAYER: &str = "application/wasm";
/// Media type of its config blob.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";

/// Whether a registry host is on this machine (plain HTTP allowed, as Docker does).
fn is_loopback_registry(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .map_or(registry, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { registry });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An OCI client for one registry, plain HTTP where allowed.
pub fn oci_client(registry: &str, insecure: &[String]) -> oci_client::Client {
    let plain = is_loopback_registry(registry) || insecure.iter().any(|r| r == registry);
    oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: if plain {
            oci_client::client::ClientProtocol::Http
        } else {
            oci_client::client::ClientProtocol::Https
        },
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..Default::default()
    })
}

/// Parse an OCI reference, saying what is wrong with a bad one.
pub fn parse_oci(image: &str) -> Result<oci_client::Reference, PullError> {
    image
        .parse::<oci_client::Reference>()
        .map_err(|e| invalid(format!("image {image:?} is not a valid reference: {e}")))
}

/// Push a component as a wasm OCI artifact; returns the manifest URL.
pub async fn push(component: Vec<u8>, image: &str, insecure: &[String]) -> anyhow::Result<String> {
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
    let client = oci_client(reference.resolve_registry(), insecure);
    let r = client.push(&reference, &[layer], config, &oci_client::secrets::RegistryAuth::Anonymous, None).await?;
    Ok(r.manifest_url)
}

impl Puller {
    pub fn new(cache: PathBuf, insecure: Vec<String>) -> anyhow::Result<Puller> {
        std::fs::create_dir_all(&cache)?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone())
        {
            Ok(b) => b,
            // No system roots (a minimal image): https pulls fail with a clear error, http works.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
        };
        let tls = builder.https_or_http().enable_http1().build();
        std::fs::create_dir_all(cache.join("refs"))?;
        Ok(Puller { cache, client: Client::builder(TokioExecutor::new()).build(tls), insecure })
    }

    /// The component bytes an image reference names, under `policy` (`imagePullPolicy`).
    pub async fn fetch(&self, image: &str, policy: &str) -> Result<Vec<u8>, PullError> {
        if let Some(path) = image.strip_prefix("file://") {
            let p = PathBuf::from(path);
            return tokio::fs::read(&p).await.map_err(|e| pull_err(format!("reading {}: {e}", p.display())));
        }
        if image.trim().is_empty() {
            return Err(invalid("empty image reference".into()));
        }
        if !(image.starts_with("http://") || image.starts_with("https://")) {
            return self.fetch_oci(image, policy).await;
        }
        let (url, digest) = parse_pinned(image)?;
        if let Some(b) = self.cached(image, &digest, policy).await? {
            return Ok(b);
        }
        let uri: http::Uri = url.parse().map_err(|e| invalid(format!("image {image:?}: {e}")))?;
        let resp = self.client.get(uri).await.map_err(|e| pull_err(format!("downloading {url}: {e}")))?;
        if resp.status() != http::StatusCode::OK {
            return Err(pull_err(format!("downloading {url}: the server answered {}", resp.status())));
        }
        let body = Limited::new(resp.into_body(), MAX_IMAGE)
            .collect()
            .await
            .map_err(|e| pull_err(format!("downloading {url}: {e}")))?
            .to_bytes();
        self.verify_and_keep(&url, &digest, body.to_vec()).await
    }

    /// The cached component for `digest` unless the policy says to pull; `Never` without it fails.
    async fn cached(&self, image: &str, digest: &str, policy: &str) -> Result<Option<Vec<u8>>, PullError> {
        if policy != "Always" {
            if let Ok(b) = tokio::fs::read(self.cache.join(format!("{digest}.wasm"))).await {
                return Ok(Some(b));
            }
            if policy == "Never" {
                return Err(PullError {
                    reason: "ErrImageNeverPull",
                    message: format!("image {image:?} is not present and imagePullPolicy is Never"),
                });
            }
        }
        Ok(None)
    }

    /// Check downloaded bytes against their digest and keep them in the cache.
    async fn verify_and_keep(&self, source: &str, digest: &str, body: Vec<u8>) -> Result<Vec<u8>, PullError> {
        let got = hex::encode(Sha256::digest(&body));
        if got != digest {
            return Err(pull_err(format!("digest mismatch for {source}: expected sha256:{digest}, got sha256:{got}")));
        }
        let cached = self.cache.join(format!("{digest}.wasm"));
        let tmp = cached.with_extension("partial");
        tokio::fs::write(&tmp, &body).await.map_err(|e| pull_err(format!("caching {source}: {e}")))?;
        tokio::fs::rename(&tmp, &cached).await.map_err(|e| pull_err(format!("caching {source}: {e}")))?;
        Ok(body)
    }

    /// Where the layer digest last resolved for a reference is remembered.
    fn ref_file(&self, image: &str) -> PathBuf {
        self.cache.join("refs").join(hex::encode(Sha256::digest(image.as_bytes())))
    }

    async fn fetch_oci(&self, image: &str, policy: &str) -> Result<Vec<u8>, PullError> {
        let reference = parse_oci(image)?;
        if policy != "Always" {
            if let Ok(d) = tokio::fs::read_to_string(self.ref_file(image)).await {
                if let Some(b) = self.cached(image, d.trim(), policy).await? {
                    return Ok(b);
                }
            } else if policy == "Never" {
                return Err(PullError {
                    reason: "ErrImageNeverPull",
                    message: format!("image {image:?} is not present and imagePullPolicy is Never"),
                });
            }
        }
        let registry = reference.resolve_registry().to_string();
        let client = oci_client(&registry, &self.insecure);
        let auth = oci_client::secrets::RegistryAuth::Anonymous;
        let what = |e: oci_client::errors::OciDistributionError| {
            use oci_client::errors::OciDistributionError as E;
            let m = match &e {
                E::ImageManifestNotFoundError(_) => format!("{image}: not found in {registry}"),
                E::RegistryError { envelope, .. }
                    if envelope.errors.iter().any(|x| {
                        matches!(
                            x.code,
                            oci_client::errors::OciErrorCode::ManifestUnknown
                                | oci_client::errors::OciErrorCode::NameUnknown
                        )
                    }) =>
                {
                    format!("{image}: not found in {registry}")
                }
                _ => format!("pulling {image}: {e}"),
            };
            pull_err(m)
        };
        let (manifest, _manifest_digest) = client.pull_image_manifest(&reference, &auth).await.map_err(what)?;
        let wasm: Vec<_> = manifest.layers.iter().filter(|l| l.media_type == WASM_LAYER).collect();
        let [layer] = wasm.as_slice() else {
            let types: Vec<&str> = manifest.layers.iter().map(|l| l.media_type.as_str()).collect();
            return Err(invalid(format!(
                "{image} is not a wasm component artifact: expected one {WASM_LAYER} layer, found layers [{}]",
                types.join(", ")
            )));
        };
        let Some(digest) = layer.digest.strip_prefix("sha256:").map(str::to_ascii_lowercase) else {
            return Err(invalid(format!("{image}: unsupported layer digest {}", layer.digest)));
        };
        if layer.size < 0 || layer.size as usize > MAX_IMAGE {
            return Err(invalid(format!(
                "{image}: the component is {} bytes, more than the {MAX_IMAGE} allowed",
                layer.size
            )));
        }
        let bytes = match self.cached(image, &digest, if policy == "Always" { "IfNotPresent" } else { policy }).await? {
            Some(b) => b,
            None => {
                let mut out = Vec::with_capacity(layer.size as usize);
                client.pull_blob(&reference, *layer, &mut out).await.map_err(what)?;
                self.verify_and_keep(image, &digest, out).await?
            }
        };
        let _ = tokio::fs::write(self.ref_file(image), &digest).await;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        assert!(is_loopback_registry("127.0.0.1:5000"));
        assert!(is_loopback_registry("localhost:5000"));
        assert!(is_loopback_registry("[::1]:5000"));
        assert!(is_loopback_registry("127.0.0.9"));
        assert!(!is_loopback_registry("ghcr.io"));
        assert!(!is_loopback_registry("10.0.0.1:5000"));
    }

    #[test]
    fn pinned_references() {
        let d = "a".repeat(64);
        assert_eq!(parse_pinned(&format!("http://h/x.wasm@sha256:{d}")).unwrap(), ("http://h/x.wasm".into(), d));
        assert_eq!(parse_pinned("http://h/x.wasm").unwrap_err().reason, "InvalidImage");
        assert_eq!(parse_pinned("http://h/x.wasm@sha256:abc").unwrap_err().reason, "InvalidImage");
    }

    #[tokio::test]
    async fn other_references_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let p = Puller::new(dir.path().to_path_buf(), vec![]).unwrap();
        let e = p.fetch("Not A Reference!", "IfNotPresent").await.unwrap_err();
        assert_eq!(e.reason, "InvalidImage");
        assert!(e.message.contains("not a valid reference"), "{}", e.message);
        let e = p.fetch("registry.example/x/y:1", "Never").await.unwrap_err();
        assert_eq!(e.reason, "ErrImageNeverPull");
        let d = "b".repeat(64);
        let e = p.fetch(&format!("http://127.0.0.1:1/x.wasm@sha256:{d}"), "Never").await.unwrap_err();
        assert_eq!(e.reason, "ErrImageNeverPull");
    }
}
