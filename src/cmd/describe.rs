//! `wasmorch describe KIND NAME`: the object's metadata, spec and status, then its events.

use super::get::report;
use crate::client::{Client, Failed, TABLE_ACCEPT, path, q};
use crate::printer::{self, TablePrinter};
use serde_json::Value;
use wasmorch_api::object;

#[derive(clap::Args)]
pub struct DescribeArgs {
    /// KIND NAME… or KIND/NAME…
    #[arg(required = true)]
    args: Vec<String>,
    #[arg(short, long)]
    namespace: Option<String>,
}

fn map_lines(label: &str, m: &Value) -> String {
    let entries: Vec<String> = m
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    if entries.is_empty() {
        return format!("{label:<14}<none>\n");
    }
    let pad = " ".repeat(14);
    let mut s = format!("{label:<14}{}\n", entries[0]);
    for e in &entries[1..] {
        s.push_str(&format!("{pad}{e}\n"));
    }
    s
}

fn indent(text: &str, by: usize) -> String {
    text.lines().map(|l| format!("{}{l}\n", " ".repeat(by))).collect()
}

/// A running pod's resource use from its node (the Summary API through the API server):
/// CPU, memory against the limit, and each HTTP container's concurrency. Empty when the
/// node cannot be asked.
async fn pod_usage(client: &Client, pod: &Value) -> String {
    let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return String::new();
    };
    let path = format!("/api/v1/nodes/{node}/proxy/stats/summary");
    let Ok(Ok(summary)) = tokio::time::timeout(std::time::Duration::from_secs(3), client.get_json(&path)).await else {
        return String::new();
    };
    usage_lines(&summary, object::uid(pod))
}

/// The `Usage:` section for the pod `uid` from a Summary API document. Pure.
pub fn usage_lines(summary: &Value, uid: &str) -> String {
    let Some(p) = summary
        .get("pods")
        .and_then(Value::as_array)
        .and_then(|ps| ps.iter().find(|p| p.pointer("/podRef/uid").and_then(Value::as_str) == Some(uid)))
    else {
        return String::new();
    };
    let n = |v: &Value, ptr: &str| v.pointer(ptr).and_then(Value::as_u64).unwrap_or(0);
    let mut out = String::from("Usage:\n");
    for c in p.get("containers").and_then(Value::as_array).into_iter().flatten() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        let limit = n(c, "/wasmorch/memoryLimitBytes");
        let limit = if limit >= u64::MAX / 2 { "none".to_string() } else { format!("{}Mi", limit >> 20) };
        out.push_str(&format!(
            "  {name}:\n    CPU:          {}m\n    Memory:       {}Mi (limit {limit}, host {}Ki)\n",
            n(c, "/cpu/usageNanoCores") / 1_000_000,
            n(c, "/memory/workingSetBytes") >> 20,
            n(c, "/wasmorch/hostMemoryBytes") >> 10,
        ));
        if let Some(a) = c.pointer("/wasmorch/concurrency") {
            out.push_str(&format!(
                "    Concurrency:  {} in flight of {}, {} queued of {}, {} refused (footprint {}Ki)\n",
                n(a, "/inFlight"),
                n(a, "/limit"),
                n(a, "/queued"),
                n(a, "/queueLimit"),
                n(a, "/refused"),
                n(a, "/footprintBytes") >> 10,
            ));
        }
    }
    out
}

pub async fn describe(ctx: Option<String>, a: DescribeArgs) -> anyhow::Result<()> {
    let client = Client::new(ctx).await?;
    let targets = super::get::resolve_targets(&client, &a.args).await?;
    let ns = a.namespace.clone().unwrap_or_else(|| client.namespace.clone());
    let mut failed = false;
    let mut first = true;
    for (res, names) in targets {
        let scope = res.namespaced.then_some(ns.as_str());
        let names = if names.is_empty() {
            let list = client.get_json(&path(res, scope, None)).await?;
            list["items"].as_array().into_iter().flatten().map(|o| object::name(o).to_string()).collect()
        } else {
            names
        };
        for name in names {
            let o = match client.get_json(&path(res, scope, Some(&name))).await {
                Ok(o) => o,
                Err(e) => {
                    failed = true;
                    report(&e);
                    continue;
                }
            };
            if !first {
                println!();
            }
            first = false;
            let m = object::meta(&o);
            let mut out = format!("{:<14}{}\n", "Name:", object::name(&o));
            if res.namespaced {
                out.push_str(&format!("{:<14}{}\n", "Namespace:", object::namespace(&o)));
            }
            out.push_str(&map_lines("Labels:", &m["labels"]));
            let mut ann = m["annotations"].clone();
            if let Some(a) = ann.as_object_mut() {
                a.remove(super::apply::LAST_APPLIED);
            }
            out.push_str(&map_lines("Annotations:", &ann));
            out.push_str(&format!("{:<14}{}\n", "Created:", m["creationTimestamp"].as_str().unwrap_or("")));
            if let Some(owners) = m["ownerReferences"].as_array() {
                for ow in owners {
                    out.push_str(&format!(
                        "{:<14}{}/{}\n",
                        "Controlled By:",
                        ow["kind"].as_str().unwrap_or(""),
                        ow["name"].as_str().unwrap_or("")
                    ));
                }
            }
            for section in ["spec", "data", "status"] {
                if let Some(v) = o.get(section).filter(|v| !v.is_null() && v.as_object().is_none_or(|m| !m.is_empty()))
                {
                    let title = format!("{}{}:", section[..1].to_uppercase(), &section[1..]);
                    let v = if section == "data" && res.kind == "Secret" {
                        let redacted: serde_json::Map<String, Value> = v
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, val)| {
                                (
                                    k.clone(),
                                    Value::String(format!("{} bytes", val.as_str().map_or(0, |s| s.len() * 3 / 4))),
                                )
                            })
                            .collect();
                        Value::Object(redacted)
                    } else {
                        v.clone()
                    };
                    out.push_str(&format!("{title}\n{}", indent(&printer::yaml(&v)?, 2)));
                }
            }
            if res.kind == "Pod" {
                out.push_str(&pod_usage(&client, &o).await);
            }
            print!("{out}");
            // Events about this object, oldest first.
            let mut fs = format!("involvedObject.name={},involvedObject.kind={}", object::name(&o), res.kind);
            if res.namespaced {
                fs.push_str(&format!(",involvedObject.namespace={}", object::namespace(&o)));
            }
            let ev_ns = if res.namespaced { Some(object::namespace(&o)) } else { None };
            let events_path = match ev_ns {
                Some(n) => format!("/api/v1/namespaces/{n}/events?fieldSelector={}", q(&fs)),
                None => format!("/api/v1/events?fieldSelector={}", q(&fs)),
            };
            let t = client.json(http::Method::GET, &events_path, None, TABLE_ACCEPT, Vec::new()).await?;
            if t["rows"].as_array().is_none_or(Vec::is_empty) {
                println!("Events:       <none>");
            } else {
                println!("Events:");
                let mut p = TablePrinter::new(false, false);
                print!("{}", indent(&printer::align(&p.rows(&t, true)), 2));
            }
        }
    }
    if failed { Err(Failed.into()) } else { Ok(()) }
}
