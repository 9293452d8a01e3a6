//! Memory for wasm instances: one budget per container, under one budget for the node.
//!
//! A container's `limits.memory` caps the sum of what its live instances hold: their linear
//! memories and tables (charged by each store's [`ResourceLimiter`] as they grow) and the
//! host memory their host calls allocate (charged by the node's counting allocator, see
//! [`super::alloc`]). Every charge is also made against the node's budget (its allocatable
//! memory: total − `--system-reserved`), so containers without a limit together cannot take
//! the node's reserve either.
//!
//! Growth past the budget traps the instance with [`OOM_TRAP`]: a process container then ends
//! `OOMKilled` (exit code 137), as the kernel's OOM killer ends a container; an HTTP request
//! is answered 503 and its pod gets an event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The message of a trap for growth past a memory limit (matched to report `OOMKilled`).
pub const OOM_TRAP: &str = "OOMKilled";

/// The `OOMKilled: …` part of an error chain (without the wasm backtrace before it), if the
/// error is one.
pub fn oom_message(m: &str) -> Option<&str> {
    m.find(OOM_TRAP).map(|i| &m[i..])
}

/// Memory in use against a limit, shared by everything charged to it.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    parent: Option<Arc<MemoryBudget>>,
    /// Growths refused (for events and figures).
    pub refused: AtomicU64,
    /// Largest amount in use at once.
    peak: AtomicUsize,
}

impl MemoryBudget {
    pub fn root(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
            parent: None,
            refused: AtomicU64::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    /// A budget of `limit` (or, with none, only the parent's) inside `parent`.
    pub fn child(parent: &Arc<MemoryBudget>, limit: Option<usize>) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit: limit.unwrap_or(usize::MAX),
            used: AtomicUsize::new(0),
            parent: Some(parent.clone()),
            refused: AtomicU64::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Whether `n` more bytes fit in this budget and every parent now (taking nothing).
    pub fn has_room(&self, n: usize) -> bool {
        self.used().checked_add(n).is_some_and(|v| v <= self.limit)
            && self.parent.as_ref().is_none_or(|p| p.has_room(n))
    }

    /// Take `n` bytes if this budget and every parent have room; all or nothing.
    pub fn try_charge(&self, n: usize) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|v| *v <= self.limit) else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            match self.used.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    if let Some(p) = &self.parent
                        && !p.try_charge(n)
                    {
                        self.used.fetch_sub(n, Ordering::AcqRel);
                        self.refused.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Take `n` bytes whatever the limit (memory already allocated by the host).
    pub fn force_charge(&self, n: usize) {
        let next = self.used.fetch_add(n, Ordering::AcqRel).saturating_add(n);
        self.peak.fetch_max(next, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.force_charge(n);
        }
    }

    pub fn release(&self, n: usize) {
        // Never below zero, even if a caller releases more than it charged.
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
        if let Some(p) = &self.parent {
            p.release(n);
        }
    }

    /// Whether more is in use than this budget's own limit (host memory is charged after
    /// the fact, so it can be).
    pub fn over(&self) -> bool {
        self.used() > self.limit
    }
}

/// Bytes a wasm table element is charged (a function reference on the host).
const TABLE_ELEMENT: usize = 16;

/// The pages the pooling allocator keeps resident in free slots, charged to the node.
///
/// When an instance ends, the allocator zeroes up to `keep` bytes of each of its memories
/// (or tables) with `memset` and keeps them resident for the next instance in that slot,
/// instead of returning them with `madvise` (a system call that interrupts every core
/// running the node to flush its TLB: a third of the node's CPU at 8k requests/s). Those
/// pages belong to no pod once the instance is gone, so the node's budget carries them:
/// at most one slot per memory ever live at once (the allocator reuses warm slots before
/// cold ones, `max_unused_warm_slots(0)`), each holding at most the largest size any memory
/// reached, capped at `keep`. Both only grow, and so does the charge: pages stay resident.
#[derive(Debug)]
pub struct WarmSlots {
    node: Arc<MemoryBudget>,
    keep: usize,
    state: std::sync::Mutex<Warm>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Warm {
    live: usize,
    /// Slots that may hold resident pages: the most ever live at once.
    slots: usize,
    /// The most one slot may hold: the largest size seen, capped at `keep`.
    per_slot: usize,
    /// What the node's budget carries for them.
    charged: usize,
}

impl Warm {
    /// What the node must carry for `slots` slots of `per_slot` bytes.
    fn target(&self) -> usize {
        self.slots.saturating_mul(self.per_slot)
    }
}

impl WarmSlots {
    pub fn new(node: Arc<MemoryBudget>, keep: usize) -> Arc<WarmSlots> {
        Arc::new(WarmSlots { node, keep, state: std::sync::Mutex::new(Warm::default()) })
    }

    /// Bytes kept resident in one free slot, at most.
    pub fn keep(&self) -> usize {
        self.keep
    }

    /// Bytes the node carries for free slots' resident pages.
    pub fn charged(&self) -> usize {
        self.lock().charged
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Warm> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Move to `next` if the node can carry it; all or nothing.
    fn settle(&self, w: &mut Warm, mut next: Warm) -> bool {
        let target = next.target();
        if target > w.charged {
            if !self.node.try_charge(target - w.charged) {
                return false;
            }
            next.charged = target;
        }
        *w = next;
        true
    }

    /// A slot comes into use at `size` bytes; false when the node cannot carry one more
    /// warm slot.
    pub fn enter(&self, size: usize) -> bool {
        let mut w = self.lock();
        let live = w.live + 1;
        let next = Warm { live, slots: w.slots.max(live), per_slot: w.per_slot.max(size.min(self.keep)), ..*w };
        self.settle(&mut w, next)
    }

    /// A slot in use grows to `size` bytes.
    pub fn grow(&self, size: usize) -> bool {
        let mut w = self.lock();
        let next = Warm { per_slot: w.per_slot.max(size.min(self.keep)), ..*w };
        self.settle(&mut w, next)
    }

    /// A slot is freed (its pages stay charged).
    pub fn leave(&self) {
        let mut w = self.lock();
        w.live = w.live.saturating_sub(1);
    }
}

/// The node's warm slots, one account for linear memories and one for tables.
#[derive(Debug, Clone)]
pub struct WarmPools {
    pub memories: Arc<WarmSlots>,
    pub tables: Arc<WarmSlots>,
}

/// The slots one instance holds in the warm pools, given back when the last holder drops.
/// A store drops its data before the allocator frees its slots, so the store's owner holds
/// one too and drops it after the store (see `runtime::InstanceStore`): a slot is counted
/// free only once it is.
#[derive(Debug)]
pub struct WarmHold {
    pools: WarmPools,
    memories: AtomicUsize,
    tables: AtomicUsize,
}

impl WarmHold {
    pub fn new(pools: WarmPools) -> Arc<WarmHold> {
        Arc::new(WarmHold { pools, memories: AtomicUsize::new(0), tables: AtomicUsize::new(0) })
    }
}

impl Drop for WarmHold {
    fn drop(&mut self) {
        (0..*self.memories.get_mut()).for_each(|_| self.pools.memories.leave());
        (0..*self.tables.get_mut()).for_each(|_| self.pools.tables.leave());
    }
}

/// One instance's limiter: charges its linear memories and tables to its container's budget.
#[derive(Debug)]
pub struct InstanceMemory {
    budget: Arc<MemoryBudget>,
    /// Largest single linear memory, whatever the budget (the pooling allocator's slot size).
    max_memory: usize,
    held: usize,
    peak: usize,
    /// Why growth was refused, if it was.
    pub refused: Option<String>,
    /// The slots it holds in the node's warm pools.
    warm: Option<Arc<WarmHold>>,
}

impl InstanceMemory {
    pub fn new(budget: Arc<MemoryBudget>, max_memory: usize) -> InstanceMemory {
        InstanceMemory { budget, max_memory, held: 0, peak: 0, refused: None, warm: None }
    }

    /// Also account the slots this instance uses in the node's warm pools.
    pub fn with_warm(mut self, warm: Arc<WarmHold>) -> InstanceMemory {
        self.warm = Some(warm);
        self
    }

    /// Account a memory (or table) slot growing from `current` to `desired` bytes: a new slot
    /// when `current` is 0 (a memory declared empty and grown later counts twice: more
    /// charged, never less).
    fn warm_slot(&mut self, table: bool, current: usize, desired: usize) -> bool {
        let Some(w) = &self.warm else { return true };
        let (pool, count) = if table { (&w.pools.tables, &w.tables) } else { (&w.pools.memories, &w.memories) };
        if current != 0 {
            return pool.grow(desired);
        }
        if !pool.enter(desired) {
            return false;
        }
        count.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn refuse_warm(&mut self, what: &str) -> wasmtime::Error {
        let why = format!(
            "{OOM_TRAP}: the node has no memory left for another {what} ({} MiB in use of {} MiB)",
            self.budget.used() >> 20,
            self.budget.limit().min(usize::MAX >> 1) >> 20,
        );
        self.refused = Some(why.clone());
        wasmtime::format_err!("{why}")
    }

    /// Largest amount this instance held at once.
    pub fn peak(&self) -> usize {
        self.peak
    }

    fn grow(&mut self, current: usize, desired: usize, what: &str) -> wasmtime::Result<bool> {
        let delta = desired.saturating_sub(current);
        if delta == 0 || self.budget.try_charge(delta) {
            self.held += delta;
            self.peak = self.peak.max(self.held);
            return Ok(true);
        }
        let why = format!(
            "{OOM_TRAP}: growing {what} to {} MiB would exceed the container's memory limit ({} MiB in use of {} MiB)",
            desired >> 20,
            self.budget.used() >> 20,
            self.budget.limit().min(usize::MAX >> 1) >> 20,
        );
        self.refused = Some(why.clone());
        Err(wasmtime::format_err!("{why}"))
    }
}

impl InstanceMemory {
    /// Grow a memory (or table) from `from` to `to` bytes: charged to the container, then
    /// its slot accounted in the node's warm pool; all or nothing.
    fn grow_slot(&mut self, table: bool, from: usize, to: usize) -> wasmtime::Result<bool> {
        let what = if table { "table" } else { "linear memory" };
        let grown = self.grow(from, to, if table { "a table" } else { what })?;
        if grown && !self.warm_slot(table, from, to) {
            self.budget.release(to - from);
            self.held -= to - from;
            return Err(self.refuse_warm(what));
        }
        Ok(grown)
    }
}

impl wasmtime::ResourceLimiter for InstanceMemory {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            // Beyond the node's per-instance slot: a plain failed grow, as wasm defines it.
            return Ok(false);
        }
        self.grow_slot(false, current, desired)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > 1_000_000 {
            return Ok(false);
        }
        self.grow_slot(true, current * TABLE_ELEMENT, desired * TABLE_ELEMENT)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        8
    }
}

impl Drop for InstanceMemory {
    fn drop(&mut self) {
        self.budget.release(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn budgets_nest_and_refuse_whole() {
        let node = MemoryBudget::root(100);
        let a = MemoryBudget::child(&node, Some(60));
        let b = MemoryBudget::child(&node, None);
        assert!(a.try_charge(50));
        assert!(!a.try_charge(20), "over a's own limit");
        assert!(b.try_charge(50));
        assert!(!b.try_charge(1), "over the node's");
        assert_eq!((a.used(), b.used(), node.used()), (50, 50, 100));
        a.release(50);
        assert!(b.try_charge(40));
        assert_eq!(node.used(), 90);
        assert_eq!(a.refused.load(Ordering::Relaxed), 1);
        b.force_charge(20);
        assert!(node.over() && !b.over() && !a.over());
    }

    #[test]
    fn instances_share_their_container_limit() {
        let node = MemoryBudget::root(1 << 30);
        let pod = MemoryBudget::child(&node, Some(32 << 20));
        let mut one = InstanceMemory::new(pod.clone(), 256 << 20);
        let mut two = InstanceMemory::new(pod.clone(), 256 << 20);
        assert!(one.memory_growing(0, 24 << 20, None).unwrap());
        let e = two.memory_growing(0, 24 << 20, None).unwrap_err();
        assert!(e.to_string().starts_with(OOM_TRAP), "{e}");
        assert!(two.refused.is_some());
        assert!(two.memory_growing(0, 4 << 20, None).unwrap());
        drop(one);
        assert_eq!(pod.used(), 4 << 20);
        assert!(two.memory_growing(4 << 20, 28 << 20, None).unwrap());
        assert_eq!(two.peak(), 28 << 20);
        drop(two);
        assert_eq!((pod.used(), node.used()), (0, 0));
        assert_eq!(pod.peak(), 28 << 20);
    }

    fn warm(node: &Arc<MemoryBudget>, keep: usize) -> WarmPools {
        WarmPools { memories: WarmSlots::new(node.clone(), keep), tables: WarmSlots::new(node.clone(), 64 << 10) }
    }

    #[test]
    fn warm_slots_charge_the_most_ever_live_at_the_largest_size() {
        let node = MemoryBudget::root(1 << 30);
        let w = WarmSlots::new(node.clone(), 4 << 20);
        assert!(w.enter(1 << 20) && w.enter(1 << 20));
        assert_eq!(w.charged(), 2 << 20, "two slots of 1 MiB");
        w.leave();
        assert!(w.enter(1 << 20), "a freed slot is reused: nothing more");
        assert_eq!(w.charged(), 2 << 20);
        assert!(w.grow(3 << 20));
        assert_eq!(w.charged(), 6 << 20, "any slot may now hold 3 MiB");
        assert!(w.grow(64 << 20));
        assert_eq!(w.charged(), 8 << 20, "capped at what the allocator keeps");
        w.leave();
        w.leave();
        assert_eq!(node.used(), 8 << 20, "freed slots stay charged: their pages stay resident");
        assert!(w.enter(1 << 20) && w.enter(1 << 20));
        assert_eq!(w.charged(), 8 << 20);
        assert!(w.enter(0));
        assert_eq!(w.charged(), 12 << 20, "a third slot");
    }

    #[test]
    fn warm_slots_refuse_whole_when_the_node_is_full() {
        let node = MemoryBudget::root(5 << 20);
        let w = WarmSlots::new(node.clone(), 4 << 20);
        assert!(w.enter(2 << 20) && w.enter(2 << 20));
        assert!(!w.enter(2 << 20), "a third slot of 2 MiB does not fit in 5 MiB");
        assert!(!w.grow(4 << 20), "nor two of 4 MiB");
        assert_eq!((w.charged(), node.used()), (4 << 20, 4 << 20));
        w.leave();
        assert!(w.enter(2 << 20), "a warm slot is free again");
        let off = WarmSlots::new(node.clone(), 0);
        assert!(off.enter(1 << 30) && off.charged() == 0, "nothing kept, nothing charged");
    }

    #[test]
    fn instances_account_their_slots_and_give_them_back() {
        let node = MemoryBudget::root(1 << 30);
        let pod = MemoryBudget::child(&node, Some(32 << 20));
        let pools = warm(&node, 4 << 20);
        let mut one = InstanceMemory::new(pod.clone(), 256 << 20).with_warm(WarmHold::new(pools.clone()));
        assert!(one.memory_growing(0, 1 << 20, None).unwrap());
        assert!(one.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert!(one.table_growing(0, 100, None).unwrap());
        assert_eq!(pools.memories.charged(), 2 << 20);
        assert_eq!(pools.tables.charged(), 100 * TABLE_ELEMENT);
        let hold = WarmHold::new(pools.clone());
        let mut two = InstanceMemory::new(pod.clone(), 256 << 20).with_warm(hold.clone());
        assert!(two.memory_growing(0, 1 << 20, None).unwrap());
        assert_eq!(pools.memories.charged(), 4 << 20, "two slots");
        drop(two);
        let mut three = InstanceMemory::new(pod.clone(), 256 << 20).with_warm(WarmHold::new(pools.clone()));
        assert!(three.memory_growing(0, 1 << 20, None).unwrap());
        assert_eq!(pools.memories.charged(), 6 << 20, "two's slot is not free while its owner holds it");
        drop((one, three, hold));
        assert_eq!(pod.used(), 0);
        assert_eq!(node.used(), (6 << 20) + 100 * TABLE_ELEMENT, "the warm pages stay on the node");
        let mut four = InstanceMemory::new(pod.clone(), 256 << 20).with_warm(WarmHold::new(pools.clone()));
        assert!(four.memory_growing(0, 1 << 20, None).unwrap());
        assert_eq!(pools.memories.charged(), 6 << 20, "a warm slot reused");
    }

    #[test]
    fn a_full_node_refuses_a_new_warm_slot_as_out_of_memory() {
        let node = MemoryBudget::root(6 << 20);
        let pod = MemoryBudget::child(&node, None);
        let pools = warm(&node, 4 << 20);
        let mut one = InstanceMemory::new(pod.clone(), 256 << 20).with_warm(WarmHold::new(pools.clone()));
        assert!(one.memory_growing(0, 2 << 20, None).unwrap());
        let mut two = InstanceMemory::new(pod.clone(), 256 << 20).with_warm(WarmHold::new(pools.clone()));
        let e = two.memory_growing(0, 1 << 20, None).unwrap_err();
        assert!(e.to_string().starts_with(OOM_TRAP), "{e}");
        assert_eq!(pod.used(), 2 << 20, "the refused growth is not held");
        drop(two);
        drop(one);
        assert_eq!((pod.used(), node.used()), (0, 2 << 20));
    }

    #[test]
    fn per_instance_slot_is_a_plain_failure() {
        let pod = MemoryBudget::root(1 << 30);
        let mut m = InstanceMemory::new(pod, 8 << 20);
        assert!(!m.memory_growing(0, 16 << 20, None).unwrap());
    }
}
