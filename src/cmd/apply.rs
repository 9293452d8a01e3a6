//! `wasmorch apply`, `create` and `delete`.

use super::get::report;
use crate::client::{ApiFailure, Client, Failed, path, q};
use anyhow::Context;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use wasmorch_api::resources::{self, Resource};
use wasmorch_api::{decode, object};

pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(clap::Args)]
pub struct FileArgs {
    /// File, directory or '-' (stdin); repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    #[arg(short, long)]
    namespace: Option<String>,
    /// `server` checks everything on the server and changes nothing.
    #[arg(long, value_parser = ["none", "server"])]
    dry_run: Option<String>,
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// KIND NAME…, KIND/NAME…
    args: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    #[arg(short, long)]
    namespace: Option<String>,
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Delete every object of the kind in the namespace.
    #[arg(long)]
    all: bool,
    #[arg(long)]
    ignore_not_found: bool,
    /// Wait until the objects are gone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// What happens to dependents: background (deleted after), foreground (deleted first),
    /// orphan (kept).
    #[arg(long, default_value = "background", value_parser = ["background", "foreground", "orphan"])]
    cascade: String,
}

/// Read every document from files, directories (their .yaml/.yml/.json files, sorted) and stdin.
pub fn read_documents(files: &[String]) -> anyhow::Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            out.extend(
                decode::manifests(&s)
                    .map_err(|e| anyhow::anyhow!("stdin: {e}"))?
                    .into_iter()
                    .map(|d| ("STDIN".to_string(), d)),
            );
            continue;
        }
        let p = Path::new(f);
        let mut paths = Vec::new();
        if p.is_dir() {
            for e in std::fs::read_dir(p).with_context(|| format!("reading {f}"))? {
                let e = e?.path();
                if e.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json") {
                    paths.push(e);
                }
            }
            paths.sort();
        } else {
            paths.push(p.to_path_buf());
        }
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("the path \"{}\" does not exist or cannot be read", path.display()))?;
            let name = path.display().to_string();
            let docs = decode::manifests(&text).map_err(|e| anyhow::anyhow!("error parsing {name}: {e}"))?;
            out.extend(docs.into_iter().map(|d| (name.clone(), d)));
        }
    }
    Ok(out)
}

fn resource_of(file: &str, doc: &Value) -> anyhow::Result<&'static Resource> {
    let av = doc["apiVersion"].as_str().unwrap_or("");
    let kind = doc["kind"].as_str().unwrap_or("");
    if av.is_empty() || kind.is_empty() {
        anyhow::bail!("error validating \"{file}\": error validating data: [apiVersion not set, kind not set]");
    }
    resources::by_kind(av, kind).ok_or_else(|| {
        anyhow::anyhow!("resource mapping not found for name: {:?} namespace: {:?} from {file:?}: no matches for kind {kind:?} in version {av:?}", object::name(doc), object::namespace(doc))
    })
}

/// A JSON merge patch that turns `live` into `desired`: what changed since the last applied
/// configuration, and deletions of what it had and `desired` no longer has (a three-way
/// merge as kubectl's, on merge-patch terms: a changed list is replaced whole).
pub fn apply_patch(last: &Value, desired: &Value) -> Value {
    match (last, desired) {
        (Value::Object(l), Value::Object(d)) => {
            let mut out = Map::new();
            for (k, v) in d {
                // What the file says as it said last time is left as the cluster has it: what
                // the server added (a pod's token volume, defaults) stays.
                if l.get(k) == Some(v) {
                    continue;
                }
                out.insert(k.clone(), apply_patch(l.get(k).unwrap_or(&Value::Null), v));
            }
            for k in l.keys() {
                if !d.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        (_, d) => d.clone(),
    }
}

async fn create(client: &Client, collection: &str, obj: &Value) -> anyhow::Result<String> {
    client
        .json(http::Method::POST, collection, Some("application/json"), "application/json", serde_json::to_vec(obj)?)
        .await?;
    Ok("created".to_string())
}

pub async fn apply(ctx: Option<String>, a: FileArgs, create_only: bool) -> anyhow::Result<()> {
    let docs = read_documents(&a.files)?;
    let client = Client::new(ctx).await?;
    let default_ns = a.namespace.clone().unwrap_or_else(|| client.namespace.clone());
    let dry = a.dry_run.as_deref() == Some("server");
    let suffix = if dry { " (server dry run)" } else { "" };
    let dry_q = if dry { "?dryRun=All&fieldValidation=Strict" } else { "?fieldValidation=Strict" };
    let mut failed = false;
    if docs.iter().any(|(f, d)| resource_of(f, d).is_err()) {
        client.learn_custom_kinds().await;
    }
    for (file, doc) in docs {
        let res = match resource_of(&file, &doc) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        let doc_ns = object::namespace(&doc).to_string();
        if let (Some(flag), false) = (&a.namespace, doc_ns.is_empty())
            && flag != &doc_ns
            && res.namespaced
        {
            eprintln!(
                "error: the namespace from the provided object \"{doc_ns}\" does not match the namespace \"{flag}\". You must pass '--namespace={doc_ns}' to perform this operation."
            );
            failed = true;
            continue;
        }
        let ns = if doc_ns.is_empty() { default_ns.clone() } else { doc_ns };
        let scope = res.namespaced.then_some(ns.as_str());
        let name = object::name(&doc).to_string();
        let label = format!("{}/{}", res.qualified_singular(), name);
        let mut desired = doc.clone();
        if !create_only {
            let mut stripped = doc.clone();
            if let Some(m) = stripped["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            desired["metadata"]["annotations"][LAST_APPLIED] = json!(serde_json::to_string(&stripped)?);
        }
        let result: anyhow::Result<String> = async {
            if create_only || name.is_empty() {
                return create(&client, &format!("{}{dry_q}", path(res, scope, None)), &desired).await;
            }
            let live = match client.get_json(&path(res, scope, Some(&name))).await {
                Ok(v) => v,
                Err(e) if e.downcast_ref::<ApiFailure>().is_some_and(|f| f.code == 404) => {
                    return create(&client, &format!("{}{dry_q}", path(res, scope, None)), &desired).await;
                }
                Err(e) => return Err(e),
            };
            let last: Value = live["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(Value::Null);
            let patch = apply_patch(&last, &desired);
            // Nothing changed since the last apply: nothing to send. (Comparing the object
            // before and after would call a controller's concurrent write (a Job finishing)
            // "configured".)
            if patch.as_object().is_some_and(Map::is_empty) {
                return Ok("unchanged".to_string());
            }
            let after = client
                .json(
                    http::Method::PATCH,
                    &format!("{}{dry_q}", path(res, scope, Some(&name))),
                    Some("application/merge-patch+json"),
                    "application/json",
                    serde_json::to_vec(&patch)?,
                )
                .await?;
            let same = after["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"] && after == live;
            Ok(if same { "unchanged" } else { "configured" }.to_string())
        }
        .await;
        match result {
            Ok(verb) => println!("{label} {verb}{suffix}"),
            Err(e) => {
                failed = true;
                report(&e);
            }
        }
    }
    if failed { Err(Failed.into()) } else { Ok(()) }
}

pub async fn delete(ctx: Option<String>, a: DeleteArgs) -> anyhow::Result<()> {
    let client = Client::new(ctx).await?;
    let default_ns = a.namespace.clone().unwrap_or_else(|| client.namespace.clone());
    // (resource, namespace, name)
    let mut items: Vec<(&'static Resource, String, String)> = Vec::new();
    if !a.files.is_empty() {
        let docs = read_documents(&a.files)?;
        if docs.iter().any(|(f, d)| resource_of(f, d).is_err()) {
            client.learn_custom_kinds().await;
        }
        for (file, doc) in docs {
            let res = resource_of(&file, &doc)?;
            let ns = match object::namespace(&doc) {
                "" => default_ns.clone(),
                n => n.to_string(),
            };
            items.push((res, ns, object::name(&doc).to_string()));
        }
    } else if !a.args.is_empty() {
        for (res, names) in super::get::resolve_targets(&client, &a.args).await? {
            if names.is_empty() {
                if !a.all && a.selector.is_none() {
                    anyhow::bail!(
                        "resource(s) were provided, but no name was specified (use --all or -l to delete many)"
                    );
                }
                let scope = res.namespaced.then_some(default_ns.as_str());
                let sel = a.selector.as_ref().map(|s| format!("?labelSelector={}", q(s))).unwrap_or_default();
                let list = client.get_json(&format!("{}{sel}", path(res, scope, None))).await?;
                for o in list["items"].as_array().into_iter().flatten() {
                    items.push((res, object::namespace(o).to_string(), object::name(o).to_string()));
                }
            } else {
                items.extend(names.into_iter().map(|n| (res, default_ns.clone(), n)));
            }
        }
    } else {
        anyhow::bail!("you must provide one or more resources by argument or filename");
    }
    let mut failed = false;
    let mut waiting = Vec::new();
    let policy = match a.cascade.as_str() {
        "foreground" => "Foreground",
        "orphan" => "Orphan",
        _ => "Background",
    };
    let body = serde_json::to_vec(
        &serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy}),
    )?;
    for (res, ns, name) in &items {
        let scope = res.namespaced.then_some(ns.as_str());
        match client
            .json(
                http::Method::DELETE,
                &path(res, scope, Some(name)),
                Some("application/json"),
                "application/json",
                body.clone(),
            )
            .await
        {
            Ok(_) => {
                if res.namespaced {
                    println!("{} \"{name}\" deleted from {ns} namespace", res.qualified_singular());
                } else {
                    println!("{} \"{name}\" deleted", res.qualified_singular());
                }
                waiting.push(path(res, scope, Some(name)));
            }
            Err(e) if a.ignore_not_found && e.downcast_ref::<ApiFailure>().is_some_and(|f| f.code == 404) => {}
            Err(e) => {
                failed = true;
                report(&e);
            }
        }
    }
    if a.wait {
        let deadline = Instant::now() + Duration::from_secs(a.timeout);
        for p in waiting {
            loop {
                match client.get_json(&p).await {
                    Err(e) if e.downcast_ref::<ApiFailure>().is_some_and(|f| f.code == 404) => {
                        break;
                    }
                    _ if Instant::now() > deadline => {
                        eprintln!("error: timed out waiting for {p} to be deleted");
                        failed = true;
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    }
    if failed { Err(Failed.into()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_patch_removes_what_was_dropped() {
        let last = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {"x": "1", "y": "2"}});
        let desired = json!({"metadata": {"labels": {"a": "1"}}, "data": {"x": "3"}});
        assert_eq!(
            apply_patch(&last, &desired),
            json!({"metadata": {"labels": {"b": null}}, "data": {"x": "3", "y": null}})
        );
        assert_eq!(apply_patch(&Value::Null, &desired), desired);
        // Unchanged since last time: nothing, whatever the server added to the live object.
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        assert_eq!(apply_patch(&pod, &pod), json!({}));
    }
}
