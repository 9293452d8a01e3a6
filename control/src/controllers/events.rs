//! Recording Events from the control plane, as Kubernetes' components do.

use crate::apiserver::api::Api;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use wasmorch_api::object;
use wasmorch_api::resources;
use wasmorch_api::validation::FieldValidation;

/// Events an object may get from one component in a burst, and how fast that allowance comes
/// back: client-go's spam filter (25, then one per 5 minutes). A ReplicaSet scaled to 10 000
/// records 25 `SuccessfulCreate` events, not 10 000.
const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Objects the spam filter remembers (client-go keeps 4 096 in an LRU cache).
const SPAM_KEYS: usize = 4096;
/// Event writes waiting or under way; beyond this, events are dropped (as client-go drops them
/// when its broadcaster's queue is full) rather than piling up tasks.
const MAX_PENDING: usize = 4096;
/// Event writes at once.
const WRITERS: usize = 16;

/// A token bucket per (component, object, type, reason): decides whether an event is written.
#[derive(Default)]
pub struct SpamFilter {
    buckets: HashMap<String, (f64, Instant)>,
}

impl SpamFilter {
    /// Takes a token from `key`'s bucket if it has one.
    pub fn allow(&mut self, key: &str, now: Instant) -> bool {
        let refill = |(tokens, at): (f64, Instant)| {
            (tokens + now.saturating_duration_since(at).as_secs_f64() / SPAM_REFILL.as_secs_f64()).min(SPAM_BURST)
        };
        if !self.buckets.contains_key(key) && self.buckets.len() >= SPAM_KEYS {
            // Forget full buckets (they act as new ones); failing that, the least recently
            // used half, so that a stream of new objects (a scheduler binding 10 000 pods)
            // sweeps once per 2 048 of them, not on each.
            self.buckets.retain(|_, b| refill(*b) < SPAM_BURST);
            if self.buckets.len() >= SPAM_KEYS {
                let mut last: Vec<Instant> = self.buckets.values().map(|b| b.1).collect();
                let (_, median, _) = last.select_nth_unstable(SPAM_KEYS / 2);
                let median = *median;
                self.buckets.retain(|_, b| b.1 > median);
            }
        }
        let b = self.buckets.entry(key.to_string()).or_insert((SPAM_BURST, now));
        let tokens = refill(*b);
        *b = if tokens >= 1.0 { (tokens - 1.0, now) } else { (tokens, now) };
        tokens >= 1.0
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

static SPAM: OnceLock<Mutex<SpamFilter>> = OnceLock::new();
/// Places for pending event writes: a permit is given back when its task ends or is dropped
/// unfinished (a runtime shutting down), so the bound cannot leak shut.
static PENDING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_PENDING);
static WRITE_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(WRITERS);

/// Record an event about `obj` (`kind` is `Normal` or `Warning`), without waiting for the
/// write: an event is never worth slowing or failing a reconcile for (failures are logged).
/// Events past the spam filter's allowance, or beyond [`MAX_PENDING`] writes, are dropped.
pub async fn record(api: &Api, obj: &Value, kind: &str, reason: &str, message: String, component: &str) {
    let key = format!("{component}\0{}\0{kind}\0{reason}", object::uid(obj));
    let allowed =
        SPAM.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner()).allow(&key, Instant::now());
    if !allowed {
        tracing::debug!("event {reason} for {} dropped: too many from {component}", object::name(obj));
        return;
    }
    let Ok(pending) = PENDING.try_acquire() else {
        tracing::debug!("event {reason} for {} dropped: {MAX_PENDING} event writes pending", object::name(obj));
        return;
    };
    let res = resources::of(resources::ResourceKind::Event);
    let ns = match object::namespace(obj) {
        "" => "default",
        ns => ns,
    };
    let now = object::now_rfc3339();
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", object::name(obj)), "namespace": ns},
        "involvedObject": {
            "apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": object::name(obj),
            "namespace": object::namespace(obj), "uid": object::uid(obj),
            "resourceVersion": object::resource_version(obj).to_string(),
        },
        "reason": reason, "message": message, "type": kind,
        "source": {"component": component},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": component, "reportingInstance": component,
    });
    let (api, reason, name, ns) = (api.clone(), reason.to_string(), object::name(obj).to_string(), ns.to_string());
    tokio::spawn(async move {
        let _pending = pending;
        if let Ok(_slot) = WRITE_SLOTS.acquire().await
            && let Err(e) = api.create(res, Some(&ns), ev, FieldValidation::Ignore, false).await
        {
            tracing::debug!("event {reason} for {name}: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_gets_a_burst_of_events_then_one_per_refill() {
        let mut f = SpamFilter::default();
        let t = Instant::now();
        assert!((0..25).all(|_| f.allow("rs-a", t)));
        assert!(!f.allow("rs-a", t), "the 26th at once is dropped");
        assert!(f.allow("rs-b", t), "another object has its own allowance");
        assert!(!f.allow("rs-a", t + SPAM_REFILL / 2));
        assert!(f.allow("rs-a", t + SPAM_REFILL + SPAM_REFILL / 2), "a token back after the refill period");
        assert!(!f.allow("rs-a", t + SPAM_REFILL + SPAM_REFILL / 2));
    }

    #[test]
    fn remembers_a_bounded_number_of_objects() {
        let mut f = SpamFilter::default();
        let t = Instant::now();
        for i in 0..SPAM_KEYS + 100 {
            assert!(f.allow(&format!("pod-{i}"), t + Duration::from_millis(i as u64)));
        }
        assert!(f.len() <= SPAM_KEYS);
        // The most recently used are kept: the last one has its 24 tokens left, no more.
        let last = format!("pod-{}", SPAM_KEYS + 99);
        let at = t + Duration::from_millis((SPAM_KEYS + 99) as u64);
        assert!((0..24).all(|_| f.allow(&last, at)));
        assert!(!f.allow(&last, at));
        // Full buckets go first when room is needed, and act as new when they come back.
        let later = t + SPAM_REFILL * 30;
        for i in 0..SPAM_KEYS {
            f.allow(&format!("new-{i}"), later);
        }
        assert!(f.len() <= SPAM_KEYS);
        assert!((0..25).all(|_| f.allow("pod-0", later)));
    }
}
