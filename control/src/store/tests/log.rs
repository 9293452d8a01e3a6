//! The embedded engine's write-ahead log: replay onto a checkpoint image, and when the
//! writer checkpoints.

use super::*;

/// Durable writes between checkpoints live in the write-ahead log: a store whose redb file
/// is at its last checkpoint gets them back from the log (creates, updates, deletes, sealed
/// Secrets, their history), a torn tail of the log is ignored, and soft writes were never
/// logged.
#[tokio::test]
async fn writes_since_the_checkpoint_come_back_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let options = Options { soft_prefixes: vec!["/coordination.k8s.io/leases/".into()] };
    let lease = "/coordination.k8s.io/leases/kube-node-lease/n1";
    {
        let s = Store::open_with(&path, options.clone()).unwrap();
        s.mutate("/core/configmaps/default/a".into(), false, put(json!({"v": "a"}))).await.unwrap();
        s.mutate("/core/configmaps/default/gone".into(), false, put(json!({"v": 0}))).await.unwrap();
        s.close().await;
    }
    let log = wal_path(&path);
    assert!(logged(&log).is_empty(), "a clean close empties the log");
    let image = dir.path().join("checkpoint.redb");
    let (rev, before) = {
        let s = Store::open_with(&path, options.clone()).unwrap();
        // The checkpoint image: what redb holds durably once open (marked not closed cleanly).
        std::fs::copy(&path, &image).unwrap();
        s.mutate("/core/configmaps/default/a".into(), false, put(json!({"v": "a2"}))).await.unwrap();
        s.mutate("/core/configmaps/default/b".into(), false, put(json!({"v": "b"}))).await.unwrap();
        s.mutate("/core/configmaps/default/gone".into(), false, Box::new(|_| Ok(Outcome::Delete))).await.unwrap();
        s.mutate("/core/secrets/default/s".into(), false, put(json!({"stringData": {"k": "secret"}}))).await.unwrap();
        s.mutate(lease.into(), false, put(json!({"spec": {"renewTime": 1}}))).await.unwrap();
        let before = s.list("/core/", None, 0).await.unwrap().0;
        // The process dies here: its redb file is taken at the checkpoint, its log as written.
        let rev = s.current_rev();
        std::fs::copy(&log, dir.path().join("crashed.wal")).unwrap();
        s.close().await;
        (rev, before)
    };
    assert!(!before.is_empty());
    let crashed = dir.path().join("crashed.redb");
    std::fs::copy(&image, &crashed).unwrap();
    std::fs::copy(dir.path().join("crashed.wal"), wal_path(&crashed)).unwrap();
    std::fs::copy(super::seal::key_path(&path), super::seal::key_path(&crashed)).unwrap();
    // A torn frame at the end: a batch that was never acknowledged.
    let end: usize = logged(&wal_path(&crashed)).iter().map(|f| f.len() + 8).sum();
    let mut bytes = std::fs::read(wal_path(&crashed)).unwrap();
    bytes[end..end + 7].copy_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(wal_path(&crashed), &bytes).unwrap();

    let s = Store::open_with(&crashed, options).unwrap();
    let after = s.list("/core/", None, 0).await.unwrap().0;
    let names = |v: &[Value]| v.iter().map(|o| o.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&before), "every durable write is back, the deleted object gone");
    assert_eq!(s.get("/core/secrets/default/s").await.unwrap().unwrap()["stringData"]["k"], "secret");
    assert!(s.get(lease).await.unwrap().is_none(), "a soft write is not logged");
    assert!(s.current_rev() > rev, "revisions go on past every revision handed out");
    let mut w = s.watch("/core/configmaps/", 0).unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let e = next(&mut w).await;
        seen.push((e.key.rsplit('/').next().unwrap().to_string(), e.kind));
    }
    assert_eq!(
        seen,
        [
            ("a".to_string(), EventType::Added),
            ("gone".into(), EventType::Added),
            ("a".into(), EventType::Modified),
            ("b".into(), EventType::Added),
            ("gone".into(), EventType::Deleted),
        ],
        "history holds the logged changes in order"
    );
    assert!(logged(&wal_path(&crashed)).is_empty(), "replayed, then emptied");
}

/// The frames a log file holds.
fn logged(path: &std::path::Path) -> Vec<Vec<u8>> {
    super::embedded::wal::frames(&std::fs::read(path).unwrap()).into_iter().map(<[u8]>::to_vec).collect()
}

#[test]
fn checkpoints_come_with_compactions_flushes_and_a_full_log() {
    use super::embedded::wal::CHECKPOINT_BYTES;
    use super::embedded::writer::{Plan, plan};
    let young = Duration::from_secs(1);
    assert_eq!(plan(true, false, 0, young, 0), Plan::Log);
    assert_eq!(plan(false, false, 3, young, 0), Plan::Soft);
    assert_eq!(plan(false, true, 0, young, 0), Plan::Checkpoint, "a compaction or a flush");
    assert_eq!(plan(true, false, 0, young, CHECKPOINT_BYTES), Plan::Checkpoint, "the log is full");
    assert_eq!(plan(false, false, SOFT_MAX_REVS, young, 0), Plan::Checkpoint, "too many soft writes");
    assert_eq!(plan(false, false, 1, SOFT_MAX_AGE, 0), Plan::Checkpoint, "soft writes too old");
}
