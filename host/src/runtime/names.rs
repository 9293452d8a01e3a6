//! `wasi:sockets/ip-name-lookup` with the cluster's names: `NAME`, `NAME.NS`, `NAME.NS.svc`,
//! `NAME.NS.svc.cluster.local` resolve to the Service's cluster address (a headless
//! Service: every ready pod address), with no egress grant needed, as cluster DNS would
//! answer a socket client (a Redis or MQTT client) in Kubernetes. Other names are looked up
//! as before, and only for a pod that `wasmorch.io/egress` lets leave the cluster. This
//! shadows wasmtime-wasi's implementation in the linker. A cluster answer is a
//! [`ClusterAnswer`] in the instance's resource table, under the handle type of
//! wasmtime-wasi's stream (whose constructor is private): each method tells the two apart
//! by what the table holds, and hands wasmtime-wasi its own.

use super::state::{EgressHooks, InstanceState};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{
    self, Host, HostResolveAddressStream, ResolveAddressStream,
};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, Network};
use wasmtime_wasi::p2::{DynPollable, SocketError};
use wasmtime_wasi::sockets::WasiSocketsCtxView;

/// The addresses a cluster name stands for, handed out one by one.
pub struct ClusterAnswer(std::collections::VecDeque<std::net::IpAddr>);

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for ClusterAnswer {
    async fn ready(&mut self) {}
}

pub struct Names<'a> {
    sockets: WasiSocketsCtxView<'a>,
    hooks: &'a EgressHooks,
}

struct NamesData;

impl wasmtime::component::HasData for NamesData {
    type Data<'a> = Names<'a>;
}

fn names(s: &mut InstanceState) -> Names<'_> {
    Names { sockets: WasiSocketsCtxView { ctx: s.wasi.sockets(), table: &mut s.table }, hooks: &s.hooks }
}

/// Replace wasmtime-wasi's name lookup in `linker` (added before) with the cluster-aware one.
pub fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let r = ip_name_lookup::add_to_linker::<InstanceState, NamesData>(linker, names);
    linker.allow_shadowing(false);
    r.map_err(Into::into)
}

impl Host for Names<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveAddressStream>, SocketError> {
        let literal = name.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok();
        match self.hooks.cluster.as_ref().and_then(|c| c.resolve(&name)) {
            Some(addrs) => {
                self.sockets.table.get(&network)?;
                let answer = self.sockets.table.push(ClusterAnswer(addrs.into()))?;
                Ok(Resource::new_own(answer.rep()))
            }
            None if literal || self.hooks.net.has_egress() => self.sockets.resolve_addresses(network, name),
            // Outside the cluster without a grant: no lookup (as before).
            None => Err(ErrorCode::PermanentResolverFailure.into()),
        }
    }
}

impl Names<'_> {
    /// The cluster answer `stream` names, if it is one (else it is wasmtime-wasi's).
    fn cluster_answer(&mut self, stream: &Resource<ResolveAddressStream>) -> Option<&mut ClusterAnswer> {
        self.sockets.table.get_any_mut(stream.rep()).ok()?.downcast_mut()
    }
}

impl HostResolveAddressStream for Names<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        if let Some(answer) = self.cluster_answer(&stream) {
            return Ok(answer.0.pop_front().map(IpAddress::from));
        }
        self.sockets.resolve_next_address(stream)
    }

    fn subscribe(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<Resource<DynPollable>> {
        if self.cluster_answer(&stream).is_some() {
            let answer = Resource::<ClusterAnswer>::new_borrow(stream.rep());
            return wasmtime_wasi::p2::subscribe(self.sockets.table, answer);
        }
        HostResolveAddressStream::subscribe(&mut self.sockets, stream)
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        if self.cluster_answer(&stream).is_some() {
            self.sockets.table.delete(Resource::<ClusterAnswer>::new_own(stream.rep()))?;
            return Ok(());
        }
        HostResolveAddressStream::drop(&mut self.sockets, stream)
    }
}

/// Errors convert as wasmtime-wasi's own do (its `network` host does the work).
impl wasmtime_wasi::p2::bindings::sockets::network::Host for Names<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        wasmtime_wasi::p2::bindings::sockets::network::Host::convert_error_code(&mut self.sockets, error)
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime_wasi::p2::bindings::sockets::network::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        wasmtime_wasi::p2::bindings::sockets::network::Host::network_error_code(&mut self.sockets, err)
    }
}

impl wasmtime_wasi::p2::bindings::sockets::network::HostNetwork for Names<'_> {
    fn drop(&mut self, network: Resource<Network>) -> wasmtime::Result<()> {
        wasmtime_wasi::p2::bindings::sockets::network::HostNetwork::drop(&mut self.sockets, network)
    }
}
