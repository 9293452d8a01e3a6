//! The node agent: registers the Node, keeps its Lease fresh, watches the pods bound to it and
//! runs them. Running pods keep running while the control plane is away; the agent relists
//! and resyncs when it returns.

use crate::client::Client;
use crate::pod::NodeCtx;
use crate::runtime::ports::PodAddressing;
use crate::runtime::{Runtime, RuntimeConfig, WASMTIME_VERSION};
use crate::sys::{cores, total_memory};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wasmorch_api::object;

mod pods;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// Address other nodes and clients reach this node at.
    pub host_ip: String,
    pub lease_duration: Duration,
    pub backoff_base: Duration,
    pub request_timeout: Duration,
    pub max_instances: u32,
    /// Pods this node takes (its `pods` capacity). Idle HTTP pods hold no instance, so this
    /// can exceed `max_instances`; running processes each hold one.
    pub max_pods: u32,
    /// Port of the log endpoint (0: any free port; reported in the Node's status).
    pub log_port: u16,
    /// OCI registries pulled from over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Directories under which pods may mount `hostPath` volumes (none by default).
    pub allowed_host_paths: Vec<PathBuf>,
    /// How often mounted ConfigMaps and Secrets are refreshed and `emptyDir` limits checked.
    pub config_sync: Duration,
    /// What the node keeps for its own work (`--system-reserved`): millicores and bytes.
    pub reserved: Reserved,
    /// Components built into the binary, served as `wasmorch.local/NAME:1.0`.
    pub builtins: crate::artifact::Builtins,
    /// How long a component and its compiled code stay on disk after the last container using
    /// them stopped (kubelet's `imageMaximumGCAge`); `None`: forever.
    pub image_max_age: Option<Duration>,
    /// How pod addresses become sockets here (`--pod-addressing`, see `runtime::ports`).
    pub pod_addressing: crate::runtime::ports::PodAddressing,
    /// Where the node's proxy serves Ingresses (`--ingress-http-port`, `--ingress-https-port`).
    pub ingress_http_port: u16,
    pub ingress_https_port: u16,
}

/// The kubelet's `--system-reserved`: CPU and memory kept from pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub cpu_millis: u64,
    pub memory: u64,
}

impl Default for Reserved {
    /// 100m and 64 MiB: enough for heartbeats, probes, the proxy and API calls on a board.
    fn default() -> Self {
        Reserved { cpu_millis: 100, memory: 64 << 20 }
    }
}

impl Reserved {
    /// `cpu=100m,memory=64Mi` (either may be left out; what is left out is not reserved).
    pub fn parse(s: &str) -> Result<Reserved, String> {
        let mut r = Reserved { cpu_millis: 0, memory: 0 };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("{part:?}: want name=quantity"))?;
            let q = wasmorch_api::quantity::parse(v.trim())
                .filter(|q| q.is_finite() && *q >= 0.0)
                .ok_or_else(|| format!("{v:?} is not a quantity"))?;
            match k.trim() {
                "cpu" => r.cpu_millis = (q * 1000.0).round() as u64,
                "memory" => r.memory = q as u64,
                other => return Err(format!("unknown resource {other:?} (cpu, memory)")),
            }
        }
        Ok(r)
    }
}

/// Allocatable = capacity − reserved (never below a tenth of a core or 16 MiB).
pub fn allocatable(cpus: u64, memory: u64, r: Reserved) -> (u64, u64) {
    ((cpus * 1000).saturating_sub(r.cpu_millis).max(100), memory.saturating_sub(r.memory).max(16 << 20))
}

/// Largest linear memory of one instance: 256 MiB, or 128 MiB in a 32-bit address space.
pub const MAX_INSTANCE_MEMORY: usize = if cfg!(target_pointer_width = "32") { 128 << 20 } else { 256 << 20 };

/// Instance slots of the wasm engine by machine memory: one per 2 MiB, 64 to 500. Each slot
/// reserves address space (not memory) for its linear memories: 500 take ~280 GiB, which fits
/// the 39-bit address space of a Raspberry Pi kernel; a 512 MiB board gets 256.
pub fn instance_slots(total_memory: u64) -> u32 {
    (total_memory / (2 << 20)).clamp(64, 500) as u32
}

impl NodeConfig {
    pub fn new(name: String, data_dir: PathBuf) -> Self {
        NodeConfig {
            name,
            data_dir,
            host_ip: "127.0.0.1".into(),
            lease_duration: Duration::from_secs(15),
            backoff_base: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_instances: instance_slots(crate::sys::total_memory()),
            max_pods: 1000,
            log_port: 0,
            insecure_registries: Vec::new(),
            allowed_host_paths: Vec::new(),
            config_sync: Duration::from_secs(5),
            reserved: Reserved::default(),
            builtins: crate::artifact::Builtins::default(),
            image_max_age: Some(Duration::from_secs(86_400)),
            pod_addressing: Default::default(),
            ingress_http_port: 80,
            ingress_https_port: 443,
        }
    }
}

/// The Node annotation that says how this node serves pod addresses (`loopback` or `mapped`).
pub const POD_ADDRESSING_ANNOTATION: &str = "wasmorch.io/pod-addressing";

fn node_object(cfg: &NodeConfig, log_port: u16) -> Value {
    let cpus = cores();
    let capacity = json!({"cpu": cpus.to_string(), "memory": format!("{}Ki", total_memory() / 1024), "pods": cfg.max_pods.to_string()});
    let (cpu, memory) = allocatable(cpus, total_memory(), cfg.reserved);
    let allocatable =
        json!({"cpu": format!("{cpu}m"), "memory": format!("{}Ki", memory / 1024), "pods": cfg.max_pods.to_string()});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.name, "annotations": {
            wasmorch_api::STORAGE_DIR_ANNOTATION: storage_dir(cfg).display().to_string(),
            POD_ADDRESSING_ANNOTATION: cfg.pod_addressing.to_string(),
        }, "labels": {
            "kubernetes.io/arch": wasmorch_api::kube_arch(), "kubernetes.io/os": std::env::consts::OS, "kubernetes.io/hostname": cfg.name,
            "beta.kubernetes.io/arch": wasmorch_api::kube_arch(), "beta.kubernetes.io/os": std::env::consts::OS,
        }},
        "spec": {},
        "status": {
            "capacity": capacity, "allocatable": allocatable,
            "conditions": [ready_condition_after(None)],
            "addresses": [{"type": "InternalIP", "address": cfg.host_ip}, {"type": "Hostname", "address": cfg.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": log_port}},
            "images": cfg.builtins.images().into_iter()
                .map(|(names, size)| json!({"names": names, "sizeBytes": size})).collect::<Vec<_>>(),
            "nodeInfo": {
                "architecture": wasmorch_api::kube_arch(), "operatingSystem": std::env::consts::OS,
                "containerRuntimeVersion": format!("wasmtime://{WASMTIME_VERSION}"),
                "kubeletVersion": format!("v{}.{}.0-wasmorch", wasmorch_api::KUBE_MAJOR, wasmorch_api::KUBE_MINOR),
                "kubeProxyVersion": "", "osImage": std::env::consts::OS, "kernelVersion": kernel(),
                "machineID": "", "systemUUID": "", "bootID": "",
            },
        },
    })
}

/// Where this node's local-path volumes live.
pub fn storage_dir(cfg: &NodeConfig) -> PathBuf {
    let d = cfg.data_dir.join("storage");
    std::fs::create_dir_all(&d).ok();
    d.canonicalize().unwrap_or(d)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// A Node's Ready condition, as the control plane has it.
fn ready_of(node: &Value) -> Option<&Value> {
    node.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
}

/// The Ready=True condition to post, given the Node as the control plane has it: its
/// `lastTransitionTime` stays when it was True already (a heartbeat is not a transition).
fn ready_condition_after(node: Option<&Value>) -> Value {
    let now = object::now_rfc3339();
    let since = node
        .and_then(ready_of)
        .filter(|c| c.get("status").and_then(Value::as_str) == Some("True"))
        .and_then(|c| c.get("lastTransitionTime").and_then(Value::as_str))
        .map_or_else(|| now.clone(), str::to_string);
    json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "wasmorch node is ready", "lastHeartbeatTime": now, "lastTransitionTime": since})
}

async fn register(client: &Client, cfg: &NodeConfig, log_port: u16) -> anyhow::Result<()> {
    let node = node_object(cfg, log_port);
    match client.post("/api/v1/nodes", &node).await {
        Ok(_) => {}
        Err(e) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    client.merge_patch(&format!("/api/v1/nodes/{}/status", cfg.name), &json!({"status": node["status"]})).await?;
    Ok(())
}

async fn renew_lease(client: &Client, cfg: &NodeConfig) -> anyhow::Result<()> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}", cfg.name);
    let spec =
        json!({"holderIdentity": cfg.name, "leaseDurationSeconds": cfg.lease_duration.as_secs(), "renewTime": now});
    match client.merge_patch(&path, &json!({"spec": spec})).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": cfg.name, "namespace": "kube-node-lease"}, "spec": spec});
            client.post("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", &lease).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// How often a node posts its Ready heartbeat when nothing changed (Kubernetes'
/// `nodeStatusReportFrequency`): the Lease is what shows life in between.
pub const STATUS_REPORT_EVERY: Duration = Duration::from_secs(300);

/// Whether the node posts its Ready condition now: the control plane shows it as anything but
/// True (after an outage the node lifecycle controller set it to Unknown), or the last report
/// is older than [`STATUS_REPORT_EVERY`].
fn status_report_due(node: Option<&Value>, since_last: Option<Duration>) -> bool {
    let ready = node.and_then(ready_of).and_then(|c| c.get("status")).and_then(Value::as_str);
    ready != Some("True") || since_last.is_none_or(|d| d >= STATUS_REPORT_EVERY)
}

async fn heartbeat(client: Client, cfg: NodeConfig, log_port: u16, stop: CancellationToken) {
    let mut registered = false;
    let mut reported: Option<tokio::time::Instant> = None;
    loop {
        if !registered {
            match register(&client, &cfg, log_port).await {
                Ok(()) => {
                    registered = true;
                    reported = Some(tokio::time::Instant::now());
                }
                Err(e) => tracing::warn!("registering node {}: {e:#}", cfg.name),
            }
        }
        if registered {
            if let Err(e) = renew_lease(&client, &cfg).await {
                tracing::warn!("renewing lease: {e:#}");
            }
            let path = format!("/api/v1/nodes/{}", cfg.name);
            let node = client.get(&path).await.ok();
            if status_report_due(node.as_ref(), reported.map(|r| r.elapsed())) {
                let patch = json!({"status": {"conditions": [ready_condition_after(node.as_ref())]}});
                if client.send_merge_patch(&format!("{path}/status"), &patch).await.is_ok() {
                    reported = Some(tokio::time::Instant::now());
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.lease_duration / 3) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Keep the Node's `wasmorch.io/peer-routes` annotation (`n2=direct,n3=relay`) in step with
/// how the proxy reaches other nodes' pods: directly, or through the control plane's relay.
async fn report_peer_routes(client: Client, proxy: Arc<crate::proxy::Proxy>, name: String, stop: CancellationToken) {
    let mut reported = None;
    loop {
        let now = crate::proxy::gateway::describe_routes(&proxy.gateways.routes());
        if reported.as_ref() != Some(&now) {
            let value = if now.is_empty() { Value::Null } else { Value::String(now.clone()) };
            let patch = json!({"metadata": {"annotations": {wasmorch_api::PEER_ROUTES_ANNOTATION: value}}});
            match client.merge_patch(&format!("/api/v1/nodes/{name}"), &patch).await {
                Ok(_) => reported = Some(now),
                Err(e) => tracing::debug!("reporting peer routes: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Wait until this node's Node has `spec.podCIDR` (node IPAM gives it after registration);
/// `None` if the node stops first.
async fn pod_range(client: &Client, name: &str, stop: &CancellationToken) -> Option<wasmorch_api::services::IpRange> {
    let mut said = false;
    loop {
        match client.get(&format!("/api/v1/nodes/{name}")).await {
            Ok(node) => match wasmorch_api::ipam::pod_cidr(&node).map(str::parse::<wasmorch_api::services::IpRange>) {
                Some(Ok(r)) => return Some(r),
                Some(Err(e)) => tracing::warn!("node {name}: unusable podCIDR: {e}"),
                None if !said => {
                    tracing::info!("node {name}: waiting for a pod range from the control plane");
                    said = true;
                }
                None => {}
            },
            Err(e) if e.code == 404 => {}
            Err(e) => tracing::debug!("reading node {name}: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// Remove local-path volume directories whose volume is gone (its claim was deleted).
async fn reclaim_storage(client: Client, dir: PathBuf, stop: CancellationToken) {
    loop {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pv) = name.split('_').next().filter(|p| p.starts_with("pvc-")) else { continue };
            if let Err(err) = client.get(&format!("/api/v1/persistentvolumes/{pv}")).await
                && err.code == 404
            {
                match std::fs::remove_dir_all(e.path()) {
                    Ok(()) => tracing::info!("removed the data of deleted volume {pv}"),
                    Err(err) => tracing::warn!("removing {}: {err}", e.path().display()),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Close containers' log files quiet for 10 s, every 5 s, until `stop` (a node of ten
/// thousand idle pods would otherwise hold a descriptor for each).
async fn close_idle_logs(stop: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        crate::runtime::output::close_idle(std::time::Duration::from_secs(10));
    }
}

/// The cluster's registry: every API server's address names it; pulls go to the server in
/// use, reached with the node's certificate.
fn cluster_registry(member: &Arc<crate::membership::Membership>) -> anyhow::Result<crate::artifact::ClusterRegistry> {
    let server = member.server();
    crate::artifact::authority_of(&server).ok_or_else(|| anyhow::anyhow!("server URL {server:?} has no host"))?;
    let (m1, m2, m3) = (member.clone(), member.clone(), member.clone());
    Ok(crate::artifact::ClusterRegistry {
        servers: Box::new(move || m1.servers().iter().filter_map(|s| crate::artifact::authority_of(s)).collect()),
        current: Box::new(move || crate::artifact::authority_of(&m2.server()).unwrap_or_default()),
        tls: Box::new(move || m3.client_tls(&[])),
    })
}

/// Run the node until `stop`, as the member `member` (its certificate is renewed here).
pub async fn run(
    member: Arc<crate::membership::Membership>,
    cfg: NodeConfig,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let client = Client::new(member.current().client(&member.server()).await?);
    member.fail_over_with(&client);
    tokio::spawn(crate::membership::renew_loop(member.clone(), client.clone(), stop.clone()));
    tokio::spawn(crate::membership::learn_loop(member.clone(), client.clone(), stop.clone()));
    let (cpu, memory) = allocatable(cores(), total_memory(), cfg.reserved);
    let mapped_ports = cfg.pod_addressing.mapped(crate::runtime::ports::loopback_routed);
    if mapped_ports {
        tracing::info!("node {}: pod ports mapped onto ports of 127.0.0.1", cfg.name);
    }
    // What `auto` chose, as the Node shows it.
    let cfg = NodeConfig {
        pod_addressing: if mapped_ports { PodAddressing::Mapped } else { PodAddressing::Loopback },
        ..cfg
    };
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: cfg.data_dir.join("cache"),
        max_instances: cfg.max_instances,
        max_memory: MAX_INSTANCE_MEMORY,
        cpu_slots: cores() as u32,
        allocatable_cpu_millis: cpu,
        allocatable_memory: memory.min(usize::MAX as u64) as usize,
        mapped_ports,
        max_held_dirs: crate::runtime::held_dirs_bound(crate::sys::open_files_limit(), cfg.max_pods),
    })?;
    let stats = Arc::new(crate::stats::Registry::default());
    let node_ip: std::net::IpAddr =
        cfg.host_ip.parse().map_err(|_| anyhow::anyhow!("node address {:?} is not an IP address", cfg.host_ip))?;
    let proxy = crate::proxy::Proxy::new(cfg.name.clone(), node_ip, Some(member.clone()), rt.ports.clone());
    proxy.ingress_port.store(cfg.ingress_http_port, std::sync::atomic::Ordering::Relaxed);
    proxy.ingress_https_port.store(cfg.ingress_https_port, std::sync::atomic::Ordering::Relaxed);
    let proxy_task = tokio::spawn(proxy.clone().run(client.clone(), stop.clone()));
    tokio::spawn(crate::proxy::gateway::relay_registration(proxy.clone(), stop.clone()));
    tokio::spawn(report_peer_routes(client.clone(), proxy.clone(), cfg.name.clone(), stop.clone()));
    tokio::spawn(close_idle_logs(stop.clone()));
    let ctx = Arc::new(NodeCtx {
        client: client.clone(),
        stats: stats.clone(),
        rt,
        puller: crate::artifact::Puller::new(cfg.data_dir.join("images"), cfg.insecure_registries.clone())?
            .with_builtins(cfg.builtins.clone())
            .with_cluster_registry(cluster_registry(&member)?),
        node_name: cfg.name.clone(),
        host_ip: cfg.host_ip.clone(),
        data_dir: cfg.data_dir.clone(),
        backoff_base: cfg.backoff_base,
        request_timeout: cfg.request_timeout,
        events: crate::pod::event_sender(client.clone(), cfg.name.clone(), stop.clone()),
        storage: crate::pod::volumes::StoragePolicy {
            allowed_host_paths: cfg.allowed_host_paths.clone(),
            storage_dir: storage_dir(&cfg),
        },
        config_sync: cfg.config_sync,
        reads: crate::pod::config::SharedReads::new(cfg.config_sync.min(Duration::from_secs(1))),
        proxy: proxy.clone(),
        uses: Default::default(),
        streams: Default::default(),
    });
    let every = cfg
        .image_max_age
        .map_or(Duration::from_secs(60), |a| (a / 2).clamp(Duration::from_secs(1), Duration::from_secs(60)));
    tokio::spawn(crate::collect::run(ctx.clone(), cfg.image_max_age, every, stop.clone()));
    let logs = tokio::net::TcpListener::bind((cfg.host_ip.as_str(), cfg.log_port)).await?;
    let log_port = logs.local_addr()?.port();
    let log_server = Arc::new(crate::logs::LogServer {
        data_dir: cfg.data_dir.clone(),
        node: cfg.name.clone(),
        stats,
        rt: ctx.rt.clone(),
        streams: ctx.streams.clone(),
    });
    let log_tls = crate::membership::endpoint_tls(&member)?;
    let log_task = tokio::spawn(crate::endpoint::serve(logs, log_server, proxy.clone(), log_tls, stop.clone()));
    let hb = tokio::spawn(heartbeat(client.clone(), cfg.clone(), log_port, stop.clone()));
    tokio::spawn(reclaim_storage(client.clone(), storage_dir(&cfg), stop.clone()));
    // Pods start only once the control plane has given this node its pod range.
    let Some(range) = pod_range(&client, &cfg.name, &stop).await else { return Ok(()) };
    tracing::info!("node {}: pod range {range}", cfg.name);
    let mut pods = pods::Pods::new(ctx, range);
    let query = format!("fieldSelector=spec.nodeName%3D{}", cfg.name);
    crate::reflector::follow(&client, "/api/v1/pods", &query, &mut pods, &stop).await;
    pods.stop_all().await;
    let _ = proxy_task.await;
    let _ = hb.await;
    let _ = log_task.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boards_get_fewer_instance_slots() {
        assert_eq!(instance_slots(512 << 20), 256);
        assert_eq!(instance_slots(1 << 30), 500);
        assert_eq!(instance_slots(24 << 30), 500);
        assert_eq!(instance_slots(64 << 20), 64);
    }

    #[test]
    fn a_heartbeat_keeps_the_transition_time_of_a_ready_node() {
        let node = |status: &str| json!({"status": {"conditions": [{"type": "Ready", "status": status, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        let kept = ready_condition_after(Some(&node("True")));
        assert_eq!(kept["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_ne!(kept["lastHeartbeatTime"], "2026-01-01T00:00:00Z");
        let back = ready_condition_after(Some(&node("Unknown")));
        assert_eq!(back["lastTransitionTime"], back["lastHeartbeatTime"], "Unknown → True is a transition");
        assert_eq!(ready_condition_after(None)["status"], "True");
    }

    #[test]
    fn the_ready_heartbeat_is_posted_when_stale_or_not_true() {
        let ready = |status: &str| json!({"status": {"conditions": [{"type": "Ready", "status": status}]}});
        let recent = Some(Duration::from_secs(5));
        assert!(!status_report_due(Some(&ready("True")), recent), "a Lease renewal is enough");
        assert!(status_report_due(Some(&ready("True")), Some(STATUS_REPORT_EVERY)));
        assert!(status_report_due(Some(&ready("True")), None), "never reported");
        assert!(status_report_due(Some(&ready("Unknown")), recent), "back after an outage");
        assert!(status_report_due(Some(&json!({"status": {}})), recent));
        assert!(status_report_due(None, recent), "the Node could not be read");
    }
}
