//! `wasmorch logs POD`: a container's output, through the API (`pods/{name}/log`).

use crate::client::{Client, q};
use futures::AsyncReadExt;
use std::io::Write;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// Pod name (or pod/NAME).
    pod: String,
    #[arg(short, long)]
    namespace: Option<String>,
    /// Container, when the pod has several.
    #[arg(short, long)]
    container: Option<String>,
    /// Keep streaming new output.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<i64>,
    /// The output of the previous run of a restarted container.
    #[arg(short, long)]
    previous: bool,
}

pub async fn logs(ctx: Option<String>, a: LogsArgs) -> anyhow::Result<()> {
    let client = Client::new(ctx).await?;
    let ns = a.namespace.clone().unwrap_or_else(|| client.namespace.clone());
    let name = a.pod.strip_prefix("pod/").or_else(|| a.pod.strip_prefix("pods/")).unwrap_or(&a.pod);
    let mut query = vec![format!("follow={}", a.follow), format!("previous={}", a.previous)];
    if let Some(c) = &a.container {
        query.push(format!("container={}", q(c)));
    }
    if let Some(n) = a.tail.filter(|n| *n >= 0) {
        query.push(format!("tailLines={n}"));
    }
    let path = format!("/api/v1/namespaces/{ns}/pods/{name}/log?{}", query.join("&"));
    let mut stream = client.stream(&path).await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = std::io::stdout();
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}
