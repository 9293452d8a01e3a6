//! One pod on this node: fetch and load its components, run its containers, restart them by
//! policy with back-off, report status, stop gracefully.

pub mod lifecycle;

use crate::artifact;
use crate::client::Client;
use crate::runtime::http::{HttpWorkload, serve};
use crate::runtime::process::{Exit, Process};
use crate::runtime::{Limits, Loaded, Runtime};
use lifecycle::{ContainerStatus, RestartPolicy, State, backoff, status_json};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wasmorch_api::{object, quantity};

/// What every pod on the node shares.
pub struct NodeCtx {
    pub client: Client,
    pub rt: Arc<Runtime>,
    pub puller: artifact::Puller,
    pub node_name: String,
    pub host_ip: String,
    pub data_dir: PathBuf,
    /// First restart delay (Kubernetes: 10 s).
    pub backoff_base: Duration,
    /// Deadline of one HTTP request.
    pub request_timeout: Duration,
}

/// A running pod: how to stop it and wait for it.
pub struct PodHandle {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

struct PodInfo {
    ns: String,
    name: String,
    uid: String,
    ip: String,
    policy: RestartPolicy,
    grace: Duration,
    start_time: String,
    log_dir: PathBuf,
}

/// Container statuses plus a signal to the reporter. std Mutex: never held across an await.
struct Shared {
    statuses: Mutex<Vec<ContainerStatus>>,
    changed: Notify,
}

impl Shared {
    fn set(&self, i: usize, f: impl FnOnce(&mut ContainerStatus)) {
        f(&mut self.statuses.lock().unwrap_or_else(|e| e.into_inner())[i]);
        self.changed.notify_one();
    }
}

pub fn start(ctx: Arc<NodeCtx>, pod: Value, pod_ip: String) -> PodHandle {
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { run(ctx, pod, pod_ip, s).await });
    PodHandle { stop, task }
}

fn limits_of(c: &Value) -> Limits {
    let mut l = Limits::default();
    if let Some(m) = c["resources"]["limits"]["memory"].as_str().and_then(quantity::parse) {
        l.memory = m as usize;
    }
    if let Some(cpu) = c["resources"]["limits"]["cpu"].as_str().and_then(quantity::parse) {
        l.cpu_millis = (cpu * 1000.0).round() as u64;
    }
    l
}

async fn run(ctx: Arc<NodeCtx>, pod: Value, ip: String, stop: CancellationToken) {
    let info = Arc::new(PodInfo {
        ns: object::namespace(&pod).to_string(),
        name: object::name(&pod).to_string(),
        uid: object::uid(&pod).to_string(),
        ip,
        policy: RestartPolicy::parse(pod["spec"]["restartPolicy"].as_str()),
        grace: Duration::from_secs(pod["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap_or(30)),
        start_time: pod["status"]["startTime"].as_str().map(String::from).unwrap_or_else(object::now_rfc3339),
        log_dir: ctx.data_dir.join("pods").join(format!(
            "{}_{}_{}",
            object::namespace(&pod),
            object::name(&pod),
            object::uid(&pod)
        )),
    });
    let _ = std::fs::create_dir_all(&info.log_dir);
    let containers: Vec<Value> = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    // Restart counts survive a node restart: they come from the reported status.
    let previous = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    let shared = Arc::new(Shared {
        statuses: Mutex::new(
            containers
                .iter()
                .map(|c| {
                    let name = c["name"].as_str().unwrap_or("").to_string();
                    let restarts = previous
                        .iter()
                        .find(|p| p["name"] == name.as_str())
                        .and_then(|p| p["restartCount"].as_u64())
                        .unwrap_or(0) as u32;
                    ContainerStatus {
                        image: c["image"].as_str().unwrap_or("").to_string(),
                        name,
                        image_id: String::new(),
                        state: State::Waiting { reason: "ContainerCreating".into(), message: String::new() },
                        last_state: None,
                        ready: false,
                        restart_count: restarts,
                    }
                })
                .collect(),
        ),
        changed: Notify::new(),
    });
    let reporter = tokio::spawn(report_loop(ctx.clone(), info.clone(), shared.clone(), stop.clone()));
    shared.changed.notify_one();
    let mut tasks = Vec::new();
    for (i, c) in containers.into_iter().enumerate() {
        tasks.push(tokio::spawn(container(ctx.clone(), info.clone(), shared.clone(), i, c, stop.clone())));
    }
    for t in tasks {
        let _ = t.await;
    }
    // Final status once everything stopped (unless the pod is being torn down).
    if !stop.is_cancelled() {
        report(&ctx, &info, &shared).await;
    }
    stop.cancel();
    let _ = reporter.await;
}

async fn report_loop(ctx: Arc<NodeCtx>, info: Arc<PodInfo>, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = shared.changed.notified() => {}
            _ = stop.cancelled() => return,
        }
        // Batch bursts of changes into one update.
        tokio::time::sleep(Duration::from_millis(20)).await;
        report(&ctx, &info, &shared).await;
    }
}

async fn report(ctx: &NodeCtx, info: &PodInfo, shared: &Shared) {
    let statuses = shared.statuses.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let status = status_json(&statuses, info.policy, &ctx.host_ip, &info.ip, &info.start_time);
    let path = format!("/api/v1/namespaces/{}/pods/{}/status", info.ns, info.name);
    if let Err(e) = ctx.client.merge_patch(&path, &json!({"metadata": {"uid": info.uid}, "status": status})).await {
        // The control plane may be away; the next change or the agent's resync reports again.
        tracing::debug!("reporting {}/{}: {e}", info.ns, info.name);
    }
}

async fn event(ctx: &NodeCtx, info: &PodInfo, kind: &str, reason: &str, message: String) {
    let now = object::now_rfc3339();
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", info.name), "namespace": info.ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": info.name, "namespace": info.ns, "uid": info.uid},
        "reason": reason, "message": message, "type": kind,
        "source": {"component": "wasmorch-node", "host": ctx.node_name},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": "wasmorch-node", "reportingInstance": ctx.node_name,
    });
    if let Err(e) = ctx.client.post(&format!("/api/v1/namespaces/{}/events", info.ns), &ev).await {
        tracing::debug!("event {reason} for {}/{}: {e}", info.ns, info.name);
    }
}

fn env_of(c: &Value, info: &PodInfo, ctx: &NodeCtx) -> Vec<(String, String)> {
    let mut env = vec![
        ("POD_NAME".to_string(), info.name.clone()),
        ("POD_NAMESPACE".to_string(), info.ns.clone()),
        ("POD_IP".to_string(), info.ip.clone()),
        ("NODE_NAME".to_string(), ctx.node_name.clone()),
    ];
    for e in c["env"].as_array().into_iter().flatten() {
        if let (Some(n), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
            env.retain(|(k, _)| k != n);
            env.push((n.to_string(), v.to_string()));
        }
    }
    env
}

fn waiting(shared: &Shared, i: usize, reason: &str, message: String) {
    let r = reason.to_string();
    shared.set(i, move |s| {
        s.state = State::Waiting { reason: r, message };
        s.ready = false;
    });
}

/// Open a new run's log file; the last run's output becomes `<container>.log.previous`.
fn open_log(dir: &std::path::Path, container: &str) -> Option<std::fs::File> {
    let current = crate::logs::log_path(dir, container, false);
    if std::fs::metadata(&current).is_ok_and(|m| m.len() > 0) {
        let _ = std::fs::rename(&current, crate::logs::log_path(dir, container, true));
    }
    std::fs::OpenOptions::new().create(true).append(true).open(current).ok()
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
    i: usize,
    c: Value,
    stop: CancellationToken,
) {
    let name = c["name"].as_str().unwrap_or("").to_string();
    let image = c["image"].as_str().unwrap_or("").to_string();
    // Pull and load, with back-off on failure.
    let mut attempt = 0;
    let (digest, loaded) = loop {
        event(&ctx, &info, "Normal", "Pulling", format!("Pulling image \"{image}\"")).await;
        let policy = c["imagePullPolicy"].as_str().unwrap_or("IfNotPresent");
        let result = match ctx.puller.fetch(&image, policy).await {
            Ok(bytes) => {
                let rt = ctx.rt.clone();
                tokio::task::spawn_blocking(move || rt.load(&bytes))
                    .await
                    .map_err(|e| ("CreateContainerError", e.to_string()))
                    .and_then(|r| r.map_err(|e| ("InvalidImage", format!("{e:#}"))))
            }
            Err(e) => Err((e.reason, e.message)),
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
    event(&ctx, &info, "Normal", "Pulled", format!("Successfully pulled image \"{image}\" (sha256:{})", &digest[..12]))
        .await;
    let image_id = format!("sha256:{digest}");
    shared.set(i, |s| s.image_id = image_id);
    let log = open_log(&info.log_dir, &name);
    let env = env_of(&c, &info, &ctx);
    let limits = limits_of(&c);
    match loaded {
        Loaded::Http(pre) => {
            let Some(port) = c["ports"][0]["containerPort"].as_u64() else {
                waiting(
                    &shared,
                    i,
                    "CreateContainerConfigError",
                    "an HTTP component needs a containerPort to serve on".into(),
                );
                stop.cancelled().await;
                return;
            };
            let listener = match tokio::net::TcpListener::bind((info.ip.as_str(), port as u16)).await {
                Ok(l) => l,
                Err(e) => {
                    waiting(&shared, i, "CreateContainerError", format!("binding {}:{port}: {e}", info.ip));
                    stop.cancelled().await;
                    return;
                }
            };
            let w = Arc::new(HttpWorkload {
                rt: ctx.rt.clone(),
                pre,
                env,
                limits,
                timeout: ctx.request_timeout,
                log,
                served: Default::default(),
            });
            event(&ctx, &info, "Normal", "Created", format!("Created container {name}")).await;
            event(
                &ctx,
                &info,
                "Normal",
                "Started",
                format!("Started container {name} serving HTTP on {}:{port}", info.ip),
            )
            .await;
            let started = object::now_rfc3339();
            shared.set(i, |s| {
                s.state = State::Running { started_at: started };
                s.ready = true;
            });
            serve(listener, w, stop.clone(), info.grace).await;
        }
        Loaded::Command(pre) => {
            let args: Vec<String> = std::iter::once(name.clone())
                .chain(c["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)))
                .collect();
            let mut p = Process { rt: ctx.rt.clone(), pre, env, args, limits, log: None };
            drop(log);
            loop {
                event(&ctx, &info, "Normal", "Started", format!("Started container {name}")).await;
                let started = object::now_rfc3339();
                let began = Instant::now();
                let s2 = started.clone();
                shared.set(i, |s| {
                    s.state = State::Running { started_at: s2 };
                    s.ready = true;
                });
                p.log = open_log(&info.log_dir, &name);
                let exit = p.run(stop.clone()).await;
                if exit == Exit::Killed {
                    return;
                }
                let message = match &exit {
                    Exit::Trap(t) => t.clone(),
                    _ => String::new(),
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
                    s.restart_count
                };
                let wait = backoff(ctx.backoff_base, restarts);
                let msg = format!(
                    "back-off {}s restarting failed container={name} pod={}_{}",
                    wait.as_secs(),
                    info.name,
                    info.ns
                );
                event(&ctx, &info, "Warning", "BackOff", msg.clone()).await;
                waiting(&shared, i, "CrashLoopBackOff", msg);
                if !sleep_or_stop(wait, &stop).await {
                    return;
                }
            }
        }
    }
}
