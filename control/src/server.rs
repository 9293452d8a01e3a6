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
    /// When a silent node is unreachable, and how long its pods stay.
    pub node_lifecycle: crate::controllers::nodelifecycle::Config,
}

impl Config {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Config {
        Config {
            data_dir,
            listen,
            tls_sans: Vec::new(),
            history_revisions: 100_000,
            compaction_interval: Duration::from_secs(60),
            scheduler: Default::default(),
            service_range: Default::default(),
            node_lifecycle: Default::default(),
        }
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
    /// Token nodes join with (`wasmorch node --token`).
    pub node_token: String,
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
    let pki = Arc::new(Pki::load_or_create(&cfg.data_dir.join("pki"), &cfg.tls_sans)?);
    let admin_token = token_file(&cfg.data_dir.join("admin.token"))?;
    let node_token = token_file(&cfg.data_dir.join("node.token"))?;
    let mut tokens = Tokens::default();
    tokens.add(&admin_token, Identity::admin());
    tokens.add(
        &node_token,
        Identity { user: "system:node".into(), groups: vec!["system:nodes".into(), "system:authenticated".into()] },
    );
    let store = Store::open(&cfg.store_path())?;
    let mut api = Api::new(store.clone(), shutdown.clone());
    api.service_range = cfg.service_range;
    bootstrap(&api).await?;

    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(ServerState {
        api: api.clone(),
        tokens,
        data_dir: cfg.data_dir.clone(),
        node_token: node_token.clone(),
    });
    let app = apiserver::router(state);
    let done = tokio::spawn(apiserver::serve(listener, pki.server_config()?, app, shutdown.clone()));
    let mut tasks = vec![tokio::spawn(crate::controllers::namespace::run(api.clone()))];
    tasks.extend(crate::controllers::start_all(&api, cfg.scheduler, cfg.node_lifecycle));
    tasks.push(tokio::spawn(crate::scheduler::volumes::reclaimer(api.clone(), Duration::from_secs(5))));
    tasks.push(tokio::spawn(compactor(store, cfg.history_revisions, cfg.compaction_interval, shutdown)));
    Ok(Running { addr, ca_pem: pki.ca_pem.clone(), admin_token, node_token, api, pki, done, tasks })
}

/// Create the system namespaces and the default storage class if missing.
pub async fn bootstrap(api: &Api) -> anyhow::Result<()> {
    let ns = resources::lookup("namespaces").expect("registered");
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
                        None => Outcome::Put(obj),
                    })
                }),
            )
            .await?;
    }
    // The built-in local-path class, default for claims that name none.
    let sc = resources::lookup("storageclasses").expect("registered");
    match api.create(sc, None, crate::scheduler::volumes::default_class(), Default::default(), false).await {
        Ok(_) => {}
        Err(e) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
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
