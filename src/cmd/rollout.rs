//! `wasmorch scale` and `wasmorch rollout status|history|undo|restart|pause|resume`, with
//! kubectl's messages.

use crate::client::{Client, path};
use anyhow::Context;
use http::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wasmorch_api::resources::{self, Resource};

const REVISION: &str = "deployment.kubernetes.io/revision";

#[derive(clap::Args)]
pub struct ScaleArgs {
    /// New number of replicas.
    #[arg(long)]
    replicas: i64,
    /// `deployment/NAME`, `rs/NAME`, or KIND NAME.
    #[arg(required = true, num_args = 1..=2)]
    target: Vec<String>,
    #[arg(short, long)]
    namespace: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum RolloutCmd {
    /// Wait until the rollout finishes.
    Status(RolloutArgs),
    /// List the revisions.
    History(RolloutArgs),
    /// Roll back to the previous revision (or --to-revision).
    Undo(RolloutArgs),
    /// Restart every pod through a new rollout.
    Restart(RolloutArgs),
    /// Stop rolling out changes.
    Pause(RolloutArgs),
    /// Roll out changes again.
    Resume(RolloutArgs),
}

#[derive(clap::Args)]
pub struct RolloutArgs {
    /// `deployment/NAME` or `deployment NAME`.
    #[arg(required = true, num_args = 1..=2)]
    target: Vec<String>,
    #[arg(short, long)]
    namespace: Option<String>,
    /// For undo: the revision to go back to (0: the previous one).
    #[arg(long, default_value_t = 0)]
    to_revision: i64,
    /// For history: show one revision in detail.
    #[arg(long, default_value_t = 0)]
    revision: i64,
    /// For status: give up after this long (e.g. 60s, 2m; 0: never).
    #[arg(long, default_value = "0s")]
    timeout: String,
    /// For status: return at once instead of waiting.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
    watch: bool,
}

fn target(args: &[String]) -> anyhow::Result<(&'static Resource, String)> {
    let (kind, name) = match args {
        [one] => one.split_once('/').map(|(k, n)| (k.to_string(), n.to_string())).context("expected KIND/NAME")?,
        [k, n] => (k.clone(), n.clone()),
        _ => anyhow::bail!("expected KIND/NAME"),
    };
    let res =
        resources::lookup(&kind).with_context(|| format!("the server doesn't have a resource type \"{kind}\""))?;
    Ok((res, name))
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    wasmorch_api::object::parse_duration(s).map_err(anyhow::Error::msg)
}

pub async fn scale(ctx: Option<String>, a: ScaleArgs) -> anyhow::Result<()> {
    let client = Client::new(ctx).await?;
    let ns = a.namespace.unwrap_or_else(|| client.namespace.clone());
    let (res, name) = target(&a.target)?;
    if !res.has_scale {
        anyhow::bail!("cannot scale a {}: it has no scale subresource", res.kind);
    }
    let p = format!("{}/scale", path(res, Some(&ns), Some(&name)));
    let body = serde_json::to_vec(&json!({"spec": {"replicas": a.replicas}}))?;
    client.json(Method::PATCH, &p, Some("application/merge-patch+json"), "application/json", body).await?;
    println!("{}/{name} scaled", res.qualified_singular());
    Ok(())
}

async fn sets_of(client: &Client, ns: &str, d: &Value) -> anyhow::Result<Vec<Value>> {
    let rs = resources::lookup("replicasets").context("replicasets")?;
    let list = client.get_json(&path(rs, Some(ns), None)).await?;
    let uid = d["metadata"]["uid"].as_str().unwrap_or("");
    let mut sets: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["metadata"]["ownerReferences"].as_array().is_some_and(|o| o.iter().any(|o| o["uid"] == uid)))
        .cloned()
        .collect();
    sets.sort_by_key(revision);
    Ok(sets)
}

fn revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"][REVISION].as_str().and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// kubectl's rollout status message, and whether it is done.
pub fn status_message(d: &Value) -> (String, bool) {
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(0);
    let st = &d["status"];
    if st["observedGeneration"].as_i64().unwrap_or(0) < generation {
        return ("Waiting for deployment spec update to be observed...".into(), false);
    }
    if st["conditions"].as_array().into_iter().flatten().any(|c| c["reason"] == "ProgressDeadlineExceeded") {
        return (format!("deployment {name:?} exceeded its progress deadline"), true);
    }
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let n = |k: &str| st[k].as_i64().unwrap_or(0);
    if n("updatedReplicas") < want {
        return (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} out of {want} new replicas have been updated...",
                n("updatedReplicas")
            ),
            false,
        );
    }
    if n("replicas") > n("updatedReplicas") {
        return (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                n("replicas") - n("updatedReplicas")
            ),
            false,
        );
    }
    if n("availableReplicas") < n("updatedReplicas") {
        return (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...",
                n("availableReplicas"),
                n("updatedReplicas")
            ),
            false,
        );
    }
    (format!("deployment {name:?} successfully rolled out"), true)
}

pub async fn rollout(ctx: Option<String>, cmd: RolloutCmd) -> anyhow::Result<()> {
    let client = Client::new(ctx).await?;
    let a = match &cmd {
        RolloutCmd::Status(a)
        | RolloutCmd::History(a)
        | RolloutCmd::Undo(a)
        | RolloutCmd::Restart(a)
        | RolloutCmd::Pause(a)
        | RolloutCmd::Resume(a) => a,
    };
    let ns = a.namespace.clone().unwrap_or_else(|| client.namespace.clone());
    let (res, name) = target(&a.target)?;
    if res.kind != "Deployment" {
        anyhow::bail!("rollout is supported for deployments only, not {}", res.plural);
    }
    let dpath = path(res, Some(&ns), Some(&name));
    let merge = |body: Value| {
        let (client, dpath) = (&client, dpath.clone());
        async move {
            let b = serde_json::to_vec(&body)?;
            client.json(Method::PATCH, &dpath, Some("application/merge-patch+json"), "application/json", b).await
        }
    };
    match cmd {
        RolloutCmd::Status(a) => {
            let limit = parse_duration(&a.timeout)?;
            let start = Instant::now();
            let mut last = String::new();
            loop {
                let d = client.get_json(&dpath).await?;
                let (msg, done) = status_message(&d);
                if msg != last {
                    println!("{msg}");
                    last = msg.clone();
                }
                if done {
                    if msg.contains("exceeded its progress deadline") {
                        anyhow::bail!("{msg}");
                    }
                    return Ok(());
                }
                if !a.watch {
                    return Ok(());
                }
                if !limit.is_zero() && start.elapsed() > limit {
                    anyhow::bail!("timed out waiting for the condition");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        RolloutCmd::History(a) => {
            let d = client.get_json(&dpath).await?;
            let sets = sets_of(&client, &ns, &d).await?;
            if a.revision > 0 {
                let rs = sets
                    .iter()
                    .find(|r| revision(r) == a.revision)
                    .with_context(|| format!("unable to find the specified revision {}", a.revision))?;
                println!("deployment.apps/{name} with revision #{}", a.revision);
                println!("Pod Template:\n{}", serde_yaml_ng::to_string(&rs["spec"]["template"])?);
                return Ok(());
            }
            println!("deployment.apps/{name} ");
            println!("REVISION  CHANGE-CAUSE");
            for rs in &sets {
                let cause = rs["metadata"]["annotations"]["kubernetes.io/change-cause"].as_str().unwrap_or("<none>");
                println!("{:<9} {cause}", revision(rs));
            }
            println!();
            Ok(())
        }
        RolloutCmd::Undo(a) => {
            let d = client.get_json(&dpath).await?;
            let sets = sets_of(&client, &ns, &d).await?;
            let current = d["metadata"]["annotations"][REVISION].as_str().and_then(|r| r.parse().ok()).unwrap_or(0);
            let to = if a.to_revision > 0 {
                sets.iter().find(|r| revision(r) == a.to_revision)
            } else {
                sets.iter().rev().find(|r| revision(r) < current)
            };
            let Some(rs) = to else {
                if a.to_revision > 0 {
                    anyhow::bail!("unable to find specified revision {} in history", a.to_revision);
                }
                anyhow::bail!("no rollout history found for deployment {name:?}");
            };
            let mut template = rs["spec"]["template"].clone();
            if let Some(l) = template["metadata"]["labels"].as_object_mut() {
                l.remove("pod-template-hash");
            }
            if template == d["spec"]["template"] {
                println!(
                    "deployment.apps/{name} skipped rollback (current template already matches revision {})",
                    revision(rs)
                );
                return Ok(());
            }
            let patch = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
            let b = serde_json::to_vec(&patch)?;
            client.json(Method::PATCH, &dpath, Some("application/json-patch+json"), "application/json", b).await?;
            println!("deployment.apps/{name} rolled back");
            Ok(())
        }
        RolloutCmd::Restart(_) => {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            merge(json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}}))
                .await?;
            println!("deployment.apps/{name} restarted");
            Ok(())
        }
        RolloutCmd::Pause(_) => {
            merge(json!({"spec": {"paused": true}})).await?;
            println!("deployment.apps/{name} paused");
            Ok(())
        }
        RolloutCmd::Resume(_) => {
            merge(json!({"spec": {"paused": null}})).await?;
            println!("deployment.apps/{name} resumed");
            Ok(())
        }
    }
}
