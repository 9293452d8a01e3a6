//! One module per subcommand.

pub mod apply;
pub mod backup;
pub mod config;
pub mod dashboard;
pub mod describe;
pub mod get;
pub mod logs;
pub mod nodes;
pub mod push;
pub mod rollout;
pub mod secrets;
pub mod token;
pub mod top;
pub mod up;
pub mod users;

use crate::client::Client;

pub async fn version(ctx: Option<String>) -> anyhow::Result<()> {
    println!("Client Version: v{}", env!("CARGO_PKG_VERSION"));
    match Client::new(ctx).await {
        Ok(c) => match c.get_json("/version").await {
            Ok(v) => println!("Server Version: {}", v["gitVersion"].as_str().unwrap_or("unknown")),
            Err(e) => eprintln!("Server Version: unreachable ({e})"),
        },
        Err(_) => eprintln!("Server Version: no cluster configured"),
    }
    Ok(())
}
