//! `wasmorch up` and `wasmorch server`.

use crate::kubeconfig;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;
use wasmorch_control::server::{self, Config};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where the cluster keeps its state (default: the user's data dir, e.g. ~/.local/share/wasmorch).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the API server (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Start from a snapshot written by `wasmorch backup` (the current state is kept aside).
    #[arg(long)]
    restore: Option<PathBuf>,
    /// Do not write a kubeconfig context.
    #[arg(long)]
    no_kubeconfig: bool,
}

#[derive(clap::Args)]
pub struct ServerArgs {
    #[arg(long, default_value = "/var/lib/wasmorch")]
    data_dir: PathBuf,
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Extra DNS names or IP addresses for the server certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Start from a snapshot written by `wasmorch backup` (the current state is kept aside).
    #[arg(long)]
    restore: Option<PathBuf>,
    /// History revisions kept for watch resume before compaction.
    #[arg(long, default_value_t = 100_000)]
    history_revisions: u64,
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    Ok(dirs::data_local_dir().context("no user data directory: pass --data-dir")?.join("wasmorch"))
}

/// Replace the store with a verified snapshot, keeping the old file aside.
fn restore(cfg: &Config, snapshot: &Path) -> anyhow::Result<()> {
    let rev = wasmorch_control::store::verify_snapshot(snapshot)?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    let dest = cfg.store_path();
    if dest.exists() {
        let aside =
            cfg.data_dir.join(format!("state.redb.before-restore-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S")));
        std::fs::rename(&dest, &aside).with_context(|| format!("moving {} aside", dest.display()))?;
        eprintln!("previous state kept at {}", aside.display());
    }
    let tmp = cfg.data_dir.join("state.redb.restoring");
    std::fs::copy(snapshot, &tmp).with_context(|| format!("copying {}", snapshot.display()))?;
    std::fs::rename(&tmp, &dest)?;
    eprintln!("restored {} (revision {rev})", snapshot.display());
    Ok(())
}

async fn until_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    token.cancel();
}

pub async fn up(a: UpArgs) -> anyhow::Result<()> {
    let data_dir = match a.data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let cfg = Config::new(data_dir, a.listen);
    if let Some(snap) = &a.restore {
        restore(&cfg, snap)?;
    }
    let shutdown = CancellationToken::new();
    let running = server::start(cfg.clone(), shutdown.clone()).await?;
    let url = format!("https://{}", running.addr);
    // The kubeconfig is written before the address is announced, so whoever reads the
    // announcement can use it at once.
    let written = match a.no_kubeconfig {
        true => None,
        false => Some(kubeconfig::merge("wasmorch-local", &url, &running.ca_pem, &running.admin_token)?),
    };
    println!("wasmorch is up: listening on {url}");
    println!("  data dir:   {}", cfg.data_dir.display());
    if let Some(p) = written {
        println!("  kubeconfig: {} (context wasmorch-local, now current)", p.display());
    }
    println!("Try:");
    println!("  wasmorch apply -f manifests/");
    println!("  wasmorch get all -A        (or: kubectl get deploy,pods)");
    println!("Press Ctrl-C to stop; state is kept for the next `wasmorch up`.");
    until_signal(shutdown).await;
    eprintln!("stopping…");
    running.wait().await;
    eprintln!("stopped");
    Ok(())
}

pub async fn server(a: ServerArgs) -> anyhow::Result<()> {
    let mut cfg = Config::new(a.data_dir, a.listen);
    cfg.tls_sans = a.tls_san;
    cfg.history_revisions = a.history_revisions;
    if let Some(snap) = &a.restore {
        restore(&cfg, snap)?;
    }
    let shutdown = CancellationToken::new();
    let running = server::start(cfg.clone(), shutdown.clone()).await?;
    let host = if running.addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { running.addr.ip().to_string() };
    let url = format!("https://{host}:{}", running.addr.port());
    let admin = cfg.data_dir.join("admin.kubeconfig");
    std::fs::write(&admin, kubeconfig::standalone("wasmorch", &url, &running.ca_pem, &running.admin_token)?)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600))?;
    }
    println!("wasmorch server: listening on https://{}", running.addr);
    println!("  admin kubeconfig: {}", admin.display());
    until_signal(shutdown).await;
    running.wait().await;
    Ok(())
}
