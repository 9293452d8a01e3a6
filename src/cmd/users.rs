//! `wasmorch kubeconfig user NAME`: a kubeconfig for a user (a client certificate the cluster
//! CA signs: CN is the user, O the groups), optionally bound to a role — what `kubeadm
//! kubeconfig user` does, through the API.

use crate::client::Client;
use http::Method;
use serde_json::{Value, json};

#[derive(clap::Subcommand)]
pub enum KubeconfigCmd {
    /// Print a kubeconfig for USER (to stdout, or --output FILE).
    User(UserArgs),
}

#[derive(clap::Args)]
pub struct UserArgs {
    user: String,
    /// A group the user is in (repeatable): RBAC bindings may name it.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Bind this ClusterRole to the user (in --namespace, or cluster-wide without one).
    #[arg(long, conflicts_with = "role")]
    clusterrole: Option<String>,
    /// Bind this Role (of --namespace) to the user.
    #[arg(long, requires = "namespace")]
    role: Option<String>,
    /// The namespace of the binding, and the kubeconfig's default namespace.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[arg(short = 'o', long)]
    output: Option<std::path::PathBuf>,
}

pub async fn run(ctx: Option<String>, c: KubeconfigCmd) -> anyhow::Result<()> {
    let KubeconfigCmd::User(a) = c;
    let target = crate::kubeconfig::target(ctx.as_deref())?;
    let client = Client::new(ctx).await?;
    let body = serde_json::to_vec(&json!({"user": a.user, "groups": a.groups}))?;
    let creds = client.json(Method::POST, "/wasmorch/v1/user-certificates", None, "application/json", body).await?;
    let field = |k: &str| creds.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let binding = |kind: &str, role_kind: &str, role: &str| {
        let mut meta = json!({"name": format!("{}-{role}", a.user.replace(':', "-"))});
        if let Some(ns) = &a.namespace {
            meta["namespace"] = json!(ns);
        }
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": a.user}]})
    };
    let made = match (&a.clusterrole, &a.role, &a.namespace) {
        (Some(r), _, Some(ns)) => Some((
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
            binding("RoleBinding", "ClusterRole", r),
        )),
        (Some(r), _, None) => Some((
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".to_string(),
            binding("ClusterRoleBinding", "ClusterRole", r),
        )),
        (None, Some(r), Some(ns)) => Some((
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
            binding("RoleBinding", "Role", r),
        )),
        _ => None,
    };
    if let Some((path, obj)) = made {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let kind = obj["kind"].as_str().unwrap_or("").to_lowercase();
        match client.json(Method::POST, &path, None, "application/json", serde_json::to_vec(&obj)?).await {
            Ok(_) => eprintln!("{kind}.rbac.authorization.k8s.io/{name} created"),
            Err(e) if e.downcast_ref::<crate::client::ApiFailure>().is_some_and(|f| f.code == 409) => {
                eprintln!("{kind}.rbac.authorization.k8s.io/{name} exists")
            }
            Err(e) => return Err(e),
        }
    }
    use base64::Engine;
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let name = format!("{}@wasmorch", a.user);
    let cfg = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "wasmorch", "cluster": {"server": target.server, "certificate-authority-data": b64(field("ca"))}}],
        "users": [{"name": a.user, "user": {"client-certificate-data": b64(field("certificate")), "client-key-data": b64(field("key"))}}],
        "contexts": [{"name": name, "context": {"cluster": "wasmorch", "user": a.user, "namespace": a.namespace.clone().unwrap_or_else(|| "default".into())}}],
        "current-context": name,
    });
    let text = serde_yaml_ng::to_string(&cfg)?;
    match &a.output {
        Some(p) => {
            std::fs::write(p, text)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))?;
            }
            eprintln!("kubeconfig for {} written to {}", a.user, p.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
