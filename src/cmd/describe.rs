//! `wasmorch describe KIND NAME`: the object's metadata, spec and status, then its events.

use super::get::{parse_targets, report};
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

pub async fn describe(ctx: Option<String>, a: DescribeArgs) -> anyhow::Result<()> {
    let targets = parse_targets(&a.args)?;
    let client = Client::new(ctx).await?;
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
