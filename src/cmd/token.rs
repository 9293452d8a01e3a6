//! `wasmorch token create|list|delete`: join tokens (kubeadm's bootstrap tokens, in the
//! k3s `K10<CA hash>::<id>.<secret>` form).

use crate::client::{Client, q};
use anyhow::Context;
use http::Method;
use std::time::Duration;
use wasmorch_api::join::{self, JoinToken, StoredToken};

#[derive(clap::Subcommand)]
pub enum TokenCmd {
    /// Make a join token and print it.
    Create {
        /// How long the token is valid (e.g. 30m, 24h, 7d; 0 never expires).
        #[arg(long, default_value = "24h", value_parser = duration)]
        ttl: Duration,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List join tokens.
    List,
    /// Delete join tokens by id or whole token; nodes that joined with them stay members.
    Delete {
        #[arg(required = true)]
        tokens: Vec<String>,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    wasmorch_api::object::parse_duration(s)
}

fn secrets_path() -> String {
    format!("/api/v1/namespaces/{}/secrets", join::NAMESPACE)
}

/// The pin of the cluster's CA, read through the verified admin connection.
async fn ca_hash(client: &Client) -> anyhow::Result<String> {
    let (code, pem) = client.send(Method::GET, "/cacerts", None, "*/*", Vec::new()).await?;
    anyhow::ensure!(code == 200, "the server answered {code} for /cacerts");
    wasmorch_host::membership::ca_hash(&String::from_utf8_lossy(&pem))
}

pub async fn run(ctx: Option<String>, cmd: TokenCmd) -> anyhow::Result<()> {
    let client = Client::new(ctx).await?;
    match cmd {
        TokenCmd::Create { ttl, description } => {
            let tok = JoinToken::from_random(&ca_hash(&client).await?, &rand::random());
            let expiration = (!ttl.is_zero())
                .then(|| chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1)));
            let body = serde_json::to_vec(&tok.secret(expiration, &description))?;
            client.json(Method::POST, &secrets_path(), Some("application/json"), "application/json", body).await?;
            println!("{tok}");
        }
        TokenCmd::List => {
            let hash = ca_hash(&client).await?;
            let list = client.get_json(&secrets_path()).await?;
            let mut tokens: Vec<StoredToken> =
                list["items"].as_array().into_iter().flatten().filter_map(StoredToken::from_secret).collect();
            tokens.sort_by(|a, b| a.id.cmp(&b.id));
            if tokens.is_empty() {
                eprintln!("No join tokens found.");
                return Ok(());
            }
            let now = chrono::Utc::now();
            let rows: Vec<[String; 4]> = tokens
                .iter()
                .map(|t| {
                    let full = JoinToken { ca_hash: Some(hash.clone()), id: t.id.clone(), secret: t.secret.clone() };
                    let (ttl, expires) = match t.expiration {
                        Some(e) if e <= now => ("<expired>".to_string(), e.to_rfc3339()),
                        Some(e) => (wasmorch_api::object::human_duration((e - now).num_seconds()), e.to_rfc3339()),
                        None => ("<forever>".to_string(), "<never>".to_string()),
                    };
                    [full.to_string(), ttl, expires, t.description.clone()]
                })
                .collect();
            print_rows(&["TOKEN", "TTL", "EXPIRES", "DESCRIPTION"], &rows);
        }
        TokenCmd::Delete { tokens } => {
            for t in tokens {
                let id = match JoinToken::parse(&t) {
                    Ok(tok) => tok.id,
                    Err(_) if t.len() == 6 && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) => t,
                    Err(e) => return Err(e).context("give a token id (6 characters) or a whole token"),
                };
                let path = format!("{}/{}", secrets_path(), q(&join::secret_name(&id)));
                match client.json(Method::DELETE, &path, None, "application/json", Vec::new()).await {
                    Ok(_) => println!("bootstrap token \"{id}\" deleted"),
                    Err(e) if e.downcast_ref::<crate::client::ApiFailure>().is_some_and(|f| f.code == 404) => {
                        anyhow::bail!("bootstrap token \"{id}\" not found")
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

fn print_rows(header: &[&str; 4], rows: &[[String; 4]]) {
    let mut width = header.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 3 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = width[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(*header);
    for r in rows {
        line([r[0].as_str(), r[1].as_str(), r[2].as_str(), r[3].as_str()]);
    }
}
