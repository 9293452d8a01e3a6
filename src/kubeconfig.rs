//! Reading and merging kubeconfig files (`$KUBECONFIG` or `~/.kube/config`), written 0600.

use anyhow::Context;
use base64::Engine;
use serde_json::{Value, json};
use std::path::PathBuf;

/// The file to write: the first entry of `$KUBECONFIG`, else `~/.kube/config`.
pub fn path() -> anyhow::Result<PathBuf> {
    if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty())
        && let Some(first) = std::env::split_paths(&k).next()
    {
        return Ok(first);
    }
    let home = dirs::home_dir().context("no home directory: set KUBECONFIG")?;
    Ok(home.join(".kube").join("config"))
}

pub fn load() -> anyhow::Result<Value> {
    let p = path()?;
    match std::fs::read_to_string(&p) {
        Ok(s) if !s.trim().is_empty() => {
            let v = wasmorch_api::decode::yaml(&s).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            Ok(v)
        }
        Ok(_) => Ok(empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(empty()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn empty() -> Value {
    json!({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": [], "current-context": "", "preferences": {}})
}

pub fn save(cfg: &Value) -> anyhow::Result<PathBuf> {
    let p = path()?;
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_yaml_ng::to_string(cfg)?;
    let tmp = p.with_extension("wasmorch-tmp");
    {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(p)
}

fn upsert(list: &mut Value, name: &str, entry: Value) {
    if !list.is_array() {
        *list = json!([]);
    }
    let arr = list.as_array_mut().expect("array");
    arr.retain(|e| e["name"] != name);
    arr.push(entry);
}

/// Merge a cluster, user and context named `name` into the kubeconfig and switch to it.
pub fn merge(name: &str, server: &str, ca_pem: &str, token: &str) -> anyhow::Result<PathBuf> {
    let mut cfg = load()?;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    upsert(
        &mut cfg["clusters"],
        name,
        json!({"name": name, "cluster": {"server": server, "certificate-authority-data": ca}}),
    );
    upsert(&mut cfg["users"], name, json!({"name": name, "user": {"token": token}}));
    upsert(
        &mut cfg["contexts"],
        name,
        json!({"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}),
    );
    cfg["current-context"] = json!(name);
    save(&cfg)
}

/// A standalone kubeconfig (for `wasmorch server`'s admin file).
pub fn standalone(name: &str, server: &str, ca_pem: &str, token: &str) -> anyhow::Result<String> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let cfg = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        "current-context": name,
    });
    Ok(serde_yaml_ng::to_string(&cfg)?)
}

/// What a context of the kubeconfig says of its cluster and user.
pub struct Target {
    pub server: String,
    /// The cluster's CA, PEM (from `certificate-authority-data` or `certificate-authority`).
    pub ca_pem: Option<Vec<u8>>,
    pub token: Option<String>,
}

/// The cluster and user of `context` (else the current one).
pub fn target(context: Option<&str>) -> anyhow::Result<Target> {
    let cfg = load()?;
    let name = match context {
        Some(c) => c.to_string(),
        None => cfg.get("current-context").and_then(Value::as_str).unwrap_or("").to_string(),
    };
    let find = |list: &str, n: &str| {
        cfg.get(list)
            .and_then(Value::as_array)
            .and_then(|l| l.iter().find(|e| e.get("name").and_then(Value::as_str) == Some(n)))
            .cloned()
    };
    let ctx = find("contexts", &name).with_context(|| format!("no context {name:?} in the kubeconfig"))?;
    let field = |v: &Option<Value>, path: &str| {
        v.as_ref().and_then(|v| v.pointer(path)).and_then(Value::as_str).map(String::from)
    };
    let ctx = Some(ctx);
    let cluster = field(&ctx, "/context/cluster").and_then(|c| find("clusters", &c));
    let user = field(&ctx, "/context/user").and_then(|u| find("users", &u));
    let server = field(&cluster, "/cluster/server").context("the context's cluster has no server")?;
    let ca_pem = match field(&cluster, "/cluster/certificate-authority-data") {
        Some(b64) => {
            Some(base64::engine::general_purpose::STANDARD.decode(b64.trim()).context("certificate-authority-data")?)
        }
        None => match field(&cluster, "/cluster/certificate-authority") {
            Some(f) => Some(std::fs::read(&f).with_context(|| format!("reading {f}"))?),
            None => None,
        },
    };
    Ok(Target { server, ca_pem, token: field(&user, "/user/token") })
}
