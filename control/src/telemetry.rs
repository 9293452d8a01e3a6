//! Prometheus metrics of the control plane (`GET /metrics`, Prometheus text format 0.0.4):
//! API requests by verb, resource and code, and their latency; store commit latency and
//! batch sizes; open watches; scheduling attempts and their latency; controller work queues.
//! One registry per process (the figures are the process's), built on `prometheus-client`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbResource {
    pub verb: String,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Name {
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Resource {
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Result_ {
    pub result: String,
}

fn latency() -> Histogram {
    // 100 µs … ~26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

pub struct Telemetry {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<VerbResource, Histogram>,
    pub watchers: Family<Resource, Gauge>,
    pub commit_seconds: Histogram,
    pub commit_batch: Histogram,
    pub watch_history_read: Counter,
    pub schedule_attempts: Family<Result_, Counter>,
    pub schedule_seconds: Histogram,
    pub queue_depth: Family<Name, Gauge>,
    pub queue_processed: Family<Name, Counter>,
}

/// The process's metrics.
pub fn get() -> &'static Telemetry {
    static T: OnceLock<Telemetry> = OnceLock::new();
    T.get_or_init(|| {
        let mut registry = Registry::default();
        let t = Telemetry {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency),
            watchers: Family::default(),
            commit_seconds: latency(),
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            watch_history_read: Counter::default(),
            schedule_attempts: Family::default(),
            schedule_seconds: latency(),
            queue_depth: Family::default(),
            queue_processed: Family::default(),
            registry: Registry::default(),
        };
        registry.register("apiserver_request", "API requests by verb, resource and HTTP code", t.requests.clone());
        registry.register(
            "apiserver_request_duration_seconds",
            "API request latency by verb and resource (watches: until the stream opens)",
            t.request_seconds.clone(),
        );
        registry.register("apiserver_registered_watchers", "Watches open, by resource", t.watchers.clone());
        registry.register(
            "wasmorch_store_commit_duration_seconds",
            "Time of one store commit (one write transaction: a batch of writes)",
            t.commit_seconds.clone(),
        );
        registry.register("wasmorch_store_commit_batch_size", "Writes per store commit", t.commit_batch.clone());
        registry.register(
            "wasmorch_store_watch_history_records",
            "History records the embedded store read for watches catching up (not from the live feed)",
            t.watch_history_read.clone(),
        );
        registry.register(
            "scheduler_schedule_attempts",
            "Scheduling attempts by result (scheduled, unschedulable)",
            t.schedule_attempts.clone(),
        );
        registry.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Time to decide where one pod goes",
            t.schedule_seconds.clone(),
        );
        registry.register("workqueue_depth", "Keys waiting in a controller's work queue", t.queue_depth.clone());
        registry.register("workqueue_processed", "Keys a controller has worked on", t.queue_processed.clone());
        Telemetry { registry, ..t }
    })
}

impl Telemetry {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// A Kubernetes verb for a request to a resource path: `get`, `list`, `watch`, `create`,
/// `update`, `patch`, `delete`, `deletecollection`. Pure.
pub fn verb(method: &http::Method, named: bool, watch: bool) -> &'static str {
    match (method.as_str(), named, watch) {
        (_, _, true) => "watch",
        ("GET", true, _) => "get",
        ("GET", false, _) => "list",
        ("POST", ..) => "create",
        ("PUT", ..) => "update",
        ("PATCH", ..) => "patch",
        ("DELETE", true, _) => "delete",
        ("DELETE", false, _) => "deletecollection",
        _ => "other",
    }
}

/// The resource a path names and whether it names one object: `/api/v1/namespaces/d/pods/x`
/// → (`pods`, true); non-resource paths → (`""`, false). Pure.
pub fn resource_of(segs: &[&str]) -> (String, bool) {
    let rest = match segs {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return (String::new(), false),
    };
    let rest = match rest {
        ["watch", r @ ..] => r,
        r => r,
    };
    match rest {
        ["namespaces", _, plural, tail @ ..] => (plural.to_string(), !tail.is_empty()),
        ["namespaces", tail @ ..] => ("namespaces".to_string(), !tail.is_empty()),
        [plural, tail @ ..] => (plural.to_string(), !tail.is_empty()),
        [] => (String::new(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_verbs() {
        assert_eq!(resource_of(&["api", "v1", "namespaces", "d", "pods", "x"]), ("pods".into(), true));
        assert_eq!(resource_of(&["apis", "apps", "v1", "deployments"]), ("deployments".into(), false));
        assert_eq!(resource_of(&["api", "v1", "namespaces", "d"]), ("namespaces".into(), true));
        assert_eq!(resource_of(&["api", "v1", "watch", "pods"]), ("pods".into(), false));
        assert_eq!(resource_of(&["version"]), (String::new(), false));
        assert_eq!(verb(&http::Method::GET, false, true), "watch");
        assert_eq!(verb(&http::Method::DELETE, false, false), "deletecollection");
    }

    #[test]
    fn the_exposition_names_every_family() {
        let t = get();
        t.requests
            .get_or_create(&RequestLabels { verb: "get".into(), resource: "pods".into(), code: "200".into() })
            .inc();
        t.commit_batch.observe(3.0);
        t.queue_depth.get_or_create(&Name { name: "deployment".into() }).set(2);
        let text = t.render();
        for name in ["apiserver_request_total", "wasmorch_store_commit_batch_size_bucket", "workqueue_depth"] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }
}
