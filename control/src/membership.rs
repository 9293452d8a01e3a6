//! Cluster membership on the server: join tokens and node certificates.
//!
//! - A join token's credential `<id>.<secret>` authenticates as `system:bootstrap:<id>` (group
//!   `system:bootstrappers`) while its Secret exists and has not expired; the only thing it
//!   may do is ask for a node certificate.
//! - `POST /wasmorch/v1/node-certificates` `{"nodeName", "csr"}` signs the node's request
//!   (see [`Pki::sign_node_csr`]). The first join under a name records the SHA-256 of the
//!   node's public key in the Secret `kube-system/<name>.node-key`; later joins and renewals
//!   under that name must present the same key, so a node is its name and its key, whatever
//!   its address. A node renews with its current certificate, for its own name only.
//! - Expired token Secrets are deleted (Kubernetes' token cleaner).

use crate::apiserver::api::{Api, ListOptions};
use crate::apiserver::objects::DeleteOptions;
use crate::apiserver::request::Target;
use crate::pki::{Identity, Pki};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wasmorch_api::join::{self, BOOTSTRAPPERS_GROUP, JoinToken, StoredToken};
use wasmorch_api::{ApiError, resources};

fn secret_target(name: &str) -> Target {
    Target {
        res: resources::of(resources::ResourceKind::Secret),
        namespace: Some(join::NAMESPACE.to_string()),
        name: Some(name.to_string()),
        subresource: None,
        watch_path: false,
    }
}

/// The identity of a join-token credential, if it names a live token.
pub async fn authenticate_token(api: &Api, credential: &str) -> Option<Identity> {
    let tok = JoinToken::parse(credential).ok()?;
    let secret = api.get(&secret_target(&join::secret_name(&tok.id))).await.ok()?;
    let stored = StoredToken::from_secret(&secret)?;
    // Digests compared, so the time taken does not depend on how much of the secret matched.
    let same = Sha256::digest(stored.secret.as_bytes()) == Sha256::digest(tok.secret.as_bytes());
    (same && !stored.expired(chrono::Utc::now())).then(|| Identity {
        user: format!("system:bootstrap:{}", tok.id),
        groups: vec![BOOTSTRAPPERS_GROUP.into(), "system:authenticated".into()],
    })
}

/// Sign a node certificate for a joining (token) or renewing (node certificate) caller.
pub async fn issue_node_certificate(
    api: &Api,
    pki: &Pki,
    ttl: Duration,
    id: &Identity,
    body: &Value,
) -> Result<Value, ApiError> {
    let node = body["nodeName"].as_str().unwrap_or("");
    if let Some(errs) = wasmorch_api::validation::dns1123_subdomain_errors(node) {
        return Err(ApiError::bad_request(format!("nodeName {node:?}: {errs}")));
    }
    let csr =
        body["csr"].as_str().ok_or_else(|| ApiError::bad_request("csr: a PEM certificate request is required"))?;
    let bootstrap = id.groups.iter().any(|g| g == BOOTSTRAPPERS_GROUP);
    match join::node_name(&id.user, &id.groups) {
        Some(own) if own == node => {}
        Some(own) => {
            return Err(ApiError::forbidden(format!("node '{own}' may renew only its own certificate, not {node:?}")));
        }
        None if bootstrap || id.is_admin() => {}
        None => return Err(ApiError::forbidden(format!("User \"{}\" cannot request node certificates", id.user))),
    }
    let signed = pki.sign_node_csr(csr, node, ttl).map_err(ApiError::bad_request)?;
    // An admin may give a name a new key (what `up` does when its node's data was wiped).
    record_key(api, node, &signed.key_sha256, id.is_admin()).await?;
    let expires = chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(365));
    Ok(json!({
        "certificate": signed.cert_pem,
        "ca": pki.ca_pem,
        "expiration": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
}

/// Record the key a node joins with, or check it against the one recorded (`replace`: put
/// this key in place of another).
async fn record_key(api: &Api, node: &str, key_sha256: &str, replace: bool) -> Result<(), ApiError> {
    let name = join::node_key_secret(node);
    let refuse = || {
        ApiError::forbidden(format!(
            "node {node:?} joined before with another key; a node is its name and its key. To give the name to a new machine, delete the Node and the Secret {}/{name}",
            join::NAMESPACE
        ))
    };
    let recorded = |s: &Value| s["data"]["key-sha256"].as_str().map(b64_decode);
    match api.get(&secret_target(&name)).await {
        Ok(s) if recorded(&s).as_deref() == Some(key_sha256) => return Ok(()),
        Ok(mut s) if replace => {
            use base64::Engine;
            s["data"] = json!({"key-sha256": base64::engine::general_purpose::STANDARD.encode(key_sha256)});
            api.update(&secret_target(&name), s, Default::default(), false).await?;
            return Ok(());
        }
        Ok(_) => return Err(refuse()),
        Err(e) if e.code == 404 => {}
        Err(e) => return Err(e),
    }
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "wasmorch.io/node-key",
        "metadata": {"name": name, "namespace": join::NAMESPACE},
        "stringData": {"key-sha256": key_sha256},
    });
    let res = resources::of(resources::ResourceKind::Secret);
    match api.create(res, Some(join::NAMESPACE), secret, Default::default(), false).await {
        Ok(_) => Ok(()),
        // Two joins under one name at once: the first key wins.
        Err(e) if e.code == 409 => {
            let s = api.get(&secret_target(&name)).await?;
            if recorded(&s).as_deref() == Some(key_sha256) { Ok(()) } else { Err(refuse()) }
        }
        Err(e) => Err(e),
    }
}

fn b64_decode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok().and_then(|b| String::from_utf8(b).ok()).unwrap_or_default()
}

/// Store a new token (no expiry when `ttl` is `None`).
pub async fn create_token(
    api: &Api,
    tok: &JoinToken,
    ttl: Option<Duration>,
    description: &str,
) -> Result<(), ApiError> {
    let expiration =
        ttl.map(|t| chrono::Utc::now() + chrono::Duration::from_std(t).unwrap_or(chrono::Duration::days(1)));
    let res = resources::of(resources::ResourceKind::Secret);
    api.create(res, Some(join::NAMESPACE), tok.secret(expiration, description), Default::default(), false).await?;
    Ok(())
}

/// The join token printed at start: `<data-dir>/join.token`, made (with its Secret, no
/// expiry) on first start. `None` when its Secret was deleted since (`wasmorch token delete`):
/// it is not made again behind the user's back.
pub async fn default_token(api: &Api, pki: &Pki, data_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = data_dir.join("join.token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let tok = JoinToken::parse(&text)?;
        return Ok(match api.get(&secret_target(&join::secret_name(&tok.id))).await {
            Ok(_) => Some(tok.to_string()),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e.into()),
        });
    }
    let tok = JoinToken::from_random(&pki.ca_hash(), &rand::random());
    create_token(api, &tok, None, "The default join token, made by wasmorch server on first start.").await?;
    crate::pki::write_private(&path, &format!("{tok}\n"))?;
    Ok(Some(tok.to_string()))
}

/// Delete token Secrets past their expiration, every `every`, until `shutdown`.
pub async fn token_cleaner(api: Api, every: Duration, shutdown: CancellationToken) {
    let res = resources::of(resources::ResourceKind::Secret);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let Ok(list) = api.list(res, Some(join::NAMESPACE), &ListOptions::default()).await else { continue };
        let now = chrono::Utc::now();
        for s in list["items"].as_array().into_iter().flatten() {
            if let Some(t) = StoredToken::from_secret(s).filter(|t| t.expired(now)) {
                tracing::info!(token = t.id, "deleting expired join token");
                let _ = api.delete(&secret_target(&join::secret_name(&t.id)), DeleteOptions::default(), false).await;
            }
        }
    }
}
