use super::*;
use crate::controllers::replicaset::{plan, plan_from_counts};
use crate::store::{Event, EventType};

fn rs(replicas: i64, app: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web", "namespace": "d", "uid": "u1", "generation": 1},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}}}})
}

/// A pod of namespace `ns` with a random owner, labels, deletion, phase and readiness.
fn random_pod(ns: &str, name: &str, rv: u64, r: &mut impl FnMut(u64) -> u64) -> Value {
    let app = if r(16) == 0 { "other" } else { "web" };
    let phase = ["Running", "Running", "Pending", "Succeeded"][r(4) as usize];
    let mut p = json!({"metadata": {"name": name, "namespace": ns, "resourceVersion": rv.to_string(),
            "labels": {"app": app}},
        "status": {"phase": phase,
            "conditions": [{"type": "Ready", "status": if r(2) == 0 { "True" } else { "False" }}]}});
    let owner = match r(16) {
        0 => None,
        1 | 2 => Some(("ReplicaSet", "u2")),
        3 => Some(("ReplicationController", "u1")),
        _ => Some(("ReplicaSet", "u1")),
    };
    if let Some((kind, uid)) = owner {
        p["metadata"]["ownerReferences"] = json!([{"kind": kind, "name": "web", "uid": uid, "controller": true}]);
    }
    if r(8) == 0 {
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    p
}

fn event(object: Value, deleted: bool) -> Arc<Event> {
    let kind = if deleted { EventType::Deleted } else { EventType::Modified };
    Arc::new(Event { rev: object::resource_version(&object), kind, key: key_of(&object), object })
}

fn tally_of(cache: &Cache) -> Arc<Tally> {
    let t = Arc::new(Tally::default());
    cache.index(&(t.clone() as Arc<dyn Index>));
    t
}

/// Whatever the pods do (created, relabelled, adopted, owned elsewhere, deleted, finished,
/// turning ready, written here ahead of the watch or late), the kept counts are those of a
/// fresh count, and the plan from them, where there is one, is the plan from every pod.
#[test]
fn counts_kept_from_changes_are_a_fresh_count_and_plan_as_the_pods_do() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut r = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let cache = Cache::default();
    let kept = tally_of(&cache);
    let now = chrono::Utc::now();
    let (mut fast, mut full) = (0, 0);
    let mut rev = 1;
    for step in 0..4000 {
        // Half way, the set's selector changes (a ReplicationController's may): counted anew.
        let set = rs(if step % 3 == 0 { 8 } else { 12 }, if step < 2000 { "web" } else { "other" });
        let ns = if r(8) == 0 { "e" } else { "d" };
        let name = format!("p{}", r(12));
        rev += 1;
        match r(6) {
            0 => {
                cache.apply(&event(
                    json!({"metadata": {"name": name, "namespace": ns, "resourceVersion": rev.to_string()}}),
                    true,
                ));
            }
            // A write answered here, possibly older than what the watch brought already.
            1 => cache.assume(random_pod(ns, &name, rev - r(3), &mut r)),
            _ => {
                cache.apply(&event(random_pod(ns, &name, rev, &mut r), false));
            }
        }
        let (counts, adoptable) = kept.of(&set, &cache).expect("a valid selector");
        let fresh = tally_of(&cache).of(&set, &cache).expect("a valid selector");
        assert_eq!((counts, adoptable), fresh, "step {step}");
        let all = cache.with_ns(Some("d"), |pods| plan(&set, pods, now));
        match plan_from_counts(&set, counts, adoptable) {
            Some(p) => {
                fast += 1;
                assert_eq!(
                    (p.create, p.first_batch, p.requeue, &p.status),
                    (all.create, all.first_batch, all.requeue, &all.status),
                    "step {step}"
                );
                assert!(all.adopt.is_empty() && all.release.is_empty() && all.delete.is_empty(), "step {step}");
            }
            None => {
                full += 1;
                assert!(
                    !all.adopt.is_empty() || !all.release.is_empty() || !all.delete.is_empty(),
                    "step {step}: the counts said to read the pods, yet the plan names none"
                );
            }
        }
    }
    eprintln!("{fast} plans from counts, {full} from the pods");
    assert!(fast > 100 && full > 100, "both ways were taken: {fast} from counts, {full} from the pods");
}

#[test]
fn a_forgotten_set_is_counted_anew_and_orphans_are_found_by_namespace() {
    let cache = Cache::default();
    let t = tally_of(&cache);
    let owned = |name: &str, rv: u64| {
        json!({"metadata": {"name": name, "namespace": "d", "resourceVersion": rv.to_string(), "labels": {"app": "web"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web", "uid": "u1", "controller": true}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    };
    cache.apply(&event(owned("a", 2), false));
    let set = rs(3, "web");
    assert_eq!(t.of(&set, &cache), Some((Counts { labeled: 1, active: 1, ready: 1, strays: 0 }, false)));
    cache.apply(&event(owned("b", 3), false));
    assert_eq!(t.of(&set, &cache).map(|c| c.0.active), Some(2), "kept from the change");
    t.forget("u1");
    cache.apply(&event(owned("c", 4), false));
    assert_eq!(t.of(&set, &cache).map(|c| c.0.active), Some(3), "counted anew after being forgotten");
    // An orphan in another namespace is not this set's to adopt; one in its own is.
    let orphan = |ns: &str| json!({"metadata": {"name": "o", "namespace": ns, "resourceVersion": "5", "labels": {"app": "web"}}});
    cache.apply(&event(orphan("d-other"), false));
    assert_eq!(t.of(&set, &cache).map(|c| c.1), Some(false));
    cache.apply(&event(orphan("d"), false));
    assert_eq!(t.of(&set, &cache).map(|c| c.1), Some(true));
    // A selector that does not parse: no counts (the full plan decides).
    let mut bad = set.clone();
    bad["spec"]["selector"] = json!({"matchLabels": {"app": "no spaces allowed"}});
    assert_eq!(t.of(&bad, &cache), None);
}
