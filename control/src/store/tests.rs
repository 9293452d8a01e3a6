use super::*;
use serde_json::json;
use std::time::Duration;

fn put(v: Value) -> MutateFn {
    Box::new(move |_| Ok(Outcome::Put(v)))
}

fn create(v: Value) -> MutateFn {
    Box::new(move |cur| match cur {
        Some(_) => Err(ApiError::already_exists("", "configmaps", "x")),
        None => Ok(Outcome::Put(v)),
    })
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("state.redb")).unwrap();
    (dir, s)
}

async fn next(w: &mut WatchStream) -> Arc<Event> {
    tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("watch event in time").unwrap()
}

#[tokio::test]
async fn revisions_are_monotonic_and_stamped() {
    let (_d, s) = open();
    let a =
        s.mutate("/core/configmaps/default/a".into(), false, create(json!({"metadata": {"name": "a"}}))).await.unwrap();
    let b =
        s.mutate("/core/configmaps/default/b".into(), false, create(json!({"metadata": {"name": "b"}}))).await.unwrap();
    assert_eq!(object_rev(&a.object), 1);
    assert_eq!(object_rev(&b.object), 2);
    assert_eq!(a.event, Some(EventType::Added));
    let again = s.mutate("/core/configmaps/default/a".into(), false, create(json!({}))).await.unwrap_err();
    assert_eq!(again.code, 409);
    assert_eq!(s.current_rev(), 2, "a rejected mutation takes no revision");
    // Writing the same object again changes nothing and takes no revision.
    let same =
        s.mutate("/core/configmaps/default/a".into(), false, put(json!({"metadata": {"name": "a"}}))).await.unwrap();
    assert_eq!(same.event, None);
    assert_eq!(s.current_rev(), 2);
    let stored = s.get("/core/configmaps/default/a").await.unwrap().unwrap();
    assert_eq!(stored["metadata"]["resourceVersion"], "1");
}

fn object_rev(v: &Value) -> u64 {
    wasmorch_api::object::resource_version(v)
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let (_d, s) = open();
    let r =
        s.mutate("/core/configmaps/default/a".into(), true, create(json!({"metadata": {"name": "a"}}))).await.unwrap();
    assert_eq!(r.event, None);
    assert!(s.get("/core/configmaps/default/a").await.unwrap().is_none());
    assert_eq!(s.current_rev(), 0);
}

#[tokio::test]
async fn list_by_prefix_and_pages() {
    let (_d, s) = open();
    for n in ["a", "b", "c"] {
        s.mutate(format!("/core/configmaps/ns1/{n}"), false, put(json!({"n": n}))).await.unwrap();
    }
    s.mutate("/core/configmaps/ns2/z".into(), false, put(json!({"n": "z"}))).await.unwrap();
    s.mutate("/core/configmapsx/ns1/q".into(), false, put(json!({"n": "q"}))).await.unwrap();
    let (all, rev, more) = s.list("/core/configmaps/", None, 0).await.unwrap();
    assert_eq!((all.len(), rev, more), (4, 5, false));
    let (page, _, more) = s.list("/core/configmaps/ns1/", None, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    assert!(more);
    let (rest, _, more) = s.list("/core/configmaps/ns1/", Some("/core/configmaps/ns1/b".into()), 2).await.unwrap();
    assert_eq!(rest.iter().map(|v| v["n"].as_str().unwrap()).collect::<Vec<_>>(), ["c"]);
    assert!(!more);
}

#[tokio::test]
async fn concurrent_writers_all_commit_with_unique_revisions() {
    let (_d, s) = open();
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
    assert_eq!(revs.len(), 200);
    assert_eq!(*revs.last().unwrap(), 200);
    assert_eq!(s.list("/core/configmaps/", None, 0).await.unwrap().0.len(), 200);
}

#[tokio::test]
async fn watch_resumes_in_order_without_gaps() {
    let (_d, s) = open();
    let key = "/core/configmaps/default/a".to_string();
    for i in 0..5 {
        s.mutate(key.clone(), false, put(json!({"i": i}))).await.unwrap();
    }
    s.mutate("/core/pods/default/p".into(), false, put(json!({}))).await.unwrap();
    // Resume from revision 2: history gives 3,4,5; then live changes follow.
    let mut w = s.watch("/core/configmaps/", 2).unwrap();
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
    let expected: Vec<u64> = (3..=5).chain(7..=52).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn compaction_makes_old_revisions_gone() {
    let (_d, s) = open();
    for i in 0..10 {
        s.mutate(format!("/core/configmaps/default/o{i}"), false, put(json!({}))).await.unwrap();
    }
    let c = s.compact(3).await.unwrap();
    assert_eq!(c, 7);
    assert_eq!(s.watch("/", 6).err().unwrap().code, 410);
    let mut w = s.watch("/", 7).unwrap();
    assert_eq!(next(&mut w).await.rev, 8);
    // Compaction survives a restart.
    drop(w);
    assert_eq!(s.compacted_rev(), 7);
}

#[tokio::test]
async fn lagging_watcher_falls_back_to_history() {
    let (_d, s) = open();
    let mut w = s.watch("/", 0).unwrap();
    // More changes than the live buffer holds, without reading.
    let n = (super::FEED_CAPACITY + 500) as u64;
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
    let (_d, s) = open();
    let e = s.mutate("/x".into(), false, Box::new(|_| panic!("boom"))).await.unwrap_err();
    assert_eq!(e.code, 500);
    s.mutate("/y".into(), false, put(json!({}))).await.unwrap();
    assert_eq!(s.current_rev(), 1);
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
    assert!(LOSABLE_REVS >= SOFT_MAX_REVS + writer::MAX_BATCH as u64);
}

#[test]
fn soft_writes_persist_by_count_and_by_age() {
    use writer::must_persist;
    let young = Duration::from_secs(1);
    assert!(!must_persist(false, 0, young));
    assert!(!must_persist(false, SOFT_MAX_REVS - 1, young));
    assert!(must_persist(false, SOFT_MAX_REVS, young));
    assert!(must_persist(false, 1, SOFT_MAX_AGE));
    assert!(must_persist(true, 0, young));
}
