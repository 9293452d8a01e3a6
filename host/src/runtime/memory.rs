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
}

impl InstanceMemory {
    pub fn new(budget: Arc<MemoryBudget>, max_memory: usize) -> InstanceMemory {
        InstanceMemory { budget, max_memory, held: 0, peak: 0, refused: None }
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

impl wasmtime::ResourceLimiter for InstanceMemory {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            // Beyond the node's per-instance slot: a plain failed grow, as wasm defines it.
            return Ok(false);
        }
        self.grow(current, desired, "linear memory")
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > 1_000_000 {
            return Ok(false);
        }
        self.grow(current * TABLE_ELEMENT, desired * TABLE_ELEMENT, "a table")
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

    #[test]
    fn per_instance_slot_is_a_plain_failure() {
        let pod = MemoryBudget::root(1 << 30);
        let mut m = InstanceMemory::new(pod, 8 << 20);
        assert!(!m.memory_growing(0, 16 << 20, None).unwrap());
    }
}
