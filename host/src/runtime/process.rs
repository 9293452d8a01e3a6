//! Running a process workload (`wasi:cli/run`) to its end.

use super::{InstanceState, Limits, NetPolicy, Runtime};
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
}

impl Exit {
    /// Exit code as Kubernetes reports it (`137` for killed, `1`… for traps).
    pub fn code(&self) -> i32 {
        match self {
            Exit::Code(c) => *c,
            Exit::Trap(_) => 134,
            Exit::Killed => 137,
        }
    }
    pub fn reason(&self) -> &'static str {
        match self {
            Exit::Code(0) => "Completed",
            Exit::Code(_) | Exit::Trap(_) => "Error",
            Exit::Killed => "Killed",
        }
    }
}

pub struct Process {
    pub rt: Arc<Runtime>,
    pub pre: CommandPre<InstanceState>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub limits: Limits,
    pub net: Arc<NetPolicy>,
    pub mounts: Arc<[crate::pod::volumes::Mount]>,
    pub cluster: Option<Arc<crate::proxy::ClusterView>>,
    pub log: Option<super::output::LogSink>,
}

impl Process {
    pub async fn run(&self, stop: CancellationToken) -> Exit {
        let wasi = match super::wasi_ctx(
            &self.env,
            &self.args,
            self.log.as_ref(),
            &self.net,
            &self.mounts,
            self.cluster.as_ref(),
        ) {
            Ok(w) => w,
            Err(e) => return Exit::Trap(format!("{e:#}")),
        };
        let mut store = self.rt.store(wasi, self.limits, self.net.clone(), self.cluster.clone());
        let run = async {
            let cmd = self.pre.instantiate_async(&mut store).await?;
            cmd.wasi_cli_run().call_run(&mut store).await
        };
        tokio::select! {
            r = run => match r {
                Ok(Ok(())) => Exit::Code(0),
                Ok(Err(())) => Exit::Code(1),
                Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    Some(x) => Exit::Code(x.0),
                    None => Exit::Trap(format!("{e:#}")),
                },
            },
            _ = stop.cancelled() => Exit::Killed,
        }
    }
}
