//! A pod's volumes on this node, and how its containers see them.
//!
//! A component sees files only through WASI preopened directories: each `volumeMount` becomes
//! one preopen of a host directory at `mountPath`, read-only or read-write. Host directories:
//! - `configMap`, `secret`, `downwardAPI`, `projected`: `<pod dir>/volumes/<name>/`, written
//!   by the node (each file replaced by rename, so a reader never sees half a file) and
//!   refreshed while the pod runs; always read-only. A `projected` volume's
//!   `serviceAccountToken` source is a token the node requests for the pod's service account,
//!   bound to the pod, and renews at 80 % of its lifetime (as a kubelet does).
//! - `emptyDir`: `<pod dir>/volumes/<name>/`, shared by the pod's containers, removed with the
//!   pod; `sizeLimit` is checked on every refresh and a pod over it is evicted (as a kubelet
//!   does: no filesystem quota under a preopen).
//! - `hostPath`: only under a directory the node allows (`--allow-host-path`).
//! - `persistentVolumeClaim`: the bound volume's directory, which must lie in the node's
//!   storage directory (local-path volumes) or an allowed host path.
//!
//! Escapes: preopens are capability handles (no `..` above the mount, no absolute symlinks
//! out); paths from the spec (`mountPath`, `subPath`, `items[].path`) are refused when they
//! hold `..`, and a `subPath` is resolved and checked to stay inside its volume.

use super::NodeCtx;
use super::config::{Kind, PodPlace, Refs, field_value, resource_value};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use wasmorch_api::quantity;

pub use crate::runtime::Mount;

/// What the node allows pods to mount from its own filesystem.
#[derive(Debug, Clone, Default)]
pub struct StoragePolicy {
    /// Directories under which `hostPath` volumes may be.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Where local-path volumes live (`<data dir>/storage`).
    pub storage_dir: PathBuf,
}

#[derive(Debug)]
enum Source {
    /// ConfigMap, Secret or downward API: files the node writes, as the volume's entry in the
    /// pod's spec says (read from the pod each time: a copy here was a pod's worth of memory).
    Projected,
    EmptyDir {
        limit: Option<u64>,
    },
    Host,
}

#[derive(Debug)]
struct Volume {
    name: String,
    dir: PathBuf,
    source: Source,
    read_only: bool,
}

/// The volumes of one pod.
#[derive(Debug)]
pub struct PodVolumes {
    vols: Vec<Volume>,
    /// Files each projected volume holds now (to remove keys that went away).
    written: Mutex<BTreeMap<String, BTreeSet<PathBuf>>>,
    scratch: PathBuf,
    tokens: Tokens,
}

/// Service-account tokens of one pod, by (audience, lifetime): the token and when to renew it.
#[derive(Debug, Default)]
struct Tokens(Mutex<BTreeMap<(String, i64), (String, std::time::Instant)>>);

impl Tokens {
    /// The token a `serviceAccountToken` source asks for: the cached one until 80 % of its
    /// lifetime (at most 24 h) has passed, else a new one from the API server, bound to the pod.
    async fn get(&self, ctx: &NodeCtx, pod: &Value, src: &Value) -> Result<String, String> {
        let audience = src["audience"].as_str().unwrap_or("").to_string();
        let seconds = src["expirationSeconds"].as_i64().unwrap_or(3600).max(600);
        let key = (audience.clone(), seconds);
        let now = std::time::Instant::now();
        if let Some((t, renew)) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && now < *renew
        {
            return Ok(t.clone());
        }
        let meta = &pod["metadata"];
        let ns = meta["namespace"].as_str().unwrap_or("default");
        let account = pod["spec"]["serviceAccountName"].as_str().filter(|s| !s.is_empty()).unwrap_or("default");
        let mut spec = serde_json::json!({
            "expirationSeconds": seconds,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]},
        });
        if !audience.is_empty() {
            spec["audiences"] = serde_json::json!([audience]);
        }
        let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
        let r = ctx
            .client
            .post(&format!("/api/v1/namespaces/{ns}/serviceaccounts/{account}/token"), &body)
            .await
            .map_err(|e| format!("requesting a token for service account {ns}/{account}: {}", e.message))?;
        let token =
            r["status"]["token"].as_str().filter(|t| !t.is_empty()).ok_or("the token request returned no token")?;
        let renew = now + std::time::Duration::from_secs((seconds as u64 * 8 / 10).min(24 * 3600));
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (token.to_string(), renew));
        Ok(token.to_string())
    }
}

/// A relative path from the spec (`subPath`, `items[].path`): no `..`, not absolute.
pub fn relative(p: &str, what: &str) -> Result<PathBuf, String> {
    let path = Path::new(p);
    if p.is_empty() || path.is_absolute() || p.starts_with('/') {
        return Err(format!("{what} {p:?} must be a relative path"));
    }
    if path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(format!("{what} {p:?} must not contain '..'"));
    }
    Ok(path.to_path_buf())
}

/// A `mountPath`: absolute, no `..`; returned normalized (`/a/b`).
pub fn mount_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("mountPath {p:?} must be an absolute path"));
    }
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    if parts.contains(&"..") {
        return Err(format!("mountPath {p:?} must not contain '..'"));
    }
    Ok(format!("/{}", parts.join("/")))
}

fn lexically_under(p: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| p.starts_with(r))
}

/// Check that a host directory lies under one of `roots`, creating it first if asked (only
/// when it is lexically under one). Returns the canonical path.
fn host_dir(path: &str, roots: &[PathBuf], create: bool, what: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{what} {path:?} must be an absolute path without '..'"));
    }
    let allowed = || {
        let list: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        format!("{what} {path:?} is not under a directory this node allows ({})", list.join(", "))
    };
    let canon_roots: Vec<PathBuf> = roots.iter().filter_map(|r| r.canonicalize().ok()).collect();
    if !lexically_under(p, roots) && !lexically_under(p, &canon_roots) {
        return Err(allowed());
    }
    if create && !p.exists() {
        std::fs::create_dir_all(p).map_err(|e| format!("creating {what} {path:?}: {e}"))?;
    }
    let canon = p.canonicalize().map_err(|e| format!("{what} {path:?}: {e}"))?;
    // Symlinks resolved: still inside?
    if !lexically_under(&canon, &canon_roots) {
        return Err(allowed());
    }
    if !canon.is_dir() {
        return Err(format!("{what} {path:?} is not a directory (a component mounts directories)"));
    }
    Ok(canon)
}

fn file_mode(v: &Value, spec: &Value) -> u32 {
    v["mode"].as_u64().or_else(|| spec["defaultMode"].as_u64()).unwrap_or(0o644) as u32
}

/// Write `rel` under `dir` with `mode`: in place when `fresh` (the volume's first writing, into
/// a directory just made), else, when its content changed, whole through a rename.
fn put_file(dir: &Path, rel: &Path, bytes: &[u8], mode: u32, fresh: bool) -> std::io::Result<()> {
    let target = dir.join(rel);
    if let Some(parent) = target.parent()
        && parent != dir
    {
        std::fs::create_dir_all(parent)?;
    }
    if fresh {
        // The volume's first writing, before any container can read it: written in place,
        // one path lookup per file (a node starting thousands of pods spent a sixth of its
        // time walking these paths).
        return write_with_mode(&target, bytes, mode, true);
    }
    if std::fs::read(&target).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    // A running container may be reading it: replaced whole, never seen half-written.
    let tmp = target.with_file_name(format!(".{}.tmp", rel.file_name().and_then(|n| n.to_str()).unwrap_or("f")));
    write_with_mode(&tmp, bytes, mode, false)?;
    std::fs::rename(&tmp, &target)
}

/// Write `bytes` to `path` with permission bits `mode` (set on the open file, not by path,
/// and exactly: not narrowed by the umask). `new`: the file must not exist yet.
fn write_with_mode(path: &Path, bytes: &[u8], mode: u32, new: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).create_new(new).truncate(true).open(path)?;
    f.write_all(bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    Ok(())
}

/// The files a projected volume should hold now: path → (bytes, mode).
async fn projection(
    refs: &mut Refs<'_>,
    place: &PodPlace<'_>,
    spec: &Value,
    tokens: &Tokens,
) -> Result<BTreeMap<PathBuf, (Vec<u8>, u32)>, String> {
    let Some(p) = spec.get("projected") else { return one_source(refs, place, spec).await };
    let mut out = BTreeMap::new();
    for src in p["sources"].as_array().into_iter().flatten() {
        if let Some(t) = src.get("serviceAccountToken") {
            let rel = relative(t["path"].as_str().unwrap_or(""), "serviceAccountToken path")?;
            let token = tokens.get(refs.ctx(), place.pod, t).await?;
            out.insert(rel, (token.into_bytes(), file_mode(&Value::Null, p)));
            continue;
        }
        // Each other source is a volume of its own kind, with the projection's default mode.
        let mut one = src.clone();
        if let Some(inner) = one.as_object_mut().and_then(|m| m.values_mut().next()).and_then(Value::as_object_mut)
            && let Some(mode) = p.get("defaultMode")
        {
            inner.entry("defaultMode").or_insert_with(|| mode.clone());
        }
        out.extend(one_source(refs, place, &one).await?);
    }
    Ok(out)
}

/// The files of a `configMap`, `secret` or `downwardAPI` volume (or projection source).
async fn one_source(
    refs: &mut Refs<'_>,
    place: &PodPlace<'_>,
    spec: &Value,
) -> Result<BTreeMap<PathBuf, (Vec<u8>, u32)>, String> {
    let mut out = BTreeMap::new();
    let (kind, r) = match (spec.get("configMap"), spec.get("secret")) {
        (Some(r), _) => (Kind::ConfigMap, r),
        (_, Some(r)) => (Kind::Secret, r),
        _ => {
            for item in spec["downwardAPI"]["items"].as_array().into_iter().flatten() {
                let rel = relative(item["path"].as_str().unwrap_or(""), "downwardAPI item path")?;
                let value = if let Some(f) = item.get("fieldRef") {
                    field_value(place, f["fieldPath"].as_str().unwrap_or(""), true)?
                } else if let Some(rf) = item.get("resourceFieldRef") {
                    let first = place.pod["spec"]["containers"][0]["name"].as_str().unwrap_or("");
                    resource_value(place.pod, first, rf)?
                } else {
                    return Err(format!("downwardAPI item {rel:?} has neither fieldRef nor resourceFieldRef"));
                };
                out.insert(rel, (value.into_bytes(), file_mode(item, &spec["downwardAPI"])));
            }
            return Ok(out);
        }
    };
    let name = r["name"].as_str().or_else(|| r["secretName"].as_str()).unwrap_or("");
    let optional = r["optional"] == true;
    let Some(values) = refs.values(kind, name).await? else {
        return if optional { Ok(out) } else { Err(format!("{} \"{name}\" not found", kind.lower())) };
    };
    match r["items"].as_array() {
        Some(items) => {
            for item in items {
                let key = item["key"].as_str().unwrap_or("");
                let rel = relative(item["path"].as_str().unwrap_or(""), "item path")?;
                match values.get(key) {
                    Some(v) => {
                        out.insert(rel, (v.clone(), file_mode(item, r)));
                    }
                    None if optional => {}
                    None => {
                        return Err(format!("{} \"{name}\" has no key {key:?} named in items", kind.title()));
                    }
                }
            }
        }
        None => {
            for (k, v) in values {
                let rel = relative(&k, "key")?;
                out.insert(rel, (v, file_mode(&Value::Null, r)));
            }
        }
    }
    Ok(out)
}

/// Bytes used under `dir` (files only; symlinks not followed).
pub fn usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// Whether the pod's projected files show fields that can change while it runs: labels or
/// annotations through the downward API (everything else they show is fixed at creation).
/// Only then does a refresh read the pod again.
pub fn shows_live_metadata(pod: &Value) -> bool {
    let mutable = |item: &Value| {
        let path = item.pointer("/fieldRef/fieldPath").and_then(Value::as_str).unwrap_or("");
        path.starts_with("metadata.labels") || path.starts_with("metadata.annotations")
    };
    let items = |downward: Option<&Value>| {
        downward.and_then(|d| d.get("items")).and_then(Value::as_array).is_some_and(|items| items.iter().any(mutable))
    };
    let volumes = pod.pointer("/spec/volumes").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    volumes.iter().any(|v| {
        let sources = v.pointer("/projected/sources").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        items(v.get("downwardAPI")) || sources.iter().any(|s| items(s.get("downwardAPI")))
    })
}

/// The entry named `name` in the pod's `spec.volumes`.
fn volume_spec<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    let volumes = pod.pointer("/spec/volumes").and_then(Value::as_array)?;
    volumes.iter().find(|v| v.get("name").and_then(Value::as_str) == Some(name))
}

impl PodVolumes {
    /// Make every volume of `pod` ready under `pod_dir`. `Err` names what is wrong (a missing
    /// ConfigMap or Secret, a path not allowed, an unbound claim).
    pub async fn prepare(ctx: &NodeCtx, place: &PodPlace<'_>, pod_dir: &Path) -> Result<PodVolumes, String> {
        let pod = place.pod;
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let mut refs = Refs::new(ctx, ns);
        let base = pod_dir.join("volumes");
        let mut vols = Vec::new();
        for spec in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let name = spec["name"].as_str().unwrap_or("").to_string();
            let what = |k: &str| format!("volume {name:?} ({k})");
            let (dir, source, read_only) = if ["configMap", "secret", "downwardAPI", "projected"]
                .iter()
                .any(|k| spec.get(*k).is_some())
            {
                (base.join(&name), Source::Projected, true)
            } else if let Some(e) = spec.get("emptyDir") {
                let limit = e["sizeLimit"].as_str().and_then(quantity::parse).map(|q| q as u64);
                let dir = base.join(&name);
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", what("emptyDir")))?;
                (dir, Source::EmptyDir { limit }, false)
            } else if let Some(h) = spec.get("hostPath") {
                let create = match h["type"].as_str().unwrap_or("") {
                    "" | "Directory" => false,
                    "DirectoryOrCreate" => true,
                    other => {
                        return Err(format!(
                            "{}: hostPath type {other} is not supported: a component mounts directories",
                            what("hostPath")
                        ));
                    }
                };
                let path = h["path"].as_str().unwrap_or("");
                let dir = host_dir(path, &ctx.storage.allowed_host_paths, create, "hostPath")?;
                (dir, Source::Host, false)
            } else if let Some(c) = spec.get("persistentVolumeClaim") {
                let dir = claim_dir(ctx, ns, c["claimName"].as_str().unwrap_or("")).await?;
                (dir, Source::Host, c["readOnly"] == true)
            } else {
                let kinds: Vec<&String> =
                    spec.as_object().map(|m| m.keys().filter(|k| *k != "name").collect()).unwrap_or_default();
                return Err(format!(
                    "volume {name:?}: type {kinds:?} is not supported (configMap, secret, downwardAPI, projected, emptyDir, hostPath, persistentVolumeClaim are)"
                ));
            };
            vols.push(Volume { name, dir, source, read_only });
        }
        let v = PodVolumes {
            vols,
            written: Mutex::new(BTreeMap::new()),
            scratch: pod_dir.join("subpath"),
            tokens: Tokens::default(),
        };
        v.project(&mut refs, place, true).await?;
        Ok(v)
    }

    /// Write the projected volumes' files. At start every problem is an error; on a refresh
    /// (`strict` false) a volume that cannot be read now keeps its files.
    async fn project(&self, refs: &mut Refs<'_>, place: &PodPlace<'_>, strict: bool) -> Result<(), String> {
        for v in &self.vols {
            if !matches!(v.source, Source::Projected) {
                continue;
            }
            let Some(spec) = volume_spec(place.pod, &v.name) else { continue };
            let files = match projection(refs, place, spec, &self.tokens).await {
                Ok(f) => f,
                Err(e) if strict => return Err(format!("volume {:?}: {e}", v.name)),
                Err(e) => {
                    tracing::debug!("refreshing volume {}: {e}", v.name);
                    continue;
                }
            };
            // A directory made now holds nothing: its files are written in place.
            let fresh = match std::fs::create_dir(&v.dir) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(_) => {
                    std::fs::create_dir_all(&v.dir).map(|()| true).map_err(|e| format!("volume {:?}: {e}", v.name))?
                }
            };
            for (rel, (bytes, mode)) in &files {
                put_file(&v.dir, rel, bytes, *mode, fresh)
                    .map_err(|e| format!("volume {:?}: writing {rel:?}: {e}", v.name))?;
            }
            let now: BTreeSet<PathBuf> = files.into_keys().collect();
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(before) = written.get(&v.name) {
                for gone in before.difference(&now) {
                    let _ = std::fs::remove_file(v.dir.join(gone));
                }
            }
            written.insert(v.name.clone(), now);
        }
        Ok(())
    }

    /// Refresh projected files from the API; `Some(message)` if an emptyDir is over its
    /// `sizeLimit` (the pod is to be evicted).
    pub async fn refresh(&self, ctx: &NodeCtx, place: &PodPlace<'_>) -> Option<String> {
        let ns = place.pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let mut refs = Refs::new(ctx, ns);
        if let Err(e) = self.project(&mut refs, place, false).await {
            tracing::warn!("refreshing volumes: {e}");
        }
        self.over_limit()
    }

    fn over_limit(&self) -> Option<String> {
        self.vols.iter().find_map(|v| match v.source {
            Source::EmptyDir { limit: Some(l) } if usage(&v.dir) > l => {
                Some(format!("Usage of EmptyDir volume \"{}\" exceeds the limit \"{l}\".", v.name))
            }
            _ => None,
        })
    }

    /// Whether anything needs refreshing while the pod runs.
    pub fn needs_refresh(&self) -> bool {
        self.vols.iter().any(|v| matches!(v.source, Source::Projected | Source::EmptyDir { limit: Some(_) }))
    }

    /// The preopens of container `c` (index `ci` in the pod).
    pub fn mounts(&self, c: &Value, ci: usize) -> Result<Vec<Mount>, String> {
        let mut out: Vec<Mount> = Vec::new();
        // Single files (a subPath naming a file) are gathered per guest directory.
        let mut files: BTreeMap<String, Vec<(PathBuf, String)>> = BTreeMap::new();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let vname = m["name"].as_str().unwrap_or("");
            let v = self
                .vols
                .iter()
                .find(|v| v.name == vname)
                .ok_or_else(|| format!("volumeMount {vname:?}: the pod has no volume of that name"))?;
            let guest = mount_path(m["mountPath"].as_str().unwrap_or(""))?;
            let read_only = v.read_only || m["readOnly"] == true;
            let mut host = v.dir.clone();
            if let Some(sub) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
                let rel = relative(sub, "subPath")?;
                let joined = v.dir.join(&rel);
                if !joined.exists() && !matches!(v.source, Source::Projected) {
                    std::fs::create_dir_all(&joined).map_err(|e| format!("subPath {sub:?}: {e}"))?;
                }
                let canon = joined.canonicalize().map_err(|e| format!("subPath {sub:?}: {e}"))?;
                let root = v.dir.canonicalize().map_err(|e| format!("volume {vname:?}: {e}"))?;
                if !canon.starts_with(&root) {
                    return Err(format!("subPath {sub:?} leaves volume {vname:?}"));
                }
                if canon.is_file() {
                    if !read_only {
                        return Err(format!("subPath {sub:?} is a file: mount it readOnly, or mount a directory"));
                    }
                    let (dir, file) = guest.rsplit_once('/').unwrap_or(("", &guest));
                    let dir = if dir.is_empty() { "/".to_string() } else { dir.to_string() };
                    files.entry(dir).or_default().push((canon, file.to_string()));
                    continue;
                }
                host = canon;
            }
            if out.iter().any(|o| o.guest == guest) {
                return Err(format!("mountPath {guest:?} is used twice"));
            }
            out.push(Mount { host, guest, read_only });
        }
        // A file mount becomes a directory of its own holding a copy (as Kubernetes, a subPath
        // mount does not follow later updates).
        for (i, (dir, list)) in files.into_iter().enumerate() {
            if out.iter().any(|o| o.guest == dir) {
                return Err(format!("mountPath {dir:?} is both a volume and the directory of a subPath file"));
            }
            let host = self.scratch.join(format!("{ci}-{i}"));
            let _ = std::fs::remove_dir_all(&host);
            std::fs::create_dir_all(&host).map_err(|e| format!("{}: {e}", host.display()))?;
            for (src, name) in list {
                std::fs::copy(&src, host.join(&name)).map_err(|e| format!("subPath file {name}: {e}"))?;
            }
            out.push(Mount { host, guest: dir, read_only: true });
        }
        Ok(out)
    }
}

/// The directory of the volume a claim is bound to.
async fn claim_dir(ctx: &NodeCtx, ns: &str, claim: &str) -> Result<PathBuf, String> {
    let pvc =
        ctx.client.get(&format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}")).await.map_err(|e| {
            if e.code == 404 { format!("persistentvolumeclaim \"{claim}\" not found") } else { e.message }
        })?;
    let pv_name = pvc["spec"]["volumeName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" is not bound"))?;
    let pv = ctx.client.get(&format!("/api/v1/persistentvolumes/{pv_name}")).await.map_err(|e| e.message)?;
    let path = pv["spec"]["hostPath"]["path"]
        .as_str()
        .or_else(|| pv["spec"]["local"]["path"].as_str())
        .ok_or_else(|| format!("persistentvolume \"{pv_name}\" has no hostPath or local path"))?;
    let mut roots = ctx.storage.allowed_host_paths.clone();
    roots.push(ctx.storage.storage_dir.clone());
    host_dir(path, &roots, true, &format!("persistentvolume \"{pv_name}\" path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_labels_and_annotations_shown_through_the_downward_api_need_the_live_pod() {
        use serde_json::json;
        let item = |path: &str| json!({"path": "f", "fieldRef": {"fieldPath": path}});
        let pod = |volumes: Value| json!({"spec": {"volumes": volumes}});
        // The default service-account volume shows the namespace: fixed.
        let access = json!({"name": "kube-api-access", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt"}},
            {"downwardAPI": {"items": [item("metadata.namespace")]}}]}});
        assert!(!shows_live_metadata(&pod(json!([access]))));
        assert!(shows_live_metadata(&pod(json!([{"name": "d", "downwardAPI": {"items": [item("metadata.labels")]}}]))));
        let projected = json!({"name": "p", "projected": {"sources": [
            {"downwardAPI": {"items": [item("metadata.annotations['a']")]}}]}});
        assert!(shows_live_metadata(&pod(json!([access, projected]))));
        assert!(!shows_live_metadata(&pod(json!([{"name": "d", "downwardAPI": {"items": [item("metadata.name")]}}]))));
        assert!(!shows_live_metadata(&json!({"spec": {"volumes": "odd"}})));
        assert!(!shows_live_metadata(&pod(json!([{"name": "d", "downwardAPI": {"items": [{"fieldRef": 3}]}}]))));
    }

    #[test]
    fn spec_paths_cannot_climb_out() {
        assert_eq!(relative("a/b.txt", "subPath").unwrap(), PathBuf::from("a/b.txt"));
        for bad in ["../x", "a/../../x", "/etc/passwd", "", "a/.."] {
            assert!(relative(bad, "subPath").is_err(), "{bad}");
        }
        assert_eq!(mount_path("/etc//app/./conf/").unwrap(), "/etc/app/conf");
        assert!(mount_path("etc").is_err());
        assert!(mount_path("/a/../b").is_err());
    }

    #[test]
    fn host_dirs_must_stay_under_allowed_roots_even_through_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let allowed = d.path().join("allowed");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(allowed.join("ok")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let roots = vec![allowed.clone()];
        assert!(host_dir(allowed.join("ok").to_str().unwrap(), &roots, false, "hostPath").is_ok());
        let e = host_dir(outside.to_str().unwrap(), &roots, false, "hostPath").unwrap_err();
        assert!(e.contains("is not under a directory this node allows"), "{e}");
        assert!(host_dir(allowed.join("new/dir").to_str().unwrap(), &roots, true, "hostPath").is_ok());
        assert!(!outside.join("x").exists());
        assert!(host_dir(outside.join("x").to_str().unwrap(), &roots, true, "hostPath").is_err());
        assert!(!outside.join("x").exists(), "nothing is created outside");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
            assert!(host_dir(allowed.join("link").to_str().unwrap(), &roots, false, "hostPath").is_err());
        }
        let up = format!("{}/../outside", allowed.display());
        assert!(host_dir(&up, &roots, false, "hostPath").is_err());
    }

    #[test]
    fn usage_counts_nested_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), vec![0u8; 1000]).unwrap();
        std::fs::write(d.path().join("g"), vec![0u8; 24]).unwrap();
        assert_eq!(usage(d.path()), 1024);
    }

    #[test]
    fn subpath_files_become_read_only_directories_of_their_own() {
        let d = tempfile::tempdir().unwrap();
        let cm = d.path().join("volumes/cfg");
        std::fs::create_dir_all(&cm).unwrap();
        std::fs::write(cm.join("app.yaml"), "x: 1").unwrap();
        let scratch = d.path().join("emptydir");
        std::fs::create_dir_all(&scratch).unwrap();
        let v = PodVolumes {
            vols: vec![
                Volume { name: "cfg".into(), dir: cm.clone(), source: Source::Projected, read_only: true },
                Volume {
                    name: "data".into(),
                    dir: scratch.clone(),
                    source: Source::EmptyDir { limit: None },
                    read_only: false,
                },
            ],
            written: Default::default(),
            scratch: d.path().join("subpath"),
            tokens: Tokens::default(),
        };
        let c = serde_json::json!({"volumeMounts": [
            {"name": "cfg", "mountPath": "/etc/app/app.yaml", "subPath": "app.yaml"},
            {"name": "data", "mountPath": "/data", "subPath": "sub"},
            {"name": "cfg", "mountPath": "/cfg"},
        ]});
        let m = v.mounts(&c, 0).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0],
            Mount { host: scratch.join("sub").canonicalize().unwrap(), guest: "/data".into(), read_only: false }
        );
        assert_eq!(m[1], Mount { host: cm.clone(), guest: "/cfg".into(), read_only: true });
        assert_eq!(m[2].guest, "/etc/app");
        assert!(m[2].read_only);
        assert_eq!(std::fs::read_to_string(m[2].host.join("app.yaml")).unwrap(), "x: 1");
        let escape = serde_json::json!({"volumeMounts": [{"name": "data", "mountPath": "/d", "subPath": "../../x"}]});
        assert!(v.mounts(&escape, 0).unwrap_err().contains(".."));
        let twice = serde_json::json!({"volumeMounts": [{"name": "data", "mountPath": "/d"}, {"name": "cfg", "mountPath": "/d/"}]});
        assert!(v.mounts(&twice, 0).unwrap_err().contains("used twice"));
        let missing = serde_json::json!({"volumeMounts": [{"name": "nope", "mountPath": "/d"}]});
        assert!(v.mounts(&missing, 0).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn projected_files_are_written_in_place_once_then_replaced_whole_with_their_exact_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let mode_of = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // First writing: in place, the mode exactly as asked (0666 is not narrowed by a umask).
        put_file(d.path(), Path::new("token"), b"one", 0o666, true).unwrap();
        put_file(d.path(), Path::new("nested/ca.crt"), b"ca", 0o400, true).unwrap();
        assert_eq!(std::fs::read(d.path().join("token")).unwrap(), b"one");
        assert_eq!(mode_of(&d.path().join("token")), 0o666);
        assert_eq!(std::fs::read(d.path().join("nested/ca.crt")).unwrap(), b"ca");
        assert_eq!(mode_of(&d.path().join("nested/ca.crt")), 0o400);
        // A fresh writing never overwrites what is there.
        assert!(put_file(d.path(), Path::new("token"), b"two", 0o644, true).is_err());
        // A refresh replaces the file whole (through a temporary beside it, renamed over it).
        let before = std::fs::metadata(d.path().join("token")).unwrap();
        put_file(d.path(), Path::new("token"), b"two", 0o644, false).unwrap();
        assert_eq!(std::fs::read(d.path().join("token")).unwrap(), b"two");
        assert_eq!(mode_of(&d.path().join("token")), 0o644);
        use std::os::unix::fs::MetadataExt;
        assert_ne!(std::fs::metadata(d.path().join("token")).unwrap().ino(), before.ino());
        // Unchanged content is left alone, and no temporary stays behind.
        let kept = std::fs::metadata(d.path().join("token")).unwrap().ino();
        put_file(d.path(), Path::new("token"), b"two", 0o644, false).unwrap();
        assert_eq!(std::fs::metadata(d.path().join("token")).unwrap().ino(), kept);
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
