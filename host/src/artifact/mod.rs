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
//! - `wasmorch.local/NAME:1.0`: a component built into the binary (the examples), never pulled.
//! - `<API server host:port>/NAME:TAG`: the cluster's own registry (the control plane serves
//!   `/v2/`), pulled over the node's mutual TLS (its certificate, the cluster CA), no secret.
//!
//! Every component lands in one content-addressed cache, `<node-data>/images/<sha256>.wasm`,
//! whatever its source, and is verified against its digest before it is used.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

mod builtins;
mod registry;

pub use builtins::{BUILTIN_REGISTRY, BUILTIN_TAGS, Builtins};
use registry::registry_auth;
pub use registry::{Basic, Registry, auth_for, oci_client, parse_oci, push};

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
    builtins: Builtins,
    cluster: Option<ClusterRegistry>,
}

/// The cluster's own registry: the API servers' `host:port`s and how to reach them.
pub struct ClusterRegistry {
    /// The API servers' `host:port`s: an image naming any of them is the cluster's (with
    /// several API servers, each serves the same registry).
    pub servers: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    /// The `host:port` of the API server in use, which pulls go to.
    pub current: Box<dyn Fn() -> String + Send + Sync>,
    /// The node's TLS client configuration (cluster CA, node certificate), current at call.
    pub tls: Box<dyn Fn() -> Result<std::sync::Arc<rustls::ClientConfig>, String> + Send + Sync>,
}

/// The `host:port` of a server URL (`https://host:port`, 443 by default).
pub fn authority_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    Some(format!("{}:{}", uri.host()?, uri.port_u16().unwrap_or(443)))
}

/// Media type of the one layer of a wasm OCI artifact.
pub const WASM_LAYER: &str = "application/wasm";
/// Media type of its config blob.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";

/// A component's bytes, and its digest (hex SHA-256) when the source vouches for it.
pub struct Fetched {
    pub bytes: std::borrow::Cow<'static, [u8]>,
    pub digest: Option<String>,
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
        Ok(Puller {
            cache,
            client: Client::builder(TokioExecutor::new()).build(tls),
            insecure,
            builtins: Builtins::default(),
            cluster: None,
        })
    }

    /// Where pulled components are kept (`<sha256>.wasm`, and `refs/`).
    pub fn cache_dir(&self) -> &std::path::Path {
        &self.cache
    }

    /// Serve these built-in components (see [`BUILTIN_REGISTRY`]).
    pub fn with_builtins(mut self, builtins: Builtins) -> Puller {
        self.builtins = builtins;
        self
    }

    /// Pull references to the cluster's registry (see [`ClusterRegistry`]) from it.
    pub fn with_cluster_registry(mut self, cluster: ClusterRegistry) -> Puller {
        self.cluster = Some(cluster);
        self
    }

    /// Whether a reference names a component built into the binary (present without a pull).
    pub fn is_builtin(&self, image: &str) -> bool {
        matches!(self.builtins.lookup(image), Some(Ok(_)))
    }

    /// The component an image reference names, for a container to load: a built-in one
    /// borrowed from the binary with its digest known (a pod start neither copies nor hashes
    /// it), any other as [`fetch_with`](Self::fetch_with) gives it.
    pub async fn fetch_component(
        &self,
        image: &str,
        policy: &str,
        pull_secrets: &[serde_json::Value],
    ) -> Result<Fetched, PullError> {
        if let Some(found) = self.builtins.lookup_with_digest(image) {
            let (bytes, digest) = found?;
            return Ok(Fetched { bytes: std::borrow::Cow::Borrowed(bytes), digest: Some(digest.to_string()) });
        }
        let bytes = self.fetch_elsewhere(image, policy, pull_secrets).await?;
        Ok(Fetched { bytes: std::borrow::Cow::Owned(bytes), digest: None })
    }

    /// The component bytes an image reference names, under `policy` (`imagePullPolicy`).
    pub async fn fetch(&self, image: &str, policy: &str) -> Result<Vec<u8>, PullError> {
        self.fetch_with(image, policy, &[]).await
    }

    /// As [`fetch`](Self::fetch), with a pod's registry credentials (docker config documents,
    /// see [`auth_for`]).
    pub async fn fetch_with(
        &self,
        image: &str,
        policy: &str,
        pull_secrets: &[serde_json::Value],
    ) -> Result<Vec<u8>, PullError> {
        if let Some(found) = self.builtins.lookup(image) {
            return found.map(<[u8]>::to_vec);
        }
        self.fetch_elsewhere(image, policy, pull_secrets).await
    }

    /// A component that is not built in: a file, a pinned URL or an OCI reference.
    async fn fetch_elsewhere(
        &self,
        image: &str,
        policy: &str,
        pull_secrets: &[serde_json::Value],
    ) -> Result<Vec<u8>, PullError> {
        if let Some(path) = image.strip_prefix("file://") {
            let p = PathBuf::from(path);
            return tokio::fs::read(&p).await.map_err(|e| pull_err(format!("reading {}: {e}", p.display())));
        }
        if image.trim().is_empty() {
            return Err(invalid("empty image reference".into()));
        }
        if !(image.starts_with("http://") || image.starts_with("https://")) {
            return self.fetch_oci(image, policy, pull_secrets).await;
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

    async fn fetch_oci(
        &self,
        image: &str,
        policy: &str,
        pull_secrets: &[serde_json::Value],
    ) -> Result<Vec<u8>, PullError> {
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
        if let Some(cluster) = self.cluster.as_ref().filter(|c| (c.servers)().contains(&registry)) {
            let bytes = self.fetch_cluster(cluster, &reference, image, policy).await?;
            return Ok(bytes);
        }
        let client = oci_client(&registry, &self.insecure);
        let auth = registry_auth(auth_for(pull_secrets, &registry));
        let with_credentials = !matches!(auth, oci_client::secrets::RegistryAuth::Anonymous);
        let unauthorized = |e: &oci_client::errors::OciDistributionError| match with_credentials {
            true => {
                format!("pulling {image}: {registry} refused the credentials ({e}); check the pod's imagePullSecrets")
            }
            false => {
                format!("pulling {image}: {registry} requires authentication ({e}); give the pod imagePullSecrets")
            }
        };
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
                E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => unauthorized(&e),
                E::RegistryError { envelope, .. }
                    if envelope.errors.iter().any(|x| {
                        matches!(
                            x.code,
                            oci_client::errors::OciErrorCode::Unauthorized | oci_client::errors::OciErrorCode::Denied
                        )
                    }) =>
                {
                    unauthorized(&e)
                }
                _ => format!("pulling {image}: {e}"),
            };
            pull_err(m)
        };
        let (manifest, _manifest_digest) = client.pull_image_manifest(&reference, &auth).await.map_err(what)?;
        // The same layer rule as the cluster registry's pulls (one wasm layer, sha256, bounded).
        let json = serde_json::to_vec(&manifest).map_err(|e| invalid(format!("{image}: {e}")))?;
        let (digest, size) = wasm_layer(image, &json)?;
        let Some(layer) = manifest.layers.iter().find(|l| l.media_type == WASM_LAYER) else {
            return Err(invalid(format!("{image}: no {WASM_LAYER} layer")));
        };
        let bytes = match self.cached(image, &digest, if policy == "Always" { "IfNotPresent" } else { policy }).await? {
            Some(b) => b,
            None => {
                let mut out = Vec::with_capacity(size as usize);
                client.pull_blob(&reference, layer, &mut out).await.map_err(what)?;
                self.verify_and_keep(image, &digest, out).await?
            }
        };
        let _ = tokio::fs::write(self.ref_file(image), &digest).await;
        Ok(bytes)
    }
}

impl Puller {
    /// A component from the cluster's registry, over the node's mutual TLS.
    async fn fetch_cluster(
        &self,
        cluster: &ClusterRegistry,
        reference: &oci_client::Reference,
        image: &str,
        policy: &str,
    ) -> Result<Vec<u8>, PullError> {
        let tls = (cluster.tls)().map_err(|e| pull_err(format!("pulling {image}: the node's certificate: {e}")))?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only()
            .enable_http1()
            .build();
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
        let get = |path: String, accept: &'static str| {
            let uri = format!("https://{}/v2/{}/{path}", (cluster.current)(), reference.repository());
            let client = client.clone();
            async move {
                let req = http::Request::get(&uri)
                    .header(http::header::ACCEPT, accept)
                    .body(Empty::new())
                    .map_err(|e| invalid(format!("{image}: {e}")))?;
                let resp = tokio::time::timeout(std::time::Duration::from_secs(60), client.request(req))
                    .await
                    .map_err(|_| pull_err(format!("pulling {image}: the cluster registry did not answer")))?
                    .map_err(|e| pull_err(format!("pulling {image}: {e}")))?;
                let status = resp.status();
                let body = Limited::new(resp.into_body(), MAX_IMAGE)
                    .collect()
                    .await
                    .map_err(|e| pull_err(format!("pulling {image}: {e}")))?
                    .to_bytes();
                match status.as_u16() {
                    200 => Ok(body),
                    404 => Err(pull_err(format!("{image}: not found in the cluster registry"))),
                    code => Err(pull_err(format!(
                        "pulling {image}: the cluster registry answered {code}: {}",
                        String::from_utf8_lossy(&body).trim()
                    ))),
                }
            }
        };
        let tag_or_digest = reference.digest().or(reference.tag()).unwrap_or("latest").to_string();
        let manifest = get(format!("manifests/{tag_or_digest}"), "application/vnd.oci.image.manifest.v1+json").await?;
        let (digest, size) = wasm_layer(image, &manifest)?;
        let bytes = match self.cached(image, &digest, if policy == "Always" { "IfNotPresent" } else { policy }).await? {
            Some(b) => b,
            None => {
                let blob = get(format!("blobs/sha256:{digest}"), "application/octet-stream").await?;
                if blob.len() as u64 != size {
                    return Err(pull_err(format!("{image}: the layer has {} bytes, not {size}", blob.len())));
                }
                self.verify_and_keep(image, &digest, blob.to_vec()).await?
            }
        };
        let _ = tokio::fs::write(self.ref_file(image), &digest).await;
        Ok(bytes)
    }
}

/// The one wasm layer of a manifest: its digest (hex) and size.
pub fn wasm_layer(image: &str, manifest: &[u8]) -> Result<(String, u64), PullError> {
    let m: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| invalid(format!("{image}: the manifest is not JSON: {e}")))?;
    let layers: Vec<&serde_json::Value> = m.get("layers").and_then(|l| l.as_array()).into_iter().flatten().collect();
    let wasm: Vec<&&serde_json::Value> =
        layers.iter().filter(|l| l.get("mediaType").and_then(|t| t.as_str()) == Some(WASM_LAYER)).collect();
    let [layer] = wasm.as_slice() else {
        let types: Vec<&str> = layers.iter().filter_map(|l| l.get("mediaType").and_then(|t| t.as_str())).collect();
        return Err(invalid(format!(
            "{image} is not a wasm component artifact: expected one {WASM_LAYER} layer, found layers [{}]",
            types.join(", ")
        )));
    };
    let digest = layer.get("digest").and_then(|d| d.as_str()).unwrap_or("");
    let Some(hex) =
        digest.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
    else {
        return Err(invalid(format!("{image}: unsupported layer digest {digest:?}")));
    };
    let size = layer.get("size").and_then(|s| s.as_u64()).unwrap_or(u64::MAX);
    if size > MAX_IMAGE as u64 {
        return Err(invalid(format!("{image}: the component is {size} bytes, more than the {MAX_IMAGE} allowed")));
    }
    Ok((hex.to_ascii_lowercase(), size))
}

/// Forget the tags (`refs/`) whose component is no longer in the cache `images`.
pub fn sweep_refs(images: &std::path::Path) {
    for e in std::fs::read_dir(images.join("refs")).into_iter().flatten().flatten() {
        let gone = std::fs::read_to_string(e.path()).is_ok_and(|d| !images.join(format!("{}.wasm", d.trim())).exists());
        if gone {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::registry::is_loopback_registry;
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

    #[test]
    fn pull_secrets_match_the_registry_of_the_reference() {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let configs = [
            serde_json::json!({"auths": {
                "https://index.docker.io/v1/": {"auth": auth},
                "http://127.0.0.1:5000/v2/": {"username": "alice", "password": "pw"},
                "broken.example": {"auth": "not base64!"},
            }}),
            // Legacy .dockercfg: the map itself.
            serde_json::json!({"ghcr.io": {"username": "carol", "password": "x"}}),
        ];
        let basic = |u: &str, p: &str| Some(Basic { username: u.into(), password: p.into() });
        assert_eq!(auth_for(&configs, "docker.io"), basic("bob", "s3cret"));
        assert_eq!(auth_for(&configs, "127.0.0.1:5000"), basic("alice", "pw"));
        assert_eq!(auth_for(&configs, "ghcr.io"), basic("carol", "x"));
        assert_eq!(auth_for(&configs, "127.0.0.1:5001"), None, "another port is another registry");
        assert_eq!(auth_for(&configs, "broken.example"), None);
        assert_eq!(auth_for(&[], "docker.io"), None);
        assert!(!format!("{:?}", basic("bob", "s3cret").unwrap()).contains("s3cret"));
    }

    #[tokio::test]
    async fn builtin_components_answer_by_tag_and_digest_without_a_registry() {
        static HELLO: &[u8] = b"\0asm hello";
        let b = Builtins::new(&[("hello-http", HELLO)]);
        let dir = tempfile::tempdir().unwrap();
        let p = Puller::new(dir.path().to_path_buf(), vec![]).unwrap().with_builtins(b.clone());
        let digest = hex::encode(Sha256::digest(HELLO));
        for image in [
            "wasmorch.local/hello-http:1.0".to_string(),
            "wasmorch.local/hello-http:latest".into(),
            "wasmorch.local/hello-http".into(),
            format!("wasmorch.local/hello-http@sha256:{digest}"),
        ] {
            assert!(p.is_builtin(&image), "{image}");
            // Whatever the policy: the binary is the registry.
            for policy in ["Always", "IfNotPresent", "Never"] {
                assert_eq!(p.fetch(&image, policy).await.unwrap(), HELLO, "{image} {policy}");
                // For a container: borrowed from the binary, its digest known (no hashing).
                let f = p.fetch_component(&image, policy, &[]).await.unwrap();
                assert!(matches!(f.bytes, std::borrow::Cow::Borrowed(b) if b == HELLO), "{image}");
                assert_eq!(f.digest.as_deref(), Some(digest.as_str()));
            }
        }
        for (image, says) in [
            ("wasmorch.local/hello-http:2.0", "no such tag or digest"),
            ("wasmorch.local/nope:1.0", "no such component"),
            ("wasmorch.local/hello-http@sha256:00", "no such tag or digest"),
        ] {
            assert!(!p.is_builtin(image));
            let e = p.fetch(image, "IfNotPresent").await.unwrap_err();
            assert_eq!(e.reason, "ErrImagePull");
            assert!(e.message.contains(says) && e.message.contains("wasmorch.local/hello-http:1.0"), "{}", e.message);
        }
        // Another registry of a similar name is not the built-in one.
        assert!(b.lookup("wasmorch.local.example/hello-http:1.0").is_none());
        let images = b.images();
        assert_eq!(images[0].0[1], "wasmorch.local/hello-http:1.0");
        assert_eq!(images[0].1, HELLO.len());
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
