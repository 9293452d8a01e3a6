//! The registry's files under `<data-dir>/registry/` and their collector.

#[cfg(test)]
use super::rules::OCI_MANIFEST;
use super::rules::{Error, references, sha256_hex, unreferenced};
use axum::body::Body;
use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// The largest blob accepted (a component is a few MiB; the node refuses more than this too).
pub const MAX_BLOB: u64 = 256 << 20;
/// How long an unreferenced blob or an idle upload is kept.
pub const GRACE: Duration = Duration::from_secs(3600);

/// The registry's files.
pub struct Registry {
    pub(super) root: PathBuf,
    /// This API server's address among several (`peers` asks the others); `None`: alone.
    pub(super) advertise: Option<std::net::SocketAddr>,
}

impl Registry {
    pub fn new(data_dir: &Path) -> Registry {
        Registry { root: data_dir.join("registry"), advertise: None }
    }

    /// The registry of the API server advertised at `addr`, which may fill in from its peers.
    pub fn serving_at(self, addr: std::net::SocketAddr) -> Registry {
        Registry { advertise: Some(addr), ..self }
    }

    pub(super) fn blob(&self, hex: &str) -> PathBuf {
        self.root.join("blobs").join(hex)
    }

    pub(super) fn upload(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    pub(super) fn repo(&self, name: &str) -> PathBuf {
        name.split('/').fold(self.root.join("repos"), |p, c| p.join(c))
    }

    pub(super) fn tag(&self, name: &str, tag: &str) -> PathBuf {
        self.repo(name).join("_tags").join(tag)
    }

    pub(super) fn manifest_link(&self, name: &str, hex: &str) -> PathBuf {
        self.repo(name).join("_manifests").join(hex)
    }

    /// The manifest `reference` (tag or digest) of `name`: (hex, media type).
    pub(super) async fn resolve(&self, name: &str, reference: &str) -> Result<(String, String), Error> {
        let unknown = || Error::new(404, "MANIFEST_UNKNOWN", format!("manifest {name}:{reference} is not known"));
        let hex = match sha256_hex(reference) {
            Ok(h) => h,
            Err(_) => {
                let d = tokio::fs::read_to_string(self.tag(name, reference)).await.map_err(|_| unknown())?;
                sha256_hex(d.trim()).map_err(|_| unknown())?
            }
        };
        let media = tokio::fs::read_to_string(self.manifest_link(name, &hex)).await.map_err(|_| unknown())?;
        Ok((hex, media.trim().to_string()))
    }

    /// Move a finished upload into place, if its content has `hex` as digest.
    pub(super) async fn commit(&self, upload: &Path, hex: &str) -> Result<(), Error> {
        let got = file_sha256(upload).await.map_err(internal)?;
        if got != hex {
            let _ = tokio::fs::remove_file(upload).await;
            return Err(Error::new(400, "DIGEST_INVALID", format!("the content's digest is sha256:{got}")));
        }
        write_into(&self.root.join("blobs"), upload, &self.blob(hex)).await
    }

    /// Every manifest of every repository: (repository dir, hex).
    fn all_manifests(&self) -> Vec<String> {
        fn walk(dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if e.file_name() == "_manifests" {
                    out.extend(
                        std::fs::read_dir(&p)
                            .into_iter()
                            .flatten()
                            .flatten()
                            .map(|m| m.file_name().to_string_lossy().into_owned()),
                    );
                } else if e.file_name() != "_tags" && p.is_dir() {
                    walk(&p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root.join("repos"), &mut out);
        out
    }

    /// Delete unreferenced blobs and idle uploads older than `grace`; returns what went.
    pub fn collect(&self, grace: Duration) -> usize {
        let now = SystemTime::now();
        let age = |e: &std::fs::DirEntry| {
            e.metadata().and_then(|m| m.modified()).ok().and_then(|t| now.duration_since(t).ok()).unwrap_or_default()
        };
        let mut referenced = HashSet::new();
        for hex in self.all_manifests() {
            referenced.insert(hex.clone());
            let Ok(bytes) = std::fs::read(self.blob(&hex)) else { continue };
            let Ok(m) = serde_json::from_slice::<Value>(&bytes) else { continue };
            referenced.extend(references(&m).iter().filter_map(|d| sha256_hex(d).ok()));
        }
        let blobs: Vec<(String, Duration)> = std::fs::read_dir(self.root.join("blobs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), age(&e)))
            .collect();
        let mut gone = 0;
        for hex in unreferenced(&blobs, &referenced, grace) {
            gone += usize::from(std::fs::remove_file(self.blob(&hex)).is_ok());
        }
        for e in std::fs::read_dir(self.root.join("uploads")).into_iter().flatten().flatten() {
            if age(&e) >= grace {
                gone += usize::from(std::fs::remove_file(e.path()).is_ok());
            }
        }
        gone
    }
}

pub(super) fn internal(e: impl std::fmt::Display) -> Error {
    Error::new(500, "UNKNOWN", e.to_string())
}

pub(super) async fn file_sha256(p: &Path) -> std::io::Result<String> {
    let p = p.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(p)?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Rename `from` to `to` (creating `to`'s directory `dir`).
pub(super) async fn write_into(dir: &Path, from: &Path, to: &Path) -> Result<(), Error> {
    tokio::fs::create_dir_all(dir).await.map_err(internal)?;
    tokio::fs::rename(from, to).await.map_err(internal)
}

/// Write `bytes` to `to` through a temporary file beside it.
pub(super) async fn write_file(to: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = to.parent().ok_or_else(|| internal("no directory"))?;
    tokio::fs::create_dir_all(dir).await.map_err(internal)?;
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    tokio::fs::write(&tmp, bytes).await.map_err(internal)?;
    tokio::fs::rename(&tmp, to).await.map_err(internal)
}

/// Append a request body to the file `p`, up to [`MAX_BLOB`] in all; the file's new size.
pub(super) async fn append(p: &Path, body: Body) -> Result<u64, Error> {
    let mut f = tokio::fs::OpenOptions::new().create(true).append(true).open(p).await.map_err(internal)?;
    let mut size = f.metadata().await.map_err(internal)?.len();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::new(400, "BLOB_UPLOAD_INVALID", format!("reading the body: {e}")))?;
        size += chunk.len() as u64;
        if size > MAX_BLOB {
            drop(f);
            let _ = tokio::fs::remove_file(p).await;
            return Err(Error::new(413, "SIZE_INVALID", format!("a blob may have at most {MAX_BLOB} bytes")));
        }
        f.write_all(&chunk).await.map_err(internal)?;
    }
    f.flush().await.map_err(internal)?;
    Ok(size)
}

/// Collect every [`GRACE`]/6 until `stop`.
pub async fn collector(registry: Arc<Registry>, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(GRACE / 6) => {}
            _ = stop.cancelled() => return,
        }
        let r = registry.clone();
        if let Ok(n) = tokio::task::spawn_blocking(move || r.collect(GRACE)).await
            && n > 0
        {
            tracing::info!("registry: removed {n} unreferenced blobs and idle uploads");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn the_collector_keeps_what_manifests_reference() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path());
        let blob = |bytes: &[u8]| {
            let hex = hex::encode(Sha256::digest(bytes));
            std::fs::create_dir_all(reg.root.join("blobs")).unwrap();
            std::fs::write(reg.blob(&hex), bytes).unwrap();
            hex
        };
        let (layer, stray) = (blob(b"layer"), blob(b"stray"));
        let manifest =
            json!({"mediaType": OCI_MANIFEST, "layers": [{"digest": format!("sha256:{layer}")}]}).to_string();
        let m = blob(manifest.as_bytes());
        write_file(&reg.manifest_link("a/b", &m), OCI_MANIFEST.as_bytes()).await.unwrap();
        assert_eq!(reg.collect(Duration::ZERO), 1);
        assert!(reg.blob(&layer).exists() && reg.blob(&m).exists() && !reg.blob(&stray).exists());
        assert_eq!(reg.collect(Duration::from_secs(3600)), 0, "young blobs wait for the grace");
    }
}
