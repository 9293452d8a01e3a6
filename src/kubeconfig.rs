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

/// The kubeconfig extension of a cluster that lists all its API servers (a highly available
/// control plane): `extensions: [{name: wasmorch.io/servers, extension: {servers: [URL, …]}}]`.
/// kubectl ignores it and uses `server`; wasmorch's CLI uses the first of them that answers.
pub const SERVERS_EXTENSION: &str = "wasmorch.io/servers";

/// The API servers the cluster of `context` (else the current context) names: its `server`,
/// then those of [`SERVERS_EXTENSION`], without repeats.
pub fn servers_of(kc: &kube::config::Kubeconfig, context: Option<&str>) -> Vec<String> {
    let Some(ctx_name) = context.map(String::from).or_else(|| kc.current_context.clone()) else {
        return Vec::new();
    };
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let Some(cluster) = kc.clusters.iter().find(|c| c.name == cluster_name).and_then(|c| c.cluster.as_ref()) else {
        return Vec::new();
    };
    let listed = cluster
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.name == SERVERS_EXTENSION)
        .filter_map(|e| e.extension.get("servers").and_then(serde_json::Value::as_array))
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .map(String::from);
    let mut out: Vec<String> = Vec::new();
    for s in cluster.server.clone().into_iter().chain(listed) {
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Give `cluster` several API servers: `server` becomes the first (what kubectl uses) and the
/// extension lists them all.
pub fn set_servers(cfg: &mut Value, cluster: &str, servers: &[String]) -> anyhow::Result<()> {
    let first = servers.first().context("no server given")?;
    for s in servers {
        let ok = s.parse::<http::Uri>().ok().is_some_and(|u| u.scheme_str() == Some("https") && u.host().is_some());
        anyhow::ensure!(ok, "{s:?} is not an https:// URL of an API server");
    }
    let entry = cfg
        .get_mut("clusters")
        .and_then(Value::as_array_mut)
        .and_then(|l| l.iter_mut().find(|e| e.get("name").and_then(Value::as_str) == Some(cluster)))
        .and_then(|e| e.get_mut("cluster"))
        .and_then(Value::as_object_mut)
        .with_context(|| format!("no cluster {cluster:?} in the kubeconfig"))?;
    entry.insert("server".into(), json!(first));
    let mut exts: Vec<Value> = entry
        .get("extensions")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter().filter(|e| e.get("name").and_then(Value::as_str) != Some(SERVERS_EXTENSION)).cloned().collect()
        })
        .unwrap_or_default();
    if servers.len() > 1 {
        exts.push(json!({"name": SERVERS_EXTENSION, "extension": {"servers": servers}}));
    }
    if exts.is_empty() {
        entry.remove("extensions");
    } else {
        entry.insert("extensions".into(), json!(exts));
    }
    Ok(())
}

/// The cluster of `context` (else the current one), by name.
pub fn cluster_of(cfg: &Value, context: Option<&str>) -> anyhow::Result<String> {
    let name = match context {
        Some(c) => c.to_string(),
        None => cfg.get("current-context").and_then(Value::as_str).unwrap_or("").to_string(),
    };
    cfg.get("contexts")
        .and_then(Value::as_array)
        .and_then(|l| l.iter().find(|e| e.get("name").and_then(Value::as_str) == Some(name.as_str())))
        .and_then(|c| c.pointer("/context/cluster"))
        .and_then(Value::as_str)
        .map(String::from)
        .with_context(|| format!("no context {name:?} in the kubeconfig"))
}

#[cfg(test)]
mod servers_tests {
    use super::*;

    fn config() -> Value {
        json!({"apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "k", "cluster": {"server": "https://10.0.0.1:6443",
                "extensions": [{"name": "other", "extension": {"x": 1}}]}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]})
    }

    fn parsed(v: &Value) -> kube::config::Kubeconfig {
        kube::config::Kubeconfig::from_yaml(&serde_yaml_ng::to_string(v).unwrap()).unwrap()
    }

    #[test]
    fn a_cluster_lists_its_servers_in_an_extension_kubectl_ignores() {
        let mut cfg = config();
        assert_eq!(servers_of(&parsed(&cfg), None), ["https://10.0.0.1:6443"]);
        let urls: Vec<String> = ["https://10.0.0.2:6443", "https://10.0.0.3:6443", "https://10.0.0.2:6443"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cluster = cluster_of(&cfg, None).unwrap();
        set_servers(&mut cfg, &cluster, &urls).unwrap();
        assert_eq!(cfg["clusters"][0]["cluster"]["server"], "https://10.0.0.2:6443", "kubectl's server is the first");
        assert_eq!(servers_of(&parsed(&cfg), Some("c")), ["https://10.0.0.2:6443", "https://10.0.0.3:6443"]);
        let exts = cfg["clusters"][0]["cluster"]["extensions"].as_array().unwrap();
        assert!(exts.iter().any(|e| e["name"] == "other"), "another tool's extension is kept");
        // Back to one server: the list goes.
        set_servers(&mut cfg, "k", &urls[..1]).unwrap();
        assert_eq!(servers_of(&parsed(&cfg), None), ["https://10.0.0.2:6443"]);
        assert_eq!(cfg["clusters"][0]["cluster"]["extensions"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn bad_server_lists_are_refused() {
        let mut cfg = config();
        assert!(set_servers(&mut cfg, "k", &[]).is_err());
        assert!(set_servers(&mut cfg, "k", &["http://10.0.0.2:6443".into()]).is_err());
        assert!(set_servers(&mut cfg, "k", &["not a url".into()]).is_err());
        assert!(set_servers(&mut cfg, "nope", &["https://10.0.0.2:6443".into()]).is_err());
        assert_eq!(cfg, config(), "nothing changed");
        assert!(cluster_of(&cfg, Some("missing")).is_err());
    }
}
