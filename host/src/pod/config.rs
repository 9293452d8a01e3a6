//! What a pod's spec refers to outside itself: ConfigMaps, Secrets, its own fields
//! (downward API) and resources. Used for environment variables and for projected volumes.
//!
//! Errors name the object and key that is missing, never a value: Secret values reach only
//! the component.

use super::NodeCtx;
use crate::client::Client;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use wasmorch_api::quantity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
        }
    }
    /// `configmap`, `secret`: as Kubernetes names them in "not found" messages.
    pub fn lower(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
        }
    }
    /// `ConfigMap`, `Secret`.
    pub fn title(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }
}

/// The keys and values of one ConfigMap or Secret.
pub type Values = BTreeMap<String, Vec<u8>>;

/// Reads of ConfigMaps and Secrets shared by every pod on the node: an object is read from
/// the API at most once per `fresh_for`, however many pods mount or refer to it, and pods
/// asking while a read is under way wait for that read. Ten thousand pods each mounting
/// `kube-root-ca.crt` read it once at their start and once per refresh between them, not ten
/// thousand times (Kubernetes' kubelet has the same need: its ConfigMap and Secret managers
/// cache by TTL or watch). A failed read or a missing object is not kept: the next asker
/// reads again. Entries older than `fresh_for` are dropped as new ones come in.
pub struct SharedReads {
    fresh_for: std::time::Duration,
    entries: Mutex<HashMap<String, Arc<Read>>>,
}

/// One read of one object: its result once it is in.
type Read = tokio::sync::OnceCell<(std::time::Instant, Result<Option<Arc<Values>>, String>)>;

/// Sweep stale entries once the map holds this many.
const SWEEP_AT: usize = 256;

impl SharedReads {
    pub fn new(fresh_for: std::time::Duration) -> Self {
        SharedReads { fresh_for, entries: Mutex::new(HashMap::new()) }
    }

    /// Whether a finished read may be handed out again at `now`.
    fn reusable(&self, read: &Read, now: std::time::Instant) -> bool {
        match read.get() {
            None => true,
            Some((at, Ok(Some(_)))) => now.duration_since(*at) < self.fresh_for,
            Some(_) => false,
        }
    }

    /// The read to wait for: one under way or fresh, else a new one (which the caller makes).
    fn read_for(&self, path: &str) -> Arc<Read> {
        let now = std::time::Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = entries.get(path)
            && self.reusable(r, now)
        {
            return r.clone();
        }
        if entries.len() >= SWEEP_AT {
            entries.retain(|_, r| self.reusable(r, now));
        }
        let r = Arc::new(Read::new());
        entries.insert(path.to_string(), r.clone());
        r
    }

    /// The object at `path` (a ConfigMap or Secret) as key → value; `None` if it does not exist.
    pub async fn values(&self, client: &Client, kind: Kind, path: &str) -> Result<Option<Arc<Values>>, String> {
        let read = self.read_for(path);
        let (_, result) = read
            .get_or_init(|| async {
                let result = match client.get(path).await {
                    Ok(obj) => Ok(Some(Arc::new(values_of(kind, &obj)))),
                    Err(e) if e.code == 404 => Ok(None),
                    Err(e) => Err(e.message),
                };
                (std::time::Instant::now(), result)
            })
            .await;
        result.clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// ConfigMaps and Secrets of one namespace, fetched once per use.
pub struct Refs<'a> {
    ctx: &'a NodeCtx,
    ns: &'a str,
    cache: HashMap<(Kind, String), Option<Values>>,
}

impl<'a> Refs<'a> {
    pub fn new(ctx: &'a NodeCtx, ns: &'a str) -> Self {
        Refs { ctx, ns, cache: HashMap::new() }
    }

    pub fn ctx(&self) -> &'a NodeCtx {
        self.ctx
    }

    /// The key → value map of an object; `None` if it does not exist.
    pub async fn values(&mut self, kind: Kind, name: &str) -> Result<Option<Values>, String> {
        if let Some(v) = self.cache.get(&(kind, name.to_string())) {
            return Ok(v.clone());
        }
        let path = format!("/api/v1/namespaces/{}/{}/{name}", self.ns, kind.plural());
        let v = match self.ctx.reads.values(&self.ctx.client, kind, &path).await {
            Ok(v) => v.map(|v| Values::clone(&v)),
            Err(message) => return Err(format!("reading {} \"{name}\": {message}", kind.lower())),
        };
        self.cache.insert((kind, name.to_string()), v.clone());
        Ok(v)
    }

    /// One key of an object, by Kubernetes' rules for `optional`.
    pub async fn key(&mut self, kind: Kind, name: &str, key: &str, optional: bool) -> Result<Option<Vec<u8>>, String> {
        match self.values(kind, name).await? {
            None if optional => Ok(None),
            None => Err(format!("{} \"{name}\" not found", kind.lower())),
            Some(m) => match m.get(key) {
                Some(v) => Ok(Some(v.clone())),
                None if optional => Ok(None),
                None => Err(format!("couldn't find key {key} in {} {}/{name}", kind.title(), self.ns)),
            },
        }
    }
}

/// Keys and values of a ConfigMap (`data` and `binaryData`) or a Secret (`data`, base64).
pub fn values_of(kind: Kind, obj: &Value) -> Values {
    let mut out = BTreeMap::new();
    let decoded = |v: &Value| v.as_str().and_then(|s| B64.decode(s).ok());
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        let bytes = match kind {
            Kind::ConfigMap => v.as_str().map(|s| s.as_bytes().to_vec()),
            Kind::Secret => decoded(v),
        };
        if let Some(b) = bytes {
            out.insert(k.clone(), b);
        }
    }
    if kind == Kind::ConfigMap {
        for (k, v) in obj["binaryData"].as_object().into_iter().flatten() {
            if let Some(b) = decoded(v) {
                out.insert(k.clone(), b);
            }
        }
    }
    out
}

/// Where a pod runs, for field references.
pub struct PodPlace<'a> {
    pub pod: &'a Value,
    pub ip: &'a str,
    pub host_ip: &'a str,
    pub node_name: &'a str,
}

fn map_lines(m: &Value) -> String {
    let mut lines: Vec<String> = m
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or("").replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    lines.sort();
    lines.join("\n")
}

/// `metadata.labels['app']` → (`labels`, `app`).
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (field, rest) = path.strip_prefix("metadata.")?.split_once("['")?;
    Some((field, rest.strip_suffix("']")?))
}

/// The value of a `fieldRef`. `whole_maps`: whether `metadata.labels` (all of them, one
/// `key="value"` per line) is allowed, as in downward API volumes.
pub fn field_value(p: &PodPlace, path: &str, whole_maps: bool) -> Result<String, String> {
    let meta = &p.pod["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    Ok(match path {
        "metadata.name" => s(&meta["name"]),
        "metadata.namespace" => s(&meta["namespace"]),
        "metadata.uid" => s(&meta["uid"]),
        "spec.nodeName" => p.node_name.to_string(),
        "spec.serviceAccountName" => s(&p.pod["spec"]["serviceAccountName"]),
        "status.podIP" | "status.podIPs" => p.ip.to_string(),
        "status.hostIP" | "status.hostIPs" => p.host_ip.to_string(),
        "metadata.labels" | "metadata.annotations" if whole_maps => map_lines(&meta[&path["metadata.".len()..]]),
        other => match subscript(other) {
            Some((field @ ("labels" | "annotations"), key)) => s(&meta[field][key]),
            _ => return Err(format!("unsupported fieldRef fieldPath {other:?}")),
        },
    })
}

/// The value of a `resourceFieldRef` for container `default_container` (unless it names
/// another): limits fall back to what the node has, requests to zero (then limits).
pub fn resource_value(pod: &Value, default_container: &str, rf: &Value) -> Result<String, String> {
    let cname = rf["containerName"].as_str().filter(|n| !n.is_empty()).unwrap_or(default_container);
    let c = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == cname)
        .ok_or_else(|| format!("resourceFieldRef: no container named {cname:?}"))?;
    let resource = rf["resource"].as_str().unwrap_or("");
    let (class, what) = resource.split_once('.').ok_or_else(|| format!("unsupported resource {resource:?}"))?;
    let declared = |class: &str| c["resources"][class][what].as_str().and_then(quantity::parse);
    let node_total = match what {
        "cpu" => std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0),
        "memory" => crate::sys::total_memory() as f64,
        "ephemeral-storage" => 0.0,
        _ => return Err(format!("unsupported resource {resource:?}")),
    };
    let value = match class {
        "limits" => declared("limits").unwrap_or(node_total),
        "requests" => declared("requests").or_else(|| declared("limits")).unwrap_or(0.0),
        _ => return Err(format!("unsupported resource {resource:?}")),
    };
    let divisor = match rf["divisor"].as_str() {
        Some(d) => quantity::parse(d).filter(|d| *d > 0.0).ok_or_else(|| format!("bad divisor {d:?}"))?,
        None => 1.0,
    };
    Ok(format!("{}", (value / divisor).ceil() as u64))
}

/// The container's environment: the node's own variables, then `envFrom`, then `env` (later
/// entries win; `$(VAR)` refers to earlier ones).
pub async fn env(
    refs: &mut Refs<'_>,
    place: &PodPlace<'_>,
    c: &Value,
    base: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, String> {
    let mut env = base;
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(n, _)| *n != k);
        env.push((k, v));
    };
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    for src in c["envFrom"].as_array().into_iter().flatten() {
        let prefix = src["prefix"].as_str().unwrap_or("");
        let (kind, r) = match (src.get("configMapRef"), src.get("secretRef")) {
            (Some(r), _) => (Kind::ConfigMap, r),
            (_, Some(r)) => (Kind::Secret, r),
            _ => continue,
        };
        let name = r["name"].as_str().unwrap_or("");
        match refs.values(kind, name).await? {
            None if r["optional"] == true => {}
            None => return Err(format!("{} \"{name}\" not found", kind.lower())),
            Some(m) => {
                for (k, v) in m {
                    set(&mut env, format!("{prefix}{k}"), text(v));
                }
            }
        }
    }
    let name = c["name"].as_str().unwrap_or("");
    for e in c["env"].as_array().into_iter().flatten() {
        let Some(n) = e["name"].as_str() else { continue };
        if let Some(v) = e["value"].as_str() {
            let v = super::expand(v, &env);
            set(&mut env, n.to_string(), v);
            continue;
        }
        let from = &e["valueFrom"];
        let value = if let Some(r) = from.get("configMapKeyRef").or_else(|| from.get("secretKeyRef")) {
            let kind = if from.get("configMapKeyRef").is_some() { Kind::ConfigMap } else { Kind::Secret };
            let (obj, key) = (r["name"].as_str().unwrap_or(""), r["key"].as_str().unwrap_or(""));
            refs.key(kind, obj, key, r["optional"] == true).await?.map(text)
        } else if let Some(f) = from.get("fieldRef") {
            Some(field_value(place, f["fieldPath"].as_str().unwrap_or(""), false)?)
        } else if let Some(rf) = from.get("resourceFieldRef") {
            Some(resource_value(place.pod, name, rf)?)
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            set(&mut env, n.to_string(), v);
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn done(value: Result<Option<Arc<Values>>, String>, age: std::time::Duration) -> Arc<Read> {
        let r = Read::new();
        r.set((std::time::Instant::now() - age, value)).unwrap();
        Arc::new(r)
    }

    #[test]
    fn shared_reads_hand_out_a_read_under_way_or_fresh_and_nothing_else() {
        use std::time::Duration;
        let reads = SharedReads::new(Duration::from_secs(1));
        let a = reads.read_for("/a");
        assert!(Arc::ptr_eq(&a, &reads.read_for("/a")), "a read under way is shared");
        assert!(!Arc::ptr_eq(&a, &reads.read_for("/b")));
        let entries = |path: &str, r: Arc<Read>| {
            reads.entries.lock().unwrap().insert(path.to_string(), r);
        };
        let found = Ok(Some(Arc::new(Values::from([("k".to_string(), b"v".to_vec())]))));
        let fresh = done(found.clone(), Duration::ZERO);
        entries("/a", fresh.clone());
        assert!(Arc::ptr_eq(&fresh, &reads.read_for("/a")), "a fresh value is shared");
        entries("/a", done(found, Duration::from_secs(2)));
        let again = reads.read_for("/a");
        assert!(again.get().is_none(), "a stale value is read again");
        entries("/a", done(Ok(None), Duration::ZERO));
        assert!(reads.read_for("/a").get().is_none(), "a missing object is looked for again");
        entries("/a", done(Err("busy".into()), Duration::ZERO));
        assert!(reads.read_for("/a").get().is_none(), "a failed read is tried again");
    }

    #[test]
    fn shared_reads_drop_stale_entries_as_new_ones_come() {
        use std::time::Duration;
        let reads = SharedReads::new(Duration::from_secs(1));
        for i in 0..SWEEP_AT {
            let r = done(Ok(Some(Arc::default())), Duration::from_secs(5));
            reads.entries.lock().unwrap().insert(format!("/old/{i}"), r);
        }
        reads.read_for("/new");
        assert_eq!(reads.len(), 1, "only the new read is left");
    }

    fn place(pod: &Value) -> PodPlace<'_> {
        PodPlace { pod, ip: "127.1.0.5", host_ip: "127.0.0.1", node_name: "n1" }
    }

    #[test]
    fn field_refs_resolve_like_the_downward_api() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u",
            "labels": {"app": "web", "tier": "a\"b"}, "annotations": {"x": "y"}}, "spec": {}});
        let p = place(&pod);
        assert_eq!(field_value(&p, "metadata.name", false).unwrap(), "p");
        assert_eq!(field_value(&p, "metadata.namespace", false).unwrap(), "ns");
        assert_eq!(field_value(&p, "spec.nodeName", false).unwrap(), "n1");
        assert_eq!(field_value(&p, "status.podIP", false).unwrap(), "127.1.0.5");
        assert_eq!(field_value(&p, "metadata.labels['app']", false).unwrap(), "web");
        assert_eq!(field_value(&p, "metadata.labels['none']", false).unwrap(), "");
        assert!(field_value(&p, "metadata.labels", false).is_err(), "whole maps only in volumes");
        assert_eq!(field_value(&p, "metadata.labels", true).unwrap(), "app=\"web\"\ntier=\"a\\\"b\"");
        assert!(field_value(&p, "spec.containers", false).is_err());
    }

    #[test]
    fn resource_refs_use_limits_divisors_and_fall_back_to_the_node() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}, "requests": {"cpu": "100m"}}},
            {"name": "b"}
        ]}});
        let r = |c: &str, rf: Value| resource_value(&pod, c, &rf);
        assert_eq!(r("a", json!({"resource": "limits.cpu", "divisor": "1m"})).unwrap(), "250");
        assert_eq!(r("a", json!({"resource": "limits.cpu"})).unwrap(), "1", "rounded up to whole cores");
        assert_eq!(r("a", json!({"resource": "limits.memory", "divisor": "1Mi"})).unwrap(), "64");
        assert_eq!(r("a", json!({"resource": "requests.cpu", "divisor": "1m"})).unwrap(), "100");
        assert_eq!(r("a", json!({"resource": "requests.memory"})).unwrap(), "67108864", "requests default to limits");
        assert_eq!(r("b", json!({"resource": "requests.memory"})).unwrap(), "0");
        let node_mem: u64 = r("b", json!({"resource": "limits.memory"})).unwrap().parse().unwrap();
        assert_eq!(node_mem, crate::sys::total_memory());
        assert_eq!(r("b", json!({"resource": "limits.memory", "containerName": "a", "divisor": "1Mi"})).unwrap(), "64");
        assert!(r("a", json!({"resource": "limits.gpu"})).is_err());
        assert!(r("a", json!({"resource": "limits.cpu", "containerName": "zz"})).is_err());
    }

    #[test]
    fn secret_values_are_decoded_and_config_maps_merge_binary_data() {
        let s = values_of(Kind::Secret, &json!({"data": {"a": "aGk=", "bad": "%%"}}));
        assert_eq!(s.get("a").unwrap(), b"hi");
        assert!(!s.contains_key("bad"));
        let c = values_of(Kind::ConfigMap, &json!({"data": {"a": "x"}, "binaryData": {"b": "AAE="}}));
        assert_eq!(c.get("a").unwrap(), b"x");
        assert_eq!(c.get("b").unwrap(), &[0u8, 1]);
    }
}
