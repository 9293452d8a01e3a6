//! One container's resources, as a cgroup holds them: its CPU account ([`super::cpu`]), its
//! memory budget ([`super::memory`]) with the host memory its instances cause
//! ([`super::alloc`]), and, for HTTP containers, its admission queue ([`super::admission`]).
//! Every instance future runs under [`Cgroup::run`], the one place where these are enforced.

use super::alloc::HostAccount;
use super::cpu::{Admit, CpuGroup, Waiter, thread_cpu};
use super::memory::{MemoryBudget, OOM_TRAP};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

#[derive(Debug)]
pub struct Cgroup {
    pub cpu: CpuGroup,
    pub memory: Arc<MemoryBudget>,
    host: HostAccount,
    /// Host bytes last charged to `memory`.
    host_charged: AtomicUsize,
}

impl Cgroup {
    pub fn new(cpu: CpuGroup, memory: Arc<MemoryBudget>) -> Arc<Cgroup> {
        Arc::new(Cgroup { cpu, memory, host: HostAccount::new(), host_charged: AtomicUsize::new(0) })
    }

    /// Host memory its instances hold now.
    pub fn host_bytes(&self) -> usize {
        self.host.bytes()
    }

    /// Bring the memory budget up to date with the host account; whether the container is
    /// now over its limit.
    fn sync_host(&self) -> bool {
        let now = self.host.bytes();
        let before = self.host_charged.swap(now, Ordering::AcqRel);
        if now > before {
            self.memory.force_charge(now - before);
        } else if before > now {
            self.memory.release(before - now);
        }
        self.memory.over()
    }

    /// Run `fut` as an instance of this container: its polls are scheduled and charged by
    /// the node, its host allocations counted; it ends early with an `OOMKilled` message
    /// once the container is over its memory limit.
    pub fn run<F: Future>(self: &Arc<Self>, fut: F) -> Governed<F> {
        Governed { fut: Some(Box::pin(fut)), group: self.clone(), waiter: None, sleep: None }
    }
}

impl Cgroup {
    /// Run `fut` (host work on this container's behalf: connections to its own port) with
    /// its CPU time charged to the container, without a run slot: like a cgroup, the
    /// container pays for all the work it causes. (A request's own context is made under
    /// [`Cgroup::run`], with its instance.)
    pub fn charged<F: Future>(self: &Arc<Self>, fut: F) -> Charged<F> {
        Charged { fut: Box::pin(fut), group: self.clone() }
    }
}

/// A future whose CPU time is charged to a container (see [`Cgroup::charged`]).
pub struct Charged<F> {
    fut: Pin<Box<F>>,
    group: Arc<Cgroup>,
}

thread_local! {
    /// CPU time instance polls ([`Governed`]) on this thread have charged to their containers:
    /// an instance may run inside a connection's [`Charged`] poll, which charges only the
    /// rest of its time.
    static GOVERNED_CPU: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

impl<F: Future> Future for Charged<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = thread_cpu();
        let governed = GOVERNED_CPU.get();
        let r = self.fut.as_mut().poll(cx);
        let inner = GOVERNED_CPU.get().saturating_sub(governed);
        self.group.cpu.charge(thread_cpu().saturating_sub(start).saturating_sub(inner));
        r
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.memory.release(self.host_charged.load(Ordering::Acquire));
    }
}

/// An instance future under its container's limits.
pub struct Governed<F> {
    fut: Option<Pin<Box<F>>>,
    group: Arc<Cgroup>,
    waiter: Option<Arc<Waiter>>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F: Future> Future for Governed<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(fut) = this.fut.as_mut() else { return Poll::Ready(Err("polled after completion".into())) };
        loop {
            if let Some(s) = this.sleep.as_mut() {
                if s.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
            let waiter = this.waiter.get_or_insert_with(Default::default);
            waiter.set_waker(cx.waker());
            match this.group.cpu.acquire(waiter) {
                Admit::Run => break,
                Admit::Queued => return Poll::Pending,
                Admit::Throttled(until) => this.sleep = Some(Box::pin(tokio::time::sleep_until(until.into()))),
            }
        }
        let start = thread_cpu();
        let r = {
            let _counted = this.group.host.enter();
            fut.as_mut().poll(cx)
        };
        let used = thread_cpu().saturating_sub(start);
        this.group.cpu.release(used);
        GOVERNED_CPU.set(GOVERNED_CPU.get() + used);
        if this.group.sync_host() && r.is_pending() {
            // Drop the instance (and what it holds) before answering.
            this.fut = None;
            this.group.sync_host();
            let m = &this.group.memory;
            return Poll::Ready(Err(format!(
                "{OOM_TRAP}: the container's host memory and instances exceed its memory limit ({} MiB)",
                m.limit() >> 20
            )));
        }
        match r {
            Poll::Ready(v) => {
                this.fut = None;
                Poll::Ready(Ok(v))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> Drop for Governed<F> {
    fn drop(&mut self) {
        // The instance's own drop frees host memory counted to the container.
        if let Some(f) = self.fut.take() {
            let _counted = self.group.host.enter();
            drop(f);
        }
        if let Some(w) = self.waiter.take() {
            self.group.cpu.abandon(&w);
        }
        self.group.sync_host();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cpu::{CpuSpec, NodeCpu};
    use crate::runtime::memory::MemoryBudget;

    /// Spin until this thread has used `d` of CPU.
    fn burn(d: Duration) {
        let start = thread_cpu();
        while thread_cpu().saturating_sub(start) < d {
            std::hint::black_box(0u64);
        }
    }

    #[tokio::test]
    async fn an_instance_run_inside_a_charged_connection_is_charged_once() {
        let node = NodeCpu::new(2, 2000);
        let g = Cgroup::new(node.group(CpuSpec { limit_millis: None, request_millis: 0 }), MemoryBudget::root(1 << 30));
        let used = |g: &Arc<Cgroup>| g.cpu.usage().total;
        let instance = g.run(async { burn(Duration::from_millis(40)) });
        let connection = g.charged(async move {
            burn(Duration::from_millis(10));
            instance.await.unwrap();
        });
        let cpu = thread_cpu();
        connection.await;
        let spent = thread_cpu().saturating_sub(cpu);
        let charged = used(&g);
        assert!(charged >= Duration::from_millis(50), "{charged:?}");
        assert!(charged <= spent, "charged {charged:?} for {spent:?} of CPU: counted twice");
    }
}
