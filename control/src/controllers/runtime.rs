//! The machinery every controller shares: informers (list + watch into a local cache) and one
//! keyed work queue per controller (a key is queued at most once, never reconciled twice at
//! the same time, retried with back-off on error).

use crate::apiserver::api::{Api, ListOptions};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use wasmorch_api::resources::Resource;
use wasmorch_api::{ApiError, object};

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the object or something it watches changes.
    AwaitChange,
    /// Look again after this long (timers: deadlines, minReadySeconds, TTLs).
    Requeue(Duration),
}

/// `namespace/name` (or `name` for cluster objects): the key of an object in caches and queues.
pub fn key_of(obj: &Value) -> String {
    let ns = object::namespace(obj);
    if ns.is_empty() { object::name(obj).to_string() } else { format!("{ns}/{}", object::name(obj)) }
}

pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

/// An object in a cache: the watch event it came in (shared with the store's other
/// watchers, not copied), or a value listed, or written here (shared with its write's event).
pub use crate::store::Stored as Entry;

/// Every object of a cache, in key order (see [`Cache::with_all`]).
pub type All<'a> = std::iter::Map<std::collections::btree_map::Values<'a, String, Entry>, fn(&Entry) -> &Value>;

/// Something kept from a cache's objects as they change, such as a count per owner, so that
/// a reconcile need not read every object (see [`Cache::index`]).
pub trait Index: Send + Sync {
    /// The object at `key` is now `new` (`None`: gone). Called under the cache's write lock,
    /// in the order the cache changed: it must not read the cache or wait.
    fn update(&self, key: &str, new: Option<&Value>);
}

/// A local copy of one resource's objects, kept current by [`Informer::run`].
/// std RwLock: held only to read or write the map, never across an await.
#[derive(Default)]
pub struct Cache {
    objects: RwLock<BTreeMap<String, Entry>>,
    /// Indexes fed every change while they live (leadership terms come and go; the cache
    /// stays). Locked only under `objects`' write lock, or to add one.
    indexes: Mutex<Vec<std::sync::Weak<dyn Index>>>,
    synced: std::sync::atomic::AtomicBool,
    synced_signal: Notify,
    /// The store revision the cache reflects: its list's, then each applied event's.
    revision: std::sync::atomic::AtomicU64,
}

impl Cache {
    pub fn get(&self, key: &str) -> Option<Value> {
        self.with(key, Value::clone)
    }

    /// The entry at `key`, shared rather than copied (most entries are watch events behind an
    /// `Arc`): for a reader that holds one object a while without changing it.
    pub fn entry(&self, key: &str) -> Option<Entry> {
        self.objects.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// `f` of the object at `key`, without copying it (`f` runs under the cache's read lock:
    /// it must not block or take another lock).
    pub fn with<R>(&self, key: &str, f: impl FnOnce(&Value) -> R) -> Option<R> {
        self.objects.read().unwrap_or_else(|e| e.into_inner()).get(key).map(|o| f(o))
    }
    /// Every object, or those of one namespace.
    pub fn list(&self, ns: Option<&str>) -> Vec<Value> {
        self.with_ns(ns, |all| all.cloned().collect())
    }
    /// `f` of the objects of namespace `ns` (every one, with `None`), in key order, without
    /// copying them (the cache is read-locked meanwhile: `f` must not wait). A reconcile that
    /// reads every pod of a namespace reads them in place: copying 10 000 pods per pass
    /// was a tenth of the server's CPU while a large Deployment started.
    pub fn with_ns<R>(&self, ns: Option<&str>, f: impl FnOnce(&mut dyn Iterator<Item = &Value>) -> R) -> R {
        let m = self.objects.read().unwrap_or_else(|e| e.into_inner());
        match ns {
            None => f(&mut m.values().map(|o| &**o)),
            Some(ns) => {
                let prefix = format!("{ns}/");
                f(&mut m.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)).map(|(_, v)| &**v))
            }
        }
    }
    /// Whether any object of namespace `ns` (every one, with `None`) satisfies `f`, without
    /// copying them.
    pub fn any_in(&self, ns: Option<&str>, f: impl FnMut(&Value) -> bool) -> bool {
        self.with_ns(ns, |mut all| (&mut all).any(f))
    }

    /// Hand every object to `f` at once, without copying them (the cache is read-locked
    /// meanwhile: `f` must not wait).
    pub fn with_all<R>(&self, f: impl FnOnce(All<'_>) -> R) -> R {
        f(self.objects.read().unwrap_or_else(|e| e.into_inner()).values().map(|o| &**o))
    }

    /// Visit every object without copying them.
    pub fn for_each(&self, mut f: impl FnMut(&Value)) {
        for v in self.objects.read().unwrap_or_else(|e| e.into_inner()).values() {
            f(v);
        }
    }

    /// Feed `index` every object now cached, then every change, for as long as it lives.
    pub fn index(&self, index: &Arc<dyn Index>) {
        let m = self.objects.write().unwrap_or_else(|e| e.into_inner());
        for (k, v) in m.iter() {
            index.update(k, Some(v));
        }
        let mut all = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(index));
    }

    /// Tell the live indexes that `key` is now `new` (the caller holds the write lock).
    fn indexed(&self, key: &str, new: Option<&Value>) {
        for i in self.indexes.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(std::sync::Weak::upgrade) {
            i.update(key, new);
        }
    }

    /// Replace an entry with what this process just wrote, ahead of the watch (the watch's
    /// copy, with the same or a newer revision, replaces it again).
    /// An object missing here at or below the cache's revision was deleted since (the cache
    /// has applied every event up to it), so it is not brought back: a write answered after
    /// its object's deletion was watched would otherwise leave a ghost behind for good (the
    /// scheduler counted one as a pod on its node).
    pub fn assume(&self, obj: impl Into<Entry>) {
        let obj: Entry = obj.into();
        let mut m = self.objects.write().unwrap_or_else(|e| e.into_inner());
        let k = key_of(&obj);
        let rv = object::resource_version(&obj);
        let take = match m.get(&k) {
            Some(cur) => object::resource_version(cur) <= rv,
            None => rv > self.revision(),
        };
        if take {
            self.indexed(&k, Some(&obj));
            m.insert(k, obj);
        }
    }
    /// Apply a watch event, keeping the event itself (no copy); what the cache held before
    /// it (moved out, except for an event older than the entry, which leaves it in place).
    pub(crate) fn apply(&self, ev: &Arc<crate::store::Event>) -> Option<Entry> {
        let mut m = self.objects.write().unwrap_or_else(|e| e.into_inner());
        let k = key_of(&ev.object);
        if ev.kind == crate::store::EventType::Deleted {
            self.indexed(&k, None);
            return m.remove(&k);
        }
        match m.get(&k) {
            Some(cur) if object::resource_version(cur) > object::resource_version(&ev.object) => {
                Some(Entry::Own(Value::clone(cur)))
            }
            _ => {
                self.indexed(&k, Some(&ev.object));
                m.insert(k, Entry::Event(ev.clone()))
            }
        }
    }
    pub fn is_synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The store revision the cache has caught up with.
    pub fn revision(&self) -> u64 {
        self.revision.load(std::sync::atomic::Ordering::Acquire)
    }

    pub async fn wait_synced(&self) {
        loop {
            let n = self.synced_signal.notified();
            if self.synced.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            n.await;
        }
    }
}

/// Who hears about a change: given the old and new object (either may be missing), enqueue
/// whatever keys it affects.
pub type Handler = Arc<dyn Fn(Option<&Value>, Option<&Value>) + Send + Sync>;

pub struct Informer {
    pub res: &'static Resource,
    pub cache: Arc<Cache>,
    handlers: Mutex<Vec<Handler>>,
    /// Followers hearing this informer's changes while they live (see [`Informer::follower`]).
    followers: Mutex<Vec<std::sync::Weak<Informer>>>,
}

impl Informer {
    pub fn new(res: &'static Resource) -> Arc<Informer> {
        Self::over(res, Arc::default())
    }

    /// An informer over `cache`, with no handlers yet.
    fn over(res: &'static Resource, cache: Arc<Cache>) -> Arc<Informer> {
        Arc::new(Informer { res, cache, handlers: Mutex::new(Vec::new()), followers: Mutex::new(Vec::new()) })
    }

    /// A follower of this (running) informer, for handlers that live shorter than it, such
    /// as a leadership term's controllers: it shares the cache instead of keeping a second
    /// copy of every object, and hears every change until it is dropped. Register its
    /// handlers, then [`Informer::replay`] what the cache already holds.
    pub fn follower(&self) -> Arc<Informer> {
        let f = Self::over(self.res, self.cache.clone());
        let mut fs = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        fs.retain(|w| w.strong_count() > 0);
        fs.push(Arc::downgrade(&f));
        f
    }

    /// Tell the handlers about every object the cache holds, as added (a follower's start;
    /// what changes meanwhile reaches them too, at worst twice).
    pub fn replay(&self) {
        let objects = self.cache.list(None);
        for o in &objects {
            self.notify(None, Some(o));
        }
    }

    pub fn on_change(&self, h: Handler) {
        self.handlers.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    }

    fn notify(&self, old: Option<&Value>, new: Option<&Value>) {
        let hs = self.handlers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for h in hs {
            h(old, new);
        }
        let followers: Vec<Arc<Informer>> = {
            let fs = self.followers.lock().unwrap_or_else(|e| e.into_inner());
            if fs.is_empty() {
                return;
            }
            fs.iter().filter_map(std::sync::Weak::upgrade).collect()
        };
        for f in followers {
            f.notify(old, new);
        }
    }

    /// List, then watch from the list's revision, forever (relisting after errors or 410).
    pub async fn run(self: Arc<Self>, api: Api) {
        loop {
            let r = self.clone().list_watch(&api).await;
            if api.shutdown.is_cancelled() {
                return;
            }
            if let Err(e) = r {
                tracing::debug!("informer {}: {e}; relisting", self.res.plural);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = api.shutdown.cancelled() => return,
            }
        }
    }

    async fn list_watch(self: Arc<Self>, api: &Api) -> Result<(), ApiError> {
        let list = api.list(self.res, None, &ListOptions::default()).await?;
        let rev: u64 = list["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
        let items: Vec<Value> = list["items"].as_array().cloned().unwrap_or_default();
        let fresh: HashMap<String, Value> = items.into_iter().map(|o| (key_of(&o), o)).collect();
        // Replace the cache, telling handlers about what changed while we were away.
        let old: BTreeMap<String, Entry> = {
            let mut m = self.cache.objects.write().unwrap_or_else(|e| e.into_inner());
            let old =
                std::mem::replace(&mut *m, fresh.iter().map(|(k, v)| (k.clone(), Entry::Own(v.clone()))).collect());
            for k in old.keys().filter(|k| !fresh.contains_key(*k)) {
                self.cache.indexed(k, None);
            }
            for (k, v) in &fresh {
                self.cache.indexed(k, Some(v));
            }
            old
        };
        for (k, o) in &old {
            if !fresh.contains_key(k) {
                self.notify(Some(o), None);
            }
        }
        for (k, n) in &fresh {
            let o = old.get(k).map(|o| &**o);
            if o.is_none_or(|o| object::resource_version(o) != object::resource_version(n)) {
                self.notify(o, Some(n));
            }
        }
        self.cache.revision.store(rev, std::sync::atomic::Ordering::Release);
        self.cache.synced.store(true, std::sync::atomic::Ordering::Release);
        self.cache.synced_signal.notify_waiters();
        let mut w = api.store.watch(&self.res.key_prefix(None), rev)?;
        loop {
            let ev = tokio::select! {
                ev = w.next() => ev?,
                _ = api.shutdown.cancelled() => return Ok(()),
            };
            let old = self.cache.apply(&ev);
            self.cache.revision.fetch_max(ev.rev, std::sync::atomic::Ordering::AcqRel);
            if ev.kind == crate::store::EventType::Deleted {
                self.notify(old.as_deref(), None);
            } else {
                self.notify(old.as_deref(), Some(&ev.object));
            }
        }
    }
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    active: HashSet<String>,
    /// Added again while being reconciled: queued when that reconcile is done.
    dirty: HashSet<String>,
    /// Keys waiting for a time, soonest first; a key waits once, for its earliest time (as
    /// client-go's delaying queue), so retries of thousands of keys stay cheap.
    delayed: std::collections::BTreeSet<(Instant, String)>,
    delayed_at: HashMap<String, Instant>,
    failures: HashMap<String, u32>,
}

impl QueueState {
    fn delay(&mut self, key: String, at: Instant) {
        match self.delayed_at.get(&key) {
            Some(cur) if *cur <= at => {}
            cur => {
                if let Some(cur) = cur {
                    self.delayed.remove(&(*cur, key.clone()));
                }
                self.delayed_at.insert(key.clone(), at);
                self.delayed.insert((at, key));
            }
        }
    }

    /// Take the next key due by `now`.
    fn pop_due(&mut self, now: Instant) -> Option<String> {
        let first = self.delayed.first().filter(|(t, _)| *t <= now)?.clone();
        self.delayed.remove(&first);
        self.delayed_at.remove(&first.1);
        Some(first.1)
    }
}

/// A keyed work queue. std Mutex: held only for bookkeeping, never across an await.
#[derive(Default)]
pub struct Queue {
    state: Mutex<QueueState>,
    wake: Notify,
}

impl Queue {
    pub fn new() -> Arc<Queue> {
        Arc::new(Queue::default())
    }

    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.active.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.ready.push_back(key);
            drop(s);
            self.wake.notify_one();
        }
    }

    /// Keys ready to be worked on.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn add_after(&self, key: impl Into<String>, d: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.delay(key.into(), Instant::now() + d);
        drop(s);
        self.wake.notify_one();
    }

    /// The next key to reconcile; it stays active until [`Queue::done`].
    pub async fn next(&self) -> String {
        loop {
            let wake = self.wake.notified();
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                while let Some(k) = s.pop_due(now) {
                    if s.active.contains(&k) {
                        s.dirty.insert(k);
                    } else if s.queued.insert(k.clone()) {
                        s.ready.push_back(k);
                    }
                }
                if let Some(k) = s.ready.pop_front() {
                    s.queued.remove(&k);
                    s.active.insert(k.clone());
                    return k;
                }
                s.delayed.first().map(|(t, _)| t.saturating_duration_since(now))
            };
            match wait {
                Some(d) => {
                    let _ = tokio::time::timeout(d, wake).await;
                }
                None => wake.await,
            }
        }
    }

    /// Finish a key: requeue it if it changed meanwhile, or per the reconcile's result.
    pub fn done(&self, key: &str, result: &Result<Action, ApiError>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.active.remove(key);
        let retry = match result {
            Ok(_) => {
                s.failures.remove(key);
                None
            }
            Err(_) => {
                let n = s.failures.entry(key.to_string()).or_insert(0);
                *n += 1;
                Some(Duration::from_millis(20) * 2u32.pow((*n - 1).min(10)))
            }
        };
        let after = match (result, retry) {
            (_, Some(d)) => Some(d.min(Duration::from_secs(30))),
            (Ok(Action::Requeue(d)), None) => Some(*d),
            _ => None,
        };
        if s.dirty.remove(key) && s.queued.insert(key.to_string()) {
            s.ready.push_back(key.to_string());
        } else if let Some(d) = after {
            s.delay(key.to_string(), Instant::now() + d);
        }
        drop(s);
        self.wake.notify_one();
    }
}

/// Run `workers` reconcilers over `queue` until shutdown.
pub async fn run_workers<F, Fut>(api: Api, name: &'static str, queue: Arc<Queue>, workers: usize, reconcile: F)
where
    F: Fn(String) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<Action, ApiError>> + Send,
{
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (q, f, api) = (queue.clone(), reconcile.clone(), api.clone());
        set.spawn(async move {
            loop {
                let key = tokio::select! {
                    k = q.next() => k,
                    _ = api.shutdown.cancelled() => return,
                };
                let t = crate::telemetry::get();
                let queue = crate::telemetry::Name { name: name.to_string() };
                t.queue_depth.get_or_create(&queue).set(q.len() as i64);
                t.queue_processed.get_or_create(&queue).inc();
                let r = f(key.clone()).await;
                // 409 and 404: the object moved on or went away; the retry sees the new state.
                if let Err(e) = &r
                    && e.code != 409
                    && e.code != 404
                {
                    tracing::warn!("{name} {key}: {e}");
                }
                q.done(&key, &r);
            }
        });
    }
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(object: Value, deleted: bool) -> Arc<crate::store::Event> {
        use crate::store::{Event, EventType};
        let kind = if deleted { EventType::Deleted } else { EventType::Modified };
        Arc::new(Event { rev: object::resource_version(&object), kind, key: key_of(&object), object })
    }

    #[tokio::test]
    async fn a_key_is_queued_once_and_never_twice_active() {
        let q = Queue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        let k = q.next().await;
        assert_eq!(k, "a");
        q.add("a"); // changed while active: comes back after done, not before
        assert_eq!(q.next().await, "b");
        q.done("b", &Ok(Action::AwaitChange));
        assert!(tokio::time::timeout(Duration::from_millis(50), q.next()).await.is_err(), "a is still active");
        q.done("a", &Ok(Action::AwaitChange));
        assert_eq!(q.next().await, "a");
        q.done("a", &Ok(Action::AwaitChange));
        assert!(tokio::time::timeout(Duration::from_millis(50), q.next()).await.is_err(), "nothing left");
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_and_requeues_wait() {
        let q = Queue::new();
        q.add("x");
        let k = q.next().await;
        let t = tokio::time::Instant::now();
        q.done(&k, &Err(ApiError::internal("boom")));
        assert_eq!(q.next().await, "x");
        let first = t.elapsed();
        q.done("x", &Err(ApiError::internal("boom")));
        let t = tokio::time::Instant::now();
        assert_eq!(q.next().await, "x");
        assert!(t.elapsed() > first, "back-off grows: {first:?} then {:?}", t.elapsed());
        q.done("x", &Ok(Action::Requeue(Duration::from_secs(5))));
        let t = tokio::time::Instant::now();
        assert_eq!(q.next().await, "x");
        assert!(t.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_waits_once_for_its_earliest_time() {
        let q = Queue::new();
        let t = tokio::time::Instant::now();
        q.add_after("x", Duration::from_secs(30));
        q.add_after("x", Duration::from_secs(2));
        q.add_after("x", Duration::from_secs(10));
        q.add_after("y", Duration::from_secs(5));
        assert_eq!(q.next().await, "x");
        assert_eq!(t.elapsed(), Duration::from_secs(2), "the earliest time wins");
        q.done("x", &Ok(Action::AwaitChange));
        assert_eq!(q.next().await, "y");
        assert_eq!(t.elapsed(), Duration::from_secs(5));
        q.done("y", &Ok(Action::AwaitChange));
        // The later times of x were dropped, not kept as extra entries.
        assert!(tokio::time::timeout(Duration::from_secs(60), q.next()).await.is_err(), "x came back");
    }

    #[test]
    fn an_assumed_write_does_not_bring_back_a_deleted_object() {
        let c = Cache::default();
        let pod = |rv: u64| serde_json::json!({"metadata": {"name": "p", "namespace": "d", "resourceVersion": rv.to_string()}});
        c.apply(&event(pod(5), false));
        c.revision.store(5, std::sync::atomic::Ordering::Release);
        c.assume(pod(7));
        assert!(c.get("d/p").is_some_and(|p| object::resource_version(&p) == 7), "newer than the entry: taken");
        // Deleted at 9 (watched), then a write answered at 8 arrives.
        c.apply(&event(pod(8), true));
        c.revision.store(9, std::sync::atomic::Ordering::Release);
        c.assume(pod(8));
        assert!(c.get("d/p").is_none(), "a ghost of a deleted object");
        // Created anew after what the cache has seen: taken.
        c.assume(pod(12));
        assert!(c.get("d/p").is_some());
    }

    #[test]
    fn an_index_hears_what_is_cached_then_every_change_while_it_lives() {
        #[derive(Default)]
        struct Log(Mutex<Vec<(String, Option<u64>)>>);
        impl Index for Log {
            fn update(&self, key: &str, new: Option<&Value>) {
                self.0.lock().unwrap().push((key.to_string(), new.map(object::resource_version)));
            }
        }
        let c = Cache::default();
        let pod = |name: &str, rv: u64| serde_json::json!({"metadata": {"name": name, "namespace": "d", "resourceVersion": rv.to_string()}});
        c.apply(&event(pod("a", 2), false));
        let log = Arc::new(Log::default());
        c.index(&(log.clone() as Arc<dyn Index>));
        c.apply(&event(pod("b", 3), false));
        c.assume(pod("b", 4));
        c.apply(&event(pod("b", 3), false)); // older than the entry: no change
        c.apply(&event(pod("a", 5), true));
        c.revision.store(5, std::sync::atomic::Ordering::Release);
        c.assume(pod("a", 4)); // a ghost of a deleted object: no change
        let seen = |k: &str, rv: Option<u64>| (format!("d/{k}"), rv);
        assert_eq!(
            *log.0.lock().unwrap(),
            [seen("a", Some(2)), seen("b", Some(3)), seen("b", Some(4)), seen("a", None)],
            "what was cached, then each change the cache took"
        );
        drop(log);
        c.apply(&event(pod("c", 6), false));
        c.index(&(Arc::new(Log::default()) as Arc<dyn Index>));
        assert_eq!(c.indexes.lock().unwrap().len(), 1, "dropped indexes are forgotten");
    }

    #[test]
    fn a_follower_shares_the_cache_hears_changes_while_alive_and_replays_what_is_cached() {
        let res = wasmorch_api::resources::of(wasmorch_api::resources::ResourceKind::Pod);
        let parent = Informer::new(res);
        let pod =
            |name: &str| serde_json::json!({"metadata": {"name": name, "namespace": "d", "resourceVersion": "1"}});
        parent.cache.apply(&event(pod("a"), false));
        let f = parent.follower();
        assert!(Arc::ptr_eq(&f.cache, &parent.cache), "one cache, not a copy");
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        f.on_change(Arc::new(move |old, new| {
            let name = |o: Option<&Value>| o.map(|o| object::name(o).to_string());
            h.lock().unwrap().push((name(old), name(new)));
        }));
        f.replay();
        parent.notify(None, Some(&pod("b")));
        parent.notify(Some(&pod("a")), None);
        assert_eq!(
            *heard.lock().unwrap(),
            [(None, Some("a".into())), (None, Some("b".into())), (Some("a".into()), None)],
            "the replay, then the parent's changes"
        );
        drop(f);
        parent.notify(None, Some(&pod("c")));
        assert_eq!(heard.lock().unwrap().len(), 3, "a dropped follower hears nothing");
        let _next = parent.follower();
        assert_eq!(parent.followers.lock().unwrap().len(), 1, "dropped followers are forgotten");
    }
}
