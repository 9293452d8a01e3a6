//! The pods bound to this node: start the new, stop the deleted (each stop in a task of its
//! own, so a pod finishing its requests holds up no other), and hand out pod addresses.

use crate::pod::{self, NodeCtx, PodHandle};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use wasmorch_api::object;

/// Pods the agent runs, by uid.
pub(super) struct Pods {
    ctx: Arc<NodeCtx>,
    running: HashMap<String, Running>,
    /// Pods being stopped, by uid. A stop waits for the pod's requests in flight (up to its
    /// grace period), so it runs in its own task: the agent meanwhile starts and stops others.
    stopping: HashMap<String, Stopping>,
    /// Stops that finished.
    stopped: (tokio::sync::mpsc::UnboundedSender<StopEnded>, tokio::sync::mpsc::UnboundedReceiver<StopEnded>),
    seq: u64,
    ips: wasmorch_api::ipam::PodAddresses,
}

/// A pod the agent runs.
struct Running {
    handle: PodHandle,
    ip: String,
    dir: PathBuf,
}

/// A pod's uid, which of its stops (`Stopping::seq`) ended, and whether it finished the
/// pod's deletion in the API (`false`: the API could not be told; the next event retries).
type StopEnded = (String, u64, bool);

/// A pod being stopped (or stopped, while the API still has it).
struct Stopping {
    task: tokio::task::JoinHandle<()>,
    /// Which stop of this pod `task` is (a later one waits for the earlier).
    seq: u64,
    /// The address the pod held: given back only when its task has ended.
    ip: Option<String>,
    /// The pod is gone from the API: its entry goes when the stop ends.
    gone: bool,
    dir: PathBuf,
}

/// What a pod's stop does once its task has ended.
struct StopWork {
    dir: PathBuf,
    /// Gone from the API: remove all its files, logs too (else only its volumes).
    gone: bool,
    /// The pod's API path, to finish its deletion (`gracePeriodSeconds=0`) once it stopped.
    finish: Option<String>,
}

impl crate::reflector::Follower for Pods {
    async fn apply(&mut self, change: crate::reflector::Change<'_>) {
        use crate::reflector::Change;
        match change {
            Change::Listed(items) => self.resync(items).await,
            Change::Applied(p) => self.reconcile(p, false).await,
            Change::Deleted(p) => self.reconcile(p, true).await,
        }
    }
}

impl Pods {
    pub(super) fn new(ctx: Arc<NodeCtx>, range: wasmorch_api::services::IpRange) -> Self {
        Pods {
            ctx,
            running: HashMap::new(),
            stopping: HashMap::new(),
            stopped: tokio::sync::mpsc::unbounded_channel(),
            seq: 0,
            ips: wasmorch_api::ipam::PodAddresses::new(range),
        }
    }

    /// After a (re)list: pods deleted while the watch was away stop; the rest reconcile.
    async fn resync(&mut self, items: &[Value]) {
        self.reap();
        let listed: std::collections::HashSet<&str> = items.iter().map(object::uid).collect();
        let stopping_here = self.stopping.iter().filter(|(_, s)| !s.gone).map(|(uid, _)| uid);
        let gone: Vec<String> =
            self.running.keys().chain(stopping_here).filter(|u| !listed.contains(u.as_str())).cloned().collect();
        for uid in gone {
            let dir = match self.running.get(&uid) {
                Some(r) => r.dir.clone(),
                None => self.stopping.get(&uid).map(|s| s.dir.clone()).unwrap_or_default(),
            };
            self.stop(uid, StopWork { dir, gone: true, finish: None });
        }
        // What pods deleted while this node was away (or before it restarted) left behind;
        // the directories of pods still stopping stay until their stop ends.
        let mut keep = listed.clone();
        keep.extend(self.stopping.keys().map(String::as_str));
        crate::collect::sweep_pod_dirs(&self.ctx.data_dir.join("pods"), &keep);
        // Addresses pods already have are reserved first, so a pod without one cannot be
        // handed an address that a pod later in the list still holds.
        for p in items {
            let live =
                !object::is_deleting(p) && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
            if let Some(ip) = p["status"]["podIP"].as_str().filter(|_| live) {
                self.ips.reserve(ip);
            }
        }
        for p in items {
            self.reconcile(p, false).await;
        }
    }

    /// A pod's address is free again.
    fn release(&mut self, ip: &str) {
        self.ips.give_back(ip);
        forget_address(&self.ctx, ip);
    }

    /// Stop a pod in a task of its own: cancel it if it runs, wait for its task (or for an
    /// earlier stop of it) to end, then do `work`. Its address is given back by `reap` once
    /// all of that is done, so no new pod can take it while the old one still answers on it.
    fn stop(&mut self, uid: String, work: StopWork) {
        let (gone, dir) = (work.gone, work.dir.clone());
        let (before, ip) = match (self.running.remove(&uid), self.stopping.remove(&uid)) {
            (Some(r), _) => {
                r.handle.stop.cancel();
                (Some(r.handle.task), Some(r.ip))
            }
            (None, Some(s)) => (Some(s.task), s.ip),
            (None, None) => (None, None),
        };
        self.seq += 1;
        let (seq, ctx, done) = (self.seq, self.ctx.clone(), self.stopped.0.clone());
        let (key, addr) = (uid.clone(), ip.clone());
        let task = tokio::spawn(async move {
            if let Some(t) = before {
                let _ = t.await;
            }
            if let Some(ip) = &addr {
                forget_address(&ctx, ip);
            }
            let finished = finish_stop(&ctx, work).await;
            let _ = done.send((key, seq, finished));
        });
        self.stopping.insert(uid, Stopping { task, seq, ip, gone, dir });
    }

    /// Take in the stops that ended: their addresses are free again, and a pod gone from
    /// the API is forgotten. A stopped pod the API still has keeps its entry (without an
    /// address) until it is gone, so the updates of its last moments start no second stop;
    /// unless finishing its deletion failed: then the next event of it (or the relist after
    /// the control plane returns) stops it again, which retries.
    fn reap(&mut self) {
        while let Ok((uid, seq, finished)) = self.stopped.1.try_recv() {
            let Some(s) = self.stopping.get_mut(&uid).filter(|s| s.seq == seq) else { continue };
            let (ip, gone) = (s.ip.take(), s.gone);
            if gone || !finished {
                self.stopping.remove(&uid);
            }
            if let Some(ip) = ip {
                self.ips.give_back(&ip);
            }
        }
    }

    /// Bring this node's view of one pod in line with the API's.
    async fn reconcile(&mut self, pod: &Value, deleted: bool) {
        self.reap();
        let uid = object::uid(pod).to_string();
        let phase = pod["status"]["phase"].as_str().unwrap_or("");
        let terminal = phase == "Succeeded" || phase == "Failed";
        if deleted || object::is_deleting(pod) {
            // A stop under way already covers what this one would do (an update of a pod
            // in its last moments; a second delete event after a relist).
            if self.stopping.get(&uid).is_some_and(|s| s.gone || !deleted) {
                return;
            }
            tracing::info!(pod = object::name(pod), deleted, "stopping pod");
            let finish = (!deleted).then(|| {
                format!("/api/v1/namespaces/{}/pods/{}?gracePeriodSeconds=0", object::namespace(pod), object::name(pod))
            });
            let dir = crate::pod::pod_dir(&self.ctx.data_dir, pod);
            self.stop(uid, StopWork { dir, gone: deleted, finish });
            return;
        }
        if self.running.contains_key(&uid) {
            if let Some(r) = self.running.get(&uid)
                && r.handle.task.is_finished()
                && terminal
            {
                let ip = r.ip.clone();
                self.running.remove(&uid);
                self.release(&ip);
            }
            return;
        }
        if terminal {
            return;
        }
        // Keep the address the pod had (a node restart), unless another pod here has it now.
        let ip = pod["status"]["podIP"]
            .as_str()
            .filter(|ip| self.ips.contains(ip))
            .filter(|ip| !self.running.values().any(|r| r.ip == *ip))
            .filter(|ip| !self.stopping.values().any(|s| s.ip.as_deref() == Some(*ip)))
            .map(String::from)
            .or_else(|| self.ips.take());
        let Some(ip) = ip else {
            tracing::warn!(pod = object::name(pod), "no pod address left in {}", self.ips.range());
            return;
        };
        self.ips.reserve(&ip);
        if let Ok(addr) = ip.parse() {
            self.ctx.proxy.pod_started(addr);
        }
        let h = pod::start(self.ctx.clone(), pod.clone(), ip.clone());
        let dir = crate::pod::pod_dir(&self.ctx.data_dir, pod);
        self.running.insert(uid, Running { handle: h, ip, dir });
    }

    pub(super) async fn stop_all(&mut self) {
        for r in self.running.values() {
            r.handle.stop.cancel();
        }
        for (_, r) in self.running.drain() {
            let _ = r.handle.task.await;
        }
        for (_, s) in self.stopping.drain() {
            let _ = s.task.await;
        }
    }
}

/// The node no longer serves a pod at `ip` (its task has ended).
fn forget_address(ctx: &NodeCtx, ip: &str) {
    if let Ok(ip) = ip.parse() {
        ctx.proxy.pod_ended(ip);
        ctx.rt.ports.remove_ip(ip);
    }
}

/// A stopped pod's files, off the async workers (see `file_work`), then the end of its
/// deletion in the API. `false` when the API could not be told.
async fn finish_stop(ctx: &NodeCtx, w: StopWork) -> bool {
    let StopWork { dir, gone, finish } = w;
    let shown = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let _ = crate::pod::file_work(move || match gone {
        // Gone from the API: nothing can read its logs any more.
        true => crate::pod::remove_pod_dir(&dir),
        false => crate::pod::remove_volumes(&dir),
    })
    .await;
    tracing::info!(pod = shown, "pod stopped");
    let Some(path) = finish else { return true };
    match ctx.client.delete(&path).await {
        Ok(_) => true,
        Err(e) if e.code == 404 => true,
        Err(e) => {
            tracing::warn!("finishing deletion of {shown}: {e}");
            false
        }
    }
}
