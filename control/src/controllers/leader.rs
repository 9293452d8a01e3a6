//! Leader election by Lease (`kube-system/wasmorch-control-plane`), as kube-controller-manager
//! and kube-scheduler do it: the holder renews `renewTime` every `renew_interval`; anyone else
//! waits until `renewTime + leaseDurationSeconds` has passed, then takes the Lease over with a
//! compare-and-swap on its `resourceVersion` (two candidates cannot both win). Only the holder
//! runs the scheduler and the controllers; a holder that cannot renew within the lease
//! duration stops them before anyone else may start. On shutdown the Lease is released so a
//! standby takes over at once.
//!
//! [`decide`] is the pure rule; [`run`] is the loop.

use crate::apiserver::api::Api;
use crate::apiserver::request::Target;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::time::Duration;
use wasmorch_api::resources;

pub const LEASE_NAMESPACE: &str = "kube-system";
pub const LEASE_NAME: &str = "wasmorch-control-plane";

#[derive(Debug, Clone)]
pub struct Config {
    /// Who this control plane is (`holderIdentity`).
    pub identity: String,
    /// How long a Lease holds without renewal (Kubernetes: 15 s).
    pub lease_duration: Duration,
    /// How often a candidate retries (Kubernetes: every 2 s). The holder renews every third
    /// of `lease_duration`, or this if longer.
    pub renew_interval: Duration,
}

impl Default for Config {
    /// Kubernetes' timings. The identity is left empty: the server names itself (host name and
    /// data directory) when it starts.
    fn default() -> Self {
        Config {
            identity: String::new(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(2),
        }
    }
}

/// What a candidate does about the Lease it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it.
    Create,
    /// It is ours: renew it.
    Renew,
    /// Released or expired: take it over.
    TakeOver,
    /// Someone else holds it for this long yet.
    Wait { holder: String, left: Duration },
}

fn lease_time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc))
}

/// The rule: a Lease is another's until `renewTime + leaseDurationSeconds`.
pub fn decide(lease: Option<&Value>, me: &str, now: DateTime<Utc>) -> Decision {
    let Some(lease) = lease else { return Decision::Create };
    let spec = &lease["spec"];
    let holder = spec["holderIdentity"].as_str().unwrap_or("");
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let secs = spec["leaseDurationSeconds"].as_i64().unwrap_or(15).max(1);
    let Some(renewed) = lease_time(&spec["renewTime"]).or_else(|| lease_time(&spec["acquireTime"])) else {
        return Decision::TakeOver;
    };
    let expires = renewed + chrono::Duration::seconds(secs);
    match (expires - now).to_std() {
        Ok(left) if !left.is_zero() => Decision::Wait { holder: holder.to_string(), left },
        _ => Decision::TakeOver,
    }
}

fn micro_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn target() -> Target {
    Target {
        res: resources::of(resources::ResourceKind::Lease),
        namespace: Some(LEASE_NAMESPACE.into()),
        name: Some(LEASE_NAME.into()),
        subresource: None,
        watch_path: false,
    }
}

/// One attempt to hold the Lease; `Ok(true)` when this candidate holds it now.
async fn attempt(api: &Api, cfg: &Config) -> Result<bool, wasmorch_api::ApiError> {
    let current = match api.get(&target()).await {
        Ok(l) => Some(l),
        Err(e) if e.code == 404 => None,
        Err(e) => return Err(e),
    };
    let now = Utc::now();
    let secs = cfg.lease_duration.as_secs().max(1);
    match decide(current.as_ref(), &cfg.identity, now) {
        Decision::Create => {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": LEASE_NAME, "namespace": LEASE_NAMESPACE},
                "spec": {"holderIdentity": cfg.identity, "leaseDurationSeconds": secs,
                         "acquireTime": micro_time(now), "renewTime": micro_time(now), "leaseTransitions": 0},
            });
            let res = resources::of(resources::ResourceKind::Lease);
            match api.create(res, Some(LEASE_NAMESPACE), lease, Default::default(), false).await {
                Ok(_) => Ok(true),
                Err(e) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Decision::Wait { .. } => Ok(false),
        d @ (Decision::Renew | Decision::TakeOver) => {
            let mut lease = current.expect("a lease to renew or take over");
            let spec = &mut lease["spec"];
            if d == Decision::TakeOver {
                let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0) + 1;
                spec["holderIdentity"] = json!(cfg.identity);
                spec["acquireTime"] = json!(micro_time(now));
                spec["leaseTransitions"] = json!(transitions);
            }
            spec["leaseDurationSeconds"] = json!(secs);
            spec["renewTime"] = json!(micro_time(now));
            // The update carries the resourceVersion read: a rival's write in between is a 409.
            match api.update(&target(), lease, Default::default(), false).await {
                Ok(_) => Ok(true),
                Err(e) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Give the Lease up (on shutdown), if it is still ours.
async fn release(api: &Api, cfg: &Config) {
    let Ok(mut lease) = api.get(&target()).await else { return };
    if lease["spec"]["holderIdentity"] != cfg.identity.as_str() {
        return;
    }
    lease["spec"]["holderIdentity"] = json!("");
    lease["spec"]["leaseDurationSeconds"] = json!(1);
    let _ = api.update(&target(), lease, Default::default(), false).await;
}

/// Campaign for the Lease until `api.shutdown`; while holding it, run what `lead` starts under
/// a token that is cancelled when leadership ends. `lead` gets an `Api` whose shutdown is that
/// token, so the loops it starts stop with the term.
pub async fn run<F>(api: Api, cfg: Config, lead: F)
where
    F: Fn(Api) -> Vec<tokio::task::JoinHandle<()>>,
{
    let mut last_holder = String::new();
    loop {
        // Standby: wait until the Lease is ours.
        loop {
            if api.shutdown.is_cancelled() {
                return;
            }
            match attempt(&api, &cfg).await {
                Ok(true) => break,
                Ok(false) => {
                    if let Ok(l) = api.get(&target()).await {
                        let holder = l["spec"]["holderIdentity"].as_str().unwrap_or("").to_string();
                        if holder != last_holder && !holder.is_empty() {
                            tracing::info!(leader = holder, "standby: another control plane leads");
                            eprintln!("standby: control plane {holder} holds the leader Lease");
                        }
                        last_holder = holder;
                    }
                }
                Err(e) => tracing::warn!("leader election: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(cfg.renew_interval) => {}
                _ = api.shutdown.cancelled() => return,
            }
        }
        eprintln!("leading: {} holds the leader Lease {LEASE_NAMESPACE}/{LEASE_NAME}", cfg.identity);
        if let Ok(l) = api.get(&target()).await {
            let msg = format!("{} became leader", cfg.identity);
            crate::controllers::events::record(&api, &l, "Normal", "LeaderElection", msg, "wasmorch-control-plane")
                .await;
        }
        let term = api.shutdown.child_token();
        let mut term_api = api.clone();
        term_api.shutdown = term.clone();
        let tasks = lead(term_api);
        // Hold: renew, and give up before the Lease could pass to someone else. The holder
        // renews every third of the Lease (5 s of 15 s), as nodes do: Kubernetes' 2 s would be
        // 30 store writes a minute on an idle board. Candidates still retry every renew_interval.
        let renew_every = (cfg.lease_duration / 3).max(cfg.renew_interval);
        let mut renewed = tokio::time::Instant::now();
        let lost = loop {
            tokio::select! {
                _ = tokio::time::sleep(renew_every) => {}
                _ = api.shutdown.cancelled() => break false,
            }
            match attempt(&api, &cfg).await {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) => break true,
                Err(e) => {
                    tracing::warn!("renewing the leader Lease: {e}");
                    // Stop a margin before expiry, so a successor never overlaps this term.
                    if renewed.elapsed() + renew_every >= cfg.lease_duration {
                        break true;
                    }
                }
            }
        };
        term.cancel();
        for t in tasks {
            let _ = t.await;
        }
        if !lost {
            release(&api, &cfg).await;
            return;
        }
        eprintln!("leader Lease lost: stopped the controllers; standing by");
        last_holder.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: DateTime<Utc>, secs: i64) -> Value {
        json!({"spec": {"holderIdentity": holder, "renewTime": micro_time(renewed), "leaseDurationSeconds": secs}})
    }

    #[test]
    fn a_lease_is_another_s_until_it_expires() {
        let now = Utc::now();
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(decide(Some(&lease("a", now, 15)), "a", now), Decision::Renew);
        // renewTime has microseconds: what is left is 10 s less that truncation.
        match decide(Some(&lease("b", now - chrono::Duration::seconds(5), 15)), "a", now) {
            Decision::Wait { holder, left } => {
                assert_eq!(holder, "b");
                assert!(left <= Duration::from_secs(10) && left > Duration::from_millis(9_999), "{left:?}");
            }
            other => panic!("{other:?}"),
        }
        let expired = lease("b", now - chrono::Duration::seconds(16), 15);
        assert_eq!(decide(Some(&expired), "a", now), Decision::TakeOver);
        assert_eq!(decide(Some(&lease("", now, 15)), "a", now), Decision::TakeOver, "released");
        assert_eq!(decide(Some(&json!({"spec": {"holderIdentity": "b"}})), "a", now), Decision::TakeOver);
    }
}
