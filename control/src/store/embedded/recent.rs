//! The objects the writer stored last, by key.
//!
//! Most writes are to a key written a moment before: a pod's binding after its create, its
//! status after that. The writer takes the current object of such a write from here instead
//! of reading it from the objects table and decoding its JSON (that decode was ~5 % of the
//! API server's CPU while a node started thousands of pods).
//!
//! Invariant: an entry is the key's committed object. The writer *takes* a key's entry
//! before it mutates the key and puts the result back only after the batch committed, so an
//! entry never outlives a failed commit or a failed mutation, and a key written twice in one
//! batch is read the second time from the transaction.
//!
//! It keeps nothing alive: an entry is a weak reference to the event, which lives as long as
//! a cache holds it (the informers' caches hold every pod's newest event) or a watcher has
//! yet to read it. An object no one else holds is read from the table, as before. (Strong
//! references to the last 8 192 objects kept ~58 MB more in the API server after 50 000
//! ConfigMap creates, since the feed drops an event once every watcher has read it.) The
//! map itself is bounded to as many entries as the feed buffers changes.

use crate::store::Event;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

pub(super) struct Recent {
    cap: usize,
    /// Each entry with the stamp of its place in `order`.
    by_key: HashMap<Arc<str>, (u64, Weak<Event>)>,
    /// Keys oldest first. A key taken or put again leaves a stale place behind, which counts
    /// towards the bound and is skipped when it comes out.
    order: VecDeque<(u64, Arc<str>)>,
    next: u64,
}

impl Recent {
    pub(super) fn new(cap: usize) -> Recent {
        Recent { cap, by_key: HashMap::new(), order: VecDeque::new(), next: 0 }
    }

    /// The key's committed object, removed (the caller puts it back if it stays current);
    /// `None` when it is not here or no one holds it any more.
    pub(super) fn take(&mut self, key: &str) -> Option<Arc<Event>> {
        self.by_key.remove(key).and_then(|(_, ev)| ev.upgrade())
    }

    /// `ev` is now its key's committed state (not a deletion).
    pub(super) fn put(&mut self, ev: &Arc<Event>) {
        let key: Arc<str> = Arc::from(ev.key.as_str());
        let stamp = self.next;
        self.next += 1;
        self.order.push_back((stamp, key.clone()));
        self.by_key.insert(key, (stamp, Arc::downgrade(ev)));
        while self.order.len() > self.cap {
            let Some((stamp, key)) = self.order.pop_front() else { break };
            if self.by_key.get(&key).is_some_and(|(s, _)| *s == stamp) {
                self.by_key.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventType;
    use serde_json::json;

    fn ev(key: &str, rev: u64) -> Arc<Event> {
        Arc::new(Event { rev, kind: EventType::Modified, key: key.into(), object: json!({"rev": rev}) })
    }

    #[test]
    fn keeps_the_newest_object_of_each_key_and_no_more_than_its_bound() {
        let mut r = Recent::new(3);
        // Held elsewhere (as caches hold events) for as long as the test runs.
        let mut held = Vec::new();
        let mut put = |r: &mut Recent, e: Arc<Event>| {
            r.put(&e);
            held.push(e);
        };
        for (i, k) in ["a", "b", "a", "c", "d"].into_iter().enumerate() {
            put(&mut r, ev(k, i as u64));
        }
        // Places: b(1) a(2) c(3) d(4) → the bound of 3 drops b; a's stale first place is
        // skipped, not taken for its newer entry.
        assert!(r.take("b").is_none());
        assert_eq!(r.take("a").map(|e| e.rev), Some(2));
        assert_eq!(r.take("a").map(|e| e.rev), None, "taken");
        assert_eq!((r.len(), r.order.len()), (2, 3));
        for i in 0..1000 {
            put(&mut r, ev(&format!("k{}", i % 7), 10 + i));
        }
        assert!(r.len() <= 3 && r.order.len() <= 3, "bounded: {} {}", r.len(), r.order.len());
        assert_eq!(r.take("k5").map(|e| e.rev), Some(10 + 999));
    }

    #[test]
    fn a_key_taken_and_put_back_stays_until_its_new_place_comes_out() {
        let mut r = Recent::new(2);
        let (a, b) = (ev("a", 1), ev("b", 2));
        r.put(&a);
        let taken = r.take("a").unwrap();
        r.put(&taken);
        r.put(&b);
        // Places: a(stale) a b → the stale one went first.
        assert_eq!(r.take("a").map(|e| e.rev), Some(1));
        assert_eq!(r.take("b").map(|e| e.rev), Some(2));
    }

    #[test]
    fn keeps_no_object_alive() {
        let mut r = Recent::new(4);
        let a = ev("a", 1);
        r.put(&a);
        drop(a);
        assert!(r.take("a").is_none(), "no one held it: read from the table");
    }
}
