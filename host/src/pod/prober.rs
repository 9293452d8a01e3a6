//! The prober of a container run: startup, then liveness and readiness, setting the
//! container's `started`/`ready` and ending the run when a probe says so. The checks
//! themselves are in [`super::probe`].

use super::probe;
use super::{NodeCtx, PodInfo, Shared, event, sleep_or_stop};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// The probes of one container.
pub(super) struct Probes {
    startup: Option<probe::Probe>,
    liveness: Option<probe::Probe>,
    readiness: Option<probe::Probe>,
}

impl Probes {
    pub(super) fn parse(c: &Value) -> Result<Probes, String> {
        Ok(Probes {
            startup: probe::Probe::parse(c, "startupProbe")?,
            liveness: probe::Probe::parse(c, "livenessProbe")?,
            readiness: probe::Probe::parse(c, "readinessProbe")?,
        })
    }

    /// Whether a run is started and ready the moment it runs (no startup or readiness probe
    /// to wait for), so its first Running status already says so.
    pub(super) fn ready_at_start(&self) -> bool {
        self.startup.is_none() && self.readiness.is_none()
    }
}

/// One run of one container, as its prober sees it.
pub(super) struct ProbeRun {
    pub(super) ctx: Arc<NodeCtx>,
    pub(super) info: Arc<PodInfo>,
    pub(super) shared: Arc<Shared>,
    pub(super) i: usize,
    pub(super) name: String,
    pub(super) probes: Arc<Probes>,
    /// Cancelled when this run ends (or to end it).
    pub(super) run: CancellationToken,
    /// Why a probe ended the run.
    pub(super) killed: Arc<Mutex<Option<String>>>,
}

/// Probe one run of a container until `run` ends. Sets `started` and `ready`; on a failed
/// startup or liveness probe, says why in `killed` and cancels `run`.
pub(super) async fn probe_run(r: ProbeRun) {
    let ProbeRun { ctx, info, shared, i, name, probes, run, killed } = r;
    let kill = |what: &str, detail: String| {
        let why = format!("{what} probe failed: {detail}");
        *killed.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        run.cancel();
    };
    if let Some(p) = &probes.startup {
        let mut t = probe::Tracker::new(p);
        if !sleep_or_stop(p.initial_delay, &run).await {
            return;
        }
        loop {
            let r = probe::check(&p.action, &info.ip, p.timeout, &ctx.rt.ports).await;
            if let Err(e) = &r {
                event(&ctx, &info, "Warning", "Unhealthy", format!("Startup probe failed: {e}")).await;
            }
            match t.record(r.is_ok()) {
                Some(true) => break,
                Some(false) => {
                    let msg = format!("Container {name} failed startup probe, will be restarted");
                    event(&ctx, &info, "Normal", "Killing", msg).await;
                    return kill("Startup", r.err().unwrap_or_default());
                }
                None => {}
            }
            if !sleep_or_stop(p.period, &run).await {
                return;
            }
        }
    }
    let always_ready = probes.readiness.is_none();
    if run.is_cancelled() {
        return;
    }
    shared.set(i, |s| {
        s.started = true;
        s.ready = always_ready;
    });
    // Nothing more to watch: the task ends instead of waiting out the run.
    if probes.liveness.is_none() && probes.readiness.is_none() {
        return;
    }
    let liveness = async {
        let Some(p) = &probes.liveness else { return std::future::pending().await };
        let mut t = probe::Tracker::new(p);
        tokio::time::sleep(p.initial_delay).await;
        loop {
            let r = probe::check(&p.action, &info.ip, p.timeout, &ctx.rt.ports).await;
            if let Err(e) = &r {
                event(&ctx, &info, "Warning", "Unhealthy", format!("Liveness probe failed: {e}")).await;
            }
            if t.record(r.is_ok()) == Some(false) {
                let msg = format!("Container {name} failed liveness probe, will be restarted");
                event(&ctx, &info, "Normal", "Killing", msg).await;
                return kill("Liveness", r.err().unwrap_or_default());
            }
            tokio::time::sleep(p.period).await;
        }
    };
    let readiness = async {
        let Some(p) = &probes.readiness else { return std::future::pending().await };
        let mut t = probe::Tracker::new(p);
        tokio::time::sleep(p.initial_delay).await;
        loop {
            let r = probe::check(&p.action, &info.ip, p.timeout, &ctx.rt.ports).await;
            if let Err(e) = &r {
                event(&ctx, &info, "Warning", "Unhealthy", format!("Readiness probe failed: {e}")).await;
            }
            if let Some(ok) = t.record(r.is_ok())
                && !run.is_cancelled()
            {
                shared.set(i, |s| s.ready = ok);
            }
            tokio::time::sleep(p.period).await;
        }
    };
    tokio::select! {
        _ = liveness => {}
        _ = readiness => {}
        _ = run.cancelled() => {}
    }
}
