//! `wasmorch up` and `wasmorch server`.

use crate::kubeconfig;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use wasmorch_api::join::JoinToken;
use wasmorch_control::server::{self, Config};
use wasmorch_host::agent::NodeConfig;
use wasmorch_host::membership::{self, Membership};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where the cluster keeps its state (default: the user's data dir, e.g. ~/.local/share/wasmorch).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the API server (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Start from a snapshot written by `wasmorch backup` (the current state is kept aside).
    #[arg(long)]
    restore: Option<PathBuf>,
    /// Do not write a kubeconfig context.
    #[arg(long)]
    no_kubeconfig: bool,
    /// Run only the control plane, without the local node.
    #[arg(long)]
    no_node: bool,
    /// Name of the local node (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Address of the local node: its node ports and load-balancer ports listen there.
    #[arg(long, default_value = "127.0.0.1")]
    node_address: String,
    #[command(flatten)]
    node: NodeFlags,
    #[command(flatten)]
    control: ControlFlags,
}

/// Control-plane settings shared by `up` and `server`.
#[derive(clap::Args)]
pub struct ControlFlags {
    /// How the scheduler scores nodes: spread (least allocated) or binpack (most allocated).
    #[arg(long, default_value = "spread")]
    scheduler_strategy: wasmorch_control::scheduler::plan::Strategy,
    /// Range of Services' cluster addresses (inside 127.0.0.0/8, so that every node can listen
    /// on them without privileges).
    #[arg(long, default_value = "127.43.0.0/16")]
    service_cidr: wasmorch_api::services::IpRange,
    /// Range of pod addresses; each Node gets a block of it (`spec.podCIDR`). Inside
    /// 127.0.0.0/8 a node binds its pods' addresses without privileges.
    #[arg(long, default_value = "127.64.0.0/10")]
    cluster_cidr: wasmorch_api::services::IpRange,
    /// Size of each Node's block of the cluster range (/20: 4 094 pods per node).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(8..=30))]
    node_cidr_mask_size: u8,
    /// Seconds a node's Lease may go unrenewed before the node is unreachable (Kubernetes: 40).
    #[arg(long, default_value_t = 10)]
    node_monitor_grace_period: u64,
    /// Seconds pods without their own toleration stay on an unreachable node (Kubernetes: 300).
    #[arg(long, default_value_t = 2)]
    pod_eviction_timeout: u64,
    /// How long node certificates are valid (nodes renew them two thirds in), e.g. 30d, 12h.
    #[arg(long, default_value = "365d", value_parser = duration)]
    node_cert_ttl: std::time::Duration,
    /// How long the leader Lease of the scheduler and controllers holds unrenewed; a standby
    /// control plane takes over after it (Kubernetes: 15s).
    #[arg(long, default_value = "15s", value_parser = duration)]
    leader_elect_lease_duration: std::time::Duration,
    /// How long Events are kept after they last happened (Kubernetes: 1h).
    #[arg(long, default_value = "1h", value_parser = duration)]
    event_ttl: std::time::Duration,
    /// How often the API server scrapes nodes' resource usage for `kubectl top` and the
    /// autoscaler (metrics-server's flag; its default 15s; at least 500ms).
    #[arg(long, default_value = "15s", value_parser = wasmorch_api::object::parse_duration)]
    metric_resolution: std::time::Duration,
    /// How often each HorizontalPodAutoscaler is evaluated (kube-controller-manager's flag).
    #[arg(long, default_value = "15s", value_parser = wasmorch_api::object::parse_duration)]
    horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// How long a scale-down waits for lower recommendations to hold, unless an HPA's
    /// behavior says otherwise.
    #[arg(long, default_value = "5m", value_parser = wasmorch_api::object::parse_duration)]
    horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration,
    /// The ratio of usage to target within which no scaling happens.
    #[arg(long, default_value_t = 0.1)]
    horizontal_pod_autoscaler_tolerance: f64,
    /// Serve the API server's Prometheus metrics (`/metrics`) without credentials (by default
    /// an admin's token or certificate is needed, as for the rest of the API).
    #[arg(long)]
    anonymous_metrics: bool,
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    wasmorch_api::object::parse_duration(s)
        .and_then(|d| if d < std::time::Duration::from_secs(3) { Err("must be at least 3s".into()) } else { Ok(d) })
}

impl ControlFlags {
    fn apply(&self, cfg: &mut Config) -> anyhow::Result<()> {
        cfg.pod_ranges = wasmorch_api::ipam::PodRanges::new(self.cluster_cidr, self.node_cidr_mask_size)
            .map_err(|e| anyhow::anyhow!("--cluster-cidr/--node-cidr-mask-size: {e}"))?;
        cfg.scheduler.strategy = self.scheduler_strategy;
        cfg.service_range = self.service_cidr;
        cfg.node_lifecycle = wasmorch_control::controllers::nodelifecycle::Config {
            grace: std::time::Duration::from_secs(self.node_monitor_grace_period),
            eviction_timeout: std::time::Duration::from_secs(self.pod_eviction_timeout),
        };
        cfg.node_cert_ttl = self.node_cert_ttl;
        cfg.leader.lease_duration = self.leader_elect_lease_duration;
        cfg.event_ttl = self.event_ttl;
        cfg.metric_resolution = self.metric_resolution.max(std::time::Duration::from_millis(500));
        cfg.anonymous_metrics = self.anonymous_metrics;
        cfg.hpa = wasmorch_control::controllers::hpa::Config {
            sync_period: self.horizontal_pod_autoscaler_sync_period.max(std::time::Duration::from_millis(100)),
            tolerance: self.horizontal_pod_autoscaler_tolerance.clamp(0.0, 1.0),
            downscale_stabilization: self.horizontal_pod_autoscaler_downscale_stabilization,
        };
        // Kubernetes renews every 2 s of a 15 s lease.
        cfg.leader.renew_interval =
            (self.leader_elect_lease_duration * 2 / 15).max(std::time::Duration::from_millis(100));
        Ok(())
    }
}

/// Node settings shared by `up` (its in-process node) and `node`.
#[derive(clap::Args)]
pub struct NodeFlags {
    /// First delay before restarting a failed container, in seconds (Kubernetes: 10).
    #[arg(long, default_value_t = 10)]
    backoff_base: u64,
    /// An OCI registry (`host:port`) to pull from over plain HTTP (repeatable). Loopback
    /// registries always are.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Pods this node takes (its `pods` capacity).
    #[arg(long, default_value_t = 1000)]
    max_pods: u32,
    /// A directory under which pods may mount `hostPath` volumes (repeatable; none by default).
    #[arg(long = "allow-host-path")]
    allowed_host_paths: Vec<PathBuf>,
    /// Seconds between refreshes of mounted ConfigMaps and Secrets (and `emptyDir` size checks).
    #[arg(long, default_value_t = 5)]
    config_sync_period: u64,
    /// CPU and memory kept for the node's own work (heartbeats, probes, proxy), as the
    /// kubelet's flag: pods are scheduled against, and together get at most, the rest.
    #[arg(long, default_value = "cpu=100m,memory=64Mi", value_parser = wasmorch_host::agent::Reserved::parse)]
    system_reserved: wasmorch_host::agent::Reserved,
    /// Port of the node's endpoint (logs and stats for the API server, the gateway for other
    /// nodes); 0 picks a free one. Fix it (the kubelet uses 10250) where a firewall must let
    /// other nodes in.
    #[arg(long, default_value_t = 0)]
    endpoint_port: u16,
    /// How long a pulled component and its compiled code stay on disk after the last
    /// container using them stopped (kubelet's imageMaximumGCAge); 0 keeps them forever.
    #[arg(long, default_value = "24h", value_parser = wasmorch_api::object::parse_duration)]
    image_maximum_gc_age: std::time::Duration,
    /// How pod addresses become sockets: `loopback` (each pod binds its own address of
    /// 127/8, as Linux and Windows route all of it), `mapped` (pod and cluster addresses stay
    /// virtual; the node serves them on ports of 127.0.0.1 and reaches them through its map,
    /// for macOS, where only 127.0.0.1 is local), or `auto`: loopback where this machine
    /// delivers 127/8 locally, else mapped.
    #[arg(long, default_value = "auto")]
    pod_addressing: wasmorch_host::runtime::ports::PodAddressing,
    /// Port on the node's address where its proxy serves Ingresses (k3s: 80). Below 1024 it
    /// needs root or CAP_NET_BIND_SERVICE; unprivileged, use e.g. 8080.
    #[arg(long, default_value_t = 80)]
    ingress_http_port: u16,
    /// Port where Ingresses with `spec.tls` are served over HTTPS (k3s: 443); unprivileged,
    /// use e.g. 8443.
    #[arg(long, default_value_t = 443)]
    ingress_https_port: u16,
}

impl NodeFlags {
    fn apply(&self, nc: &mut NodeConfig) {
        nc.backoff_base = std::time::Duration::from_secs(self.backoff_base);
        nc.insecure_registries = self.insecure_registries.clone();
        nc.max_pods = self.max_pods;
        nc.allowed_host_paths = self.allowed_host_paths.clone();
        nc.config_sync = std::time::Duration::from_secs(self.config_sync_period.max(1));
        nc.reserved = self.system_reserved;
        nc.log_port = self.endpoint_port;
        nc.builtins = crate::examples::builtins();
        nc.image_max_age = (!self.image_maximum_gc_age.is_zero()).then_some(self.image_maximum_gc_age);
        nc.pod_addressing = self.pod_addressing;
        nc.ingress_http_port = self.ingress_http_port;
        nc.ingress_https_port = self.ingress_https_port;
    }
}

#[derive(clap::Args)]
pub struct NodeArgs {
    #[command(flatten)]
    flags: NodeFlags,
    /// URL of the API server, e.g. https://10.0.0.1:6443; several servers of one cluster
    /// comma-separated (the node uses the first that answers and moves on when it stops).
    #[arg(long, value_name = "URL[,URL…]")]
    server: String,
    /// Join token (`K10<CA hash>::<id>.<secret>`: the server prints one; `wasmorch token
    /// create` makes more). Needed only until the node has a certificate.
    #[arg(long, env = "WASMORCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The cluster CA (PEM), for a token without its CA hash (`<id>.<secret>`).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The node's name: with its key, its identity in the cluster (default: the host name).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = "/var/lib/wasmorch/node")]
    data_dir: PathBuf,
    /// Address the control plane reaches this node at (its log endpoint listens there).
    #[arg(long)]
    address: Option<String>,
}

#[derive(clap::Args)]
pub struct ServerArgs {
    #[arg(long, default_value = "/var/lib/wasmorch")]
    data_dir: PathBuf,
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Extra DNS names or IP addresses for the server certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Start from a snapshot written by `wasmorch backup` (the current state is kept aside; with
    /// --datastore-endpoint, written into the etcd datastore, which must be empty).
    #[arg(long)]
    restore: Option<PathBuf>,
    /// History revisions kept for watch resume before compaction.
    #[arg(long, default_value_t = 100_000)]
    history_revisions: u64,
    /// Keep the cluster's state in etcd instead of the embedded store: comma-separated
    /// client URLs of its members (http://… or https://…). Needs a build with `--features etcd`.
    #[arg(long, value_name = "URL,…")]
    datastore_endpoint: Option<String>,
    /// CA certificate that signed the etcd members' certificates.
    #[arg(long, value_name = "FILE", requires = "datastore_endpoint")]
    datastore_cafile: Option<PathBuf>,
    /// Client certificate for etcd (with --datastore-keyfile).
    #[arg(long, value_name = "FILE", requires = "datastore_keyfile")]
    datastore_certfile: Option<PathBuf>,
    /// Client key for etcd (with --datastore-certfile).
    #[arg(long, value_name = "FILE", requires = "datastore_certfile")]
    datastore_keyfile: Option<PathBuf>,
    /// Key prefix in etcd, laid out below it as kube-apiserver lays out its keys.
    #[arg(long, default_value = "/registry", requires = "datastore_endpoint")]
    datastore_prefix: String,
    /// The secret the servers of one cluster share on a datastore: it opens the cluster's CA
    /// and keys there. Default: `<data-dir>/server.token`, made by the first server.
    #[arg(long, env = "WASMORCH_TOKEN", hide_env_values = true, requires = "datastore_endpoint")]
    token: Option<String>,
    #[command(flatten)]
    control: ControlFlags,
}

pub(crate) fn default_data_dir() -> anyhow::Result<PathBuf> {
    Ok(dirs::data_local_dir().context("no user data directory: pass --data-dir")?.join("wasmorch"))
}

/// Replace the store with a verified snapshot, keeping the old file aside.
fn restore(cfg: &Config, snapshot: &Path) -> anyhow::Result<()> {
    let rev = wasmorch_control::store::verify_snapshot(snapshot)?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    let dest = cfg.store_path();
    let aside = cfg.data_dir.join(format!("state.redb.before-restore-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S")));
    if dest.exists() {
        std::fs::rename(&dest, &aside).with_context(|| format!("moving {} aside", dest.display()))?;
        eprintln!("previous state kept at {}", aside.display());
    }
    // The store's write-ahead log goes with it: replayed onto the snapshot, it would bring
    // back writes the snapshot does not have.
    let log = wasmorch_control::store::wal_path(&dest);
    if log.exists() {
        let log_aside = wasmorch_control::store::wal_path(&aside);
        std::fs::rename(&log, &log_aside).with_context(|| format!("moving {} aside", log.display()))?;
    }
    let tmp = cfg.data_dir.join("state.redb.restoring");
    std::fs::copy(snapshot, &tmp).with_context(|| format!("copying {}", snapshot.display()))?;
    std::fs::rename(&tmp, &dest)?;
    eprintln!("restored {} (revision {rev})", snapshot.display());
    Ok(())
}

async fn until_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    token.cancel();
}

pub async fn up(a: UpArgs) -> anyhow::Result<()> {
    let data_dir = match a.data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let mut cfg = Config::new(data_dir, a.listen);
    a.control.apply(&mut cfg)?;
    if let Some(snap) = &a.restore {
        restore(&cfg, snap)?;
    }
    let shutdown = CancellationToken::new();
    let running = server::start(cfg.clone(), shutdown.clone()).await?;
    let url = format!("https://{}", running.addr);
    // The kubeconfig is written before the address is announced, so whoever reads the
    // announcement can use it at once.
    let written = match a.no_kubeconfig {
        true => None,
        false => Some(kubeconfig::merge("wasmorch-local", &url, &running.ca_pem, &running.admin_token)?),
    };
    println!("wasmorch is up: listening on {url}");
    println!("  data dir:   {}", cfg.data_dir.display());
    if let Some(p) = written {
        println!("  kubeconfig: {} (context wasmorch-local, now current)", p.display());
    }
    println!("  dashboard:  {url}/ui/ (`wasmorch dashboard` opens it signed in)");
    let manifest = hello_manifest(&cfg.data_dir);
    print!("{}", next_steps(&own_command(), &manifest, &a.node_address, !a.no_node));
    println!("Press Ctrl-C to stop; state is kept for the next `wasmorch up`.");
    let node = if a.no_node {
        None
    } else {
        let mut nc = NodeConfig::new(a.node_name.unwrap_or_else(default_node_name), cfg.data_dir.join("node"));
        a.node.apply(&mut nc);
        nc.host_ip = a.node_address.clone();
        let member = local_member(&running, &cfg, &url, &nc).await?;
        Some(tokio::spawn(wasmorch_host::agent::run(member, nc, shutdown.clone())))
    };
    let failed = match node {
        None => {
            until_signal(shutdown.clone()).await;
            None
        }
        Some(mut node) => {
            let ended = tokio::select! {
                _ = until_signal(shutdown.clone()) => node.await,
                // The node ends on its own only when it cannot run (no wasm engine, a port in
                // use): say so at once and stop, instead of serving a cluster without a node.
                r = &mut node => r,
            };
            match ended {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(e) => Some(anyhow::anyhow!("the node task failed: {e}")),
            }
        }
    };
    eprintln!("stopping…");
    shutdown.cancel();
    running.wait().await;
    eprintln!("stopped");
    match failed {
        Some(e) => Err(e.context("the local node stopped")),
        None => Ok(()),
    }
}

/// The example `up` offers first: a Deployment of the built-in hello-http component behind a
/// NodePort Service.
const HELLO_YAML: &str = include_str!("../../manifests/hello.yaml");
/// The node port `manifests/hello.yaml` asks for.
const HELLO_NODE_PORT: u16 = 30080;

/// The next steps `up` prints: commands that work as printed, from where `up` was started.
fn next_steps(bin: &str, manifest: &str, node_address: &str, node: bool) -> String {
    let mut out = String::from("Next, in another terminal:\n");
    out += &format!("  {bin} apply -f {manifest}\n");
    if node {
        out += &format!("  {bin} rollout status deployment/hello\n");
        let host = if node_address.contains(':') { format!("[{node_address}]") } else { node_address.to_string() };
        out += &format!("  curl http://{host}:{HELLO_NODE_PORT}/\n");
    }
    out += &format!("  {bin} get pods -o wide   # kubectl works too: kubectl get deploy,pods\n");
    out += "Images built in (no registry needed): wasmorch.local/hello-http:1.0, wasmorch.local/sdk-demo:1.0,\n";
    out += "  wasmorch.local/tcp-echo:1.0, wasmorch.local/batch-job:1.0, wasmorch.local/pod-roster:1.0 and\n";
    out += "  wasmorch.local/toolbox:1.0 (tcp-echo, batch-job, pod-roster, a controller, and toolbox, for\n";
    out += "  kubectl exec, run as processes).\n";
    out
}

/// How to run this binary again from here: `wasmorch` when that is what PATH finds, else its
/// path (relative to the working directory when under it, as `target/release/wasmorch`).
fn own_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|p| p.canonicalize()) else {
        return "wasmorch".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .any(|d| d.join(exe.file_name().unwrap_or_default()).canonicalize().is_ok_and(|p| p == exe))
    });
    if on_path {
        return exe.file_stem().map_or("wasmorch".into(), |s| s.to_string_lossy().into_owned());
    }
    let cwd = std::env::current_dir().and_then(|d| d.canonicalize()).ok();
    match cwd.and_then(|d| exe.strip_prefix(d).ok().map(Path::to_path_buf)) {
        Some(rel) => rel.display().to_string(),
        None => exe.display().to_string(),
    }
}

/// The hello example to apply: `manifests/hello.yaml` when started in the source tree, else a
/// copy written into the data directory.
fn hello_manifest(data_dir: &Path) -> String {
    let here = Path::new("manifests").join("hello.yaml");
    if std::fs::read_to_string(&here).is_ok_and(|t| t == HELLO_YAML) {
        return here.display().to_string();
    }
    let copy = data_dir.join("examples").join("hello.yaml");
    let written = std::fs::create_dir_all(data_dir.join("examples")).and_then(|_| std::fs::write(&copy, HELLO_YAML));
    match written {
        Ok(()) => copy.display().to_string(),
        Err(_) => here.display().to_string(),
    }
}

/// The machine's host name (from the OS on every platform), or `local` when it cannot name
/// a Node.
fn default_node_name() -> String {
    wasmorch_host::sys::host_name().unwrap_or_else(|| "local".into())
}

/// The in-process node of `up`: its certificate is signed directly (the same rules as a join,
/// without a token round trip); it renews through the API like any node.
async fn local_member(
    running: &server::Running,
    cfg: &Config,
    url: &str,
    nc: &NodeConfig,
) -> anyhow::Result<Arc<Membership>> {
    let dir = membership::pki_dir(&nc.data_dir);
    let key = membership::load_or_create_key(&dir)?;
    let body = serde_json::json!({"nodeName": nc.name, "csr": membership::csr(&key, &nc.name)?});
    let admin = wasmorch_control::pki::Identity::admin();
    let out = wasmorch_control::membership::issue_node_certificate(
        &running.api,
        &running.pki,
        cfg.node_cert_ttl,
        &admin,
        &body,
    )
    .await?;
    let cert = out["certificate"].as_str().context("no certificate issued")?;
    let creds = membership::install(&dir, &running.ca_pem, cert)?;
    Ok(Membership::new(vec![url.to_string()], nc.name.clone(), dir, creds))
}

/// The servers of `--server URL[,URL…]`.
fn servers(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Join through the first of `servers` that answers.
async fn join_any(
    servers: &[String],
    token: &JoinToken,
    ca: Option<&str>,
    name: &str,
    dir: &Path,
) -> anyhow::Result<membership::Credentials> {
    let mut last = None;
    for s in servers {
        match membership::join(s, token, ca, name, dir).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                eprintln!("joining through {s}: {e:#}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("--server names no server")))
}

/// The credentials a joining node uses: its stored ones while they are valid, for this name
/// and (when the token pins one) this cluster; otherwise a join with the token.
async fn node_credentials(a: &NodeArgs, name: &str, dir: &Path) -> anyhow::Result<membership::Credentials> {
    let token = a.token.as_deref().map(JoinToken::parse).transpose()?;
    if let Some(c) = membership::load(dir)? {
        // Valid a moment longer is enough: the node renews at once when it is late.
        let valid = c.not_after().is_ok_and(|t| t > chrono::Utc::now() + chrono::Duration::seconds(1));
        let same_name = c.node_name().as_deref() == Some(name);
        let same_cluster = match token.as_ref().and_then(|t| t.ca_hash.as_ref()) {
            Some(pin) => membership::ca_hash(&c.ca_pem).is_ok_and(|h| &h == pin),
            None => true,
        };
        if valid && same_name && same_cluster {
            println!("wasmorch node {name}: member of {} (certificate valid until {})", a.server, c.not_after()?);
            return Ok(c);
        }
    }
    let token = token.context(
        "this node has no valid certificate: give --token (the server prints one; `wasmorch token create` makes more)",
    )?;
    let ca = match &a.ca_file {
        Some(f) => Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?),
        None => None,
    };
    let creds = join_any(&servers(&a.server), &token, ca.as_deref(), name, dir).await?;
    println!("wasmorch node {name}: joined {} (certificate valid until {})", a.server, creds.not_after()?);
    Ok(creds)
}

pub async fn node(a: NodeArgs) -> anyhow::Result<()> {
    let name = a.name.clone().unwrap_or_else(default_node_name);
    if let Some(errs) = wasmorch_api::validation::dns1123_subdomain_errors(&name) {
        anyhow::bail!("node name {name:?}: {errs}");
    }
    let dir = membership::pki_dir(&a.data_dir);
    let creds = node_credentials(&a, &name, &dir).await?;
    let member = Membership::new(servers(&a.server), name.clone(), dir, creds);
    let mut nc = NodeConfig::new(name, a.data_dir);
    a.flags.apply(&mut nc);
    if let Some(ip) = a.address {
        nc.host_ip = ip;
    }
    let shutdown = CancellationToken::new();
    let mut agent = tokio::spawn(wasmorch_host::agent::run(member, nc, shutdown.clone()));
    tokio::select! {
        _ = until_signal(shutdown.clone()) => agent.await?,
        // The agent ends on its own only when it cannot run (a bad flag, a port in use).
        r = &mut agent => r?,
    }
}

pub async fn server(a: ServerArgs) -> anyhow::Result<()> {
    let mut cfg = Config::new(a.data_dir, a.listen);
    cfg.tls_sans = a.tls_san;
    cfg.history_revisions = a.history_revisions;
    if let Some(list) = &a.datastore_endpoint {
        let mut etcd = wasmorch_control::store::EtcdConfig::from_endpoints(list)?;
        etcd.ca_file = a.datastore_cafile.clone();
        etcd.cert_file = a.datastore_certfile.clone();
        etcd.key_file = a.datastore_keyfile.clone();
        etcd.prefix = a.datastore_prefix.trim_end_matches('/').to_string();
        if !etcd.prefix.starts_with('/') {
            anyhow::bail!("--datastore-prefix {:?}: must start with '/'", a.datastore_prefix);
        }
        cfg.datastore = Some(etcd);
        // Into etcd (which must be empty), once connected; not the file swap below.
        cfg.restore_into_datastore = a.restore.clone();
        cfg.server_token = a.token.clone();
    }
    a.control.apply(&mut cfg)?;
    if let Some(snap) = a.restore.as_ref().filter(|_| cfg.datastore.is_none()) {
        restore(&cfg, snap)?;
    }
    let shutdown = CancellationToken::new();
    let running = server::start(cfg.clone(), shutdown.clone()).await?;
    // Listening on every address: name the one the certificate was given for others to use
    // (the first --tls-san), else loopback.
    let host = match running.addr.ip() {
        ip if ip.is_unspecified() => cfg.tls_sans.first().cloned().unwrap_or_else(|| "127.0.0.1".into()),
        ip => ip.to_string(),
    };
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
    let url = format!("https://{host}:{}", running.addr.port());
    let admin = cfg.data_dir.join("admin.kubeconfig");
    std::fs::write(&admin, kubeconfig::standalone("wasmorch", &url, &running.ca_pem, &running.admin_token)?)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600))?;
    }
    println!("wasmorch server: listening on https://{}", running.addr);
    println!("  admin kubeconfig: {}", admin.display());
    println!("  dashboard:        {url}/ui/ (sign in with a token; `wasmorch dashboard` makes a link)");
    match &running.join_token {
        Some(t) => println!(
            "  join a node:      wasmorch node --server {url} --token {t}\n                    (the token is in {}; `wasmorch token create --ttl 1h` makes more)",
            cfg.data_dir.join("join.token").display()
        ),
        None => println!("  join a node:      make a token with `wasmorch token create`"),
    }
    if let Some(etcd) = &cfg.datastore {
        println!(
            "  another server:   wasmorch server --datastore-endpoint {} --token \"$(cat {})\" --tls-san ADDRESS",
            etcd.endpoints.join(","),
            cfg.data_dir.join("server.token").display()
        );
    }
    until_signal(shutdown).await;
    running.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_steps_name_this_binary_the_example_and_its_node_port() {
        let s = next_steps("target/release/wasmorch", "manifests/hello.yaml", "127.0.0.1", true);
        assert!(s.contains("  target/release/wasmorch apply -f manifests/hello.yaml\n"), "{s}");
        assert!(s.contains("  target/release/wasmorch rollout status deployment/hello\n"), "{s}");
        assert!(s.contains("  curl http://127.0.0.1:30080/\n"), "{s}");
        assert!(next_steps("wasmorch", "m.yaml", "::1", true).contains("curl http://[::1]:30080/"));
        // Without a node nothing would answer: no curl.
        assert!(!next_steps("wasmorch", "m.yaml", "127.0.0.1", false).contains("curl"));
        // The port printed is the one the example asks for.
        assert!(HELLO_YAML.contains(&format!("nodePort: {HELLO_NODE_PORT}")));
        assert!(HELLO_YAML.contains("image: wasmorch.local/hello-http:1.0"));
    }
}
