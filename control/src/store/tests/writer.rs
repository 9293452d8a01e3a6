//! The embedded engine's writer and live feed: the objects the writer remembers, the JSON the
//! feed carries, and watches catching up through history.

use super::*;

/// Every kind of write sees the key's committed object, whether the writer has it among the
/// objects it wrote last or reads it from the table: after a failed mutation, a dry run, a
/// write that changed nothing, a deletion, two writes to one key in one batch, and for keys
/// pushed out of the writer's bounded memory by many others.
#[tokio::test]
async fn writes_see_the_committed_object_whatever_came_before() {
    let (_d, s) = open();
    // An unread watch holds every change's event, as caches do: the writer finds them.
    let _unread = s.watch("/k/", s.current_rev()).unwrap();
    let n_of = |v: Option<&Value>| v.and_then(|v| v["n"].as_i64());
    let incr = |by: i64| -> MutateFn {
        Box::new(move |cur| Ok(Outcome::Put(json!({"n": cur.and_then(|v| v["n"].as_i64()).unwrap_or(0) + by}))))
    };
    let k = || "/k/a".to_string();
    s.mutate(k(), false, incr(1)).await.unwrap();
    s.mutate(k(), false, Box::new(|_| Err(ApiError::bad_request("no")))).await.unwrap_err();
    assert_eq!(n_of(Some(&s.mutate(k(), false, incr(1)).await.unwrap().object)), Some(2), "after a failed mutation");
    s.mutate(k(), true, incr(100)).await.unwrap();
    assert_eq!(n_of(Some(&s.mutate(k(), false, incr(1)).await.unwrap().object)), Some(3), "after a dry run");
    let same = s.mutate(k(), false, Box::new(|cur| Ok(Outcome::Put(cur.unwrap().clone())))).await.unwrap();
    assert_eq!(same.event, None);
    assert_eq!(n_of(Some(&s.mutate(k(), false, incr(1)).await.unwrap().object)), Some(4), "after no change");
    s.mutate(k(), false, Box::new(|_| Ok(Outcome::Delete))).await.unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Some(json!("unset"))));
    let seen2 = seen.clone();
    s.mutate(
        k(),
        false,
        Box::new(move |cur| {
            *seen2.lock().unwrap() = cur.cloned();
            Ok(Outcome::Put(json!({"n": 10})))
        }),
    )
    .await
    .unwrap();
    assert_eq!(*seen.lock().unwrap(), None, "after a deletion");
    // Two increments in flight at once: one batch or two, each sees the other's result.
    let (a, b) = tokio::join!(s.mutate(k(), false, incr(1)), s.mutate(k(), false, incr(1)));
    let mut got = [n_of(Some(&a.unwrap().object)), n_of(Some(&b.unwrap().object))];
    got.sort();
    assert_eq!(got, [Some(11), Some(12)]);
    // More keys than the writer keeps, then the first of them again.
    let n = FEED_CAPACITY + 100;
    let writes: Vec<_> = (0..n).map(|i| s.mutate(format!("/k/many/{i}"), false, incr(1))).collect();
    futures::future::try_join_all(writes).await.unwrap();
    for i in [0, 1, n / 2, n - 1] {
        let c = s.mutate(format!("/k/many/{i}"), false, incr(1)).await.unwrap();
        assert_eq!(n_of(Some(&c.object)), Some(2), "key {i}");
        assert_eq!(object_rev(&c.object), s.current_rev());
    }
    assert_eq!(n_of(Some(&s.mutate(k(), false, incr(1)).await.unwrap().object)), Some(13));
}

/// The live feed carries each change's JSON as the writer serialized it, and it is exactly the
/// event's object (a watch sends those bytes as the object): for puts, updates, Secrets (sealed
/// at rest, in the clear here) and deletions. A change read back from history carries the JSON
/// stored with it, except a Secret's (stored sealed).
#[tokio::test]
async fn the_live_feed_carries_each_change_s_json() {
    let (_d, s) = open();
    let base = s.current_rev();
    s.mutate("/core/configmaps/default/a".into(), false, put(json!({"metadata": {"name": "a"}}))).await.unwrap();
    s.mutate("/core/secrets/default/h".into(), false, put(json!({"metadata": {"name": "h"}}))).await.unwrap();
    // Started after those two: they are read from history.
    let mut w = s.watch("/core/", base).unwrap();
    let from_history = tokio::time::timeout(Duration::from_secs(5), w.next_change()).await.unwrap().unwrap();
    let json = from_history.json.expect("read back from history, with the JSON stored");
    assert_eq!(&json[..], serde_json::to_vec(&from_history.event.object).unwrap());
    let sealed = tokio::time::timeout(Duration::from_secs(5), w.next_change()).await.unwrap().unwrap();
    assert_eq!((sealed.event.key.as_str(), sealed.json), ("/core/secrets/default/h", None));
    assert_eq!(sealed.event.object["metadata"]["name"], "h");
    let writes: Vec<(&str, MutateFn)> = vec![
        ("/core/configmaps/default/a", put(json!({"metadata": {"name": "a"}, "data": {"k": "é\"\n"}}))),
        ("/core/secrets/default/s", put(json!({"metadata": {"name": "s"}, "data": {"k": "djE="}}))),
        ("/core/secrets/default/s", Box::new(|_| Ok(Outcome::Delete))),
        ("/core/configmaps/default/a", Box::new(|_| Ok(Outcome::Delete))),
    ];
    for (key, f) in writes {
        s.mutate(key.into(), false, f).await.unwrap();
        let change = tokio::time::timeout(Duration::from_secs(5), w.next_change()).await.unwrap().unwrap();
        assert_eq!(change.event.key, key);
        let json = change.json.expect("a live change carries its JSON");
        assert_eq!(&json[..], serde_json::to_vec(&change.event.object).unwrap(), "{key} {:?}", change.event.kind);
    }
}

/// A watch catching up through history sees its own prefix's changes, in order, across pages
/// filled with other keys' changes (which it does not decode), and then follows the live feed.
#[tokio::test]
async fn a_watch_catches_up_through_other_keys_history() {
    let (_d, s) = open();
    let base = s.current_rev();
    let keys: Vec<String> =
        (0..5000).map(|i| if i % 1200 == 7 { format!("/mine/{i}") } else { format!("/other/{i}") }).collect();
    let written =
        futures::future::try_join_all(keys.iter().map(|k| s.mutate(k.clone(), false, put(json!({}))))).await.unwrap();
    let mut mine: Vec<(String, u64)> = keys
        .into_iter()
        .zip(written)
        .filter(|(k, _)| k.starts_with("/mine/"))
        .map(|(k, c)| (k, object_rev(&c.object)))
        .collect();
    mine.sort_by_key(|(_, rev)| *rev);
    let mut w = s.watch("/mine/", base).unwrap();
    for (key, rev) in &mine {
        let ev = next(&mut w).await;
        assert_eq!((&ev.key, ev.rev), (key, *rev));
    }
    s.mutate("/mine/live".into(), false, put(json!({}))).await.unwrap();
    assert_eq!(next(&mut w).await.key, "/mine/live");
    assert_eq!(w.last_rev(), s.current_rev(), "passed the other keys' changes");
}

/// A watch that starts behind reads from history only what was committed before it started:
/// what the writer commits meanwhile comes from the live feed's buffer, so the replay does not
/// chase a busy writer through records the feed holds already.
#[tokio::test]
async fn a_late_watch_reads_history_only_up_to_its_start() {
    let (_d, s) = open();
    let base = s.current_rev();
    let write = |range: std::ops::Range<u32>| {
        futures::future::try_join_all(range.map(|i| s.mutate(format!("/k/{i}"), false, put(json!({})))))
    };
    let metric = || crate::telemetry::get().watch_history_read.get();
    let metric_before = metric();
    write(0..3000).await.unwrap();
    let started = s.current_rev();
    let mut w = s.watch("/k/", base).unwrap();
    // The writer goes on before the watch reads anything (fewer than the feed buffers).
    write(3000..6000).await.unwrap();
    let end = s.current_rev();
    for expect in base + 1..=end {
        assert_eq!(next(&mut w).await.rev, expect, "every change once, in order");
    }
    assert_eq!(w.history_read(), Some(started - base), "history read up to the watch's start, the rest from the feed");
    // The process's metric counts them too (with other tests' watches, running alongside).
    assert!(metric() - metric_before >= started - base);
    s.mutate("/k/live".into(), false, put(json!({}))).await.unwrap();
    assert_eq!(next(&mut w).await.key, "/k/live");
}

/// A batch whose writes come before and after a compaction commits them all, in order: the
/// writer keeps the tables its writes use open through a batch and closes them for the
/// compaction. The writer is held inside a mutation while the batch queues behind it.
#[tokio::test]
async fn a_compaction_between_the_writes_of_one_batch() {
    let (_d, s) = open();
    for i in 0..5 {
        s.mutate(format!("/k/old{i}"), false, put(json!({}))).await.unwrap();
    }
    let (release, held) = std::sync::mpsc::channel::<()>();
    let holder = s.mutate(
        "/k/holder".into(),
        false,
        Box::new(move |_| {
            let _ = held.recv();
            Ok(Outcome::Put(json!({})))
        }),
    );
    let before = s.commits();
    let write = |i: usize| s.mutate(format!("/k/new{i}"), false, put(json!({"i": i})));
    let (held, a, b, compacted, c, d, ()) =
        tokio::join!(holder, write(0), write(1), s.compact(2), write(2), write(3), async {
            // Polled after every other future above queued its op.
            release.send(()).unwrap();
        });
    held.unwrap();
    let revs: Vec<u64> = [a, b, c, d].into_iter().map(|r| object_rev(&r.unwrap().object)).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    let compacted = compacted.unwrap();
    assert!(compacted > 0 && compacted < revs[2], "{compacted} {revs:?}");
    let (durable, soft) = s.commits();
    assert!(durable + soft - before.0 - before.1 <= 2, "the holder's batch, then one with the rest");
    assert_eq!(s.list("/k/", None, 0).await.unwrap().0.len(), 10);
}
