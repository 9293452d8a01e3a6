//! `wasmorch push FILE REFERENCE`: publish a component as a wasm OCI artifact.

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The component (`.wasm`, built for wasm32-wasip2).
    file: PathBuf,
    /// Where to push it, e.g. `registry.local:5000/hello:1.0`, or to the cluster's own
    /// registry: the API server's `host:port` (as in the kubeconfig) `/hello:1.0`.
    reference: String,
    /// Speak plain HTTP to this registry (loopback registries always are).
    #[arg(long)]
    insecure: bool,
    /// User name for a registry that requires basic authentication.
    #[arg(long, requires = "password")]
    username: Option<String>,
    /// Its password (or the environment variable, kept out of shell history and `ps`).
    #[arg(long, env = "WASMORCH_REGISTRY_PASSWORD", hide_env_values = true, requires = "username")]
    password: Option<String>,
}

pub async fn push(context: Option<String>, a: PushArgs) -> anyhow::Result<()> {
    use wasmorch_host::artifact::{Basic, Registry};
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let digest = wasmorch_host::runtime::digest(&bytes);
    let registry = wasmorch_host::artifact::parse_oci(&a.reference).map(|r| r.resolve_registry().to_string()).ok();
    let mut target = Registry {
        insecure: a.insecure,
        auth: a.username.zip(a.password).map(|(username, password)| Basic { username, password }),
        ca_pem: None,
    };
    // The cluster's own registry: the kubeconfig's CA and token.
    if let Ok(k) = crate::kubeconfig::target(context.as_deref())
        && registry.is_some()
        && wasmorch_host::artifact::authority_of(&k.server) == registry
    {
        target.ca_pem = k.ca_pem;
        if target.auth.is_none() {
            let token = k.token.context("the kubeconfig's user has no token for the cluster registry")?;
            target.auth = Some(Basic { username: "wasmorch".into(), password: token });
        }
    }
    let url = wasmorch_host::artifact::push(bytes, &a.reference, target)
        .await
        .with_context(|| format!("pushing {} to {}", a.file.display(), a.reference))?;
    println!("pushed {} (component sha256:{digest})", a.reference);
    println!("manifest: {url}");
    Ok(())
}
