//! Tags live in the store (`/wasmorch.io/registry/tags/<repository>/<tag>` → the manifest
//! digest), so every API server resolves a tag alike and a re-pushed tag moves for all of
//! them at once; manifests and blobs, which are content-addressed, stay on each server's disk
//! (`peers` fills in what one lacks). Tags written on disk by earlier versions are still read.

use super::rules::Error;
use super::store::internal;
use crate::store::{Outcome, Store};
use serde_json::{Value, json};

const PREFIX: &str = "/wasmorch.io/registry/tags/";

fn key(name: &str, tag: &str) -> String {
    format!("{PREFIX}{name}/{tag}")
}

fn store_err(e: wasmorch_api::ApiError) -> Error {
    internal(format!("registry tags: {}", e.message))
}

/// The digest `name:tag` points at, if the store has it.
pub async fn get(store: &Store, name: &str, tag: &str) -> Result<Option<String>, Error> {
    let v = store.get(&key(name, tag)).await.map_err(store_err)?;
    Ok(v.and_then(|v| v.get("digest").and_then(Value::as_str).map(String::from)))
}

pub async fn put(store: &Store, name: &str, tag: &str, digest: &str) -> Result<(), Error> {
    let record = json!({"metadata": {"name": tag}, "repository": name, "digest": digest});
    store
        .mutate(key(name, tag), false, Box::new(move |_| Ok(Outcome::Put(record.clone()))))
        .await
        .map(drop)
        .map_err(store_err)
}

/// The tags of `name` (not those of repositories below it).
pub async fn list(store: &Store, name: &str) -> Result<Vec<(String, String)>, Error> {
    let prefix = format!("{PREFIX}{name}/");
    let (items, _, _) = store.list(&prefix, None, 0).await.map_err(store_err)?;
    Ok(items
        .iter()
        .filter(|v| v.get("repository").and_then(Value::as_str) == Some(name))
        .filter_map(|v| {
            let tag = v.pointer("/metadata/name").and_then(Value::as_str)?;
            let digest = v.get("digest").and_then(Value::as_str)?;
            Some((tag.to_string(), digest.to_string()))
        })
        .collect())
}

/// Remove `name`'s tags that point at `digest` (its manifest is being deleted).
pub async fn remove_pointing_at(store: &Store, name: &str, digest: &str) -> Result<(), Error> {
    for (tag, d) in list(store, name).await? {
        if d == digest {
            let r = store
                .mutate(
                    key(name, &tag),
                    false,
                    Box::new(|cur| match cur {
                        Some(_) => Ok(Outcome::Delete),
                        None => Err(wasmorch_api::ApiError::not_found("", "tags", "")),
                    }),
                )
                .await;
            match r {
                Err(e) if e.code != 404 => return Err(store_err(e)),
                _ => {}
            }
        }
    }
    Ok(())
}
