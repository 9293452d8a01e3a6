//! Several API servers: each keeps the registry's manifests and blobs on its own disk. One that
//! lacks a manifest or blob (asked for by digest: tags are in the store) asks the other live
//! API servers — those whose Lease is current (`controllers::apiservice`) — and keeps what it
//! gets once its digest checks out, so an image pushed through one server is pulled through
//! any. A peer's request (header [`PEER`]) is answered from local files only, never passed on.
//! Peers present the API server's client certificate; [`super::rules::permitted`] lets it pull.

use super::Registry;
use super::rules::{DOCKER_MANIFEST, Error, OCI_INDEX, OCI_MANIFEST};
use super::store::{append, internal, write_file};
use crate::apiserver::ServerState;
use crate::controllers::apiservice;
use axum::body::Body;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

/// Marks a request from another API server.
pub const PEER: &str = "x-wasmorch-registry-peer";

/// The other API servers whose Lease is current.
async fn peers(state: &ServerState, me: SocketAddr) -> Vec<SocketAddr> {
    let live = apiservice::leases(&state.api).await.map(|(live, _)| live).unwrap_or_default();
    live.into_iter().filter(|a| *a != me).collect()
}

/// The first 200 answer of a peer to GET `path`.
async fn fetch(
    state: &ServerState,
    me: SocketAddr,
    path: &str,
    accept: &str,
) -> Option<http::Response<hyper::body::Incoming>> {
    for peer in peers(state, me).await {
        let headers = [("accept", accept), (PEER, "1")];
        let (name, tls) = (peer.ip().to_string(), state.kubelet_tls.clone());
        match crate::apiserver::dial::request(http::Method::GET, tls, &name, peer, path, &headers).await {
            Ok(r) if r.status() == http::StatusCode::OK => return Some(r),
            Ok(r) => tracing::debug!("registry: {peer}{path}: {}", r.status()),
            Err(e) => tracing::debug!("registry: {peer}{path}: {e}"),
        }
    }
    None
}

/// Fetch manifest `sha256:hex` of `name` from a peer and keep it (as a blob, linked in `name`).
pub async fn fill_manifest(state: &ServerState, reg: &Registry, name: &str, hex: &str) -> Result<bool, Error> {
    let Some(me) = reg.advertise else { return Ok(false) };
    let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST].join(", ");
    let Some(resp) = fetch(state, me, &format!("/v2/{name}/manifests/sha256:{hex}"), &accept).await else {
        return Ok(false);
    };
    let media = resp.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if ![OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST].contains(&media.as_str()) {
        return Ok(false);
    }
    let bytes = http_body_util::Limited::new(resp.into_body(), super::MAX_MANIFEST)
        .collect()
        .await
        .map_err(|e| internal(format!("reading a peer's manifest: {e}")))?
        .to_bytes();
    if hex::encode(Sha256::digest(&bytes)) != hex {
        return Err(internal("a peer's manifest does not match its digest"));
    }
    write_file(&reg.blob(hex), &bytes).await?;
    write_file(&reg.manifest_link(name, hex), media.as_bytes()).await?;
    Ok(true)
}

/// Fetch blob `sha256:hex` from a peer and keep it once its digest checks out.
pub async fn fill_blob(state: &ServerState, reg: &Registry, name: &str, hex: &str) -> Result<bool, Error> {
    let Some(me) = reg.advertise else { return Ok(false) };
    let Some(resp) = fetch(state, me, &format!("/v2/{name}/blobs/sha256:{hex}"), "*/*").await else {
        return Ok(false);
    };
    tokio::fs::create_dir_all(reg.root.join("uploads")).await.map_err(internal)?;
    let p = reg.upload(&uuid::Uuid::new_v4().to_string());
    append(&p, Body::new(resp.into_body())).await?;
    reg.commit(&p, hex).await?;
    Ok(true)
}

/// After a push through this server: have every peer fetch the manifest `sha256:hex` of
/// `name` and its blobs now (a HEAD without the peer mark makes a peer fill in from here), so
/// the image outlives this server. Best effort: a peer that misses it fills in on first pull.
pub async fn replicate(state: std::sync::Arc<ServerState>, name: String, hex: String) {
    let reg = &*state.registry;
    let Some(me) = reg.advertise else { return };
    let Ok(bytes) = tokio::fs::read(reg.blob(&hex)).await else { return };
    let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return };
    let mut paths: Vec<String> =
        super::rules::references(&manifest).iter().map(|d| format!("/v2/{name}/blobs/{d}")).collect();
    paths.push(format!("/v2/{name}/manifests/sha256:{hex}"));
    let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, "*/*"].join(", ");
    for peer in peers(&state, me).await {
        for path in &paths {
            let r = crate::apiserver::dial::request(
                http::Method::HEAD,
                state.kubelet_tls.clone(),
                &peer.ip().to_string(),
                peer,
                path,
                &[("accept", &accept)],
            )
            .await;
            match r {
                Ok(r) if r.status() == http::StatusCode::OK => {}
                Ok(r) => tracing::warn!("registry: copying {path} to {peer}: {}", r.status()),
                Err(e) => tracing::warn!("registry: copying {path} to {peer}: {e}"),
            }
        }
    }
}
