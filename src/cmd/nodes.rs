//! `cordon`, `uncordon`, `drain`: as kubectl does them, with kubectl's messages.

use crate::client::{ApiFailure, Client};
use http::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct NodeArgs {
    node: String,
}

#[derive(clap::Args)]
pub struct DrainArgs {
    node: String,
    /// Leave DaemonSet-managed pods (they would come back at once).
    #[arg(long)]
    ignore_daemonsets: bool,
    /// Evict pods using emptyDir volumes too (their data is lost).
    #[arg(long)]
    delete_emptydir_data: bool,
    /// Give up after this long (e.g. 60s, 5m; 0: wait forever).
    #[arg(long, default_value = "0s")]
    timeout: String,
}

async fn set_unschedulable(client: &Client, node: &str, on: bool) -> anyhow::Result<bool> {
    let path = format!("/api/v1/nodes/{node}");
    let cur = client.get_json(&path).await?;
    if cur["spec"]["unschedulable"].as_bool().unwrap_or(false) == on {
        return Ok(false);
    }
    let body = serde_json::to_vec(&json!({"spec": {"unschedulable": if on { json!(true) } else { Value::Null }}}))?;
    client.json(Method::PATCH, &path, Some("application/merge-patch+json"), "application/json", body).await?;
    Ok(true)
}

pub async fn cordon(ctx: Option<String>, a: NodeArgs, on: bool) -> anyhow::Result<()> {
    let client = Client::new(ctx).await?;
    let changed = set_unschedulable(&client, &a.node, on).await?;
    let verb = if on { "cordoned" } else { "uncordoned" };
    println!("node/{} {}{verb}", a.node, if changed { "" } else { "already " });
    Ok(())
}

fn parse_timeout(s: &str) -> anyhow::Result<Option<Duration>> {
    let d = wasmorch_api::object::parse_duration(s).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    Ok((!d.is_zero()).then_some(d))
}

fn owned_by_daemonset(p: &Value) -> bool {
    p["metadata"]["ownerReferences"].as_array().is_some_and(|o| o.iter().any(|r| r["kind"] == "DaemonSet"))
}

fn uses_empty_dir(p: &Value) -> bool {
    p["spec"]["volumes"].as_array().is_some_and(|v| v.iter().any(|v| v.get("emptyDir").is_some()))
}

fn key(p: &Value) -> String {
    format!("{}/{}", p["metadata"]["namespace"].as_str().unwrap_or(""), p["metadata"]["name"].as_str().unwrap_or(""))
}

pub async fn drain(ctx: Option<String>, a: DrainArgs) -> anyhow::Result<()> {
    let client = Client::new(ctx).await?;
    let limit = parse_timeout(&a.timeout)?;
    let start = Instant::now();
    let changed = set_unschedulable(&client, &a.node, true).await?;
    println!("node/{} {}cordoned", a.node, if changed { "" } else { "already " });
    let list = client.get_json(&format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{}", a.node)).await?;
    let pods: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .cloned()
        .collect();
    let daemons: Vec<String> = pods.iter().filter(|p| owned_by_daemonset(p)).map(key).collect();
    let local: Vec<String> = pods.iter().filter(|p| !owned_by_daemonset(p) && uses_empty_dir(p)).map(key).collect();
    let mut errors = Vec::new();
    if !daemons.is_empty() && !a.ignore_daemonsets {
        errors.push(format!(
            "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): {}",
            daemons.join(", ")
        ));
    }
    if !local.is_empty() && !a.delete_emptydir_data {
        errors.push(format!(
            "cannot delete Pods with local storage (use --delete-emptydir-data to override): {}",
            local.join(", ")
        ));
    }
    if !errors.is_empty() {
        eprintln!(
            "error: unable to drain node {:?} due to error: {}, continuing command...",
            a.node,
            errors.join(", ")
        );
        eprintln!("There are pending nodes to be drained:\n {}", a.node);
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Err(crate::client::Failed.into());
    }
    if !daemons.is_empty() {
        println!("Warning: ignoring DaemonSet-managed Pods: {}", daemons.join(", "));
    }
    let to_evict: Vec<&Value> = pods.iter().filter(|p| !owned_by_daemonset(p)).collect();
    for p in &to_evict {
        let (ns, name) =
            (p["metadata"]["namespace"].as_str().unwrap_or(""), p["metadata"]["name"].as_str().unwrap_or(""));
        println!("evicting pod {ns}/{name}");
        let body = serde_json::to_vec(&json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": ns}}))?;
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}/eviction");
        loop {
            match client.json(Method::POST, &path, Some("application/json"), "application/json", body.clone()).await {
                Ok(_) => break,
                Err(e) => match e.downcast_ref::<ApiFailure>() {
                    Some(f) if f.code == 404 => break,
                    // A disruption budget says not now: try again, as kubectl does.
                    Some(f) if f.code == 429 => {
                        eprintln!(
                            "error when evicting pods/\"{name}\" -n \"{ns}\" (will retry after 5s): {}",
                            f.message
                        );
                        if limit.is_some_and(|l| start.elapsed() > l) {
                            anyhow::bail!("drain did not complete within {}", a.timeout);
                        }
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    _ => return Err(e),
                },
            }
        }
    }
    // Wait until each evicted pod is gone (or replaced by a pod of the same name).
    for p in &to_evict {
        let (ns, name) =
            (p["metadata"]["namespace"].as_str().unwrap_or(""), p["metadata"]["name"].as_str().unwrap_or(""));
        let uid = p["metadata"]["uid"].as_str().unwrap_or("");
        loop {
            let (code, bytes) = client
                .send(
                    Method::GET,
                    &format!("/api/v1/namespaces/{ns}/pods/{name}"),
                    None,
                    "application/json",
                    Vec::new(),
                )
                .await?;
            let gone =
                code == 404 || serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v["metadata"]["uid"] != uid);
            if gone {
                println!("pod/{name} evicted");
                break;
            }
            if limit.is_some_and(|l| start.elapsed() > l) {
                anyhow::bail!("drain did not complete within {}: pod {ns}/{name} is still there", a.timeout);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!("node/{} drained", a.node);
    Ok(())
}
