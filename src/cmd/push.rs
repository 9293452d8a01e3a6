//! `wasmorch push FILE REFERENCE`: publish a component as a wasm OCI artifact.

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The component (`.wasm`, built for wasm32-wasip2).
    file: PathBuf,
    /// Where to push it, e.g. `registry.local:5000/hello:1.0`.
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

pub async fn push(a: PushArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let digest = wasmorch_host::runtime::digest(&bytes);
    let insecure = match (a.insecure, wasmorch_host::artifact::parse_oci(&a.reference)) {
        (true, Ok(r)) => vec![r.resolve_registry().to_string()],
        _ => Vec::new(),
    };
    let auth =
        a.username.zip(a.password).map(|(username, password)| wasmorch_host::artifact::Basic { username, password });
    let url = wasmorch_host::artifact::push(bytes, &a.reference, &insecure, auth)
        .await
        .with_context(|| format!("pushing {} to {}", a.file.display(), a.reference))?;
    println!("pushed {} (component sha256:{digest})", a.reference);
    println!("manifest: {url}");
    Ok(())
}
