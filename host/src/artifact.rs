//! Fetching a container's component. References:
//! - `file:///path/x.wasm`: a file on the node (local development);
//! - `http(s)://host/path/x.wasm@sha256:<hex>`: downloaded once, verified against the digest,
//!   kept in a content-addressed cache (`<node-data>/images/<hex>.wasm`), `imagePullPolicy`
//!   honoured (`IfNotPresent` uses the cache, `Always` downloads again, `Never` only the cache).
//!
//! OCI references are not supported yet and say so.

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
}

impl Puller {
    pub fn new(cache: PathBuf) -> anyhow::Result<Puller> {
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
        Ok(Puller { cache, client: Client::builder(TokioExecutor::new()).build(tls) })
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
            return Err(invalid(format!(
                "image {image:?}: OCI references are not supported by this node yet; use file:// or an http(s) URL pinned with @sha256:"
            )));
        }
        let (url, digest) = parse_pinned(image)?;
        let cached = self.cache.join(format!("{digest}.wasm"));
        if policy != "Always" {
            if let Ok(b) = tokio::fs::read(&cached).await {
                return Ok(b);
            }
            if policy == "Never" {
                return Err(PullError {
                    reason: "ErrImageNeverPull",
                    message: format!("image {image:?} is not present and imagePullPolicy is Never"),
                });
            }
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
        let got = hex::encode(Sha256::digest(&body));
        if got != digest {
            return Err(pull_err(format!("digest mismatch for {url}: expected sha256:{digest}, got sha256:{got}")));
        }
        let tmp = cached.with_extension("partial");
        tokio::fs::write(&tmp, &body).await.map_err(|e| pull_err(format!("caching {url}: {e}")))?;
        tokio::fs::rename(&tmp, &cached).await.map_err(|e| pull_err(format!("caching {url}: {e}")))?;
        Ok(body.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let p = Puller::new(dir.path().to_path_buf()).unwrap();
        let e = p.fetch("ghcr.io/x/y:1", "IfNotPresent").await.unwrap_err();
        assert_eq!(e.reason, "InvalidImage");
        assert!(e.message.contains("OCI references are not supported"));
        let d = "b".repeat(64);
        let e = p.fetch(&format!("http://127.0.0.1:1/x.wasm@sha256:{d}"), "Never").await.unwrap_err();
        assert_eq!(e.reason, "ErrImageNeverPull");
    }
}
