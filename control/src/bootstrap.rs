//! Servers of one cluster share its secrets through the datastore they share.
//!
//! The first `wasmorch server` on an etcd datastore publishes the cluster's secrets — the CA
//! (certificate and key), the service-account token signing key, the Secret sealing key and
//! the admin token — as one record, encrypted with a key derived from the server token
//! (`--token`, else `<data-dir>/server.token`, made on first start; k3s' scheme). A server
//! that finds the record decrypts it with its token and writes the files into its data
//! directory before anything else reads them, so it never invents a CA of its own. Each
//! server still makes its own serving certificate, signed by the shared CA, for its names.
//!
//! The record is created with create-if-absent, so two first servers starting at once agree:
//! the loser adopts the winner's secrets. A data directory holding another cluster's CA is
//! refused rather than overwritten (its nodes' certificates would stop verifying).

use crate::store::{Outcome, Store};
use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;

/// The record's store key (outside every resource's keys).
pub const RECORD_KEY: &str = "/wasmorch.io/bootstrap/cluster";
/// The files the servers of a cluster share, relative to the data directory.
pub const SHARED: &[&str] = &["pki/ca.crt", "pki/ca.key", "pki/sa.key", "state.key", "admin.token"];
const PBKDF2_ROUNDS: u32 = 100_000;

/// What [`share`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Shared {
    /// This server was first: its secrets are the cluster's now.
    Published,
    /// The cluster's secrets were written into this data directory (reopen what read them).
    Adopted,
    /// This data directory already held the cluster's secrets.
    Unchanged,
}

/// The server token: `given`, else the one in `<data-dir>/server.token` (made if missing).
pub fn server_token(data_dir: &Path, given: Option<&str>) -> anyhow::Result<String> {
    match given.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => {
            let path = data_dir.join("server.token");
            if !path.exists() {
                crate::pki::write_private(&path, &format!("{t}\n"))?;
            }
            Ok(t.to_string())
        }
        None => crate::pki::token_file(&data_dir.join("server.token")),
    }
}

fn key_from(token: &str, salt: &[u8]) -> LessSafeKey {
    let mut key = [0u8; 32];
    let rounds = NonZeroU32::new(PBKDF2_ROUNDS).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, token.as_bytes(), &mut key);
    // A 32-byte key always fits AES-256.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap_or_else(|_| unreachable!("32-byte AES key")))
}

/// The record holding `files`, encrypted under `token`.
pub fn seal_record(files: &BTreeMap<String, String>, token: &str) -> anyhow::Result<Value> {
    let salt: [u8; 16] = rand::random();
    let nonce_bytes: [u8; NONCE_LEN] = rand::random();
    let mut body = serde_json::to_vec(files)?;
    key_from(token, &salt)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(RECORD_KEY), &mut body)
        .map_err(|_| anyhow::anyhow!("sealing the cluster's secrets"))?;
    Ok(json!({
        "metadata": {"name": "cluster"},
        "salt": B64.encode(salt),
        "nonce": B64.encode(nonce_bytes),
        "sealed": B64.encode(body),
    }))
}

/// The files in `record`, if `token` opens it.
pub fn open_record(record: &Value, token: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let field = |name: &str| -> anyhow::Result<Vec<u8>> {
        let s = record.get(name).and_then(Value::as_str).with_context(|| format!("the record has no {name}"))?;
        B64.decode(s).with_context(|| format!("the record's {name}"))
    };
    let (salt, nonce, mut body) = (field("salt")?, field("nonce")?, field("sealed")?);
    let nonce = Nonce::try_assume_unique_for_key(&nonce).map_err(|_| anyhow::anyhow!("the record's nonce"))?;
    let plain = key_from(token, &salt).open_in_place(nonce, Aad::from(RECORD_KEY), &mut body).map_err(|_| {
        anyhow::anyhow!(
            "the server token does not open the cluster's secrets in the datastore: pass the first server's \
             --token (its data directory's server.token)"
        )
    })?;
    Ok(serde_json::from_slice(plain)?)
}

fn read_local(data_dir: &Path) -> BTreeMap<String, String> {
    SHARED.iter().filter_map(|f| std::fs::read_to_string(data_dir.join(f)).ok().map(|c| (f.to_string(), c))).collect()
}

/// Which shared files this data directory already has that differ from the cluster's: a
/// fresh directory has none; `state.key` made by the store's opening a moment ago does not
/// count (`fresh_key`).
pub fn conflicts(local: &BTreeMap<String, String>, cluster: &BTreeMap<String, String>, fresh_key: bool) -> Vec<String> {
    local
        .iter()
        .filter(|(f, _)| !(fresh_key && f.as_str() == "state.key"))
        .filter(|(f, c)| cluster.get(f.as_str()).is_some_and(|theirs| theirs != *c))
        .map(|(f, _)| f.clone())
        .collect()
}

/// Publish this server's secrets, or adopt the cluster's. `make_local` creates this data
/// directory's secrets when they are missing (the first server); `fresh_key` says the
/// sealing key file was made by this start (not a secret anyone relies on yet).
pub async fn share(
    store: &Store,
    data_dir: &Path,
    token: &str,
    fresh_key: bool,
    make_local: impl Fn() -> anyhow::Result<()>,
) -> anyhow::Result<Shared> {
    loop {
        if let Some(record) = store.get(RECORD_KEY).await? {
            let cluster = open_record(&record, token)?;
            let local = read_local(data_dir);
            let bad = conflicts(&local, &cluster, fresh_key);
            if !bad.is_empty() {
                bail!(
                    "{} belongs to another cluster ({} differ from the datastore's): start this server with a \
                     fresh --data-dir",
                    data_dir.display(),
                    bad.join(", ")
                );
            }
            let mut changed = false;
            for (f, content) in &cluster {
                if local.get(f) != Some(content) {
                    let path = data_dir.join(f);
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    crate::pki::write_private(&path, content)?;
                    changed = true;
                }
            }
            if changed {
                // Made from the old CA, if any: reissued by the shared one.
                for f in ["pki/server.crt", "pki/server.key", "pki/server.sans"] {
                    let _ = std::fs::remove_file(data_dir.join(f));
                }
            }
            return Ok(if changed { Shared::Adopted } else { Shared::Unchanged });
        }
        make_local()?;
        let files = read_local(data_dir);
        if let Some(missing) = SHARED.iter().find(|f| !files.contains_key(**f)) {
            bail!("{} has no {missing} to share", data_dir.display());
        }
        let record = seal_record(&files, token)?;
        let created = store
            .mutate(
                RECORD_KEY.to_string(),
                false,
                Box::new(move |cur| match cur {
                    Some(_) => Err(wasmorch_api::ApiError::already_exists("wasmorch.io", "bootstrap", "cluster")),
                    None => Ok(Outcome::Put(record.clone())),
                }),
            )
            .await;
        match created {
            Ok(_) => return Ok(Shared::Published),
            // Another first server won: adopt its secrets (next turn of the loop).
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(ca: &str) -> BTreeMap<String, String> {
        SHARED.iter().map(|f| (f.to_string(), format!("{f}:{ca}"))).collect()
    }

    #[test]
    fn the_record_opens_only_with_its_token() {
        let r = seal_record(&files("a"), "tok-1").unwrap();
        assert!(!r.to_string().contains("pki/ca.key:a"), "encrypted");
        assert_eq!(open_record(&r, "tok-1").unwrap(), files("a"));
        let err = open_record(&r, "tok-2").unwrap_err().to_string();
        assert!(err.contains("does not open"), "{err}");
        assert!(open_record(&json!({"salt": 1}), "tok-1").is_err(), "malformed record is an error, not a panic");
    }

    #[test]
    fn a_data_directory_of_another_cluster_is_refused_but_a_fresh_one_is_not() {
        let cluster = files("a");
        assert!(conflicts(&BTreeMap::new(), &cluster, false).is_empty(), "fresh");
        assert!(conflicts(&cluster, &cluster, false).is_empty(), "the same cluster");
        let mut other = files("b");
        assert_eq!(conflicts(&other, &cluster, false).len(), SHARED.len());
        other.retain(|f, _| f == "state.key");
        assert!(conflicts(&other, &cluster, true).is_empty(), "a sealing key made by this start is replaced");
        assert_eq!(conflicts(&other, &cluster, false), ["state.key"]);
    }
}
