//! `wasmorch config`: kubeconfig contexts.

use crate::kubeconfig;
use crate::printer;
use serde_json::json;

#[derive(clap::Subcommand)]
pub enum ConfigCmd {
    /// List contexts; the current one is marked with '*'.
    GetContexts,
    /// Print the current context.
    CurrentContext,
    /// Switch the current context.
    UseContext { name: String },
    /// Give a cluster all the API servers of a highly available control plane
    /// (`set-servers https://10.0.0.1:6443,https://10.0.0.2:6443 …`): wasmorch uses the first
    /// that answers, kubectl the first (put a load balancer or DNS name in front for it).
    SetServers {
        /// API server URLs, in order of preference (commas or spaces between them).
        #[arg(required = true, value_delimiter = ',')]
        servers: Vec<String>,
        /// The kubeconfig cluster to change (default: the current context's).
        #[arg(long)]
        cluster: Option<String>,
    },
}

pub fn run(c: ConfigCmd) -> anyhow::Result<()> {
    let mut cfg = kubeconfig::load()?;
    let current = cfg["current-context"].as_str().unwrap_or("").to_string();
    match c {
        ConfigCmd::GetContexts => {
            let mut rows = vec![vec![
                "CURRENT".to_string(),
                "NAME".into(),
                "CLUSTER".into(),
                "AUTHINFO".into(),
                "NAMESPACE".into(),
            ]];
            for ctx in cfg["contexts"].as_array().into_iter().flatten() {
                let name = ctx["name"].as_str().unwrap_or("");
                rows.push(vec![
                    if name == current { "*".into() } else { String::new() },
                    name.to_string(),
                    ctx["context"]["cluster"].as_str().unwrap_or("").to_string(),
                    ctx["context"]["user"].as_str().unwrap_or("").to_string(),
                    ctx["context"]["namespace"].as_str().unwrap_or("").to_string(),
                ]);
            }
            print!("{}", printer::align(&rows));
        }
        ConfigCmd::CurrentContext => {
            if current.is_empty() {
                anyhow::bail!("current-context is not set");
            }
            println!("{current}");
        }
        ConfigCmd::UseContext { name } => {
            if !cfg["contexts"].as_array().into_iter().flatten().any(|c| c["name"] == name.as_str()) {
                anyhow::bail!("no context exists with the name: {name:?}");
            }
            cfg["current-context"] = json!(name);
            kubeconfig::save(&cfg)?;
            println!("Switched to context \"{name}\".");
        }
        ConfigCmd::SetServers { servers, cluster } => {
            let cluster = match cluster {
                Some(c) => c,
                None => kubeconfig::cluster_of(&cfg, None)?,
            };
            let servers: Vec<String> = servers.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            kubeconfig::set_servers(&mut cfg, &cluster, &servers)?;
            kubeconfig::save(&cfg)?;
            println!("Cluster \"{cluster}\" set to {} server(s): {}.", servers.len(), servers.join(", "));
        }
    }
    Ok(())
}
