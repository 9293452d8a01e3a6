//! CPU for wasm instances: one scheduler per node, one account per container.
//!
//! Every instance future (an HTTP request's instance, a process) runs under a
//! [`super::cgroup::Governed`] wrapper. Wasm code runs only inside a poll, and an instance yields at every epoch tick
//! (10 ms), so a poll is the unit the node schedules:
//!
//! - **Run slots.** At most `slots` polls of wasm run at once on the node (one per core the
//!   runtime has); an instance waiting for a slot is not in tokio's run queue, so the node's
//!   own tasks (heartbeats, probes, the proxy, API calls) never queue behind it.
//! - **Limits.** A container's `limits.cpu` is a bandwidth quota, as CFS enforces it: `limit ×
//!   period` of CPU time per period (100 ms) for all its instances together, and at most
//!   `⌈limit⌉` of them on a core at once. Overshoot (a poll runs until its tick) is carried
//!   into the next period as debt, so the average holds exactly.
//! - **Shares.** When instances wait for slots, the next slot goes to the container with the
//!   least weighted CPU time (`used × 1024 / weight`, weight = `requests.cpu` in millicores,
//!   at least 2 as Kubernetes gives BestEffort pods): under saturation containers share CPU
//!   in proportion to their requests, as CFS shares do.
//! - **Reserve.** All wasm together gets at most `cores − system-reserved` per period, so the
//!   node's own work always has its reserve.
//!
//! CPU time is the thread CPU time of the polling thread (`CLOCK_THREAD_CPUTIME_ID`), so time
//! the OS gave to other processes is not charged; it is also what the node reports as a
//! container's usage. The decisions ([`Sched`]) are pure: they take the time as an argument.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

/// Length of a bandwidth period (CFS' default `cfs_period_us`).
pub const PERIOD: Duration = Duration::from_millis(100);
/// Weight of a container that requests no CPU (Kubernetes' `cpu.shares` for BestEffort).
pub const MIN_WEIGHT: u64 = 2;

/// What a container asks of the CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSpec {
    /// `limits.cpu` in millicores; `None`: unlimited (up to the node's allocatable).
    pub limit_millis: Option<u64>,
    /// `requests.cpu` in millicores (0: none).
    pub request_millis: u64,
}

impl CpuSpec {
    pub fn weight(&self) -> u64 {
        self.request_millis.max(MIN_WEIGHT)
    }
    /// CPU time per period, if limited.
    pub fn quota(&self) -> Option<Duration> {
        self.limit_millis.map(|m| PERIOD * m.max(1) as u32 / 1000)
    }
    /// How many instances may be on a core at once (`⌈limit⌉`), at most `slots`.
    pub fn parallel(&self, slots: u32) -> u32 {
        match self.limit_millis {
            Some(m) => (m.div_ceil(1000) as u32).clamp(1, slots.max(1)),
            None => slots.max(1),
        }
    }
}

/// Usage of a period-based quota, rolled over lazily.
#[derive(Debug, Clone, Copy, Default)]
struct Bandwidth {
    period: u64,
    used: Duration,
}

impl Bandwidth {
    /// Bring `used` to period `now`: each elapsed period pays off one quota of it.
    fn roll(&mut self, now: u64, quota: Duration) {
        if now > self.period {
            let periods = (now - self.period).min(u32::MAX as u64) as u32;
            self.used = self.used.saturating_sub(quota.saturating_mul(periods));
            self.period = now;
        }
    }
}

#[derive(Debug)]
struct Group {
    spec: CpuSpec,
    running: u32,
    bandwidth: Bandwidth,
    /// CPU time used over the group's life, in nanoseconds.
    total: u128,
    /// Weighted CPU time (ns × 1024 / weight): the fair-share clock.
    vruntime: u128,
    waiters: VecDeque<Arc<Waiter>>,
    /// Polls that found the quota spent (for `throttled` figures).
    throttled: u64,
}

#[derive(Debug, Default)]
pub struct Waiter {
    /// Set when a released slot was handed to this waiter.
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Waiter {
    fn wake(&self) {
        if let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }
}

/// The answer to a request for a run slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Run now.
    Run,
    /// Queued: the waiter is woken with a slot (`granted`) or to ask again.
    Queued,
    /// The quota of this container (or the node's) is spent until this instant.
    Throttled(Instant),
}

/// The node's CPU scheduler state: pure decisions, time passed in.
#[derive(Debug)]
pub struct Sched {
    slots: u32,
    running: u32,
    /// CPU time all wasm may use per period (`cores − reserved`).
    node_quota: Duration,
    node: Bandwidth,
    origin: Instant,
    groups: HashMap<u64, Group>,
    /// The groups with queued waiters: what a release looks through (a node with 10 000
    /// idle containers and a few busy ones looks at the few).
    waiting: std::collections::BTreeSet<u64>,
    next_id: u64,
    min_vruntime: u128,
}

impl Sched {
    /// `slots` cores for wasm, `allocatable_millis` of CPU per second for all of it.
    pub fn new(slots: u32, allocatable_millis: u64, origin: Instant) -> Sched {
        Sched {
            slots: slots.max(1),
            running: 0,
            node_quota: PERIOD * allocatable_millis.max(10) as u32 / 1000,
            node: Bandwidth::default(),
            origin,
            groups: HashMap::new(),
            waiting: Default::default(),
            next_id: 1,
            min_vruntime: 0,
        }
    }

    fn period_of(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / PERIOD.as_nanos()) as u64
    }

    fn period_end(&self, period: u64) -> Instant {
        self.origin + PERIOD * (period + 1) as u32
    }

    pub fn add(&mut self, spec: CpuSpec) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.groups.insert(
            id,
            Group {
                spec,
                running: 0,
                bandwidth: Bandwidth::default(),
                total: 0,
                vruntime: self.min_vruntime,
                waiters: VecDeque::new(),
                throttled: 0,
            },
        );
        id
    }

    pub fn remove(&mut self, id: u64) {
        self.waiting.remove(&id);
        if let Some(g) = self.groups.remove(&id) {
            for w in g.waiters {
                w.wake();
            }
        }
    }

    /// Whether `id` may not run in the period of `now`, and until when.
    fn throttled_until(&mut self, id: u64, now: Instant) -> Option<Instant> {
        let p = self.period_of(now);
        self.node.roll(p, self.node_quota);
        if self.node.used >= self.node_quota {
            return Some(self.period_end(p));
        }
        let g = self.groups.get_mut(&id)?;
        let quota = g.spec.quota()?;
        g.bandwidth.roll(p, quota);
        if g.bandwidth.used < quota {
            return None;
        }
        // Paying off debt may take more than the rest of this period.
        let periods = g.bandwidth.used.as_nanos() / quota.as_nanos().max(1);
        Some(self.origin + PERIOD * (p as u32 + periods as u32))
    }

    /// A poll of group `id` asks to run. `waiter` is queued if it must wait for a slot.
    pub fn acquire(&mut self, id: u64, waiter: &Arc<Waiter>, now: Instant) -> Admit {
        if waiter.granted.swap(false, Ordering::AcqRel) {
            return Admit::Run;
        }
        if let Some(until) = self.throttled_until(id, now) {
            if let Some(g) = self.groups.get_mut(&id) {
                g.throttled += 1;
            }
            return Admit::Throttled(until);
        }
        let (slots, running, min_v) = (self.slots, self.running, self.min_vruntime);
        let Some(g) = self.groups.get_mut(&id) else { return Admit::Run };
        // A free slot means no eligible waiter is queued (each release hands slots to them
        // first), so taking it is fair.
        if running < slots && g.running < g.spec.parallel(slots) {
            g.running += 1;
            self.running += 1;
            return Admit::Run;
        }
        if g.waiters.is_empty() && g.running == 0 {
            // Back from idle: no credit for the time it did not compete.
            g.vruntime = g.vruntime.max(min_v);
        }
        if !g.waiters.iter().any(|w| Arc::ptr_eq(w, waiter)) {
            g.waiters.push_back(waiter.clone());
        }
        self.waiting.insert(id);
        Admit::Queued
    }

    /// A poll of group `id` that ran for `used` ended: charge it and hand the slot on.
    /// Returns the waiters to wake (outside the lock).
    pub fn release(&mut self, id: u64, used: Duration, now: Instant) -> Vec<Arc<Waiter>> {
        self.running = self.running.saturating_sub(1);
        if let Some(g) = self.groups.get_mut(&id) {
            g.running = g.running.saturating_sub(1);
        }
        self.charge(id, used, now);
        self.dispatch(now)
    }

    /// Host work done for group `id` outside its instances (parsing its requests, writing
    /// its responses): charged like wasm time, without a slot.
    pub fn charge(&mut self, id: u64, used: Duration, now: Instant) {
        let p = self.period_of(now);
        self.node.roll(p, self.node_quota);
        self.node.used += used;
        if let Some(g) = self.groups.get_mut(&id) {
            if let Some(q) = g.spec.quota() {
                g.bandwidth.roll(p, q);
            }
            g.bandwidth.used += used;
            g.total += used.as_nanos();
            g.vruntime += used.as_nanos() * 1024 / g.spec.weight() as u128;
        }
    }

    /// Hand free slots to waiters, least weighted CPU time first. Waiters of throttled groups
    /// are woken to learn until when.
    fn dispatch(&mut self, now: Instant) -> Vec<Arc<Waiter>> {
        let mut wake = Vec::new();
        let ids: Vec<u64> = self.waiting.iter().copied().collect();
        for id in ids {
            if self.throttled_until(id, now).is_some() {
                self.waiting.remove(&id);
                if let Some(g) = self.groups.get_mut(&id) {
                    wake.extend(g.waiters.drain(..));
                }
            }
        }
        while self.running < self.slots {
            let slots = self.slots;
            let groups = &self.groups;
            let next = self
                .waiting
                .iter()
                .filter_map(|k| groups.get(k).map(|g| (k, g)))
                .filter(|(_, g)| !g.waiters.is_empty() && g.running < g.spec.parallel(slots))
                .min_by_key(|(k, g)| (g.vruntime, **k))
                .map(|(k, _)| *k);
            let Some(id) = next else { break };
            let g = self.groups.get_mut(&id).expect("chosen above");
            let w = g.waiters.pop_front().expect("has waiters");
            if g.waiters.is_empty() {
                self.waiting.remove(&id);
            }
            g.running += 1;
            self.running += 1;
            self.min_vruntime = self.min_vruntime.max(g.vruntime);
            w.granted.store(true, Ordering::Release);
            wake.push(w);
        }
        #[cfg(test)]
        assert!(
            self.groups.iter().all(|(k, g)| g.waiters.is_empty() != self.waiting.contains(k)),
            "`waiting` lists exactly the groups with waiters"
        );
        wake
    }

    /// A waiter gives up (its future was dropped): leave the queue, or give back a slot
    /// handed to it that it never used.
    pub fn abandon(&mut self, id: u64, waiter: &Arc<Waiter>, now: Instant) -> Vec<Arc<Waiter>> {
        if let Some(g) = self.groups.get_mut(&id) {
            g.waiters.retain(|w| !Arc::ptr_eq(w, waiter));
            if g.waiters.is_empty() {
                self.waiting.remove(&id);
            }
        }
        if waiter.granted.swap(false, Ordering::AcqRel) {
            return self.release(id, Duration::ZERO, now);
        }
        Vec::new()
    }

    pub fn usage(&self, id: u64) -> Option<CpuUsage> {
        let g = self.groups.get(&id)?;
        Some(CpuUsage {
            total: Duration::from_nanos(g.total.min(u64::MAX as u128) as u64),
            running: g.running,
            waiting: g.waiters.len() as u32,
            throttled: g.throttled,
        })
    }
}

/// A container's CPU use, as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuUsage {
    pub total: Duration,
    pub running: u32,
    pub waiting: u32,
    pub throttled: u64,
}

/// The node's scheduler, shared by every instance.
#[derive(Debug)]
pub struct NodeCpu {
    sched: Mutex<Sched>,
}

impl NodeCpu {
    pub fn new(slots: u32, allocatable_millis: u64) -> Arc<NodeCpu> {
        Arc::new(NodeCpu { sched: Mutex::new(Sched::new(slots, allocatable_millis, Instant::now())) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A container's account; removed when the last handle is dropped.
    pub fn group(self: &Arc<Self>, spec: CpuSpec) -> CpuGroup {
        let id = self.lock().add(spec);
        CpuGroup(Arc::new(GroupHandle { node: self.clone(), id }))
    }
}

#[derive(Debug)]
struct GroupHandle {
    node: Arc<NodeCpu>,
    id: u64,
}

impl Drop for GroupHandle {
    fn drop(&mut self) {
        self.node.lock().remove(self.id);
    }
}

/// One container's CPU account; clone it for each of its instances.
#[derive(Debug, Clone)]
pub struct CpuGroup(Arc<GroupHandle>);

impl CpuGroup {
    pub fn usage(&self) -> CpuUsage {
        self.0.node.lock().usage(self.0.id).unwrap_or_default()
    }

    /// A poll asks to run (see [`Sched::acquire`]).
    pub fn acquire(&self, waiter: &Arc<Waiter>) -> Admit {
        self.0.node.lock().acquire(self.0.id, waiter, Instant::now())
    }

    /// A poll that ran for `used` ended; hands its slot on.
    pub fn release(&self, used: Duration) {
        let wake = self.0.node.lock().release(self.0.id, used, Instant::now());
        for w in wake {
            w.wake();
        }
    }

    /// Charge host work done for this container (see [`Sched::charge`]).
    pub fn charge(&self, used: Duration) {
        self.0.node.lock().charge(self.0.id, used, Instant::now());
    }

    /// A waiter's future is gone.
    pub fn abandon(&self, waiter: &Arc<Waiter>) {
        let wake = self.0.node.lock().abandon(self.0.id, waiter, Instant::now());
        for w in wake {
            w.wake();
        }
    }
}

impl Waiter {
    /// Wake `waker` when this waiter is handed a slot.
    pub fn set_waker(&self, waker: &Waker) {
        let mut w = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        match w.as_ref() {
            Some(old) if old.will_wake(waker) => {}
            _ => *w = Some(waker.clone()),
        }
    }
}

/// CPU time of the calling thread.
#[cfg(unix)]
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Elsewhere the wall time of the poll stands in for it.
#[cfg(not(unix))]
pub fn thread_cpu() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn spec(limit: Option<u64>, request: u64) -> CpuSpec {
        CpuSpec { limit_millis: limit, request_millis: request }
    }

    #[test]
    fn spec_rules() {
        assert_eq!(spec(Some(500), 0).quota(), Some(50 * MS));
        assert_eq!(spec(Some(500), 0).parallel(2), 1);
        assert_eq!(spec(Some(1500), 0).parallel(4), 2);
        assert_eq!(spec(Some(8000), 0).parallel(2), 2);
        assert_eq!(spec(None, 0).parallel(2), 2);
        assert_eq!(spec(None, 0).weight(), MIN_WEIGHT);
        assert_eq!(spec(None, 250).weight(), 250);
    }

    /// Simulate `groups` always-busy groups on `slots` slots with polls of `tick` for
    /// `periods` periods; returns the CPU time each got.
    fn simulate(slots: u32, alloc: u64, groups: &[(CpuSpec, usize)], tick: Duration, periods: u32) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut s = Sched::new(slots, alloc, t0);
        let ids: Vec<u64> = groups.iter().map(|(g, _)| s.add(*g)).collect();
        // Each instance: (group index, waiter, ready-at).
        let mut inst: Vec<(usize, Arc<Waiter>, Instant)> = Vec::new();
        for (i, (_, n)) in groups.iter().enumerate() {
            for _ in 0..*n {
                inst.push((i, Arc::new(Waiter::default()), t0));
            }
        }
        let mut got = vec![Duration::ZERO; groups.len()];
        // Discrete time: each step, every free slot runs one admitted instance for `tick`.
        let end = t0 + PERIOD * periods;
        let mut now = t0;
        while now < end {
            let mut running = Vec::new();
            for (k, (g, w, ready)) in inst.iter_mut().enumerate() {
                if *ready > now {
                    continue;
                }
                match s.acquire(ids[*g], w, now) {
                    Admit::Run => running.push(k),
                    Admit::Queued => {}
                    Admit::Throttled(until) => *ready = until,
                }
            }
            assert!(running.len() <= slots as usize, "more polls than slots");
            now += tick;
            for k in running {
                let g = inst[k].0;
                got[g] += tick;
                s.release(ids[g], tick, now);
            }
        }
        got
    }

    #[test]
    fn a_limit_holds_for_many_instances() {
        // 20 busy instances of a 500m container on 2 cores, 5 s: 2.5 s of CPU.
        let got = simulate(2, 2000, &[(spec(Some(500), 500), 20)], MS, 50);
        let share = got[0].as_secs_f64() / 5.0;
        assert!((share - 0.5).abs() < 0.02, "500m got {share:.3} cores");
    }

    #[test]
    fn overshoot_is_paid_back() {
        // Polls of 30 ms against a 20 ms quota: the average still holds.
        let got = simulate(1, 1000, &[(spec(Some(200), 0), 4)], 30 * MS, 100);
        let share = got[0].as_secs_f64() / 10.0;
        assert!((share - 0.2).abs() < 0.02, "200m got {share:.3} cores");
    }

    #[test]
    fn shares_follow_requests_under_saturation() {
        let got = simulate(2, 2000, &[(spec(None, 300), 8), (spec(None, 100), 8)], MS, 50);
        let ratio = got[0].as_secs_f64() / got[1].as_secs_f64();
        assert!((ratio - 3.0).abs() < 0.2, "300m:100m requests got {ratio:.2}:1");
        // Together they use the node.
        let total: f64 = got.iter().map(|d| d.as_secs_f64()).sum();
        assert!((total - 10.0).abs() < 0.1, "{total}");
    }

    #[test]
    fn the_reserve_is_kept() {
        // 2 cores, 1800m allocatable: unlimited busy work gets 1.8 cores, not 2.
        let got = simulate(2, 1800, &[(spec(None, 0), 10)], MS, 50);
        let cores = got[0].as_secs_f64() / 5.0;
        assert!((cores - 1.8).abs() < 0.03, "{cores}");
    }

    #[test]
    fn a_limited_neighbour_leaves_room() {
        // A 500m container with 20 instances and an unlimited one with 1: the latter gets the rest.
        let got = simulate(2, 2000, &[(spec(Some(500), 500), 20), (spec(None, 100), 1)], MS, 50);
        assert!((got[0].as_secs_f64() / 5.0 - 0.5).abs() < 0.02);
        assert!((got[1].as_secs_f64() / 5.0 - 1.0).abs() < 0.02, "{:?}", got[1]);
    }

    #[test]
    fn abandoned_grant_is_returned() {
        let t0 = Instant::now();
        let mut s = Sched::new(1, 1000, t0);
        let g = s.add(spec(None, 0));
        let (a, b) = (Arc::new(Waiter::default()), Arc::new(Waiter::default()));
        assert_eq!(s.acquire(g, &a, t0), Admit::Run);
        assert_eq!(s.acquire(g, &b, t0), Admit::Queued);
        let woken = s.release(g, MS, t0);
        assert_eq!(woken.len(), 1);
        assert!(Arc::ptr_eq(&woken[0], &b));
        // b is dropped before it runs: its slot goes back.
        s.abandon(g, &b, t0);
        assert_eq!(s.acquire(g, &a, t0), Admit::Run);
    }

    #[test]
    fn removed_group_wakes_its_waiters() {
        let t0 = Instant::now();
        let mut s = Sched::new(1, 1000, t0);
        let g = s.add(spec(None, 0));
        let (a, b) = (Arc::new(Waiter::default()), Arc::new(Waiter::default()));
        assert_eq!(s.acquire(g, &a, t0), Admit::Run);
        assert_eq!(s.acquire(g, &b, t0), Admit::Queued);
        s.remove(g);
        assert!(s.groups.is_empty());
    }
}
