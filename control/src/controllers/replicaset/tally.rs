//! What a ReplicaSet's plan needs from its pods, kept as the pods cache changes: per set,
//! how many of the pods it controls match its selector, are active and are Ready; and the
//! pods of each namespace without a controller (which a set may adopt). A reconcile of a set
//! of 10 000 pods then reads four numbers instead of every pod of its namespace: that walk,
//! on every pass while such a set started, was a fifth of the server's CPU. A reconcile still
//! reads the pods when it needs names or times (see [`super::plan_from_counts`]).

use super::{controller_of, is_ready, terminal};
use crate::controllers::runtime::{Cache, Index, key_of};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use wasmorch_api::object;
use wasmorch_api::selector::LabelSelector;

/// A set's pods, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Pods it controls that its selector selects (`fullyLabeledReplicas`).
    pub labeled: usize,
    /// Of those, the ones neither being deleted nor finished (`replicas`).
    pub active: usize,
    /// Of the active, the Ready ones.
    pub ready: usize,
    /// Pods it controls that its selector no longer selects: to release.
    pub strays: usize,
}

impl Counts {
    /// What one pod adds to its controlling set's counts, under the set's selector (an empty
    /// selector selects nothing here, as in [`super::plan`]).
    pub(super) fn of_pod(pod: &Value, selector: &LabelSelector) -> Counts {
        if selector.is_empty() || !selector.selects(pod) {
            return Counts { strays: 1, ..Counts::default() };
        }
        let active = !object::is_deleting(pod) && !terminal(pod);
        Counts { labeled: 1, active: active as usize, ready: (active && is_ready(pod)) as usize, strays: 0 }
    }

    pub(super) fn add(&mut self, c: Counts) {
        self.labeled += c.labeled;
        self.active += c.active;
        self.ready += c.ready;
        self.strays += c.strays;
    }

    fn sub(&mut self, c: Counts) {
        self.labeled -= c.labeled;
        self.active -= c.active;
        self.ready -= c.ready;
        self.strays -= c.strays;
    }
}

/// The counts of every set that has been reconciled, fed by the pods cache (an [`Index`]).
/// A set is counted from its pods once, at its first reconcile (or when its selector
/// changes); from then on each pod change moves its counts. A pod counts for the set whose
/// uid its controller reference names, whatever kind the reference says (as [`super::plan`]
/// reads it).
#[derive(Default)]
pub struct Tally {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each counted pod's set (uid) and what it adds there, by pod key.
    parts: HashMap<String, (Arc<str>, Counts)>,
    /// The sets counted, by uid.
    sets: HashMap<Arc<str>, Counted>,
    /// Pods without a controller and not being deleted, by key: their labels, as an object
    /// a selector reads.
    orphans: BTreeMap<String, Value>,
}

/// A set counted: its namespace (owners are namespace-local: only pods of its own count), the
/// selector it was counted with, and its counts.
struct Counted {
    ns: String,
    selector: LabelSelector,
    counts: Counts,
}

impl State {
    fn forget(&mut self, uid: &str) {
        if self.sets.remove(uid).is_some() {
            self.parts.retain(|_, (set, _)| &**set != uid);
        }
    }

    /// Whether an orphan of namespace `ns` is one `selector` selects (and so is to adopt).
    fn adoptable(&self, ns: &str, selector: &LabelSelector) -> bool {
        let prefix = format!("{ns}/");
        !selector.is_empty()
            && self
                .orphans
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .any(|(_, labels)| selector.selects(labels))
    }
}

impl Tally {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counts of `rs`'s pods, and whether its namespace holds a pod it may adopt; `None`
    /// when its selector does not parse (the full plan says what that means). A set not
    /// counted yet, or counted under another selector, is counted now from `pods`, the cache
    /// this tally is an index of.
    pub fn of(&self, rs: &Value, pods: &Cache) -> Option<(Counts, bool)> {
        let uid = object::uid(rs);
        let selector = LabelSelector::of_workload(rs).ok()?;
        let ns = object::namespace(rs);
        {
            let s = self.state();
            if let Some(set) = s.sets.get(uid)
                && set.selector == selector
            {
                return Some((set.counts, s.adoptable(ns, &selector)));
            }
        }
        // Under the cache's read lock, so that no change to a pod slips in between: changes
        // reach the tally under its write lock.
        pods.with_ns(Some(ns), |all| {
            let mut s = self.state();
            s.forget(uid);
            let set: Arc<str> = uid.into();
            let mut counts = Counts::default();
            for pod in all {
                if controller_of(pod).is_some_and(|(_, _, owner)| owner == uid) {
                    let c = Counts::of_pod(pod, &selector);
                    counts.add(c);
                    s.parts.insert(key_of(pod), (set.clone(), c));
                }
            }
            let adoptable = s.adoptable(ns, &selector);
            s.sets.insert(set, Counted { ns: ns.to_string(), selector, counts });
            Some((counts, adoptable))
        })
    }

    /// Stop counting the set `uid` (it was deleted).
    pub fn forget(&self, uid: &str) {
        self.state().forget(uid);
    }
}

impl Index for Tally {
    fn update(&self, key: &str, new: Option<&Value>) {
        let mut s = self.state();
        if let Some((set, c)) = s.parts.remove(key)
            && let Some(set) = s.sets.get_mut(&set)
        {
            set.counts.sub(c);
        }
        s.orphans.remove(key);
        let Some(pod) = new else { return };
        match controller_of(pod) {
            None if !object::is_deleting(pod) => {
                let labels = pod.get("metadata").and_then(|m| m.get("labels")).cloned().unwrap_or(Value::Null);
                s.orphans.insert(key.to_string(), json!({"metadata": {"labels": labels}}));
            }
            Some((_, _, uid)) => {
                let State { sets, parts, .. } = &mut *s;
                let Some(id) = sets.get_key_value(uid).map(|(id, _)| id.clone()) else { return };
                if let Some(set) = sets.get_mut(uid)
                    && set.ns == object::namespace(pod)
                {
                    let c = Counts::of_pod(pod, &set.selector);
                    set.counts.add(c);
                    parts.insert(key.to_string(), (id, c));
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests;
