//! Requests to a Service with no ready endpoint are held while a workload scaled to zero
//! behind it wakes (`wasmorch_api::idle`): the proxy asks the API server to wake it
//! (`POST …/services/{name}/wake`) and forwards the request as soon as the first replica is
//! ready. A Service with nothing asleep behind it is answered at once, as before; a workload
//! whose pod cannot start gets a 503 with the reason; at most [`MAX_HELD`] requests per
//! Service wait, each at most [`WAKE_TIMEOUT`].

use super::Proxy;
use super::table::Route;
use crate::client::Client;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a request waits for a replica.
pub const WAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests held per Service at once; more are refused at once.
pub const MAX_HELD: usize = 1000;
/// How long the API server's answer is reused: while waking (pods change quickly), and
/// when nothing sleeps behind the Service (requests to it are answered at once meanwhile).
const FRESH_WAKING: Duration = Duration::from_millis(250);
const FRESH_AWAKE: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Answer {
    waking: bool,
    problem: Option<String>,
    at: Instant,
}

type Key = (String, String);

#[derive(Default)]
pub struct Waker {
    client: OnceLock<Client>,
    answers: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Option<Answer>>>>>,
    held: Mutex<HashMap<Key, usize>>,
}

/// Counts a held request until dropped.
struct Held<'a> {
    w: &'a Waker,
    key: Key,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut h = self.w.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = h.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                h.remove(&self.key);
                // No one waits: the cached answer goes too (bounded by Services being woken).
                self.w.answers.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
            }
        }
    }
}

impl Waker {
    pub fn set_client(&self, c: Client) {
        let _ = self.client.set(c);
    }

    fn hold(&self, key: &Key) -> Option<Held<'_>> {
        let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = h.entry(key.clone()).or_default();
        if *n >= MAX_HELD {
            return None;
        }
        *n += 1;
        Some(Held { w: self, key: key.clone() })
    }

    /// The API server's answer for the Service, fresh enough.
    async fn ask(&self, key: &Key) -> Result<Answer, String> {
        let slot = self.answers.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(a) = slot.as_ref() {
            let fresh = if a.waking { FRESH_WAKING } else { FRESH_AWAKE };
            if a.at.elapsed() < fresh {
                return Ok(a.clone());
            }
        }
        let client = self.client.get().ok_or("the node is not connected to the control plane")?;
        let path = format!("/wasmorch/v1/namespaces/{}/services/{}/wake", key.0, key.1);
        let v = client.post(&path, &serde_json::json!({})).await.map_err(|e| e.message)?;
        let a = Answer {
            waking: v.get("waking").and_then(Value::as_bool).unwrap_or(false),
            problem: v.get("problem").and_then(Value::as_str).map(String::from),
            at: Instant::now(),
        };
        *slot = Some(a.clone());
        Ok(a)
    }
}

impl Proxy {
    /// Wait until `route` has a ready endpoint, waking what sleeps behind it; `Err` says why
    /// the request cannot be served (nothing asleep, a pod that cannot start, time out).
    pub async fn hold(&self, route: &Route) -> Result<(), String> {
        let none = || format!("no endpoints available for service \"{}/{}\"", route.ns, route.name);
        let key = (route.ns.clone(), route.name.clone());
        let Some(_held) = self.waker.hold(&key) else {
            return Err(format!("{}: {MAX_HELD} requests are already waiting for it to wake", none()));
        };
        let deadline = tokio::time::Instant::now() + WAKE_TIMEOUT;
        loop {
            let changed = self.table_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.table().targets(route).is_empty() {
                return Ok(());
            }
            let a = self.waker.ask(&key).await.map_err(|e| {
                tracing::debug!("waking service {}/{}: {e}", route.ns, route.name);
                none()
            })?;
            if !a.waking {
                return Err(none());
            }
            if let Some(p) = a.problem {
                return Err(format!("service \"{}/{}\" is waking, but its {p}", route.ns, route.name));
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(FRESH_WAKING) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(format!("service \"{}/{}\": no replica became ready within {WAKE_TIMEOUT:?}", route.ns, route.name));
                }
            }
        }
    }
}
