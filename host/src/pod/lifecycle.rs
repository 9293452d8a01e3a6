//! Pod lifecycle rules as pure functions: restart decisions, back-off, phase, status JSON.

use serde_json::{Value, json};
use std::time::Duration;

/// Longest wait between restarts, as Kubernetes.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long without failing has its back-off reset, as Kubernetes.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// Wait before restart number `restarts` (1-based): base, 2·base, 4·base … capped at 5 min.
pub fn backoff(base: Duration, restarts: u32) -> Duration {
    let exp = restarts.saturating_sub(1).min(16);
    (base * 2u32.pow(exp)).min(MAX_BACKOFF)
}

/// The state of one container, as the host sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting { reason: String, message: String },
    Running { started_at: String },
    Terminated { exit_code: i32, reason: String, message: String, started_at: String, finished_at: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStatus {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: State,
    pub last_state: Option<State>,
    pub ready: bool,
    /// Running and past its startup probe (if any).
    pub started: bool,
    pub restart_count: u32,
}

fn state_json(s: &State) -> Value {
    match s {
        State::Waiting { reason, message } => json!({"waiting": {"reason": reason, "message": message}}),
        State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        State::Terminated { exit_code, reason, message, started_at, finished_at } => json!({"terminated": {
            "exitCode": exit_code, "reason": reason, "message": message, "startedAt": started_at, "finishedAt": finished_at
        }}),
    }
}

/// Pod phase from its containers, as Kubernetes computes it.
pub fn phase(containers: &[ContainerStatus], policy: RestartPolicy) -> &'static str {
    let running = containers.iter().filter(|c| matches!(c.state, State::Running { .. })).count();
    let waiting = containers.iter().filter(|c| matches!(c.state, State::Waiting { .. })).count();
    let failed =
        containers.iter().filter(|c| matches!(c.state, State::Terminated { exit_code, .. } if exit_code != 0)).count();
    let succeeded = containers.iter().filter(|c| matches!(c.state, State::Terminated { exit_code: 0, .. })).count();
    let all = containers.len();
    if running > 0 {
        return "Running";
    }
    if waiting > 0 {
        // A container waiting to restart after having run keeps the pod Running.
        let restarting = containers.iter().any(|c| matches!(c.state, State::Waiting { .. }) && c.restart_count > 0);
        return if restarting { "Running" } else { "Pending" };
    }
    if all > 0 && succeeded == all {
        return "Succeeded";
    }
    if failed > 0 && policy == RestartPolicy::Never
        || (failed > 0 && failed + succeeded == all && policy != RestartPolicy::Always)
    {
        return "Failed";
    }
    "Running"
}

/// The `status` of a pod, ready to be merge-patched.
pub fn status_json(
    containers: &[ContainerStatus],
    policy: RestartPolicy,
    host_ip: &str,
    pod_ip: &str,
    start_time: &str,
) -> Value {
    let now = wasmorch_api::object::now_rfc3339();
    let ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now.clone(), "lastProbeTime": null});
    let phase = phase(containers, policy);
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let mut v = json!({
                "name": c.name, "image": c.image, "imageID": c.image_id, "ready": c.ready,
                "restartCount": c.restart_count, "started": c.started && matches!(c.state, State::Running { .. }),
                "state": state_json(&c.state),
            });
            v["lastState"] = c.last_state.as_ref().map(state_json).unwrap_or_else(|| json!({}));
            v
        })
        .collect();
    json!({
        "phase": phase,
        "conditions": [cond("PodScheduled", true), cond("Initialized", true), cond("ContainersReady", ready), cond("Ready", ready)],
        "containerStatuses": statuses,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(state: State, restarts: u32) -> ContainerStatus {
        ContainerStatus {
            name: "c".into(),
            image: "i".into(),
            image_id: "".into(),
            state,
            last_state: None,
            ready: false,
            started: false,
            restart_count: restarts,
        }
    }
    fn term(code: i32) -> State {
        State::Terminated {
            exit_code: code,
            reason: "".into(),
            message: "".into(),
            started_at: "".into(),
            finished_at: "".into(),
        }
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let b = Duration::from_secs(10);
        assert_eq!(backoff(b, 1), Duration::from_secs(10));
        assert_eq!(backoff(b, 2), Duration::from_secs(20));
        assert_eq!(backoff(b, 5), Duration::from_secs(160));
        assert_eq!(backoff(b, 6), MAX_BACKOFF);
        assert_eq!(backoff(b, 60), MAX_BACKOFF);
    }

    #[test]
    fn restart_policies() {
        assert!(RestartPolicy::Always.restarts(0));
        assert!(!RestartPolicy::OnFailure.restarts(0));
        assert!(RestartPolicy::OnFailure.restarts(2));
        assert!(!RestartPolicy::Never.restarts(2));
    }

    #[test]
    fn phases() {
        let waiting = State::Waiting { reason: "ContainerCreating".into(), message: "".into() };
        assert_eq!(phase(&[c(waiting.clone(), 0)], RestartPolicy::Always), "Pending");
        assert_eq!(phase(&[c(waiting, 3)], RestartPolicy::Always), "Running");
        assert_eq!(phase(&[c(State::Running { started_at: "".into() }, 0)], RestartPolicy::Always), "Running");
        assert_eq!(phase(&[c(term(0), 0)], RestartPolicy::Never), "Succeeded");
        assert_eq!(phase(&[c(term(3), 0)], RestartPolicy::Never), "Failed");
        assert_eq!(phase(&[c(term(0), 0), c(term(1), 0)], RestartPolicy::OnFailure), "Failed");
    }

    #[test]
    fn status_is_kubernetes_shaped() {
        let mut running = c(State::Running { started_at: "t".into() }, 1);
        running.ready = true;
        let s = status_json(&[running], RestartPolicy::Always, "127.0.0.1", "127.100.0.1", "t0");
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["conditions"][3]["type"], "Ready");
        assert_eq!(s["conditions"][3]["status"], "True");
        assert_eq!(s["containerStatuses"][0]["restartCount"], 1);
        assert!(s["containerStatuses"][0]["state"]["running"].is_object());
    }
}
