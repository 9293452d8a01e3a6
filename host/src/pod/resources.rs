//! A pod's resources on the node: limits and requests from the spec, the concurrency
//! settings of its HTTP containers, and the events that say when requests were refused.

use super::{NodeCtx, PodInfo, event, sleep_or_stop};
use crate::runtime::admission::AdmissionSpec;
use crate::runtime::cpu::CpuSpec;
use crate::runtime::http::HttpWorkload;
use crate::runtime::{Resources, Runtime};
use serde_json::Value;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use wasmorch_api::quantity;

/// A container's resources from its spec: limits, and requests (which default to the
/// limits, as the API server defaults them).
pub(super) fn resources_of(c: &Value) -> Resources {
    let res = c.get("resources").and_then(Value::as_object);
    let quantity_of = |section: &str, name: &str| {
        res.and_then(|r| r.get(section))
            .and_then(|s| s.get(name))
            .and_then(|q| match q {
                Value::String(s) => quantity::parse(s),
                Value::Number(n) => n.as_f64(),
                _ => None,
            })
            .filter(|q| q.is_finite() && *q >= 0.0)
    };
    let millis = |q: f64| (q * 1000.0).round().min(u64::MAX as f64) as u64;
    let limit = quantity_of("limits", "cpu").map(millis);
    Resources {
        cpu: CpuSpec {
            limit_millis: limit,
            request_millis: quantity_of("requests", "cpu").map(millis).or(limit).unwrap_or(0),
        },
        memory: quantity_of("limits", "memory").map(|m| m.min(usize::MAX as f64) as usize),
    }
}

/// The pod's serving settings ([`wasmorch_api::serving`]); a value the API server would
/// refuse now (stored before it checked) is left unset.
fn serving_of(pod: &Value) -> wasmorch_api::serving::Serving {
    wasmorch_api::serving::serving(pod.get("metadata").and_then(|m| m.get("annotations"))).0
}

/// The pod's concurrency settings for an HTTP container (`wasmorch.io/max-concurrency`,
/// `wasmorch.io/max-queue`).
pub(super) fn admission_of(pod: &Value, rt: &Runtime, memory: usize) -> AdmissionSpec {
    let s = serving_of(pod);
    AdmissionSpec { fixed: s.max_concurrency, queue: s.max_queue, memory, ceiling: rt.max_instances() }
}

/// How long one request to the pod's HTTP containers may take until its response head:
/// `wasmorch.io/request-timeout`, else the node's.
pub(super) fn request_timeout_of(pod: &Value, node: std::time::Duration) -> std::time::Duration {
    serving_of(pod).request_timeout.unwrap_or(node)
}

/// While an HTTP container runs, post an event when requests were refused for memory or
/// for a full queue (at most one of each per sync period, with the count).
pub(super) async fn report_refusals(
    ctx: Arc<NodeCtx>,
    info: Arc<PodInfo>,
    w: Arc<HttpWorkload>,
    run: CancellationToken,
) {
    use std::sync::atomic::Ordering;
    let (mut oom, mut full) = (0, 0);
    while sleep_or_stop(ctx.config_sync, &run).await {
        let (o, f) = (w.oom.load(Ordering::Relaxed), w.admission.refused.load(Ordering::Relaxed));
        if o > oom {
            let msg = format!(
                "{} request(s) answered 503: the container's memory limit ({} MiB) was in use by other requests",
                o - oom,
                w.cgroup.memory.limit() >> 20
            );
            event(&ctx, &info, "Warning", "OOMKilled", msg).await;
        }
        if f > full {
            let s = w.admission.stats();
            let msg = format!(
                "{} request(s) answered 503: at the concurrency limit ({}) with the queue full ({})",
                f - full,
                s.limit,
                s.queue_limit
            );
            event(&ctx, &info, "Warning", "Overloaded", msg).await;
        }
        (oom, full) = (o, f);
    }
}
