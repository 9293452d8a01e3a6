//! Running a process workload (`wasi:cli/run`) to its end.

use super::cgroup::Cgroup;
use super::memory::oom_message;
use super::{InstanceState, NetPolicy, Runtime};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use wasmtime_wasi::p2::bindings::CommandPre;

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// `wasi:cli/exit` or returning from `run`: the exit code.
    Code(i32),
    /// A trap (out of bounds, unreachable, out of memory…): the message.
    Trap(String),
    /// Stopped by the node.
    Killed,
    /// Ended for growing past its memory limit: the message.
    OomKilled(String),
}

impl Exit {
    /// A run that failed with `message`: `OOMKilled` when it grew past its memory limit
    /// (only that part of the message is kept), a trap otherwise.
    pub fn failed(message: String) -> Exit {
        match oom_message(&message) {
            Some(oom) => Exit::OomKilled(oom.to_string()),
            None => Exit::Trap(message),
        }
    }

    /// What the container status says of it.
    pub fn message(&self) -> String {
        match self {
            Exit::Trap(m) | Exit::OomKilled(m) => m.clone(),
            Exit::Code(_) | Exit::Killed => String::new(),
        }
    }

    /// Exit code as Kubernetes reports it (`137` for killed, `1`… for traps).
    pub fn code(&self) -> i32 {
        match self {
            Exit::Code(c) => *c,
            Exit::Trap(_) => 134,
            Exit::Killed | Exit::OomKilled(_) => 137,
        }
    }
    pub fn reason(&self) -> &'static str {
        match self {
            Exit::Code(0) => "Completed",
            Exit::Code(_) | Exit::Trap(_) => "Error",
            Exit::Killed => "Killed",
            Exit::OomKilled(_) => "OOMKilled",
        }
    }
}

pub struct Process {
    pub rt: Arc<Runtime>,
    pub pre: CommandPre<InstanceState>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub cgroup: Arc<Cgroup>,
    pub net: Arc<NetPolicy>,
    pub mounts: Arc<[super::Mount]>,
    pub cluster: Option<Arc<dyn super::Cluster>>,
    pub log: Option<super::output::LogSink>,
}

impl Process {
    pub async fn run(&self, stop: CancellationToken) -> Exit {
        self.run_with(None, stop).await
    }

    /// Run with these standard streams instead of the log (an exec session's).
    pub async fn run_with(&self, stdio: Option<super::Stdio>, stop: CancellationToken) -> Exit {
        let fs = match super::Preopens::open(&self.mounts) {
            Ok(fs) => fs,
            Err(e) => return Exit::Trap(format!("{e:#}")),
        };
        let wasi = super::wasi_ctx(
            &self.env,
            &self.args,
            self.log.as_ref(),
            stdio,
            &self.net,
            &fs,
            self.cluster.as_ref(),
            &self.rt.ports,
        );
        let mut store = self.rt.store(wasi, &self.cgroup, self.net.clone(), self.cluster.clone());
        let pre = self.pre.clone();
        let run = self.cgroup.run(async move {
            let cmd = pre.instantiate_async(&mut store).await?;
            cmd.wasi_cli_run().call_run(&mut store).await
        });
        tokio::select! {
            r = run => match r {
                Ok(Ok(Ok(()))) => Exit::Code(0),
                Ok(Ok(Err(()))) => Exit::Code(1),
                Ok(Err(e)) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    Some(x) => Exit::Code(x.0),
                    None => Exit::failed(format!("{e:#}")),
                },
                Err(oom) => Exit::OomKilled(oom),
            },
            _ = stop.cancelled() => Exit::Killed,
        }
    }
}
