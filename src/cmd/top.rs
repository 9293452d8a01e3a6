//! `top nodes|pods`: resource usage from the metrics API, in kubectl top's columns.

use crate::client::{Client, q};
use serde_json::Value;

#[derive(clap::Args)]
pub struct TopArgs {
    /// `nodes` (`node`, `no`) or `pods` (`pod`, `po`), optionally with a name.
    #[arg(required = true, num_args = 1..=2)]
    what: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Pods of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Label selector, e.g. `app=web`.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Each container of the pods on its own line.
    #[arg(long)]
    containers: bool,
}

/// A quantity in whole millicores or mebibytes, as kubectl top prints them. Pure.
fn cores_m(cpu: &str) -> u64 {
    (wasmorch_api::quantity::parse(cpu).unwrap_or(0.0) * 1000.0).round() as u64
}

fn mib(memory: &str) -> u64 {
    (wasmorch_api::quantity::parse(memory).unwrap_or(0.0) / (1024.0 * 1024.0)).round() as u64
}

fn usage(u: &Value) -> (u64, u64) {
    let s = |k: &str| u.get(k).and_then(Value::as_str).unwrap_or("0").to_string();
    (cores_m(&s("cpu")), mib(&s("memory")))
}

fn print(rows: Vec<Vec<String>>) {
    let widths: Vec<usize> =
        (0..rows.first().map_or(0, Vec::len)).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("   ").trim_end());
    }
}

fn items(v: &Value) -> Vec<Value> {
    match v.get("items").and_then(Value::as_array) {
        Some(a) => a.clone(),
        None => vec![v.clone()],
    }
}

pub async fn top(ctx: Option<String>, a: TopArgs) -> anyhow::Result<()> {
    let client = Client::new(ctx).await?;
    let name = a.what.get(1).map(String::as_str);
    let mut query = Vec::new();
    if let Some(l) = &a.selector {
        query.push(format!("labelSelector={}", q(l)));
    }
    let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
    const API: &str = "/apis/metrics.k8s.io/v1beta1";
    match a.what[0].as_str() {
        "nodes" | "node" | "no" => {
            let path = match name {
                Some(n) => format!("{API}/nodes/{n}"),
                None => format!("{API}/nodes{query}"),
            };
            let metrics = items(&client.get_json(&path).await?);
            let nodes = client.get_json("/api/v1/nodes").await?;
            let mut rows = vec![
                vec!["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            ];
            for m in metrics {
                let n = m.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                let (cpu, mem) = usage(&m["usage"]);
                let node =
                    items(&nodes).into_iter().find(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(n));
                let alloc = node.map(|o| usage(&o["status"]["allocatable"])).unwrap_or((0, 0));
                let pct = |u: u64, of: u64| (u * 100).checked_div(of).map_or("<unknown>".into(), |p| format!("{p}%"));
                rows.push(vec![
                    n.to_string(),
                    format!("{cpu}m"),
                    pct(cpu, alloc.0),
                    format!("{mem}Mi"),
                    pct(mem, alloc.1),
                ]);
            }
            print(rows);
        }
        "pods" | "pod" | "po" => {
            let ns = a.namespace.clone().unwrap_or_else(|| client.namespace.clone());
            let path = match (name, a.all_namespaces) {
                (Some(n), _) => format!("{API}/namespaces/{ns}/pods/{n}"),
                (None, true) => format!("{API}/pods{query}"),
                (None, false) => format!("{API}/namespaces/{ns}/pods{query}"),
            };
            let metrics = items(&client.get_json(&path).await?);
            if metrics.is_empty() {
                eprintln!("No resources found in {ns} namespace.");
                return Ok(());
            }
            let mut head = Vec::new();
            if a.all_namespaces {
                head.push("NAMESPACE");
            }
            head.extend(if a.containers { vec!["POD", "NAME"] } else { vec!["NAME"] });
            head.extend(["CPU(cores)", "MEMORY(bytes)"]);
            let mut rows = vec![head.into_iter().map(String::from).collect::<Vec<_>>()];
            for m in metrics {
                let meta =
                    |k: &str| m.pointer(&format!("/metadata/{k}")).and_then(Value::as_str).unwrap_or("").to_string();
                let containers = m["containers"].as_array().cloned().unwrap_or_default();
                let mut lines: Vec<(Option<String>, u64, u64)> = Vec::new();
                if a.containers {
                    for c in &containers {
                        let (cpu, mem) = usage(&c["usage"]);
                        lines.push((Some(c["name"].as_str().unwrap_or("").to_string()), cpu, mem));
                    }
                } else {
                    let (cpu, mem) =
                        containers.iter().map(|c| usage(&c["usage"])).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                    lines.push((None, cpu, mem));
                }
                for (container, cpu, mem) in lines {
                    let mut r = Vec::new();
                    if a.all_namespaces {
                        r.push(meta("namespace"));
                    }
                    r.push(meta("name"));
                    r.extend(container);
                    r.extend([format!("{cpu}m"), format!("{mem}Mi")]);
                    rows.push(r);
                }
            }
            print(rows);
        }
        other => anyhow::bail!("unknown resource {other:?}: top nodes or top pods"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_print_as_kubectl_top_does() {
        assert_eq!(cores_m("195000000n"), 195);
        assert_eq!(cores_m("2"), 2000);
        assert_eq!(mib("3072Ki"), 3);
        assert_eq!(mib("bogus"), 0);
    }
}
