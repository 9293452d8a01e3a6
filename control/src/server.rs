//! Wiring of the control plane: store, PKI, tokens, API server, built-in controllers.

use crate::apiserver::api::Api;
use crate::apiserver::{self, ServerState};
use crate::pki::{Identity, Pki, Tokens, token_file};
use crate::store::{Outcome, Store};
use anyhow::Context;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wasmorch_api::resources;

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Extra names and addresses for the server certificate.
    pub tls_sans: Vec<String>,
    /// History revisions kept for watch resume; older ones are compacted.
    pub history_revisions: u64,
    pub compaction_interval: Duration,
    pub scheduler: crate::scheduler::Config,
    /// Where Services get their cluster addresses.
    pub service_range: wasmorch_api::services::IpRange,
    /// Where Nodes get their pod ranges (`--cluster-cidr`, `--node-cidr-mask-size`).
    pub pod_ranges: wasmorch_api::ipam::PodRanges,
    /// When a silent node is unreachable, and how long its pods stay.
    pub node_lifecycle: crate::controllers::nodelifecycle::Config,
    /// How long node certificates are valid (nodes renew at two thirds).
    pub node_cert_ttl: Duration,
    /// Leader election of the scheduler and controllers.
    pub leader: crate::controllers::leader::Config,
    /// How long Events are kept after their last occurrence (`--event-ttl`).
    pub event_ttl: Duration,
    /// How often nodes' resource usage is scraped (`--metric-resolution`).
    pub metric_resolution: Duration,
    /// The HorizontalPodAutoscaler controller's sync period, tolerance and default
    /// scale-down stabilization.
    pub hpa: crate::controllers::hpa::Config,
    /// Serve `/metrics` without credentials.
    pub anonymous_metrics: bool,
    /// Keep state in this etcd cluster instead of the embedded store (`--datastore-endpoint`).
    pub datastore: Option<crate::store::EtcdConfig>,
    /// The secret the servers of one cluster share (`--token`): it opens the cluster's
    /// secrets in the datastore (see `bootstrap`). Else `<data-dir>/server.token`.
    pub server_token: Option<String>,
    /// A snapshot to write into the (empty) etcd datastore before starting (`--restore` with
    /// `--datastore-endpoint`; the embedded store is restored by replacing its file).
    pub restore_into_datastore: Option<PathBuf>,
}

impl Config {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Config {
        Config {
            listen,
            tls_sans: Vec::new(),
            history_revisions: 100_000,
            compaction_interval: Duration::from_secs(60),
            scheduler: Default::default(),
            service_range: Default::default(),
            pod_ranges: Default::default(),
            node_lifecycle: Default::default(),
            node_cert_ttl: Duration::from_secs(365 * 86_400),
            // Filled in at start, once the data directory exists (see `leader_identity`).
            leader: Default::default(),
            event_ttl: crate::controllers::eventttl::DEFAULT_TTL,
            metric_resolution: crate::apiserver::metrics::DEFAULT_RESOLUTION,
            hpa: Default::default(),
            anonymous_metrics: false,
            datastore: None,
            server_token: None,
            restore_into_datastore: None,
            data_dir,
        }
    }
    /// The address others reach this server at: the listen address, or, when listening on
    /// every address, the first `--tls-san` that is an address, else loopback.
    pub fn advertise(&self, bound: SocketAddr) -> SocketAddr {
        let ip = match bound.ip() {
            ip if ip.is_unspecified() => self
                .tls_sans
                .iter()
                .find_map(|s| s.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok())
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            ip => ip,
        };
        SocketAddr::new(ip, bound.port())
    }
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("state.redb")
    }
}

/// A running control plane.
pub struct Running {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub admin_token: String,
    /// The default join token (`K10…`), unless it was deleted (`wasmorch token delete`).
    pub join_token: Option<String>,
    pub api: Api,
    pub pki: Arc<Pki>,
    done: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Wait until everything has stopped (after the shutdown token fired).
    pub async fn wait(self) {
        let _ = self.done.await;
        for t in self.tasks {
            let _ = t.await;
        }
        self.api.store.close().await;
    }
}

/// Namespaces every cluster has.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Start the control plane; it runs until `shutdown` is cancelled.
pub async fn start(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    // The certificate also names the `kubernetes` Service's address and names, as pods use them.
    let mut sans = cfg.tls_sans.clone();
    sans.extend([cfg.service_range.first().to_string(), "kubernetes".into(), "kubernetes.default".into()]);
    sans.push("kubernetes.default.svc.cluster.local".into());
    let store = match &cfg.datastore {
        None => open_or_stand_by(&cfg.store_path()).await?,
        Some(etcd) => open_shared(&cfg, etcd, &sans).await?,
    };
    let pki = Arc::new(Pki::load_or_create(&cfg.data_dir.join("pki"), &sans)?);
    let admin_token = token_file(&cfg.data_dir.join("admin.token"))?;
    let mut tokens = Tokens::default();
    tokens.add(&admin_token, Identity::admin());
    // Left by versions that had one shared node token with full rights; it is no longer
    // accepted, so it should not linger either.
    let _ = std::fs::remove_file(cfg.data_dir.join("node.token"));
    let mut api = Api::new(store.clone(), shutdown.clone());
    api.service_range = cfg.service_range;
    bootstrap(&api).await?;
    let join_token = crate::membership::default_token(&api, &pki, &cfg.data_dir).await?;

    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    // Every API server authorizes its own requests: each follows the RBAC objects.
    apiserver::rbac::bootstrap(&api).await;
    apiserver::rbac::start(&api);
    apiserver::lookups::start(&api);
    apiserver::crds::start(&api);
    let metrics = Arc::new(apiserver::metrics::Metrics::default());
    let state = Arc::new(ServerState {
        api: api.clone(),
        tokens,
        data_dir: cfg.data_dir.clone(),
        pki: pki.clone(),
        node_cert_ttl: cfg.node_cert_ttl,
        kubelet_tls: pki.kubelet_client_config()?,
        registry: Arc::new(apiserver::registry::Registry::new(&cfg.data_dir).serving_at(cfg.advertise(addr))),
        metrics: metrics.clone(),
        anonymous_metrics: cfg.anonymous_metrics,
    });
    tokio::spawn(apiserver::registry::collector(state.registry.clone(), shutdown.clone()));
    // Every API server scrapes for itself: each serves metrics.k8s.io.
    tokio::spawn(apiserver::metrics::scrape_loop(state.clone(), cfg.metric_resolution, shutdown.clone()));
    let app = apiserver::router(state);
    let relay = Arc::new(apiserver::relay::Relay::default());
    let done = tokio::spawn(apiserver::serve(listener, pki.server_config()?, app, relay, shutdown.clone()));
    // Everything that acts on the cluster runs only while this control plane holds the leader
    // Lease; serving the API and compacting this process's own store do not wait for it.
    let (scheduler, lifecycle, pod_ranges, event_ttl) =
        (cfg.scheduler, cfg.node_lifecycle, cfg.pod_ranges, cfg.event_ttl);
    // Idleness is judged whenever new usage arrives.
    let autoscaling = (cfg.hpa, metrics.clone(), cfg.metric_resolution);
    let ca_pem = pki.ca_pem.clone();
    let (advertise, first_service_ip) = (cfg.advertise(addr), cfg.service_range.first());
    // Every API server keeps a Lease naming its address: the leader lists them all in the
    // `kubernetes` Service's endpoints, and nodes learn the servers from there.
    tokio::spawn(crate::controllers::apiservice::announce(api.clone(), advertise));
    let lead = move |term: Api| {
        let mut t = vec![tokio::spawn(crate::controllers::namespace::run(term.clone()))];
        t.push(tokio::spawn(crate::controllers::eventttl::start(term.clone(), event_ttl)));
        t.push(tokio::spawn(crate::controllers::serviceaccounts::start(term.clone(), ca_pem.clone())));
        t.push(tokio::spawn(crate::controllers::apiservice::run(term.clone(), advertise, first_service_ip)));
        t.extend(crate::controllers::start_all(&term, scheduler, lifecycle, pod_ranges, autoscaling.clone()));
        t.push(tokio::spawn(crate::scheduler::volumes::reclaimer(term.clone(), Duration::from_secs(5))));
        let stop = term.shutdown.clone();
        t.push(tokio::spawn(crate::membership::token_cleaner(term, Duration::from_secs(10), stop)));
        t
    };
    let mut leader = cfg.leader.clone();
    if leader.identity.is_empty() {
        leader.identity = leader_identity(&cfg.data_dir);
    }
    let mut tasks = vec![tokio::spawn(crate::controllers::leader::run(api.clone(), leader, lead))];
    tasks.push(tokio::spawn(compactor(store, cfg.history_revisions, cfg.compaction_interval, shutdown)));
    Ok(Running { addr, ca_pem: pki.ca_pem.clone(), admin_token, join_token, api, pki, done, tasks })
}

/// The leader identity: the host name and the data directory. A restarted control plane
/// thereby resumes its own Lease at once instead of waiting out its predecessor's; a second
/// process on the same data directory cannot hold the store while the first does (below).
fn leader_identity(data_dir: &std::path::Path) -> String {
    use sha2::Digest;
    let host = crate::pki::hostname().unwrap_or_else(|_| "wasmorch".into());
    let dir = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = sha2::Sha256::digest(dir.to_string_lossy().as_bytes());
    format!("{host}_{}", hex::encode(&digest[..6]))
}

/// Open the etcd datastore and share the cluster's secrets through it (`bootstrap`): the
/// first server publishes its own, a later one adopts them (and reopens the store, whose
/// sealing key was just replaced). Secrets are sealed with the key beside where the
/// embedded store would be.
async fn open_shared(cfg: &Config, etcd: &crate::store::EtcdConfig, sans: &[String]) -> anyhow::Result<Store> {
    use crate::bootstrap::{self, Shared};
    let key_file = crate::store::seal::key_path(&cfg.store_path());
    let fresh_key = !key_file.exists();
    let store = crate::store::open_etcd(etcd, &key_file).await?;
    if let Some(snapshot) = &cfg.restore_into_datastore {
        let (rev, n) = store.restore_snapshot(snapshot).await?;
        eprintln!("restored {n} objects of {} (revision {rev}) into etcd", snapshot.display());
    }
    let token = bootstrap::server_token(&cfg.data_dir, cfg.server_token.as_deref())?;
    let (pki_dir, admin) = (cfg.data_dir.join("pki"), cfg.data_dir.join("admin.token"));
    let make_local = || {
        Pki::load_or_create(&pki_dir, sans)?;
        token_file(&admin)?;
        Ok(())
    };
    match bootstrap::share(&store, &cfg.data_dir, &token, fresh_key, make_local).await? {
        Shared::Adopted => {
            eprintln!("joined the cluster in the datastore: its CA and keys are now in {}", cfg.data_dir.display());
            store.close().await;
            crate::store::open_etcd(etcd, &key_file).await
        }
        Shared::Published | Shared::Unchanged => Ok(store),
    }
}

/// Open the store; while another process holds it, wait as a standby and take over when it
/// goes (the store's file lock is released when its holder exits, however it exits).
async fn open_or_stand_by(path: &std::path::Path) -> anyhow::Result<Store> {
    let mut announced = false;
    loop {
        // Lease renewals (every node every 5 s, the leader every 2 s) are written softly: a
        // crash loses at most a few minutes of renewals, which the next ones replace.
        let lease = wasmorch_api::resources::of(wasmorch_api::resources::ResourceKind::Lease);
        let options = crate::store::Options { soft_prefixes: vec![lease.key_prefix(None)] };
        match Store::open_with(path, options) {
            Ok(s) => {
                if announced {
                    eprintln!("standby over: the store is ours now");
                }
                return Ok(s);
            }
            Err(e) if e.downcast_ref::<crate::store::Locked>().is_some() => {
                if !announced {
                    eprintln!("standby: {e}; waiting to take over");
                    announced = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Create the system namespaces and the default storage class if missing.
pub async fn bootstrap(api: &Api) -> anyhow::Result<()> {
    let ns = resources::of(resources::ResourceKind::Namespace);
    for name in SYSTEM_NAMESPACES {
        let key = ns.key("", name);
        let (obj, _) = apiserver::objects::prepare_create(
            ns,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}),
            Default::default(),
        )?;
        api.store
            .mutate(
                key,
                false,
                Box::new(move |cur| {
                    Ok(match cur {
                        Some(c) => Outcome::Put(c.clone()),
                        None => Outcome::Put(obj.clone()),
                    })
                }),
            )
            .await?;
    }
    // The built-in local-path class, default for claims that name none.
    let sc = resources::of(resources::ResourceKind::StorageClass);
    match api.create(sc, None, crate::scheduler::volumes::default_class(), Default::default(), false).await {
        Ok(_) => {}
        Err(e) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    // The ingress class every node's proxy serves, the default one.
    let ic = resources::of(resources::ResourceKind::IngressClass);
    match api.create(ic, None, crate::controllers::ingress::class(), Default::default(), false).await {
        Ok(_) => {}
        Err(e) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    // The Gateway API's definitions, built in.
    crate::controllers::gateway::ensure_definitions(api).await?;
    Ok(())
}

async fn compactor(store: Store, keep: u64, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = store.compact(keep).await {
            tracing::warn!("compaction: {e}");
        }
    }
}
