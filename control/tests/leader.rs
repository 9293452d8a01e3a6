//! Leader election between control planes that share a store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wasmorch_control::apiserver::api::Api;
use wasmorch_control::apiserver::request::Target;
use wasmorch_control::controllers::leader::{self, Config};
use wasmorch_control::store::Store;

fn cfg(id: &str, lease: Duration) -> Config {
    Config { identity: id.into(), lease_duration: lease, renew_interval: lease / 8 }
}

/// Start a candidate whose "controllers" only raise a flag while their term lasts.
fn candidate(api: Api, cfg: Config) -> Arc<AtomicBool> {
    let on = Arc::new(AtomicBool::new(false));
    let flag = on.clone();
    tokio::spawn(leader::run(api, cfg, move |term: Api| {
        flag.store(true, Ordering::SeqCst);
        let flag = flag.clone();
        vec![tokio::spawn(async move {
            term.shutdown.cancelled().await;
            flag.store(false, Ordering::SeqCst);
        })]
    }));
    on
}

async fn wait_for(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn lease(api: &Api) -> serde_json::Value {
    let t = Target {
        res: wasmorch_api::resources::lookup("leases").unwrap(),
        namespace: Some(leader::LEASE_NAMESPACE.into()),
        name: Some(leader::LEASE_NAME.into()),
        subresource: None,
        watch_path: false,
    };
    api.get(&t).await.unwrap()
}

async fn setup() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let api = Api::new(store.clone(), CancellationToken::new());
    wasmorch_control::server::bootstrap(&api).await.unwrap();
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_does_not_act_while_the_leader_renews_and_takes_over_when_it_goes() {
    let (_dir, store) = setup().await;
    // Long enough that a renewal delayed by a loaded machine cannot look like a lost leader.
    let lease_for = Duration::from_secs(2);
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let api_a = Api::new(store.clone(), stop_a.clone());
    let a = candidate(api_a.clone(), cfg("a", lease_for));
    wait_for("a to lead", Duration::from_secs(5), || a.load(Ordering::SeqCst)).await;
    let b = candidate(Api::new(store.clone(), stop_b.clone()), cfg("b", lease_for));

    // Over three lease durations the standby never leads, while the leader keeps renewing.
    let first = lease(&api_a).await["spec"]["renewTime"].clone();
    let until = Instant::now() + lease_for * 3;
    while Instant::now() < until {
        assert!(!b.load(Ordering::SeqCst), "the standby acted while the leader renewed");
        assert!(a.load(Ordering::SeqCst), "the leader stopped leading");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let l = lease(&api_a).await;
    assert_eq!(l["spec"]["holderIdentity"], "a");
    assert_ne!(l["spec"]["renewTime"], first, "the leader did not renew");
    assert_eq!(l["spec"]["leaseTransitions"], 0);

    // The leader stops: it releases the Lease, and the standby takes over well within one
    // lease duration.
    let t = Instant::now();
    stop_a.cancel();
    wait_for("b to lead", Duration::from_secs(5), || b.load(Ordering::SeqCst)).await;
    assert!(t.elapsed() < lease_for, "took {:?}: the release was not used", t.elapsed());
    assert!(!a.load(Ordering::SeqCst));
    let l = lease(&api_a).await;
    assert_eq!(l["spec"]["holderIdentity"], "b");
    assert_eq!(l["spec"]["leaseTransitions"], 1);
    stop_b.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_leader_is_replaced_only_after_its_lease_runs_out() {
    let (_dir, store) = setup().await;
    let api = Api::new(store.clone(), CancellationToken::new());
    // What a leader that crashed leaves: a Lease renewed just now, never released.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let ghost = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": leader::LEASE_NAME, "namespace": leader::LEASE_NAMESPACE},
        "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 2, "renewTime": now, "leaseTransitions": 3},
    });
    let leases = wasmorch_api::resources::lookup("leases").unwrap();
    api.create(leases, Some(leader::LEASE_NAMESPACE), ghost, Default::default(), false).await.unwrap();
    let written = Instant::now();

    let c = candidate(Api::new(store.clone(), CancellationToken::new()), cfg("c", Duration::from_secs(2)));
    wait_for("c to lead", Duration::from_secs(10), || c.load(Ordering::SeqCst)).await;
    let waited = written.elapsed();
    assert!(waited >= Duration::from_millis(1900), "c took over after {waited:?}, inside the ghost's lease");
    let l = lease(&api).await;
    assert_eq!(l["spec"]["holderIdentity"], "c");
    assert_eq!(l["spec"]["leaseTransitions"], 4);
}
