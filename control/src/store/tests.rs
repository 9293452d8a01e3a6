//! The store's contract, run on every engine (the embedded one always; etcd when built with
//! the `etcd` feature, on a member started for the test), then what only the embedded
//! engine has.

use super::embedded::{FEED_CAPACITY, LOSABLE_REVS, SOFT_MAX_REVS, opened_rev};
use super::*;
use serde_json::json;
use std::time::Duration;

/// The embedded engine's write-ahead log and checkpoints.
mod log;
/// The embedded engine's writer and live feed.
mod writer;

fn put(v: Value) -> MutateFn {
    Box::new(move |_| Ok(Outcome::Put(v.clone())))
}

fn create(v: Value) -> MutateFn {
    Box::new(move |cur| match cur {
        Some(_) => Err(ApiError::already_exists("", "configmaps", "x")),
        None => Ok(Outcome::Put(v.clone())),
    })
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("state.redb")).unwrap();
    (dir, s)
}

/// A store on one engine, and what must live as long as it.
struct Fixture {
    store: Store,
    _dir: tempfile::TempDir,
    #[cfg(feature = "etcd")]
    _etcd: Option<etcd::testing::Member>,
}

/// A fresh store on every engine this build has.
async fn engines() -> Vec<Fixture> {
    let (dir, store) = open();
    #[allow(unused_mut)]
    let mut out = vec![Fixture {
        store,
        _dir: dir,
        #[cfg(feature = "etcd")]
        _etcd: None,
    }];
    #[cfg(feature = "etcd")]
    {
        if etcd::testing::required() {
            let dir = tempfile::tempdir().unwrap();
            let (member, store) = on_etcd(&dir.path().join("state.key")).await;
            out.push(Fixture { store, _dir: dir, _etcd: Some(member) });
        }
    }
    out
}

/// A store on an etcd member of its own, Secrets sealed with the keys in `key`.
#[cfg(feature = "etcd")]
async fn on_etcd(key: &std::path::Path) -> (etcd::testing::Member, Store) {
    let member = tokio::task::spawn_blocking(etcd::testing::Member::start).await.unwrap().unwrap();
    let store = connect(&member, key).await;
    (member, store)
}

/// Another server's handle on `member`.
#[cfg(feature = "etcd")]
async fn connect(member: &etcd::testing::Member, key: &std::path::Path) -> Store {
    let cfg = etcd::Config::from_endpoints(&member.client_url).unwrap();
    Store::on_etcd(etcd::Etcd::connect(&cfg, key).await.unwrap())
}

async fn next(w: &mut WatchStream) -> Arc<Event> {
    tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("watch event in time").unwrap()
}

#[tokio::test]
async fn revisions_are_monotonic_and_stamped() {
    for f in engines().await {
        let s = &f.store;
        let base = s.current_rev();
        let name = s.engine_name();
        let a = s
            .mutate("/core/configmaps/default/a".into(), false, create(json!({"metadata": {"name": "a"}})))
            .await
            .unwrap();
        let b = s
            .mutate("/core/configmaps/default/b".into(), false, create(json!({"metadata": {"name": "b"}})))
            .await
            .unwrap();
        assert_eq!(object_rev(&a.object), base + 1, "{name}");
        assert_eq!(object_rev(&b.object), base + 2, "{name}");
        assert_eq!(a.event, Some(EventType::Added));
        let again = s.mutate("/core/configmaps/default/a".into(), false, create(json!({}))).await.unwrap_err();
        assert_eq!(again.code, 409);
        assert_eq!(s.current_rev(), base + 2, "{name}: a rejected mutation takes no revision");
        // Writing the same object again changes nothing and takes no revision.
        let same = s
            .mutate("/core/configmaps/default/a".into(), false, put(json!({"metadata": {"name": "a"}})))
            .await
            .unwrap();
        assert_eq!(same.event, None);
        assert_eq!(s.current_rev(), base + 2, "{name}");
        let stored = s.get("/core/configmaps/default/a").await.unwrap().unwrap();
        assert_eq!(stored["metadata"]["resourceVersion"], (base + 1).to_string(), "{name}");
        // An update takes the next revision and says so.
        let upd = s.mutate("/core/configmaps/default/a".into(), false, put(json!({"v": 2}))).await.unwrap();
        assert_eq!((upd.event, object_rev(&upd.object)), (Some(EventType::Modified), base + 3), "{name}");
    }
}

fn object_rev(v: &Value) -> u64 {
    wasmorch_api::object::resource_version(v)
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    for f in engines().await {
        let s = &f.store;
        let base = s.current_rev();
        let name = s.engine_name();
        let r = s
            .mutate("/core/configmaps/default/a".into(), true, create(json!({"metadata": {"name": "a"}})))
            .await
            .unwrap();
        assert_eq!(r.event, None);
        assert!(s.get("/core/configmaps/default/a").await.unwrap().is_none());
        assert_eq!(s.current_rev(), base, "{name}");
    }
}

#[tokio::test]
async fn list_by_prefix_and_pages() {
    for f in engines().await {
        let s = &f.store;
        let base = s.current_rev();
        let name = s.engine_name();
        for n in ["a", "b", "c"] {
            s.mutate(format!("/core/configmaps/ns1/{n}"), false, put(json!({"n": n}))).await.unwrap();
        }
        s.mutate("/core/configmaps/ns2/z".into(), false, put(json!({"n": "z"}))).await.unwrap();
        s.mutate("/core/configmapsx/ns1/q".into(), false, put(json!({"n": "q"}))).await.unwrap();
        let (all, rev, more) = s.list("/core/configmaps/", None, 0).await.unwrap();
        assert_eq!((all.len(), rev, more), (4, base + 5, false), "{name}");
        let (page, _, more) = s.list("/core/configmaps/ns1/", None, 2).await.unwrap();
        assert_eq!(page.len(), 2);
        assert!(more);
        let (rest, _, more) = s.list("/core/configmaps/ns1/", Some("/core/configmaps/ns1/b".into()), 2).await.unwrap();
        assert_eq!(rest.iter().map(|v| v["n"].as_str().unwrap()).collect::<Vec<_>>(), ["c"]);
        assert!(!more);
        // Later pages of one list read at the first page's revision where the engine keeps
        // old states: a write in between does not show.
        if name == "etcd" {
            let (first, at, _) = s.list("/core/configmaps/ns1/", None, 1).await.unwrap();
            assert_eq!(first[0]["n"], "a");
            s.mutate("/core/configmaps/ns1/d".into(), false, put(json!({"n": "d"}))).await.unwrap();
            let start = Some("/core/configmaps/ns1/a".to_string());
            let (later, _, _) = s.list_at("/core/configmaps/ns1/", start, 0, Some(at)).await.unwrap();
            assert_eq!(later.iter().map(|v| v["n"].as_str().unwrap()).collect::<Vec<_>>(), ["b", "c"]);
        }
    }
}

#[tokio::test]
async fn concurrent_writers_all_commit_with_unique_revisions() {
    for f in engines().await {
        let s = &f.store;
        let base = s.current_rev();
        let name = s.engine_name();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.mutate(format!("/core/configmaps/default/o{i}"), false, create(json!({"i": i}))).await.unwrap()
            }));
        }
        let mut revs = Vec::new();
        for t in tasks {
            revs.push(object_rev(&t.await.unwrap().object));
        }
        revs.sort();
        revs.dedup();
        assert_eq!(revs.len(), 200, "{name}");
        assert_eq!(*revs.last().unwrap(), base + 200, "{name}");
        assert_eq!(s.list("/core/configmaps/", None, 0).await.unwrap().0.len(), 200);
    }
}

#[tokio::test]
async fn watch_resumes_in_order_without_gaps() {
    for f in engines().await {
        let s = &f.store;
        let base = s.current_rev();
        let name = s.engine_name();
        let key = "/core/configmaps/default/a".to_string();
        for i in 0..5 {
            s.mutate(key.clone(), false, put(json!({"i": i}))).await.unwrap();
        }
        s.mutate("/core/pods/default/p".into(), false, put(json!({}))).await.unwrap();
        // Resume from revision 2: history gives 3,4,5; then live changes follow.
        let mut w = s.watch("/core/configmaps/", base + 2).unwrap();
        let writer = {
            let s = s.clone();
            let key = key.clone();
            tokio::spawn(async move {
                for i in 5..50 {
                    s.mutate(key.clone(), false, put(json!({"i": i}))).await.unwrap();
                }
                s.mutate(key, false, Box::new(|_| Ok(Outcome::Delete))).await.unwrap();
            })
        };
        let mut seen = Vec::new();
        loop {
            let e = next(&mut w).await;
            seen.push(e.rev);
            if e.kind == EventType::Deleted {
                break;
            }
        }
        writer.await.unwrap();
        // Revisions 3..=5, then 7..=52 (6 was the pod, filtered by prefix), strictly increasing.
        let expected: Vec<u64> = (3..=5).chain(7..=52).map(|r| base + r).collect();
        assert_eq!(seen, expected, "{name}");
    }
}

#[tokio::test]
async fn compaction_makes_old_revisions_gone() {
    for f in engines().await {
        let s = &f.store;
        let base = s.current_rev();
        let name = s.engine_name();
        for i in 0..10 {
            s.mutate(format!("/core/configmaps/default/o{i}"), false, put(json!({}))).await.unwrap();
        }
        let c = s.compact(3).await.unwrap();
        assert_eq!(c, base + 7, "{name}");
        assert_eq!(s.watch("/", c - 1).err().unwrap().code, 410, "{name}");
        let mut w = s.watch("/", c).unwrap();
        assert_eq!(next(&mut w).await.rev, c + 1, "{name}");
        drop(w);
        assert_eq!(s.compacted_rev(), c, "{name}");
        // A compacted revision is gone for a list that reads at it too (etcd keeps old
        // states until compaction; the embedded engine only the newest).
        if name == "etcd" {
            let err = s.list_at("/core/configmaps/", None, 2, Some(c - 1)).await.unwrap_err();
            assert_eq!(err.code, 410, "{name}: {err:?}");
        }
    }
}

#[tokio::test]
async fn lagging_watcher_falls_back_to_history() {
    let (_d, s) = open();
    let mut w = s.watch("/", 0).unwrap();
    // More changes than the live buffer holds, without reading.
    let n = (FEED_CAPACITY + 500) as u64;
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.mutate(format!("/k/{i}"), false, put(json!({}))).await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for expect in 1..=n {
        assert_eq!(next(&mut w).await.rev, expect);
    }
}

#[tokio::test]
async fn state_and_backup_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let backup = dir.path().join("backup.redb");
    {
        let s = Store::open(&path).unwrap();
        s.mutate("/core/configmaps/default/a".into(), false, put(json!({"v": 1}))).await.unwrap();
        s.mutate("/core/configmaps/default/b".into(), false, put(json!({"v": 2}))).await.unwrap();
        assert_eq!(s.backup(&backup).await.unwrap(), 2);
        s.mutate("/core/configmaps/default/c".into(), false, put(json!({"v": 3}))).await.unwrap();
        s.close().await;
        assert_eq!(s.mutate("/d".into(), false, put(json!({}))).await.unwrap_err().code, 503);
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.current_rev(), 3);
    assert_eq!(s.list("/", None, 0).await.unwrap().0.len(), 3);
    s.close().await;
    drop(s);
    assert_eq!(verify_snapshot(&backup).unwrap(), 2);
    let b = Store::open(&backup).unwrap();
    assert_eq!(b.list("/", None, 0).await.unwrap().0.len(), 2);
    assert!(verify_snapshot(&dir.path().join("nope")).is_err());
}

#[tokio::test]
async fn panicking_mutation_fails_alone() {
    for f in engines().await {
        let s = &f.store;
        let base = s.current_rev();
        let e = s.mutate("/x".into(), false, Box::new(|_| panic!("boom"))).await.unwrap_err();
        assert_eq!(e.code, 500);
        s.mutate("/y".into(), false, put(json!({}))).await.unwrap();
        assert_eq!(s.current_rev(), base + 1, "{}", s.engine_name());
    }
}

/// Writers racing on one key through separate handles (as API servers on different machines
/// do) never lose an update: each mutation sees the newest value, running again on a
/// conflict.
#[tokio::test]
async fn racing_read_modify_writes_lose_no_update() {
    for f in engines().await {
        let s = &f.store;
        let key = "/core/configmaps/default/counter".to_string();
        s.mutate(key.clone(), false, put(json!({"n": 0}))).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let s = s.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                s.mutate(
                    key,
                    false,
                    Box::new(|cur| {
                        let n = cur.and_then(|c| c["n"].as_u64()).unwrap_or(0);
                        let mut next = cur.cloned().unwrap_or_default();
                        next["n"] = json!(n + 1);
                        Ok(Outcome::Put(next))
                    }),
                )
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let v = s.get(&key).await.unwrap().unwrap();
        assert_eq!(v["n"], 40, "{}", s.engine_name());
        eprintln!("{}: 40 racing increments, none lost", s.engine_name());
    }
}

/// A watch sees deletions with the last state, and Secrets in the clear though sealed at rest.
#[tokio::test]
async fn deletions_and_secrets_come_through_watches() {
    for f in engines().await {
        let s = &f.store;
        let base = s.current_rev();
        let key = "/core/secrets/default/s";
        s.mutate(key.into(), false, put(json!({"metadata": {"name": "s"}, "data": {"k": "djE="}}))).await.unwrap();
        s.mutate(key.into(), false, Box::new(|_| Ok(Outcome::Delete))).await.unwrap();
        let mut w = s.watch("/core/secrets/", base).unwrap();
        let added = next(&mut w).await;
        assert_eq!((added.kind, added.object["data"]["k"].as_str()), (EventType::Added, Some("djE=")));
        let gone = next(&mut w).await;
        assert_eq!(gone.kind, EventType::Deleted, "{}", s.engine_name());
        assert_eq!(gone.object["data"]["k"], "djE=", "the last state");
        assert_eq!(object_rev(&gone.object), base + 2, "with the deleting revision");
        assert_eq!(gone.key, key);
    }
}

/// Secrets are sealed in the objects table and in history; reads, lists, watches and a
/// backup see them in the clear; key rotation re-seals everything and drops the old key.
#[tokio::test]
async fn secrets_are_sealed_at_rest_and_survive_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let marker = format!("marker-{}", uuid_like());
    let key = "/core/secrets/default/s";
    let cm_marker = format!("plain-{}", marker.chars().rev().collect::<String>());
    let raw_has = |m: &str| {
        let bytes = std::fs::read(&path).unwrap();
        bytes.windows(m.len()).any(|w| w == m.as_bytes())
    };
    {
        let s = Store::open(&path).unwrap();
        s.mutate(key.into(), false, put(json!({"metadata": {"name": "s"}, "stringData": {"v": marker}})))
            .await
            .unwrap();
        s.mutate(key.into(), false, put(json!({"metadata": {"name": "s"}, "stringData": {"v": marker, "w": 2}})))
            .await
            .unwrap();
        s.mutate("/core/configmaps/default/c".into(), false, put(json!({"data": {"v": cm_marker}}))).await.unwrap();
        assert_eq!(s.get(key).await.unwrap().unwrap()["stringData"]["v"], marker.as_str());
        assert_eq!(s.list("/core/secrets/", None, 0).await.unwrap().0.len(), 1);
        // History replays the sealed records in the clear.
        let mut w = s.watch("/core/secrets/", 0).unwrap();
        assert_eq!(next(&mut w).await.object["stringData"]["v"], marker.as_str());
        assert_eq!(next(&mut w).await.object["stringData"]["w"], 2);
        s.close().await;
    }
    // The ConfigMap's marker is found in the clear (the search is sound), the Secret's is not.
    assert!(raw_has(&cm_marker), "the raw-bytes search finds plain values");
    assert!(!raw_has(&marker), "a Secret's value is in the store file in the clear");
    {
        let s = Store::open(&path).unwrap();
        s.mutate("/core/configmaps/default/c".into(), false, Box::new(|_| Ok(Outcome::Delete))).await.unwrap();
        s.compact(0).await.unwrap();
        s.close().await;
    }
    let old_key = std::fs::read_to_string(seal::key_path(&path)).unwrap();
    let (objects, history) = seal::rotate(&path).unwrap();
    assert_eq!((objects, history), (1, 0), "history was compacted away");
    let new_key = std::fs::read_to_string(seal::key_path(&path)).unwrap();
    assert_ne!(old_key, new_key);
    assert_eq!(new_key.lines().count(), 1, "the old key is dropped");
    let s = Store::open(&path).unwrap();
    assert_eq!(s.get(key).await.unwrap().unwrap()["stringData"]["w"], 2);
    s.mutate(key.into(), false, Box::new(|_| Ok(Outcome::Delete))).await.unwrap();
    s.close().await;
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    format!("{:x}{:x}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos(), std::process::id())
}

#[tokio::test]
async fn rotation_reseals_history_and_refuses_an_open_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let s = Store::open(&path).unwrap();
    s.mutate("/core/secrets/ns/a".into(), false, put(json!({"data": {"k": "djE="}}))).await.unwrap();
    let err = seal::rotate(&path).unwrap_err().to_string();
    assert!(err.contains("stop the server first"), "{err}");
    s.close().await;
    drop(s);
    assert_eq!(seal::rotate(&path).unwrap(), (1, 1));
    let s = Store::open(&path).unwrap();
    let mut w = s.watch("/core/secrets/", 0).unwrap();
    assert_eq!(next(&mut w).await.object["data"]["k"], "djE=");
}

#[tokio::test]
async fn soft_writes_wait_for_no_disk_until_something_durable_comes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let lease = "/coordination.k8s.io/leases/kube-node-lease/n1";
    let options = Options { soft_prefixes: vec!["/coordination.k8s.io/leases/".into()] };
    let s = Store::open_with(&path, options.clone()).unwrap();
    for i in 0..50 {
        s.mutate(lease.into(), false, put(json!({"spec": {"renewTime": i}}))).await.unwrap();
    }
    let (durable, soft) = s.commits();
    assert_eq!((durable, soft), (0, 50), "renewals alone never wait for the disk");
    // Readers see soft writes at once.
    assert_eq!(s.get(lease).await.unwrap().unwrap()["spec"]["renewTime"], 49);
    s.mutate("/core/configmaps/default/a".into(), false, put(json!({"v": 1}))).await.unwrap();
    assert_eq!(s.commits(), (1, 50), "any other write is durable, and takes the renewals with it");
    s.mutate(lease.into(), false, put(json!({"spec": {"renewTime": 50}}))).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(s.commits(), (2, 51), "a flush persists what is pending");
    s.flush().await.unwrap();
    assert_eq!(s.commits(), (2, 51), "a flush with nothing pending writes nothing");
    s.mutate(lease.into(), false, put(json!({"spec": {"renewTime": 51}}))).await.unwrap();
    let rev = s.current_rev();
    s.close().await;
    drop(s);
    // Closed cleanly: nothing lost, and revisions continue where they stopped.
    let s = Store::open_with(&path, options).unwrap();
    assert_eq!(s.current_rev(), rev);
    assert_eq!(s.get(lease).await.unwrap().unwrap()["spec"]["renewTime"], 51);
}

#[test]
fn a_crash_skips_every_revision_it_may_have_lost() {
    assert_eq!(opened_rev(0, false), 0, "a new store starts at 0");
    assert_eq!(opened_rev(7, true), 7);
    assert_eq!(opened_rev(7, false), 7 + LOSABLE_REVS);
    assert!(LOSABLE_REVS >= SOFT_MAX_REVS + super::embedded::writer::MAX_BATCH as u64);
}

#[test]
fn soft_writes_persist_by_count_and_by_age() {
    use super::embedded::writer::must_persist;
    let young = Duration::from_secs(1);
    assert!(!must_persist(false, 0, young));
    assert!(!must_persist(false, SOFT_MAX_REVS - 1, young));
    assert!(must_persist(false, SOFT_MAX_REVS, young));
    assert!(must_persist(false, 1, SOFT_MAX_AGE));
    assert!(must_persist(true, 0, young));
}

/// Two API servers on one etcd cluster: a watch through one sees every write made through
/// either, in revision order without gaps, and read-modify-writes racing through both lose
/// nothing.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn servers_sharing_etcd_see_each_other_s_writes_in_order() {
    if !etcd::testing::required() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The sealing key is shared, as servers of one cluster share it.
    let key = dir.path().join("state.key");
    let (member, a) = on_etcd(&key).await;
    let b = connect(&member, &key).await;
    let base = a.current_rev();
    let mut w = a.watch("/core/configmaps/", base).unwrap();
    let mut tasks = Vec::new();
    for (who, s) in [("a", a.clone()), ("b", b.clone())] {
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                s.mutate(format!("/core/configmaps/default/{who}{i}"), false, put(json!({"i": i}))).await.unwrap();
                s.mutate("/core/secrets/default/shared".into(), false, put(json!({"data": {"by": who, "i": i}})))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut revs = Vec::new();
    let mut keys = std::collections::BTreeSet::new();
    while revs.len() < 60 {
        let e = next(&mut w).await;
        revs.push(e.rev);
        keys.insert(e.key.clone());
    }
    assert!(revs.windows(2).all(|p| p[0] < p[1]), "in revision order: {revs:?}");
    assert_eq!(keys.len(), 60, "every write, from both servers");
    // Secrets sealed by one server open on the other.
    let shared = b.get("/core/secrets/default/shared").await.unwrap().unwrap();
    assert_eq!(a.get("/core/secrets/default/shared").await.unwrap().unwrap(), shared);
    // Read-modify-write through both at once.
    let counter = "/core/configmaps/default/counter".to_string();
    a.mutate(counter.clone(), false, put(json!({"n": 0}))).await.unwrap();
    let mut tasks = Vec::new();
    for s in [a.clone(), b.clone(), a.clone(), b.clone()] {
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                s.mutate(
                    counter.clone(),
                    false,
                    Box::new(|cur| {
                        let mut v = cur.cloned().unwrap_or_default();
                        v["n"] = json!(v["n"].as_u64().unwrap_or(0) + 1);
                        Ok(Outcome::Put(v))
                    }),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.get(&counter).await.unwrap().unwrap()["n"], 40);
}

/// A backup of an etcd datastore restores into a fresh one: the same objects (Secrets too,
/// sealed at rest with the server's key), each with a consistent new revision.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn a_backup_from_etcd_restores_into_a_fresh_etcd() {
    if !etcd::testing::required() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("state.key");
    let (_m1, src) = on_etcd(&key).await;
    for i in 0..30 {
        src.mutate(
            format!("/core/configmaps/ns{}/c{i}", i % 3),
            false,
            put(json!({"metadata": {"name": format!("c{i}")}, "data": {"i": i}})),
        )
        .await
        .unwrap();
    }
    src.mutate("/core/secrets/default/s".into(), false, put(json!({"metadata": {"name": "s"}, "data": {"k": "djE="}})))
        .await
        .unwrap();
    // A lock held during the backup is not part of it.
    let _held = src.lock("evictions").await.unwrap();
    let file = dir.path().join("backup.redb");
    let rev = src.backup(&file).await.unwrap();
    assert_eq!(verify_snapshot(&file).unwrap(), rev);
    let (_m2, dst) = on_etcd(&key).await;
    let (_, n) = dst.restore_snapshot(&file).await.unwrap();
    assert_eq!(n, 31);
    let strip = |mut v: Vec<Value>| {
        for o in &mut v {
            o["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        }
        v
    };
    let (a, _, _) = src.list("/core/configmaps/", None, 0).await.unwrap();
    let (b, list_rev, _) = dst.list("/core/configmaps/", None, 0).await.unwrap();
    assert_eq!(strip(a), strip(b.clone()));
    assert!(b.iter().all(|o| object_rev(o) <= list_rev && object_rev(o) > 0), "revisions consistent with the list's");
    let secret = dst.get("/core/secrets/default/s").await.unwrap().unwrap();
    assert_eq!(secret["data"]["k"], "djE=");
    // Only into an empty datastore.
    assert!(dst.restore_snapshot(&file).await.unwrap_err().to_string().contains("restore into an empty"));
}

/// A quiet watch on etcd learns how far the store has got (progress notifications), so its
/// bookmarks advance past writes under other prefixes.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn a_quiet_etcd_watch_still_advances() {
    if !etcd::testing::required() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_member, s) = on_etcd(&dir.path().join("state.key")).await;
    let start = s.current_rev();
    let mut w = s.watch("/core/configmaps/", start).unwrap();
    for i in 0..3 {
        s.mutate(format!("/core/pods/default/p{i}"), false, put(json!({}))).await.unwrap();
    }
    let newest = s.current_rev();
    // Nothing arrives under the watched prefix; polling lets progress answers in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while w.last_rev() < newest && tokio::time::Instant::now() < deadline {
        let quiet = tokio::time::timeout(Duration::from_millis(500), w.next()).await;
        assert!(quiet.is_err(), "no event expected: {quiet:?}");
    }
    assert!(w.last_rev() >= newest, "bookmarks stuck at {} (store at {newest})", w.last_rev());
}
