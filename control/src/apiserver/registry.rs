//! The cluster's own OCI registry (the distribution spec's `/v2/` API), served by the API
//! server on its port, for wasm components: an air-gapped cluster needs nothing else.
//!
//! - Who: the same credentials as the API. A bearer token, or HTTP Basic whose password is
//!   one (any user name: what `oras login`/`docker login` send), or a client certificate.
//!   Admins (`system:masters`) push and delete; nodes (`system:nodes`, over the mutual TLS
//!   they already have) and admins pull. Decided here, not by `authz` (no Kubernetes
//!   resource stands for it).
//! - Storage, under `<data-dir>/registry/`: `blobs/<sha256 hex>` (content-addressed, shared
//!   by every repository; manifests are blobs too), `uploads/<uuid>` (uploads in progress),
//!   `repos/<name>/_manifests/<hex>` (the manifest's media type: the repository holds it)
//!   and `repos/<name>/_tags/<tag>` (the manifest digest). Repository path components start
//!   with `[a-z0-9]`, so `_manifests` and `_tags` cannot clash with one.
//! - Collection ([`collect`]): blobs no manifest references, and abandoned uploads, go after
//!   [`GRACE`] (a push uploads its blobs before the manifest that references them).
//!
//! The decisions (paths, names, digests, what is unreferenced) are pure and unit-tested.

use super::ServerState;
use crate::pki::Identity;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// The largest blob accepted (a component is a few MiB; the node refuses more than this too).
pub const MAX_BLOB: u64 = 256 << 20;
/// The largest manifest accepted.
const MAX_MANIFEST: usize = 4 << 20;
/// How long an unreferenced blob or an idle upload is kept.
pub const GRACE: Duration = Duration::from_secs(3600);

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// What a `/v2/…` path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    Tags {
        name: String,
    },
    Manifest {
        name: String,
        reference: String,
    },
    Blob {
        name: String,
        digest: String,
    },
    /// `/v2/<name>/blobs/uploads/`: start an upload.
    Uploads {
        name: String,
    },
    Upload {
        name: String,
        id: String,
    },
}

/// An OCI error: status, code (the spec's), message.
#[derive(Debug, PartialEq, Eq)]
pub struct Error(pub u16, pub &'static str, pub String);

impl Error {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Error {
        Error(status, code, message.into())
    }
}

/// A repository name as the spec allows it: path components of `[a-z0-9]+` joined by `.`,
/// `_`, `__` or `-`s, separated by `/`.
pub fn valid_name(name: &str) -> bool {
    let component = |c: &str| {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        // Separators between alphanumerics: `.`, `_`, `__` or one or more `-`.
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
                return false;
            }
        }
        true
    };
    !name.is_empty() && name.len() <= 255 && name.split('/').all(component)
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The hex of a `sha256:<64 hex>` digest (the only algorithm stored).
pub fn sha256_hex(digest: &str) -> Result<String, Error> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
        .ok_or_else(|| Error::new(400, "DIGEST_INVALID", format!("{digest:?} is not a sha256 digest")))?;
    Ok(hex.to_string())
}

/// Route a path under `/v2/` (without it: `segs` are the path's segments after `v2`).
pub fn route(segs: &[&str]) -> Result<Route, Error> {
    let bad_name = |n: &str| Error::new(400, "NAME_INVALID", format!("{n:?} is not a valid repository name"));
    let name_of = |parts: &[&str]| {
        let n = parts.join("/");
        if valid_name(&n) { Ok(n) } else { Err(bad_name(&n)) }
    };
    let unknown = || Error::new(404, "NOT_FOUND", "no such registry endpoint");
    match segs {
        [] => Ok(Route::Base),
        [name @ .., "tags", "list"] if !name.is_empty() => Ok(Route::Tags { name: name_of(name)? }),
        [name @ .., "manifests", reference] if !name.is_empty() => {
            if !valid_tag(reference) && sha256_hex(reference).is_err() {
                return Err(Error::new(
                    400,
                    "MANIFEST_INVALID",
                    format!("{reference:?} is neither a tag nor a digest"),
                ));
            }
            Ok(Route::Manifest { name: name_of(name)?, reference: reference.to_string() })
        }
        [name @ .., "blobs", "uploads"] if !name.is_empty() => Ok(Route::Uploads { name: name_of(name)? }),
        [name @ .., "blobs", "uploads", id] if !name.is_empty() => {
            if uuid::Uuid::parse_str(id).is_err() {
                return Err(Error::new(404, "BLOB_UPLOAD_UNKNOWN", format!("upload {id:?} is not known")));
            }
            Ok(Route::Upload { name: name_of(name)?, id: id.to_string() })
        }
        [name @ .., "blobs", digest] if !name.is_empty() => {
            sha256_hex(digest)?;
            Ok(Route::Blob { name: name_of(name)?, digest: digest.to_string() })
        }
        _ => Err(unknown()),
    }
}

/// The digests a manifest (or index) refers to: its config, layers and sub-manifests.
pub fn references(manifest: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(d) = manifest.pointer("/config/digest").and_then(Value::as_str) {
        out.push(d.to_string());
    }
    for list in ["layers", "manifests", "blobs"] {
        for item in manifest.get(list).and_then(Value::as_array).into_iter().flatten() {
            if let Some(d) = item.get("digest").and_then(Value::as_str) {
                out.push(d.to_string());
            }
        }
    }
    out
}

/// Of `blobs` (hex, age), those to delete: not in `referenced` and older than `grace`.
pub fn unreferenced(blobs: &[(String, Duration)], referenced: &HashSet<String>, grace: Duration) -> Vec<String> {
    blobs.iter().filter(|(h, age)| !referenced.contains(h) && *age >= grace).map(|(h, _)| h.clone()).collect()
}

/// Whether `id` may use the registry for `write` (push, delete) or reading.
pub fn permitted(id: &Identity, write: bool) -> bool {
    id.is_admin() || (!write && id.groups.iter().any(|g| g == "system:nodes"))
}

/// The registry's files.
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    pub fn new(data_dir: &Path) -> Registry {
        Registry { root: data_dir.join("registry") }
    }

    fn blob(&self, hex: &str) -> PathBuf {
        self.root.join("blobs").join(hex)
    }

    fn upload(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    fn repo(&self, name: &str) -> PathBuf {
        name.split('/').fold(self.root.join("repos"), |p, c| p.join(c))
    }

    fn tag(&self, name: &str, tag: &str) -> PathBuf {
        self.repo(name).join("_tags").join(tag)
    }

    fn manifest_link(&self, name: &str, hex: &str) -> PathBuf {
        self.repo(name).join("_manifests").join(hex)
    }

    /// The manifest `reference` (tag or digest) of `name`: (hex, media type).
    async fn resolve(&self, name: &str, reference: &str) -> Result<(String, String), Error> {
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
    async fn commit(&self, upload: &Path, hex: &str) -> Result<(), Error> {
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

fn internal(e: impl std::fmt::Display) -> Error {
    Error::new(500, "UNKNOWN", e.to_string())
}

async fn file_sha256(p: &Path) -> std::io::Result<String> {
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
async fn write_into(dir: &Path, from: &Path, to: &Path) -> Result<(), Error> {
    tokio::fs::create_dir_all(dir).await.map_err(internal)?;
    tokio::fs::rename(from, to).await.map_err(internal)
}

/// Write `bytes` to `to` through a temporary file beside it.
async fn write_file(to: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = to.parent().ok_or_else(|| internal("no directory"))?;
    tokio::fs::create_dir_all(dir).await.map_err(internal)?;
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    tokio::fs::write(&tmp, bytes).await.map_err(internal)?;
    tokio::fs::rename(&tmp, to).await.map_err(internal)
}

/// Append a request body to the file `p`, up to [`MAX_BLOB`] in all; the file's new size.
async fn append(p: &Path, body: Body) -> Result<u64, Error> {
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

fn error_response(e: Error) -> Response {
    let Error(status, code, message) = e;
    let body = json!({"errors": [{"code": code, "message": message}]}).to_string();
    let mut r = (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == 401 {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"wasmorch\""));
    }
    r
}

fn reply(status: StatusCode, headers: &[(header::HeaderName, String)], body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k.clone(), v);
        }
    }
    r
}

/// The bearer token of `Authorization: Basic` (its password) or `Bearer`, as `Bearer …`.
fn bearer(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(b) = v.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()?;
        let (_, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        return Some(format!("Bearer {password}"));
    }
    Some(v.to_string())
}

/// `/v2/…`: authenticate, route, act.
pub async fn handle(State(state): State<Arc<ServerState>>, req: Request) -> Response {
    let peer = req.extensions().get::<super::handlers::PeerIdentity>().and_then(|p| p.0.clone());
    let id = match super::handlers::authenticate(&state, bearer(req.headers()), peer).await {
        Ok(id) => id,
        Err(_) => return error_response(Error::new(401, "UNAUTHORIZED", "authentication required")),
    };
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_start_matches("/v2").split('/').filter(|s| !s.is_empty()).collect();
    let r = match route(&segs) {
        Ok(r) => r,
        Err(e) => return error_response(e),
    };
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    if !permitted(&id, write) {
        let what = if write { "push to" } else { "pull from" };
        return error_response(Error::new(403, "DENIED", format!("User \"{}\" cannot {what} the registry", id.user)));
    }
    match act(&state.registry, r, req).await {
        Ok(resp) => resp,
        Err(e) => error_response(e),
    }
}

async fn act(reg: &Registry, r: Route, req: Request) -> Result<Response, Error> {
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    let param = |key: &str| url_query(&query).into_iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let unsupported = || Error::new(405, "UNSUPPORTED", format!("{method} is not supported here"));
    match r {
        Route::Base => {
            Ok(reply(StatusCode::OK, &[(header::CONTENT_TYPE, "application/json".into())], Body::from("{}")))
        }
        Route::Tags { name } => {
            if method != Method::GET {
                return Err(unsupported());
            }
            let mut tags: Vec<String> = std::fs::read_dir(reg.repo(&name).join("_tags"))
                .map_err(|_| Error::new(404, "NAME_UNKNOWN", format!("repository {name} is not known")))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|t| valid_tag(t))
                .collect();
            tags.sort();
            let n = param("n").and_then(|n| n.parse::<usize>().ok());
            if let Some(last) = param("last") {
                tags.retain(|t| *t > last);
            }
            if let Some(n) = n {
                tags.truncate(n);
            }
            let body = json!({"name": name, "tags": tags}).to_string();
            Ok(reply(StatusCode::OK, &[(header::CONTENT_TYPE, "application/json".into())], Body::from(body)))
        }
        Route::Manifest { name, reference } => match method {
            Method::GET | Method::HEAD => {
                let (hex, media) = reg.resolve(&name, &reference).await?;
                let bytes = tokio::fs::read(reg.blob(&hex))
                    .await
                    .map_err(|_| Error::new(404, "MANIFEST_UNKNOWN", format!("manifest sha256:{hex} is gone")))?;
                let headers = [
                    (header::CONTENT_TYPE, media),
                    (header::CONTENT_LENGTH, bytes.len().to_string()),
                    (header::HeaderName::from_static("docker-content-digest"), format!("sha256:{hex}")),
                ];
                let body = if method == Method::HEAD { Body::empty() } else { Body::from(bytes) };
                Ok(reply(StatusCode::OK, &headers, body))
            }
            Method::PUT => put_manifest(reg, &name, &reference, req).await,
            Method::DELETE => {
                let hex = sha256_hex(&reference).map_err(|_| {
                    Error::new(400, "UNSUPPORTED", "delete a manifest by its digest (a tag goes with its manifest)")
                })?;
                reg.resolve(&name, &reference).await?;
                tokio::fs::remove_file(reg.manifest_link(&name, &hex)).await.map_err(internal)?;
                let digest = format!("sha256:{hex}");
                for e in std::fs::read_dir(reg.repo(&name).join("_tags")).into_iter().flatten().flatten() {
                    if std::fs::read_to_string(e.path()).is_ok_and(|d| d.trim() == digest) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
                Ok(reply(StatusCode::ACCEPTED, &[], Body::empty()))
            }
            _ => Err(unsupported()),
        },
        Route::Blob { name: _, digest } => {
            let hex = sha256_hex(&digest)?;
            match method {
                Method::GET | Method::HEAD => {
                    let p = reg.blob(&hex);
                    let unknown = || Error::new(404, "BLOB_UNKNOWN", format!("blob {digest} is not known"));
                    let len = tokio::fs::metadata(&p).await.map_err(|_| unknown())?.len();
                    let headers = [
                        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                        (header::CONTENT_LENGTH, len.to_string()),
                        (header::HeaderName::from_static("docker-content-digest"), digest.clone()),
                    ];
                    if method == Method::HEAD {
                        return Ok(reply(StatusCode::OK, &headers, Body::empty()));
                    }
                    let f = tokio::fs::File::open(&p).await.map_err(|_| unknown())?;
                    let body = Body::from_stream(tokio_util::io::ReaderStream::new(f));
                    Ok(reply(StatusCode::OK, &headers, body))
                }
                // Blobs are shared; the collector removes those no manifest needs.
                Method::DELETE => Err(Error::new(405, "UNSUPPORTED", "blobs go when no manifest references them")),
                _ => Err(unsupported()),
            }
        }
        Route::Uploads { name } => {
            if method != Method::POST {
                return Err(unsupported());
            }
            // A blob this registry has is "mounted" at once, whichever repository it came from.
            if let Some(digest) = param("mount") {
                let hex = sha256_hex(&digest)?;
                if tokio::fs::metadata(reg.blob(&hex)).await.is_ok() {
                    return Ok(created_blob(&name, &digest));
                }
            }
            let id = uuid::Uuid::new_v4().to_string();
            let p = reg.upload(&id);
            tokio::fs::create_dir_all(reg.root.join("uploads")).await.map_err(internal)?;
            let size = append(&p, req.into_body()).await?;
            // Monolithic: POST with the digest and the whole body.
            if let Some(digest) = param("digest") {
                let hex = sha256_hex(&digest)?;
                reg.commit(&p, &hex).await?;
                return Ok(created_blob(&name, &digest));
            }
            Ok(upload_reply(StatusCode::ACCEPTED, &name, &id, size))
        }
        Route::Upload { name, id } => {
            let p = reg.upload(&id);
            let unknown = || Error::new(404, "BLOB_UPLOAD_UNKNOWN", format!("upload {id} is not known"));
            let size = tokio::fs::metadata(&p).await.map_err(|_| unknown())?.len();
            match method {
                Method::GET => Ok(upload_reply(StatusCode::NO_CONTENT, &name, &id, size)),
                Method::PATCH => {
                    // A chunk must continue where the upload stands.
                    if let Some(range) = req.headers().get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()) {
                        let start = range.split('-').next().and_then(|s| s.trim().parse::<u64>().ok());
                        if start != Some(size) {
                            return Err(Error::new(416, "BLOB_UPLOAD_INVALID", format!("the upload has {size} bytes")));
                        }
                    }
                    let size = append(&p, req.into_body()).await?;
                    Ok(upload_reply(StatusCode::ACCEPTED, &name, &id, size))
                }
                Method::PUT => {
                    let digest = param("digest")
                        .ok_or_else(|| Error::new(400, "DIGEST_INVALID", "the digest parameter is required"))?;
                    let hex = sha256_hex(&digest)?;
                    append(&p, req.into_body()).await?;
                    reg.commit(&p, &hex).await?;
                    Ok(created_blob(&name, &digest))
                }
                Method::DELETE => {
                    let _ = tokio::fs::remove_file(&p).await;
                    Ok(reply(StatusCode::NO_CONTENT, &[], Body::empty()))
                }
                _ => Err(unsupported()),
            }
        }
    }
}

fn created_blob(name: &str, digest: &str) -> Response {
    let headers = [
        (header::LOCATION, format!("/v2/{name}/blobs/{digest}")),
        (header::HeaderName::from_static("docker-content-digest"), digest.to_string()),
        (header::CONTENT_LENGTH, "0".to_string()),
    ];
    reply(StatusCode::CREATED, &headers, Body::empty())
}

fn upload_reply(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    let headers = [
        (header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}")),
        (header::RANGE, format!("0-{}", size.saturating_sub(1))),
        (header::HeaderName::from_static("docker-upload-uuid"), id.to_string()),
        (header::CONTENT_LENGTH, "0".to_string()),
    ];
    reply(status, &headers, Body::empty())
}

async fn put_manifest(reg: &Registry, name: &str, reference: &str, req: Request) -> Result<Response, Error> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = axum::body::to_bytes(req.into_body(), MAX_MANIFEST)
        .await
        .map_err(|e| Error::new(400, "MANIFEST_INVALID", format!("reading the manifest: {e}")))?;
    let m: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::new(400, "MANIFEST_INVALID", format!("the manifest is not JSON: {e}")))?;
    if !m.is_object() {
        return Err(Error::new(400, "MANIFEST_INVALID", "the manifest is not a JSON object"));
    }
    let media = m.get("mediaType").and_then(Value::as_str).map(str::to_string).unwrap_or(content_type);
    if ![OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST].contains(&media.as_str()) {
        return Err(Error::new(400, "MANIFEST_INVALID", format!("unsupported manifest media type {media:?}")));
    }
    let hex = hex::encode(Sha256::digest(&bytes));
    if let Ok(want) = sha256_hex(reference)
        && want != hex
    {
        return Err(Error::new(400, "DIGEST_INVALID", format!("the manifest's digest is sha256:{hex}")));
    }
    for d in references(&m) {
        let h = sha256_hex(&d).map_err(|_| Error::new(400, "MANIFEST_INVALID", format!("bad digest {d:?}")))?;
        if tokio::fs::metadata(reg.blob(&h)).await.is_err() {
            return Err(Error::new(400, "MANIFEST_BLOB_UNKNOWN", format!("the manifest references {d}, not uploaded")));
        }
    }
    write_file(&reg.blob(&hex), &bytes).await?;
    write_file(&reg.manifest_link(name, &hex), media.as_bytes()).await?;
    let digest = format!("sha256:{hex}");
    if sha256_hex(reference).is_err() {
        write_file(&reg.tag(name, reference), digest.as_bytes()).await?;
    }
    let headers = [
        (header::LOCATION, format!("/v2/{name}/manifests/{digest}")),
        (header::HeaderName::from_static("docker-content-digest"), digest),
        (header::CONTENT_LENGTH, "0".to_string()),
    ];
    Ok(reply(StatusCode::CREATED, &headers, Body::empty()))
}

/// `k=v&k2=v2`, percent-decoded.
fn url_query(q: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16)
            {
                out.push(x);
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
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

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn paths_route_as_the_distribution_spec_says() {
        assert_eq!(route(&[]), Ok(Route::Base));
        assert_eq!(route(&["a", "b", "tags", "list"]), Ok(Route::Tags { name: "a/b".into() }));
        assert_eq!(
            route(&["hello", "manifests", "1.0"]),
            Ok(Route::Manifest { name: "hello".into(), reference: "1.0".into() })
        );
        assert_eq!(
            route(&["hello", "manifests", D]),
            Ok(Route::Manifest { name: "hello".into(), reference: D.into() })
        );
        assert_eq!(route(&["x", "blobs", D]), Ok(Route::Blob { name: "x".into(), digest: D.into() }));
        assert_eq!(route(&["x", "blobs", "uploads"]), Ok(Route::Uploads { name: "x".into() }));
        let id = "6b3c8f3e-2f4e-4c65-9f0a-4a9c0f7f1d2e";
        assert_eq!(route(&["x", "blobs", "uploads", id]), Ok(Route::Upload { name: "x".into(), id: id.into() }));
        assert_eq!(route(&["x", "blobs", "uploads", "../../etc"]).unwrap_err().1, "BLOB_UPLOAD_UNKNOWN");
        assert_eq!(route(&["Hello", "manifests", "1"]).unwrap_err().1, "NAME_INVALID");
        assert_eq!(route(&["..", "manifests", "1"]).unwrap_err().1, "NAME_INVALID");
        assert_eq!(route(&["x", "manifests", "no:tag"]).unwrap_err().1, "MANIFEST_INVALID");
        assert_eq!(route(&["x", "manifests", "-bad"]).unwrap_err().1, "MANIFEST_INVALID");
        assert_eq!(route(&["x", "blobs", "sha256:zz"]).unwrap_err().1, "DIGEST_INVALID");
        assert_eq!(route(&["x", "other"]).unwrap_err().0, 404);
    }

    #[test]
    fn names_tags_and_digests() {
        for ok in ["a", "a/b", "my-app", "a__b", "a.b/c_d", "x--y", "0"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "A", "a/", "/a", "a//b", "_a", "a_", "a._b", "a___b", "_manifests", ".."] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_tag("1.0") && valid_tag("_x") && valid_tag(&"a".repeat(128)));
        assert!(!valid_tag("") && !valid_tag(".x") && !valid_tag("-x") && !valid_tag(&"a".repeat(129)));
        assert!(sha256_hex(D).is_ok());
        assert!(sha256_hex(&D.to_uppercase()).is_err() && sha256_hex("sha512:00").is_err());
    }

    #[test]
    fn only_unreferenced_blobs_past_the_grace_go() {
        let m = json!({"config": {"digest": D}, "layers": [{"digest": "sha256:ab"}], "manifests": [{"digest": "sha256:cd"}]});
        assert_eq!(references(&m), [D, "sha256:ab", "sha256:cd"]);
        let referenced: HashSet<String> = ["kept".to_string()].into();
        let h = Duration::from_secs(3600);
        let blobs =
            vec![("kept".to_string(), 2 * h), ("old".to_string(), 2 * h), ("new".to_string(), Duration::from_secs(5))];
        assert_eq!(unreferenced(&blobs, &referenced, h), ["old"]);
    }

    #[test]
    fn admins_push_nodes_pull() {
        let node = Identity { user: "system:node:n1".into(), groups: vec!["system:nodes".into()] };
        let other = Identity { user: "x".into(), groups: vec!["system:authenticated".into()] };
        assert!(permitted(&Identity::admin(), true) && permitted(&Identity::admin(), false));
        assert!(permitted(&node, false) && !permitted(&node, true));
        assert!(!permitted(&other, false));
    }

    #[test]
    fn queries_decode() {
        assert_eq!(
            url_query("digest=sha256%3Aab&n=2"),
            [("digest".to_string(), "sha256:ab".to_string()), ("n".to_string(), "2".to_string())]
        );
    }

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
