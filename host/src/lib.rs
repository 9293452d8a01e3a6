//! wasmorch's node host: the kubelet of wasmorch.
//!
//! - [`agent`]: registers the Node, renews its Lease, watches bound pods, runs them.
//! - [`pod`]: one pod's life: pull, load, run containers, restart with back-off, report status.
//! - [`runtime`]: one wasmtime engine per node, component cache, per-instance stores.
//! - [`artifact`]: fetching components named by `containers[].image`.
//! - [`client`]: the node's JSON API client.
//! - [`endpoint`]: the node's TLS endpoint: logs and stats for the API server, the gateway for nodes.
//! - [`logs`]: container logs (proxied by the API server's `pods/log`).
//! - [`proxy`]: Services (kube-proxy's job) and the node-to-node gateway.
//! - [`reflector`]: the one list+watch loop everything on the node follows with.

pub mod agent;
pub mod artifact;
pub mod client;
pub mod collect;
pub mod endpoint;
pub mod logs;
pub mod membership;
pub mod pod;
pub mod proxy;
pub mod reflector;
pub mod runtime;
pub mod stats;
pub mod streams;
pub mod sys;
