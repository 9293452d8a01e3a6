//! One pod on this node: fetch and load its components, run its containers, restart them by
//! policy with back-off, report status, stop gracefully.

pub mod config;
mod exec;
pub mod lifecycle;
pub mod probe;
mod prober;
mod pull;
mod resources;
mod spec;
mod status;
pub mod volumes;

use crate::artifact;
use crate::client::Client;
use crate::runtime::admission::Admission;
use crate::runtime::http::{HttpWorkload, INSTANCE_OVERHEAD, serve};
use crate::runtime::process::{Exit, Process};
use crate::runtime::{Loaded, NetPolicy, Runtime};
pub use exec::DEBUG_IMAGE_ANNOTATION;
use exec::exec_target;
use lifecycle::{ContainerStatus, RestartPolicy, State, backoff};
use prober::{ProbeRun, Probes, probe_run};
use resources::{admission_of, report_refusals, request_timeout_of, resources_of};
use serde_json::Value;
pub use spec::{DEFAULT_HTTP_PORT, expand};
use spec::{containers_of, http_port, kept_for_node, net_policy, restart_counts, spread};
pub use status::{PodEvent, event_sender};
use status::{Shared, event, report, report_loop, waiting};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wasmorch_api::object;

/// What every pod on the node shares.
pub struct NodeCtx {
    pub client: Client,
    /// Resource figures of the containers running here (the node's Summary API).
    pub stats: Arc<crate::stats::Registry>,
    pub rt: Arc<Runtime>,
    pub puller: artifact::Puller,
    pub node_name: String,
    pub host_ip: String,
    pub data_dir: PathBuf,
    /// First restart delay (Kubernetes: 10 s).
    pub backoff_base: Duration,
    /// Deadline of one HTTP request.
    pub request_timeout: Duration,
    /// Events to post, in order, off the pods' paths (see [`event_sender`]).
    pub events: tokio::sync::mpsc::Sender<status::PodEvent>,
    /// What pods may mount from this node.
    pub storage: volumes::StoragePolicy,
    /// How often mounted ConfigMaps and Secrets are refreshed, `emptyDir` limits checked, and
    /// a missing ConfigMap or Secret looked for again.
    pub config_sync: Duration,
    /// ConfigMap and Secret reads, shared by the pods here.
    pub reads: config::SharedReads,
    /// The node's service proxy: Services for pods, in-process dispatch to local workloads.
    pub proxy: Arc<crate::proxy::Proxy>,
    /// Which components containers here use (what the collector keeps).
    pub uses: Arc<crate::collect::Uses>,
    /// Running pods and containers, for exec and port-forward.
    pub streams: Arc<crate::streams::Registry>,
}

/// A running pod: how to stop it and wait for it.
pub struct PodHandle {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

/// Removals of pods' files running at once. They run off the async workers: a pod's
/// directory is many files, on a slow disk each takes long (this machine's journal-less ext4
/// after mass deletions), and the agent's loop, heartbeats, probes and the proxy share those
/// threads. Bounded: a disk gains nothing from hundreds of writers.
///
/// A pod's start does its few file writes in place. Moved here too (measured over 10 000
/// pods, 2026-12-06), they cost 4–8 KiB more node memory per pod and no clear time: all
/// Ready in 21.0–22.9 s against 14.6–22.2 s on tmpfs, where identical runs spread that wide.
const FILE_WORKERS: usize = 4;
static FILE_WORK: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(FILE_WORKERS);

/// Run `f`, file work, on a blocking thread, at most [`FILE_WORKERS`] at once; `None` if it
/// panicked.
pub async fn file_work<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    // The semaphore is never closed.
    let _turn = FILE_WORK.acquire().await.ok()?;
    tokio::task::spawn_blocking(f).await.ok()
}

/// The pod's directory on this node.
pub fn pod_dir(data_dir: &std::path::Path, pod: &Value) -> PathBuf {
    data_dir.join("pods").join(format!("{}_{}_{}", object::namespace(pod), object::name(pod), object::uid(pod)))
}

/// Remove a deleted pod's directory: its logs and volumes.
pub fn remove_pod_dir(dir: &std::path::Path) {
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(dir)
    {
        tracing::warn!("removing {}: {e}", dir.display());
    }
}

/// Remove what a deleted pod kept on this node besides its logs: its volumes (`emptyDir`,
/// projected files) and subPath copies.
pub fn remove_volumes(dir: &std::path::Path) {
    for sub in ["volumes", "subpath"] {
        let p = dir.join(sub);
        if p.exists()
            && let Err(e) = std::fs::remove_dir_all(&p)
        {
            tracing::warn!("removing {}: {e}", p.display());
        }
    }
}

pub struct PodInfo {
    pub ns: String,
    pub name: String,
    pub uid: String,
    ip: String,
    policy: RestartPolicy,
    grace: Duration,
    start_time: String,
    log_dir: PathBuf,
    /// The pod's network policy, or why its spec does not give a valid one.
    net: Result<Arc<NetPolicy>, String>,
    /// The pod as it was bound (for references resolved at container start).
    pod: Value,
}

impl PodInfo {
    pub fn container_key(&self, container: &str) -> crate::stats::ContainerKey {
        crate::stats::ContainerKey {
            namespace: self.ns.clone(),
            pod: self.name.clone(),
            uid: self.uid.clone(),
            container: container.to_string(),
        }
    }
}

pub fn start(ctx: Arc<NodeCtx>, pod: Value, pod_ip: String) -> PodHandle {
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { run(ctx, pod, pod_ip, s).await });
    PodHandle { stop, task }
}

async fn run(ctx: Arc<NodeCtx>, pod: Value, ip: String, stop: CancellationToken) {
    let previous = restart_counts(&pod);
    let start_time = pod["status"]["startTime"].as_str().map(String::from).unwrap_or_else(object::now_rfc3339);
    let pod = kept_for_node(pod);
    let info = Arc::new(PodInfo {
        ns: object::namespace(&pod).to_string(),
        name: object::name(&pod).to_string(),
        uid: object::uid(&pod).to_string(),
        policy: RestartPolicy::parse(pod["spec"]["restartPolicy"].as_str()),
        grace: Duration::from_secs(pod["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap_or(30)),
        start_time,
        log_dir: pod_dir(&ctx.data_dir, &pod),
        net: net_policy(&pod, &ip).map(Arc::new),
        ip,
        pod,
    });
    let _ = std::fs::create_dir_all(&info.log_dir);
    let _streams = info.ip.parse().ok().map(|ip| ctx.streams.pod(&info.uid, ip));
    let containers = containers_of(&info.pod).len();
    let shared = Arc::new(Shared {
        statuses: Mutex::new(
            containers_of(&info.pod)
                .iter()
                .map(|c| {
                    let name = c["name"].as_str().unwrap_or("").to_string();
                    let restarts = previous.iter().find(|(n, _)| *n == name).map_or(0, |(_, r)| *r);
                    ContainerStatus {
                        image: c["image"].as_str().unwrap_or("").to_string(),
                        name,
                        image_id: String::new(),
                        state: State::Waiting { reason: "ContainerCreating".into(), message: String::new() },
                        last_state: None,
                        ready: false,
                        started: false,
                        restart_count: restarts,
                    }
                })
                .collect(),
        ),
        changed: Notify::new(),
        reporting: tokio::sync::Mutex::new(()),
        evicted: Mutex::new(None),
        slow: Notify::new(),
    });
    let reporter = tokio::spawn(report_loop(ctx.clone(), info.clone(), shared.clone(), stop.clone()));
    shared.changed.notify_one();
    // Containers fetch and load their components while the volumes are prepared (a token
    // request and a ConfigMap read away); each waits for the volumes before its config.
    // Containers stop on `stop` (deletion, node shutdown) or on eviction.
    let containers_stop = stop.child_token();
    let (mounted, volumes_rx) = tokio::sync::watch::channel(None::<Arc<volumes::PodVolumes>>);
    let mut tasks = Vec::new();
    for i in 0..containers {
        let (ctx, info, shared, volumes, stop) =
            (ctx.clone(), info.clone(), shared.clone(), volumes_rx.clone(), containers_stop.clone());
        tasks.push(tokio::spawn(container(ctx, info, shared, volumes, i, stop)));
    }
    // A missing ConfigMap or Secret is looked for again until it appears.
    let volumes = loop {
        let place = config::PodPlace { pod: &info.pod, ip: &info.ip, host_ip: &ctx.host_ip, node_name: &ctx.node_name };
        match Box::pin(volumes::PodVolumes::prepare(&ctx, &place, &info.log_dir)).await {
            Ok(v) => break Arc::new(v),
            Err(message) => {
                event(&ctx, &info, "Warning", "FailedMount", message.clone()).await;
                for i in 0..containers {
                    waiting(&shared, i, "CreateContainerConfigError", message.clone());
                }
                if !sleep_or_stop(ctx.config_sync, &stop).await {
                    containers_stop.cancel();
                    for t in tasks {
                        let _ = t.await;
                    }
                    let _ = reporter.await;
                    return;
                }
            }
        }
    };
    if volumes.needs_refresh() {
        tokio::spawn(refresh_loop(ctx.clone(), info.clone(), shared.clone(), volumes.clone(), containers_stop.clone()));
    }
    mounted.send_replace(Some(volumes));
    for t in tasks {
        let _ = t.await;
    }
    if let Some(why) = shared.evicted.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        let mut st = shared.statuses.lock().unwrap_or_else(|e| e.into_inner());
        for s in st.iter_mut() {
            if let State::Running { started_at } = &s.state {
                s.state = State::Terminated {
                    exit_code: 137,
                    reason: "Evicted".into(),
                    message: why.clone(),
                    started_at: started_at.clone(),
                    finished_at: object::now_rfc3339(),
                };
            }
            s.ready = false;
        }
    }
    // Final status once everything stopped (unless the pod is being torn down).
    // The final status (a finished process) must arrive: Jobs count on it.
    while !stop.is_cancelled() && !Box::pin(report(&ctx, &info, &shared)).await {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => {}
        }
    }
    stop.cancel();
    let _ = reporter.await;
}

/// Keep projected volumes in step with their ConfigMaps, Secrets and the pod's own fields, and
/// evict the pod when an `emptyDir` grows over its `sizeLimit`.
async fn refresh_loop(
    ctx: Arc<NodeCtx>,
    info: Arc<PodInfo>,
    shared: Arc<Shared>,
    volumes: Arc<volumes::PodVolumes>,
    containers: CancellationToken,
) {
    let path = format!("/api/v1/namespaces/{}/pods/{}", info.ns, info.name);
    let live = volumes::shows_live_metadata(&info.pod);
    // Pods started together refresh spread over the period, not all at once.
    if !sleep_or_stop(spread(&info.uid, ctx.config_sync), &containers).await {
        return;
    }
    while sleep_or_stop(ctx.config_sync, &containers).await {
        // Labels and annotations can change while the pod runs.
        let fresh = match live {
            true => Box::pin(ctx.client.get(&path)).await.ok(),
            false => None,
        };
        let pod = fresh.as_ref().unwrap_or(&info.pod);
        let place = config::PodPlace { pod, ip: &info.ip, host_ip: &ctx.host_ip, node_name: &ctx.node_name };
        if let Some(why) = Box::pin(volumes.refresh(&ctx, &place)).await {
            event(&ctx, &info, "Warning", "Evicted", why.clone()).await;
            *shared.evicted.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            containers.cancel();
            return;
        }
    }
}

/// The variables every container gets from the node: its own identity, and Kubernetes'
/// `<SVC>_SERVICE_HOST`/`_PORT` for the Services of its namespace.
fn base_env(info: &PodInfo, ctx: &NodeCtx) -> Vec<(String, String)> {
    let mut env = vec![
        ("POD_NAME".to_string(), info.name.clone()),
        ("POD_NAMESPACE".to_string(), info.ns.clone()),
        ("POD_IP".to_string(), info.ip.clone()),
        ("NODE_NAME".to_string(), ctx.node_name.clone()),
    ];
    env.extend(ctx.proxy.table().env(&info.ns));
    env
}

/// Resolve what a container needs from outside its spec (environment from ConfigMaps,
/// Secrets and the downward API, its mounts). `Err` names what is missing.
async fn container_config(
    ctx: &NodeCtx,
    info: &PodInfo,
    volumes: &volumes::PodVolumes,
    i: usize,
    c: &Value,
) -> Result<(Vec<(String, String)>, Arc<[volumes::Mount]>), String> {
    let place = config::PodPlace { pod: &info.pod, ip: &info.ip, host_ip: &ctx.host_ip, node_name: &ctx.node_name };
    let mut refs = config::Refs::new(ctx, &info.ns);
    let env = config::env(&mut refs, &place, c, base_env(info, ctx)).await?;
    let mounts = volumes.mounts(c, i)?;
    Ok((env, mounts.into()))
}

/// Open a new run's log; the last run's output becomes `<container>.log.previous`.
fn open_log(dir: &std::path::Path, container: &str) -> Option<crate::runtime::output::LogSink> {
    let path = crate::logs::log_path(dir, container, false);
    crate::runtime::output::LogSink::open(&path).inspect_err(|e| tracing::warn!("opening {}: {e}", path.display())).ok()
}

async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.cancelled() => false,
    }
}

/// One container's whole life on this node.
async fn container(
    ctx: Arc<NodeCtx>,
    info: Arc<PodInfo>,
    shared: Arc<Shared>,
    mut volumes: tokio::sync::watch::Receiver<Option<Arc<volumes::PodVolumes>>>,
    i: usize,
    stop: CancellationToken,
) {
    let Some(c) = containers_of(&info.pod).get(i) else { return };
    let name = c["name"].as_str().unwrap_or("").to_string();
    let image = c["image"].as_str().unwrap_or("").to_string();
    let config = info.net.clone().and_then(|net| Ok((net, Arc::new(Probes::parse(c)?))));
    let (net, probes) = match config {
        Ok(x) => x,
        Err(message) => {
            event(&ctx, &info, "Warning", "Failed", format!("Error: {message}")).await;
            waiting(&shared, i, "CreateContainerConfigError", message);
            stop.cancelled().await;
            return;
        }
    };
    // Pull and load, with back-off on failure (a built-in component is present, never pulled).
    let builtin = ctx.puller.is_builtin(&image);
    let mut attempt = 0;
    let (digest, loaded) = loop {
        if !builtin {
            event(&ctx, &info, "Normal", "Pulling", format!("Pulling image \"{image}\"")).await;
        }
        let policy = c["imagePullPolicy"].as_str().unwrap_or("IfNotPresent");
        let secrets = if builtin { Vec::new() } else { Box::pin(pull::pull_secrets(&ctx, &info.pod, &info.ns)).await };
        let fetch_and_load = async {
            match Box::pin(ctx.puller.fetch_component(&image, policy, &secrets)).await {
                Ok(fetched) => {
                    let rt = ctx.rt.clone();
                    tokio::task::spawn_blocking(move || rt.load_fetched(&fetched))
                        .await
                        .map_err(|e| ("CreateContainerError", e.to_string()))
                        .and_then(|r| r.map_err(|e| ("InvalidImage", format!("{e:#}"))))
                }
                Err(e) => Err((e.reason, e.message)),
            }
        };
        let mut fetch_and_load = std::pin::pin!(fetch_and_load);
        // A pull or a compile: the pod's first report need not wait for the start any more.
        let result = tokio::select! {
            r = &mut fetch_and_load => r,
            _ = tokio::time::sleep(status::FIRST_REPORT_GRACE) => {
                shared.slow.notify_one();
                fetch_and_load.await
            }
        };
        match result {
            Ok(x) => break x,
            Err((reason, message)) => {
                attempt += 1;
                event(&ctx, &info, "Warning", "Failed", format!("Failed to pull image \"{image}\": {message}")).await;
                waiting(&shared, i, reason, message.clone());
                if !sleep_or_stop(backoff(ctx.backoff_base, attempt), &stop).await {
                    return;
                }
                waiting(&shared, i, "ImagePullBackOff", format!("Back-off pulling image \"{image}\": {message}"));
            }
        }
    };
    let pulled = match builtin {
        true => format!("Container image \"{image}\" already present on machine"),
        false => format!("Successfully pulled image \"{image}\" (sha256:{})", &digest[..12]),
    };
    event(&ctx, &info, "Normal", "Pulled", pulled).await;
    // Kept (on disk and compiled) while this container lives.
    let _in_use = ctx.uses.acquire(&digest);
    let image_id = format!("sha256:{digest}");
    // Reported with the next state (Running), not on its own: one status write less.
    if let Some(s) = shared.statuses.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
        s.image_id = image_id;
    }
    // The pod's volumes, once prepared.
    let volumes = tokio::select! {
        v = volumes.wait_for(Option::is_some) => match v.ok().and_then(|v| v.clone()) {
            Some(v) => v,
            None => return,
        },
        _ = stop.cancelled() => return,
    };
    // A missing ConfigMap or Secret is looked for again until it appears.
    let (env, mounts) = loop {
        match Box::pin(container_config(&ctx, &info, &volumes, i, c)).await {
            Ok(x) => break x,
            Err(message) => {
                event(&ctx, &info, "Warning", "Failed", format!("Error: {message}")).await;
                waiting(&shared, i, "CreateContainerConfigError", message);
                if !sleep_or_stop(ctx.config_sync, &stop).await {
                    return;
                }
            }
        }
    };
    let resources = resources_of(c);
    // One resource group for the container's life: its CPU time adds up across restarts.
    let cgroup = ctx.rt.cgroup(&resources);
    let cluster: Option<Arc<dyn crate::runtime::Cluster>> = Some(Arc::new(crate::proxy::cluster::ClusterView {
        proxy: ctx.proxy.clone(),
        namespace: info.ns.clone(),
        pod_ip: info.ip.parse().ok(),
    }));
    let port = http_port(c);
    let args: Vec<String> = std::iter::once(name.clone())
        .chain(c["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(|a| expand(a, &env))))
        .collect();
    // Only a process reads stdin; `stdin: true` gives each run a pipe attach sessions write to.
    let takes_input = matches!(loaded, Loaded::Command(_)) && c["stdin"].as_bool() == Some(true);
    let attach = Arc::new(crate::streams::attach::Attach::new(takes_input, c["stdinOnce"].as_bool() == Some(true)));
    let target =
        exec_target(&ctx, &info, &name, &loaded, &env, &cgroup, &net, &mounts, &cluster, &stop, attach.clone());
    let _exec = ctx.streams.container(&info.uid, target);
    event(&ctx, &info, "Normal", "Created", format!("Created container {name}")).await;
    loop {
        let run = stop.child_token();
        let killed = Arc::new(Mutex::new(None::<String>));
        let log = open_log(&info.log_dir, &name);
        let stdin = attach.begin(run.clone());
        let started = object::now_rfc3339();
        let began = Instant::now();
        let running = |message: String| {
            let s2 = started.clone();
            // Without probes to wait for, Running and Ready go out in one status write.
            let at_once = probes.ready_at_start();
            shared.set(i, move |s| {
                s.state = State::Running { started_at: s2 };
                s.ready = at_once;
                s.started = at_once;
            });
            let r = ProbeRun {
                ctx: ctx.clone(),
                info: info.clone(),
                shared: shared.clone(),
                i,
                name: name.clone(),
                probes: probes.clone(),
                run: run.clone(),
                killed: killed.clone(),
            };
            // Ends by itself once `run` is cancelled.
            tokio::spawn(async move {
                event(&r.ctx, &r.info, "Normal", "Started", message).await;
                probe_run(r).await
            });
        };
        let exit = match &loaded {
            Loaded::Http(component) => match Box::pin(HttpWorkload::measure(&ctx.rt, component, &cgroup, &net))
                .await
                .and_then(|footprint| Ok((footprint, crate::runtime::ContainerMounts::new(&ctx.rt, mounts.clone())?)))
            {
                Err(e) => Exit::failed(format!("{e:#}")),
                Ok((footprint, held)) => {
                    // The concurrency limit starts from what one instance takes.
                    let spec = admission_of(&info.pod, &ctx.rt, cgroup.memory.limit());
                    let w = Arc::new(HttpWorkload {
                        rt: ctx.rt.clone(),
                        pre: component.pre.clone(),
                        env: env.clone(),
                        cgroup: cgroup.clone(),
                        admission: Arc::new(Admission::new(spec, footprint + INSTANCE_OVERHEAD)),
                        net: net.clone(),
                        mounts: held,
                        cluster: cluster.clone(),
                        timeout: request_timeout_of(&info.pod, ctx.request_timeout),
                        log,
                        served: Default::default(),
                        latency: crate::runtime::http::latency_histogram(),
                        oom: Default::default(),
                        open: Default::default(),
                    });
                    Box::pin(serve_http(&ctx, &info, &name, w, port, &run, running)).await
                }
            },
            Loaded::Command(pre) => {
                let p = Process {
                    rt: ctx.rt.clone(),
                    pre: pre.clone(),
                    env: env.clone(),
                    args: args.clone(),
                    cgroup: cgroup.clone(),
                    net: net.clone(),
                    mounts: mounts.clone(),
                    cluster: cluster.clone(),
                    log,
                };
                running(format!("Started container {name}"));
                ctx.stats.register(info.container_key(&name), None, cgroup.clone());
                let stdio = crate::runtime::Stdio { stdin, ..Default::default() };
                let exit = Box::pin(p.run_with(Some(stdio), run.clone())).await;
                run.cancel();
                exit
            }
        };
        if stop.is_cancelled() {
            return;
        }
        // Killed by a probe: Kubernetes reports the SIGKILL exit code.
        let (exit, message) = match killed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(why) => (Exit::Code(137), why),
            None => {
                let m = exit.message();
                (exit, m)
            }
        };
        let term = State::Terminated {
            exit_code: exit.code(),
            reason: exit.reason().into(),
            message,
            started_at: started,
            finished_at: object::now_rfc3339(),
        };
        if !info.policy.restarts(exit.code()) {
            shared.set(i, |s| {
                s.state = term;
                s.ready = false;
                s.started = false;
            });
            return;
        }
        let restarts = {
            let mut st = shared.statuses.lock().unwrap_or_else(|e| e.into_inner());
            let s = &mut st[i];
            if began.elapsed() > lifecycle::BACKOFF_RESET {
                s.restart_count = 0;
            }
            s.restart_count += 1;
            s.last_state = Some(term);
            s.ready = false;
            s.started = false;
            s.restart_count
        };
        let wait = backoff(ctx.backoff_base, restarts);
        let msg =
            format!("back-off {}s restarting failed container={name} pod={}_{}", wait.as_secs(), info.name, info.ns);
        event(&ctx, &info, "Warning", "BackOff", msg.clone()).await;
        waiting(&shared, i, "CrashLoopBackOff", msg);
        if !sleep_or_stop(wait, &stop).await {
            return;
        }
    }
}

/// One run of an HTTP container: bind the pod's port and serve until `run` ends. Requests
/// from this node's proxy reach it in process.
async fn serve_http(
    ctx: &Arc<NodeCtx>,
    info: &Arc<PodInfo>,
    name: &str,
    w: Arc<HttpWorkload>,
    port: u16,
    run: &CancellationToken,
    running: impl FnOnce(String),
) -> Exit {
    let Ok(ip) = info.ip.parse::<std::net::IpAddr>() else {
        return Exit::Trap(format!("the pod address {:?} is not an IP address", info.ip));
    };
    let addr = std::net::SocketAddr::new(ip, port);
    // Mapped pod ports: the pod's address is virtual, served on a port of 127.0.0.1.
    let listener = match tokio::net::TcpListener::bind(ctx.rt.ports.bind_addr(addr)).await {
        Ok(l) => l,
        Err(e) => return Exit::Trap(format!("binding {addr}: {e}")),
    };
    if let Ok(real) = listener.local_addr() {
        ctx.rt.ports.insert(addr, real);
    }
    running(format!("Started container {name} serving HTTP on {addr}"));
    ctx.proxy.register(addr, w.clone());
    ctx.stats.register(info.container_key(name), Some(w.clone()), w.cgroup.clone());
    tokio::spawn(report_refusals(ctx.clone(), info.clone(), w.clone(), run.clone()));
    serve(listener, w, run.clone(), info.grace).await;
    ctx.proxy.unregister(addr);
    ctx.rt.ports.remove(addr);
    run.cancel();
    Exit::Killed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex as StdMutex};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_work_runs_at_most_its_bound_at_once_and_all_of_it_eventually() {
        // Each piece of work holds its turn until the gate opens.
        let gate = Arc::new((StdMutex::new(false), Condvar::new()));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for i in 0..FILE_WORKERS * 5 {
            let (gate, running, most) = (gate.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(file_work(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let (open, cv) = &*gate;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                running.fetch_sub(1, Ordering::SeqCst);
                i
            })));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while running.load(Ordering::SeqCst) < FILE_WORKERS {
            assert!(std::time::Instant::now() < deadline, "the work never started");
            tokio::task::yield_now().await;
        }
        assert_eq!(most.load(Ordering::SeqCst), FILE_WORKERS, "no more than the bound at once");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let mut done = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap().expect("ran"));
        }
        assert_eq!(done, (0..FILE_WORKERS * 5).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), FILE_WORKERS);
    }
}
