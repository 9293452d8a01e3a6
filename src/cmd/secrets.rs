//! `wasmorch rotate-secrets-key`: re-seal every Secret at rest with a new key.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct RotateArgs {
    /// The data directory of `wasmorch up` or `wasmorch server` (default: `up`'s). Its store
    /// must not be in use: stop the server first.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub fn rotate(a: RotateArgs) -> anyhow::Result<()> {
    let dir = match a.data_dir {
        Some(d) => d,
        None => super::up::default_data_dir()?,
    };
    let db = dir.join("state.redb");
    if !db.exists() {
        anyhow::bail!("no store at {}", db.display());
    }
    let (objects, history) = wasmorch_control::store::seal::rotate(&db)?;
    println!(
        "re-sealed {objects} secrets and {history} history records with a new key in {}",
        wasmorch_control::store::seal::key_path(&db).display()
    );
    Ok(())
}
