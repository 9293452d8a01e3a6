//! `wasmorch backup FILE`: a consistent snapshot of the running server's store.

use crate::client::Client;
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct BackupArgs {
    /// Where to write the snapshot (a redb file; restore with `--restore FILE`).
    file: PathBuf,
}

pub async fn backup(ctx: Option<String>, a: BackupArgs) -> anyhow::Result<()> {
    let client = Client::new(ctx).await?;
    let (code, bytes) =
        client.send(http::Method::GET, "/wasmorch/v1/backup", None, "application/octet-stream", Vec::new()).await?;
    if code != 200 {
        anyhow::bail!("backup failed ({code}): {}", String::from_utf8_lossy(&bytes));
    }
    let tmp = a.file.with_extension("partial");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.file)?;
    let rev = wasmorch_control::store::verify_snapshot(&a.file)?;
    println!("backup written to {} (revision {rev}, {} bytes)", a.file.display(), bytes.len());
    Ok(())
}
