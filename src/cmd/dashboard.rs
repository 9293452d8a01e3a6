//! `wasmorch dashboard`: the dashboard's address with a short-lived token in its fragment
//! (`https://SERVER/ui/#token=…`; a fragment never leaves the browser), opened in the
//! default browser unless `--no-open`. The token is a bound service-account token
//! (TokenRequest) for `--service-account NS/NAME`, or for `kube-system/wasmorch-dashboard`,
//! which is created on first use and bound to `cluster-admin` — so the caller must be allowed
//! to create those (an admin).

use crate::client::Client;
use http::Method;
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct DashboardArgs {
    /// How long the link's token is good for (10m to 24h).
    #[arg(long, default_value = "1h")]
    duration: String,
    /// Sign in as this ServiceAccount (NAMESPACE/NAME) instead of the dashboard's admin one.
    #[arg(long)]
    service_account: Option<String>,
    /// Print the link only.
    #[arg(long)]
    no_open: bool,
}

const ACCOUNT: (&str, &str) = ("kube-system", "wasmorch-dashboard");

/// Create `body` at `path` unless it exists.
async fn ensure(client: &Client, path: &str, body: Value) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(&body)?;
    match client.json(Method::POST, path, Some("application/json"), "application/json", bytes).await {
        Ok(_) => Ok(()),
        Err(e) if e.downcast_ref::<crate::client::ApiFailure>().is_some_and(|f| f.code == 409) => Ok(()),
        Err(e) => Err(e),
    }
}

pub async fn run(ctx: Option<String>, a: DashboardArgs) -> anyhow::Result<()> {
    let seconds = wasmorch_api::object::parse_duration(&a.duration).map_err(|e| anyhow::anyhow!(e))?.as_secs();
    anyhow::ensure!((600..=86_400).contains(&seconds), "--duration must be between 10m and 24h");
    let target = crate::kubeconfig::target(ctx.as_deref())?;
    let client = Client::new(ctx).await?;
    let (ns, name) = match &a.service_account {
        Some(sa) => {
            let (ns, name) =
                sa.split_once('/').ok_or_else(|| anyhow::anyhow!("--service-account is NAMESPACE/NAME"))?;
            (ns.to_string(), name.to_string())
        }
        None => {
            let (ns, name) = ACCOUNT;
            ensure(
                &client,
                &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}),
            )
            .await?;
            ensure(
                &client,
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]}),
            )
            .await?;
            (ns.to_string(), name.to_string())
        }
    };
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": seconds}});
    let answer = client
        .json(
            Method::POST,
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}/token"),
            Some("application/json"),
            "application/json",
            serde_json::to_vec(&request)?,
        )
        .await?;
    let token = answer
        .pointer("/status/token")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("no token in the answer"))?;
    let link = format!("{}/ui/#token={token}", target.server.trim_end_matches('/'));
    println!("{link}");
    eprintln!("(signed in as {ns}/{name} for {}; the cluster's CA signs the server certificate)", a.duration);
    if !a.no_open {
        open(&link);
    }
    Ok(())
}

/// Open `link` in the default browser, quietly nothing when there is none.
fn open(link: &str) {
    let (cmd, args): (&str, Vec<&str>) = if cfg!(target_os = "macos") {
        ("open", vec![link])
    } else if cfg!(windows) {
        ("cmd", vec!["/C", "start", "", link])
    } else {
        ("xdg-open", vec![link])
    };
    let _ = std::process::Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}
