//! `wasmorch get`.

use crate::client::{ApiFailure, Client, Failed, TABLE_ACCEPT, path, q};
use crate::printer::{self, TablePrinter};
use futures::StreamExt;
use serde_json::{Value, json};
use wasmorch_api::resources::{self, RESOURCES, Resource};

#[derive(clap::Args)]
pub struct GetArgs {
    /// KIND, KIND/NAME, KIND NAME…, KIND1,KIND2, or `all`.
    #[arg(required = true)]
    args: Vec<String>,
    #[arg(short, long)]
    namespace: Option<String>,
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Label selector (`app=web,tier in (a,b)`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    #[arg(long)]
    field_selector: Option<String>,
    /// wide | yaml | json | name
    #[arg(short, long)]
    output: Option<String>,
    /// After listing, watch for changes.
    #[arg(short, long)]
    watch: bool,
    #[arg(long)]
    no_headers: bool,
    /// Keep `metadata.managedFields` in yaml/json output (hidden by default, as kubectl does).
    #[arg(long)]
    show_managed_fields: bool,
}

/// What the arguments ask for: kinds, each with its names (empty = all).
pub fn parse_targets(args: &[String]) -> anyhow::Result<Vec<(&'static Resource, Vec<String>)>> {
    let unknown = |k: &str| anyhow::anyhow!("the server doesn't have a resource type \"{k}\"");
    let mut out: Vec<(&'static Resource, Vec<String>)> = Vec::new();
    if args[0].contains('/') {
        for a in args {
            let (k, n) = a.split_once('/').ok_or_else(|| anyhow::anyhow!("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form"))?;
            let r = resources::lookup(k).ok_or_else(|| unknown(k))?;
            match out.iter_mut().find(|(x, _)| x.kind == r.kind) {
                Some((_, names)) => names.push(n.to_string()),
                None => out.push((r, vec![n.to_string()])),
            }
        }
        return Ok(out);
    }
    for k in args[0].split(',') {
        if k == "all" {
            out.extend(RESOURCES.iter().filter(|r| r.categories.contains(&"all")).map(|r| (r, Vec::new())));
        } else {
            out.push((resources::lookup(k).ok_or_else(|| unknown(k))?, Vec::new()));
        }
    }
    let names: Vec<String> = args[1..].to_vec();
    if !names.is_empty() {
        if out.len() > 1 {
            anyhow::bail!("you must specify only one resource type when naming objects");
        }
        out[0].1 = names;
    }
    Ok(out)
}

fn query(a: &GetArgs, extra: &[(&str, String)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(s) = &a.selector {
        parts.push(format!("labelSelector={}", q(s)));
    }
    if let Some(s) = &a.field_selector {
        parts.push(format!("fieldSelector={}", q(s)));
    }
    for (k, v) in extra {
        parts.push(format!("{k}={}", q(v)));
    }
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

/// [`parse_targets`], learning the cluster's custom kinds first when a name is not a
/// built-in one.
pub async fn resolve_targets(
    client: &Client,
    args: &[String],
) -> anyhow::Result<Vec<(&'static Resource, Vec<String>)>> {
    match parse_targets(args) {
        Ok(t) => Ok(t),
        Err(e) => {
            client.learn_custom_kinds().await;
            parse_targets(args).map_err(|_| e)
        }
    }
}

pub async fn get(ctx: Option<String>, a: GetArgs) -> anyhow::Result<()> {
    let client = Client::new(ctx).await?;
    let targets = resolve_targets(&client, &a.args).await?;
    let ns = a.namespace.clone().unwrap_or_else(|| client.namespace.clone());
    let output = a.output.clone().unwrap_or_default();
    if !["", "wide", "yaml", "json", "name"].contains(&output.as_str()) {
        anyhow::bail!(
            "unable to match a printer suitable for the output format {output:?}, allowed formats are: json, name, wide, yaml"
        );
    }
    let multi = targets.len() > 1;
    let mut failed = false;
    let mut printed_any = false;
    let mut objects = Vec::new();
    for (res, names) in &targets {
        let scope = if res.namespaced && !a.all_namespaces { Some(ns.as_str()) } else { None };
        let ns_col = res.namespaced && a.all_namespaces;
        if output.is_empty() || output == "wide" {
            let mut printer = TablePrinter::new(output == "wide", ns_col);
            printer.no_headers = a.no_headers;
            if multi {
                printer.name_prefix = Some(res.qualified_singular());
            }
            let mut rows = Vec::new();
            let mut rv = String::new();
            if names.is_empty() {
                let t = client
                    .json(
                        http::Method::GET,
                        &format!("{}{}", path(res, scope, None), query(&a, &[])),
                        None,
                        TABLE_ACCEPT,
                        Vec::new(),
                    )
                    .await?;
                rv = t["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
                rows = printer.rows(&t, true);
            } else {
                for n in names {
                    match client
                        .json(http::Method::GET, &path(res, scope, Some(n)), None, TABLE_ACCEPT, Vec::new())
                        .await
                    {
                        Ok(t) => {
                            let r = printer.rows(&t, rows.is_empty());
                            rows.extend(r);
                        }
                        Err(e) => {
                            failed = true;
                            report(&e);
                        }
                    }
                }
            }
            let has_rows = rows.len() > usize::from(!a.no_headers);
            if has_rows {
                if printed_any {
                    println!();
                }
                print!("{}", printer::align(&rows));
                printed_any = true;
            }
            if a.watch {
                return watch(&client, res, scope, &a, names, rv, printer, has_rows).await;
            }
        } else {
            if names.is_empty() {
                let list = client.get_json(&format!("{}{}", path(res, scope, None), query(&a, &[]))).await?;
                for mut o in list["items"].as_array().cloned().unwrap_or_default() {
                    o["apiVersion"] = json!(res.api_version());
                    o["kind"] = json!(res.kind);
                    objects.push((res, o));
                }
            } else {
                for n in names {
                    match client.get_json(&path(res, scope, Some(n))).await {
                        Ok(o) => objects.push((res, o)),
                        Err(e) => {
                            failed = true;
                            report(&e);
                        }
                    }
                }
            }
        }
    }
    if !a.show_managed_fields {
        for (_, o) in objects.iter_mut() {
            if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
        }
    }
    if !(output.is_empty() || output == "wide") {
        let single = targets.len() == 1 && targets[0].1.len() == 1;
        match output.as_str() {
            "name" => {
                for (res, o) in &objects {
                    println!("{}/{}", res.qualified_singular(), o["metadata"]["name"].as_str().unwrap_or(""));
                }
            }
            _ => {
                let doc = if single && objects.len() == 1 {
                    objects[0].1.clone()
                } else {
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": objects.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>()})
                };
                if output == "json" {
                    println!("{}", serde_json::to_string_pretty(&doc)?);
                } else {
                    print!("{}", printer::yaml(&doc)?);
                }
            }
        }
        printed_any = output != "name" || !objects.is_empty();
    }
    if !printed_any && !failed && targets.iter().all(|(_, n)| n.is_empty()) {
        let namespaced = targets.iter().any(|(r, _)| r.namespaced);
        if namespaced && !a.all_namespaces {
            eprintln!("No resources found in {ns} namespace.");
        } else {
            eprintln!("No resources found");
        }
    }
    if failed { Err(Failed.into()) } else { Ok(()) }
}

pub fn report(e: &anyhow::Error) {
    match e.downcast_ref::<ApiFailure>() {
        Some(f) => eprintln!("{}", f.kubectl_line()),
        None => eprintln!("error: {e:#}"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn watch(
    client: &Client,
    res: &Resource,
    scope: Option<&str>,
    a: &GetArgs,
    names: &[String],
    rv: String,
    mut printer: TablePrinter,
    header_done: bool,
) -> anyhow::Result<()> {
    let mut extra = vec![("watch", "true".to_string()), ("allowWatchBookmarks", "true".to_string())];
    if !rv.is_empty() {
        extra.push(("resourceVersion", rv));
    }
    let mut args_fs = a.field_selector.clone();
    if let Some(n) = names.first() {
        let f = format!("metadata.name={n}");
        args_fs = Some(match args_fs {
            Some(x) => format!("{x},{f}"),
            None => f,
        });
    }
    let qa = GetArgs {
        args: vec![],
        namespace: None,
        all_namespaces: false,
        selector: a.selector.clone(),
        field_selector: args_fs,
        output: None,
        watch: true,
        no_headers: a.no_headers,
        show_managed_fields: false,
    };
    let url = format!(
        "{}{}",
        path(res, scope, None),
        query(&qa, &extra.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>())
    );
    let mut stream = client.watch(&url, TABLE_ACCEPT).await?;
    let mut header = !header_done;
    while let Some(ev) = stream.next().await {
        let ev: Value = ev?;
        match ev["type"].as_str() {
            Some("BOOKMARK") => continue,
            Some("ERROR") => anyhow::bail!("watch ended: {}", ev["object"]["message"].as_str().unwrap_or("error")),
            _ => {}
        }
        let rows = printer.rows(&ev["object"], header);
        header = false;
        print!("{}", printer::align(&rows));
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    Ok(())
}
