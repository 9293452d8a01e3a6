//! Expiry of Events (`--event-ttl`; Kubernetes' default is 1 h). Kubernetes gives every Event
//! an etcd lease of that length; here the leader sweeps: Events whose last occurrence is older
//! than the TTL are deleted. Without it a cluster's event history grows without bound (a
//! crash-looping pod writes a few a minute), which on an SD card is writes and disk forever.

use super::replicaset::target;
use crate::apiserver::api::{Api, ListOptions};
use crate::apiserver::objects::DeleteOptions;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;
use wasmorch_api::object;
use wasmorch_api::resources::{self, ResourceKind};

/// Kubernetes' `--event-ttl` default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// How often to sweep for a TTL: a twelfth of it, between a second and a minute (an Event
/// outlives its TTL by at most that).
pub fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 12).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// When an Event last happened: its series' last observation, `lastTimestamp`, `eventTime`,
/// else its creation (events.k8s.io writers set the first, core/v1 writers the second).
fn last_seen(ev: &Value) -> Option<DateTime<Utc>> {
    let at = |v: Option<&Value>| {
        v.and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc))
    };
    at(ev.get("series").and_then(|s| s.get("lastObservedTime")))
        .or_else(|| at(ev.get("lastTimestamp")))
        .or_else(|| at(ev.get("eventTime")))
        .or_else(|| at(ev.get("metadata").and_then(|m| m.get("creationTimestamp"))))
}

/// The Events (namespace, name) expired at `now`.
pub fn expired(events: &[Value], now: DateTime<Utc>, ttl: Duration) -> Vec<(String, String)> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    events
        .iter()
        .filter(|ev| last_seen(ev).is_some_and(|t| now.signed_duration_since(t) > ttl))
        .map(|ev| (object::namespace(ev).to_string(), object::name(ev).to_string()))
        .collect()
}

pub async fn start(api: Api, ttl: Duration) {
    let res = resources::of(ResourceKind::Event);
    let every = sweep_interval(ttl);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = api.shutdown.cancelled() => return,
        }
        let list = match api.list(res, None, &ListOptions::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!("event expiry: listing events: {e}");
                continue;
            }
        };
        let items = list.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let gone = expired(items, Utc::now(), ttl);
        if !gone.is_empty() {
            tracing::debug!(count = gone.len(), "expiring events older than {ttl:?}");
        }
        for (ns, name) in gone {
            // Gone already (a namespace deletion, another sweep) is as good as deleted.
            let _ = api.delete(&target(res, &ns, &name, None), DeleteOptions::default(), false).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_expire_by_their_last_occurrence() {
        let now: DateTime<Utc> = "2026-12-03T12:00:00Z".parse().unwrap();
        let ev = |name: &str, extra: Value| {
            let mut e =
                json!({"metadata": {"name": name, "namespace": "d", "creationTimestamp": "2026-12-03T10:00:00Z"}});
            for (k, v) in extra.as_object().unwrap() {
                e[k] = v.clone();
            }
            e
        };
        let events = [
            // Created long ago but seen again a minute ago: kept.
            ev("recurring", json!({"lastTimestamp": "2026-12-03T11:59:00Z"})),
            ev("old", json!({"lastTimestamp": "2026-12-03T10:30:00Z"})),
            ev(
                "series",
                json!({"eventTime": "2026-12-03T10:00:00.000000Z", "series": {"lastObservedTime": "2026-12-03T11:30:00.000000Z"}}),
            ),
            ev("event-time-only", json!({"eventTime": "2026-12-03T10:59:59.000000Z"})),
            ev("created-only", json!({})),
            // No time at all: not ours to judge.
            json!({"metadata": {"name": "timeless", "namespace": "d"}}),
        ];
        let gone = expired(&events, now, DEFAULT_TTL);
        let names: Vec<&str> = gone.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["old", "event-time-only", "created-only"]);
        assert!(expired(&events, now, Duration::from_secs(86_400)).is_empty());
    }

    #[test]
    fn sweeps_are_between_a_second_and_a_minute() {
        assert_eq!(sweep_interval(DEFAULT_TTL), Duration::from_secs(60));
        assert_eq!(sweep_interval(Duration::from_secs(6)), Duration::from_secs(1));
        assert_eq!(sweep_interval(Duration::from_secs(120)), Duration::from_secs(10));
    }
}
