//! wasmorch's node host: the kubelet of wasmorch.
//!
//! - [`agent`]: registers the Node, renews its Lease, watches bound pods, runs them.
//! - [`pod`]: one pod's life: pull, load, run containers, restart with back-off, report status.
//! - [`runtime`]: one wasmtime engine per node, component cache, per-instance stores.
//! - [`artifact`]: fetching components named by `containers[].image`.
//! - [`client`]: the node's JSON API client.
//! - [`logs`]: the node's log endpoint (proxied by the API server's `pods/log`).

pub mod agent;
pub mod artifact;
pub mod client;
pub mod logs;
pub mod membership;
pub mod pod;
pub mod proxy;
pub mod runtime;
pub mod stats;
