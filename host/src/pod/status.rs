//! What the node tells the API about a pod: its containers' statuses (kept in [`Shared`],
//! written by one reporter in snapshot order, only when they changed) and its Events
//! (handed to a bounded poster, off the pod's path).

use super::lifecycle::{ContainerStatus, State, status_json};
use super::{NodeCtx, PodInfo};
use crate::client::Client;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wasmorch_api::object;

/// An Event a pod hands to the poster: what it says, kept small while it waits in the queue
/// (the JSON object is built when it is posted: a queue of thousands of events as JSON values
/// was several KB each).
#[derive(Debug)]
pub struct PodEvent {
    namespace: String,
    pod: String,
    uid: String,
    kind: &'static str,
    reason: &'static str,
    message: String,
    at: String,
}

impl PodEvent {
    /// The Event object, as reported by `node`.
    fn json(&self, node: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{}.", self.pod), "namespace": self.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": self.pod, "namespace": self.namespace, "uid": self.uid},
            "reason": self.reason, "message": self.message, "type": self.kind,
            "source": {"component": "wasmorch-node", "host": node},
            "firstTimestamp": self.at, "lastTimestamp": self.at, "count": 1,
            "reportingComponent": "wasmorch-node", "reportingInstance": node,
        })
    }
}

/// A poster of events: pods hand events over without waiting for the API; a few are posted
/// at a time. When the queue is full (control plane away) new events are dropped, as a
/// kubelet's event broadcaster does.
pub fn event_sender(client: Client, node: String, stop: CancellationToken) -> tokio::sync::mpsc::Sender<PodEvent> {
    let (tx, rx) = tokio::sync::mpsc::channel::<PodEvent>(4096);
    tokio::spawn(async move {
        use futures::StreamExt;
        let posts = tokio_stream::wrappers::ReceiverStream::new(rx).for_each_concurrent(8, |ev| {
            let (client, body) = (client.clone(), ev.json(&node));
            async move {
                if let Err(e) = client.send_post(&format!("/api/v1/namespaces/{}/events", ev.namespace), &body).await {
                    tracing::debug!("event {}: {e}", ev.reason);
                }
            }
        });
        tokio::select! {
            _ = posts => {}
            _ = stop.cancelled() => {}
        }
    });
    tx
}

/// Container statuses plus a signal to the reporter. std Mutex: never held across an await.
pub(super) struct Shared {
    pub(super) statuses: Mutex<Vec<ContainerStatus>>,
    pub(super) changed: Notify,
    /// Held across taking a snapshot and writing it, so reports land in the order their
    /// snapshots were taken (an older snapshot can never overwrite a newer one). A tokio
    /// Mutex: it is held across the API call.
    pub(super) reporting: tokio::sync::Mutex<()>,
    /// Why the node evicted the pod (an `emptyDir` over its limit); the pod then ends Failed.
    pub(super) evicted: Mutex<Option<String>>,
    /// Told when a container's pull and load runs long (see [`FIRST_REPORT_GRACE`]).
    pub(super) slow: Notify,
}

impl Shared {
    /// Change container `i`'s status; the reporter writes it only if something changed.
    pub(super) fn set(&self, i: usize, f: impl FnOnce(&mut ContainerStatus)) {
        let changed = {
            let mut all = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
            let Some(st) = all.get_mut(i) else { return };
            let before = st.clone();
            f(st);
            *st != before
        };
        if changed {
            self.changed.notify_one();
        }
    }
}

/// How long a container's pull and load may take before the pod's first report goes out
/// (saying its containers are being created): a cached component loads well within it, and
/// then the pod's first write says Running (and Ready) at once, one write and one watch event
/// instead of two on the path of every start. A pull or a compile shows ContainerCreating
/// after it.
///
/// The grace is measured on the pull and load alone, not on the whole start: on a node
/// starting thousands of pods at once, every start takes longer than any fixed grace (a
/// second and more, waiting for CPU), and a grace on the whole start doubled the status
/// writes of a 10 000-pod scale-up.
pub(super) const FIRST_REPORT_GRACE: Duration = Duration::from_millis(100);

/// The longest the first report waits, whatever the start is doing (volumes waiting for the
/// API, a busy node): a pod's status shows within this of its start.
pub(super) const FIRST_REPORT_LIMIT: Duration = Duration::from_secs(5);

pub(super) async fn report_loop(ctx: Arc<NodeCtx>, info: Arc<PodInfo>, shared: Arc<Shared>, stop: CancellationToken) {
    let mut first = true;
    loop {
        tokio::select! {
            _ = shared.changed.notified() => {}
            _ = stop.cancelled() => return,
        }
        let creating = only_creating(&shared.statuses.lock().unwrap_or_else(|e| e.into_inner()));
        // A change made before this loop first ran has already replaced the initial state
        // (and its notification merged with the first): no wait then.
        if std::mem::take(&mut first) && creating && !hold_first_report(&shared, &stop).await {
            return;
        }
        // Changes made while this report is in flight leave the notification set, so a burst
        // costs at most one more report. A report the API did not take (the control plane
        // away or busy) is tried again.
        // Boxed: the request's state is held only while it is in flight, not by every idle
        // pod's reporter.
        if !Box::pin(report(&ctx, &info, &shared)).await {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => shared.changed.notify_one(),
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// Hold the first report back until the start says something (a change), a pull or load
/// runs long, or [`FIRST_REPORT_LIMIT`] passes; false if the pod stopped meanwhile.
async fn hold_first_report(shared: &Shared, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(FIRST_REPORT_LIMIT) => true,
        _ = shared.slow.notified() => true,
        _ = shared.changed.notified() => true,
        _ = stop.cancelled() => false,
    }
}

/// Whether every container is still in the state a pod starts in (being created).
fn only_creating(statuses: &[ContainerStatus]) -> bool {
    statuses.iter().all(|s| matches!(&s.state, State::Waiting { reason, .. } if reason == "ContainerCreating"))
}

/// Write the pod's current status; false if the API did not take it.
pub(super) async fn report(ctx: &NodeCtx, info: &PodInfo, shared: &Shared) -> bool {
    let _order = shared.reporting.lock().await;
    let statuses = shared.statuses.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut status = status_json(&statuses, info.policy, &ctx.host_ip, &info.ip, &info.start_time);
    if let Some(why) = shared.evicted.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        status["phase"] = json!("Failed");
        status["reason"] = json!("Evicted");
        status["message"] = json!(why);
    }
    let path = format!("/api/v1/namespaces/{}/pods/{}/status", info.ns, info.name);
    match ctx.client.send_merge_patch(&path, &json!({"metadata": {"uid": info.uid}, "status": status})).await {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!("reporting {}/{}: {e}", info.ns, info.name);
            false
        }
    }
}

pub(super) async fn event(ctx: &NodeCtx, info: &PodInfo, kind: &'static str, reason: &'static str, message: String) {
    let ev = PodEvent {
        namespace: info.ns.clone(),
        pod: info.name.clone(),
        uid: info.uid.clone(),
        kind,
        reason,
        message,
        at: object::now_rfc3339(),
    };
    if ctx.events.try_send(ev).is_err() {
        tracing::debug!("event {reason} for {}/{} dropped: the event queue is full", info.ns, info.name);
    }
}

pub(super) fn waiting(shared: &Shared, i: usize, reason: &str, message: String) {
    let r = reason.to_string();
    shared.set(i, move |s| {
        s.state = State::Waiting { reason: r, message };
        s.ready = false;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_event_becomes_a_kubernetes_event_when_posted() {
        let ev = PodEvent {
            namespace: "ns".into(),
            pod: "p".into(),
            uid: "u".into(),
            kind: "Normal",
            reason: "Started",
            message: "Started container c".into(),
            at: "2026-12-06T10:00:00Z".into(),
        };
        let j = ev.json("n1");
        assert_eq!(j["metadata"], json!({"generateName": "p.", "namespace": "ns"}));
        assert_eq!(
            j["involvedObject"],
            json!({"apiVersion": "v1", "kind": "Pod", "name": "p", "namespace": "ns", "uid": "u"})
        );
        assert_eq!((j["type"].as_str(), j["reason"].as_str()), (Some("Normal"), Some("Started")));
        assert_eq!(j["source"], json!({"component": "wasmorch-node", "host": "n1"}));
        assert_eq!((j["firstTimestamp"].as_str(), j["count"].as_u64()), (Some("2026-12-06T10:00:00Z"), Some(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_report_waits_for_news_a_slow_pull_or_the_limit() {
        let shared = || Shared {
            statuses: Mutex::new(Vec::new()),
            changed: Notify::new(),
            reporting: tokio::sync::Mutex::new(()),
            evicted: Mutex::new(None),
            slow: Notify::new(),
        };
        let stop = CancellationToken::new();
        let held = |s: Shared, stop: CancellationToken| async move {
            let t = tokio::time::Instant::now();
            let went = hold_first_report(&s, &stop).await;
            (went, t.elapsed())
        };
        // Nothing to say: the status still shows within the limit, however busy the node.
        assert_eq!(held(shared(), stop.clone()).await, (true, FIRST_REPORT_LIMIT));
        // A pull that ran long told it before it waited (a permit is kept): at once.
        let s = shared();
        s.slow.notify_one();
        assert_eq!(held(s, stop.clone()).await, (true, Duration::ZERO));
        // A change (the container started, or failed): at once.
        let s = shared();
        s.changed.notify_one();
        assert_eq!(held(s, stop.clone()).await, (true, Duration::ZERO));
        stop.cancel();
        assert!(!held(shared(), stop).await.0, "a stopped pod reports nothing");
    }

    #[test]
    fn only_the_initial_state_holds_the_first_report() {
        let st = |state: State| ContainerStatus {
            name: "c".into(),
            image: "i".into(),
            image_id: String::new(),
            state,
            last_state: None,
            ready: false,
            started: false,
            restart_count: 0,
        };
        let creating = || st(State::Waiting { reason: "ContainerCreating".into(), message: String::new() });
        assert!(only_creating(&[creating(), creating()]));
        let running = st(State::Running { started_at: "t".into() });
        assert!(!only_creating(&[creating(), running]), "one container started: report at once");
        let pulling = st(State::Waiting { reason: "ErrImagePull".into(), message: "m".into() });
        assert!(!only_creating(&[pulling]), "news for the user: report at once");
    }
}
