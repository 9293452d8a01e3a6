//! One list+watch loop for everything the node follows (the agent's pods; the proxy's
//! Services, EndpointSlices and Nodes): list, hand the items over, watch from the list's
//! resourceVersion, hand over each change; on any error or a closed watch, relist after a
//! pause. What a follower does with the changes is its own affair ([`Follower`]).

use crate::client::Client;
use futures::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Pause before relisting after an error.
const RELIST_AFTER: Duration = Duration::from_secs(1);

/// One change to a followed collection.
pub enum Change<'a> {
    /// The whole collection, after a (re)list.
    Listed(&'a [Value]),
    /// An object was added or modified.
    Applied(&'a Value),
    Deleted(&'a Value),
}

pub trait Follower: Send {
    fn apply(&mut self, change: Change<'_>) -> impl Future<Output = ()> + Send;
}

/// Follow `path` (with `query`, e.g. a field selector, or empty) until `stop`.
pub async fn follow<F: Follower>(client: &Client, path: &str, query: &str, f: &mut F, stop: &CancellationToken) {
    let sep = if query.is_empty() { "" } else { "&" };
    loop {
        let result: anyhow::Result<()> = async {
            let list = client.get(&format!("{path}?{query}")).await?;
            let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
            let items = list.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            f.apply(Change::Listed(items)).await;
            let mut events = client
                .watch(&format!("{path}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true{sep}{query}"))
                .await?;
            loop {
                let ev = tokio::select! {
                    ev = events.next() => ev,
                    _ = stop.cancelled() => return Ok(()),
                };
                let Some(ev) = ev else { anyhow::bail!("watch closed") };
                let ev = ev?;
                let o = &ev["object"];
                match ev["type"].as_str() {
                    Some("ADDED" | "MODIFIED") => f.apply(Change::Applied(o)).await,
                    Some("DELETED") => f.apply(Change::Deleted(o)).await,
                    Some("ERROR") => anyhow::bail!("watch error: {}", o["message"]),
                    _ => {}
                }
            }
        }
        .await;
        if stop.is_cancelled() {
            return;
        }
        if let Err(e) = result {
            // Refused is not a blip: this node will not see what it needs until it is allowed.
            let msg = format!("{e:#}");
            if msg.contains("forbidden") {
                tracing::warn!("following {path}: {msg}; relisting");
            } else {
                tracing::info!("following {path}: {msg}; relisting");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RELIST_AFTER) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// `namespace/name` of an object (`/name` for cluster-scoped ones).
pub fn key(o: &Value) -> String {
    format!("{}/{}", o["metadata"]["namespace"].as_str().unwrap_or(""), o["metadata"]["name"].as_str().unwrap_or(""))
}

/// A follower keeping a map of key → a projection of each object, waking `changed` only
/// when what it keeps changes (a Node's heartbeat must not rebuild a routing table).
pub type Project = fn(&Value) -> Value;

/// What a [`Projection`] keeps: key → projected object.
pub type Map = Arc<Mutex<HashMap<String, Value>>>;

pub struct Projection {
    pub project: Project,
    pub map: Map,
    pub changed: Arc<Notify>,
}

impl Projection {
    pub fn new(project: Project, changed: Arc<Notify>) -> Projection {
        Projection { project, map: Arc::default(), changed }
    }

    /// Apply a change; whether what is kept changed.
    pub fn update(&self, change: Change<'_>) -> bool {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match change {
            Change::Listed(items) => {
                let fresh: HashMap<String, Value> = items.iter().map(|o| (key(o), (self.project)(o))).collect();
                let differs = *m != fresh;
                *m = fresh;
                differs
            }
            Change::Applied(o) => {
                let v = (self.project)(o);
                m.insert(key(o), v.clone()) != Some(v)
            }
            Change::Deleted(o) => m.remove(&key(o)).is_some(),
        }
    }
}

impl Follower for Projection {
    async fn apply(&mut self, change: Change<'_>) {
        if self.update(change) {
            self.changed.notify_one();
        }
    }
}

/// Keep all of an object.
pub fn whole(o: &Value) -> Value {
    o.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_projection_changes_only_when_what_it_keeps_does() {
        fn name_only(o: &Value) -> Value {
            json!(o["metadata"]["name"])
        }
        let p = Projection::new(name_only, Arc::new(Notify::new()));
        let a = json!({"metadata": {"name": "a"}, "status": {"beat": 1}});
        assert!(p.update(Change::Listed(std::slice::from_ref(&a))));
        assert!(!p.update(Change::Listed(std::slice::from_ref(&a))), "the same list again");
        let a2 = json!({"metadata": {"name": "a"}, "status": {"beat": 2}});
        assert!(!p.update(Change::Applied(&a2)), "a heartbeat is not a change");
        let b = json!({"metadata": {"name": "b", "namespace": "x"}});
        assert!(p.update(Change::Applied(&b)));
        assert!(p.map.lock().unwrap().contains_key("x/b"));
        assert!(p.update(Change::Deleted(&b)));
        assert!(!p.update(Change::Deleted(&b)));
    }
}
