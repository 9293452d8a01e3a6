//! How many requests an HTTP container serves at once, and the queue in front of it.
//!
//! The limit is the annotation `wasmorch.io/max-concurrency` when the pod has one, otherwise
//! the container's memory limit over the footprint of one instance (measured: what
//! instantiation takes, then the largest recent peak; see [`Footprint`]), at
//! least 1. Requests beyond it wait in a FIFO queue of `wasmorch.io/max-queue` places
//! (default: 10 × the limit); a request that finds the queue full is answered 503 with
//! `Retry-After` at once, and one that waits longer than the request deadline gets 503 too.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How many requests of an HTTP container may run at once: its memory limit over the
/// footprint of one instance, at least 1 and at most `max`.
pub fn concurrency_for(limit: usize, footprint: usize, max: u32) -> u32 {
    let per = footprint.max(64 << 10);
    ((limit / per).min(max as usize) as u32).max(1)
}

/// The footprint of one instance: the largest peak of recent instances (two windows of
/// `WINDOW` requests, so one huge request stops counting after a while), never less than
/// what instantiation alone takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    pub initial: usize,
    current: usize,
    previous: usize,
    seen: u32,
}

impl Footprint {
    pub const WINDOW: u32 = 128;

    pub fn new(initial: usize) -> Footprint {
        Footprint { initial, ..Default::default() }
    }

    pub fn observe(&mut self, peak: usize) {
        self.current = self.current.max(peak);
        self.seen += 1;
        if self.seen >= Self::WINDOW {
            self.previous = self.current;
            self.current = 0;
            self.seen = 0;
        }
    }

    pub fn bytes(&self) -> usize {
        self.initial.max(self.current).max(self.previous)
    }
}

/// Queue places per allowed request when the pod does not say.
pub const QUEUE_FACTOR: u32 = 10;

/// What a container's admission is configured with.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionSpec {
    /// `wasmorch.io/max-concurrency`.
    pub fixed: Option<u32>,
    /// `wasmorch.io/max-queue`.
    pub queue: Option<u32>,
    /// The container's memory limit in bytes.
    pub memory: usize,
    /// At most this many at once whatever the footprint (the node's instance slots).
    pub ceiling: u32,
}

/// The decision for an arriving request. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Enter,
    Wait,
    Refuse,
}

pub fn decide(in_flight: u32, queued: u32, limit: u32, queue_max: u32) -> Decision {
    if in_flight < limit && queued == 0 {
        Decision::Enter
    } else if queued < queue_max {
        Decision::Wait
    } else {
        Decision::Refuse
    }
}

#[derive(Debug)]
struct State {
    in_flight: u32,
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
    footprint: Footprint,
    next: u64,
}

/// A container's admission: in flight, queued, and the limit.
#[derive(Debug)]
pub struct Admission {
    spec: AdmissionSpec,
    st: Mutex<State>,
    /// Requests refused because the queue was full.
    pub refused: AtomicU64,
}

/// What `describe` and the stats endpoint show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionStats {
    pub limit: u32,
    pub in_flight: u32,
    pub queued: u32,
    pub queue_limit: u32,
    pub refused: u64,
    pub footprint_bytes: u64,
}

/// Held while a request is in flight; lets the next one in when dropped.
pub struct Ticket {
    adm: Arc<Admission>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.adm.leave();
    }
}

impl Admission {
    pub fn new(spec: AdmissionSpec, initial_footprint: usize) -> Admission {
        Admission {
            spec,
            st: Mutex::new(State {
                in_flight: 0,
                waiting: VecDeque::new(),
                footprint: Footprint::new(initial_footprint),
                next: 0,
            }),
            refused: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn limit_of(&self, f: &Footprint) -> u32 {
        match self.spec.fixed {
            Some(n) => n.clamp(1, self.spec.ceiling.max(1)),
            None => concurrency_for(self.spec.memory, f.bytes(), self.spec.ceiling),
        }
    }

    fn queue_of(&self, limit: u32) -> u32 {
        self.spec.queue.unwrap_or(limit.saturating_mul(QUEUE_FACTOR))
    }

    pub fn stats(&self) -> AdmissionStats {
        let st = self.lock();
        let limit = self.limit_of(&st.footprint);
        AdmissionStats {
            limit,
            in_flight: st.in_flight,
            queued: st.waiting.len() as u32,
            queue_limit: self.queue_of(limit),
            refused: self.refused.load(Ordering::Relaxed),
            footprint_bytes: st.footprint.bytes() as u64,
        }
    }

    /// Whether a new request would have to wait.
    pub fn is_full(&self) -> bool {
        let st = self.lock();
        st.in_flight >= self.limit_of(&st.footprint) || !st.waiting.is_empty()
    }

    /// One instance ended having held `peak` bytes.
    pub fn observe(&self, peak: usize) {
        self.lock().footprint.observe(peak);
    }

    /// Enter, waiting in the queue if need be; `None` when the queue is full or the wait
    /// outlasts `deadline`.
    pub async fn enter(self: &Arc<Self>, deadline: tokio::time::Instant) -> Option<Ticket> {
        let (id, rx) = {
            let mut st = self.lock();
            let limit = self.limit_of(&st.footprint);
            match decide(st.in_flight, st.waiting.len() as u32, limit, self.queue_of(limit)) {
                Decision::Enter => {
                    st.in_flight += 1;
                    return Some(Ticket { adm: self.clone() });
                }
                Decision::Refuse => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Decision::Wait => {
                    let (tx, rx) = oneshot::channel();
                    let id = st.next;
                    st.next += 1;
                    st.waiting.push_back((id, tx));
                    (id, rx)
                }
            }
        };
        // A place handed over is counted in `in_flight` by `leave` before it sends.
        let waited = tokio::time::timeout_at(deadline, rx).await;
        if let Ok(Ok(())) = waited {
            return Some(Ticket { adm: self.clone() });
        }
        let mut st = self.lock();
        let before = st.waiting.len();
        st.waiting.retain(|(i, _)| *i != id);
        if st.waiting.len() == before {
            // Handed a place as the deadline passed: give it on.
            drop(st);
            self.leave();
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        None
    }

    fn leave(&self) {
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        let limit = self.limit_of(&st.footprint);
        while st.in_flight < limit {
            let Some((_, tx)) = st.waiting.pop_front() else { break };
            st.in_flight += 1;
            if tx.send(()).is_err() {
                // That waiter is gone (its request was cancelled).
                st.in_flight -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(fixed: Option<u32>, queue: Option<u32>) -> AdmissionSpec {
        AdmissionSpec { fixed, queue, memory: 32 << 20, ceiling: 500 }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(0, 0, 1, 10), Decision::Enter);
        assert_eq!(decide(1, 0, 1, 10), Decision::Wait);
        // Nobody jumps the queue.
        assert_eq!(decide(0, 1, 1, 10), Decision::Wait);
        assert_eq!(decide(1, 10, 1, 10), Decision::Refuse);
        assert_eq!(decide(1, 0, 1, 0), Decision::Refuse);
    }

    #[test]
    fn limit_follows_the_footprint_unless_fixed() {
        let a = Admission::new(spec(None, None), 2 << 20);
        assert_eq!(a.stats().limit, 16);
        assert_eq!(a.stats().queue_limit, 160);
        a.observe(24 << 20);
        assert_eq!(a.stats().limit, 1);
        let b = Admission::new(spec(Some(3), Some(2)), 2 << 20);
        b.observe(24 << 20);
        assert_eq!((b.stats().limit, b.stats().queue_limit), (3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn queue_orders_and_refuses() {
        let a = Arc::new(Admission::new(spec(Some(1), Some(1)), 1 << 20));
        let far = tokio::time::Instant::now() + Duration::from_secs(30);
        let t1 = a.enter(far).await.expect("first enters");
        // The second waits, the third finds the queue full.
        let second = a.enter(far);
        tokio::pin!(second);
        assert!(futures::poll!(second.as_mut()).is_pending());
        assert_eq!(a.stats().queued, 1);
        assert!(a.enter(far).await.is_none());
        assert_eq!(a.refused.load(Ordering::Relaxed), 1);
        drop(t1);
        let t2 = second.await.expect("second gets the place");
        assert_eq!(a.stats().in_flight, 1);
        // A waiter whose deadline passes is refused and leaves the queue.
        let soon = tokio::time::Instant::now() + Duration::from_millis(100);
        assert!(a.enter(soon).await.is_none());
        assert_eq!(a.stats().queued, 0);
        drop(t2);
        assert_eq!(a.stats().in_flight, 0);
    }

    #[test]
    fn concurrency_from_footprint() {
        assert_eq!(concurrency_for(32 << 20, 2 << 20, 500), 16);
        assert_eq!(concurrency_for(32 << 20, 25 << 20, 500), 1);
        assert_eq!(concurrency_for(32 << 20, 64 << 20, 500), 1);
        assert_eq!(concurrency_for(1 << 30, 1 << 20, 100), 100);
        assert_eq!(concurrency_for(1 << 20, 0, 500), 16);
    }

    #[test]
    fn footprint_forgets_old_peaks() {
        let mut f = Footprint::new(1 << 20);
        assert_eq!(f.bytes(), 1 << 20);
        f.observe(24 << 20);
        assert_eq!(f.bytes(), 24 << 20);
        for _ in 0..Footprint::WINDOW {
            f.observe(2 << 20);
        }
        // Still in the previous window.
        assert_eq!(f.bytes(), 24 << 20);
        for _ in 0..Footprint::WINDOW {
            f.observe(2 << 20);
        }
        assert_eq!(f.bytes(), 2 << 20);
    }
}
