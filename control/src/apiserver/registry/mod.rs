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
//! - Several API servers: tags are in the store (`tags`), manifests and blobs on each
//!   server's disk, filled in from the other servers on a miss (`peers`).
//! - Collection ([`collect`]): blobs no manifest references, and abandoned uploads, go after
//!   [`GRACE`] (a push uploads its blobs before the manifest that references them).
//!
//! The decisions (paths, names, digests, what is unreferenced) are pure and unit-tested.

mod peers;
mod rules;
mod store;
mod tags;

pub use rules::{Error, Route, permitted, route};
pub use store::{GRACE, MAX_BLOB, Registry, collector};

use super::ServerState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rules::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, references, sha256_hex, url_query, valid_tag};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use store::{append, internal, write_file};

/// The largest manifest accepted.
pub(super) const MAX_MANIFEST: usize = 4 << 20;

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
    // A manifest pushed here is copied to the other API servers (tags are shared already).
    let pushed = match (&r, req.method()) {
        (Route::Manifest { name, .. }, &Method::PUT) => Some(name.clone()),
        _ => None,
    };
    match act(&state, r, req).await {
        Ok(resp) => {
            let digest = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok());
            if let (Some(name), Some(Ok(hex))) = (pushed, digest.map(sha256_hex)) {
                tokio::spawn(peers::replicate(state.clone(), name, hex));
            }
            resp
        }
        Err(e) => error_response(e),
    }
}

async fn act(state: &ServerState, r: Route, req: Request) -> Result<Response, Error> {
    let reg = &*state.registry;
    let store = &state.api.store;
    // Another API server asking: local files only.
    let from_peer = req.headers().contains_key(peers::PEER);
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
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|t| valid_tag(t))
                .chain(tags::list(store, &name).await?.into_iter().map(|(t, _)| t))
                .collect();
            if tags.is_empty() {
                return Err(Error::new(404, "NAME_UNKNOWN", format!("repository {name} is not known")));
            }
            tags.sort();
            tags.dedup();
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
                let (hex, media) = resolve(state, &name, &reference, from_peer).await?;
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
            Method::PUT => put_manifest(state, &name, &reference, req).await,
            Method::DELETE => {
                let hex = sha256_hex(&reference).map_err(|_| {
                    Error::new(400, "UNSUPPORTED", "delete a manifest by its digest (a tag goes with its manifest)")
                })?;
                reg.resolve(&name, &reference).await?;
                tokio::fs::remove_file(reg.manifest_link(&name, &hex)).await.map_err(internal)?;
                let digest = format!("sha256:{hex}");
                tags::remove_pointing_at(store, &name, &digest).await?;
                for e in std::fs::read_dir(reg.repo(&name).join("_tags")).into_iter().flatten().flatten() {
                    if std::fs::read_to_string(e.path()).is_ok_and(|d| d.trim() == digest) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
                Ok(reply(StatusCode::ACCEPTED, &[], Body::empty()))
            }
            _ => Err(unsupported()),
        },
        Route::Blob { name, digest } => {
            let hex = sha256_hex(&digest)?;
            match method {
                Method::GET | Method::HEAD => {
                    let p = reg.blob(&hex);
                    if !from_peer && tokio::fs::metadata(&p).await.is_err() {
                        peers::fill_blob(state, reg, &name, &hex).await?;
                    }
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

/// The manifest `reference` of `name`: a tag from the store (else from an earlier version's
/// file), its manifest from this server's files, else from a peer's.
async fn resolve(state: &ServerState, name: &str, reference: &str, from_peer: bool) -> Result<(String, String), Error> {
    let reg = &*state.registry;
    let reference = match sha256_hex(reference) {
        Ok(_) => reference.to_string(),
        Err(_) => tags::get(&state.api.store, name, reference).await?.unwrap_or_else(|| reference.to_string()),
    };
    match reg.resolve(name, &reference).await {
        Err(e) if e.0 == 404 && !from_peer => {
            let Ok(hex) = sha256_hex(&reference) else { return Err(e) };
            if peers::fill_manifest(state, reg, name, &hex).await? {
                reg.resolve(name, &reference).await
            } else {
                Err(e)
            }
        }
        r => r,
    }
}

async fn put_manifest(state: &ServerState, name: &str, reference: &str, req: Request) -> Result<Response, Error> {
    let reg = &*state.registry;
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
        tags::put(&state.api.store, name, reference, &digest).await?;
        // An earlier version's tag file would otherwise still be listed; it is superseded.
        let _ = tokio::fs::remove_file(reg.tag(name, reference)).await;
    }
    let headers = [
        (header::LOCATION, format!("/v2/{name}/manifests/{digest}")),
        (header::HeaderName::from_static("docker-content-digest"), digest),
        (header::CONTENT_LENGTH, "0".to_string()),
    ];
    Ok(reply(StatusCode::CREATED, &headers, Body::empty()))
}
