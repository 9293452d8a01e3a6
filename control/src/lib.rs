//! wasmorch's control plane: the store, the API server and the controllers.
//!
//! - [`store`]: redb state store (group commit, revisions, history, watch, backup).
//! - [`apiserver`]: the Kubernetes-compatible API over HTTPS.
//! - [`controllers`]: reconcile loops that run inside the control plane.
//! - [`pki`]: cluster CA, certificates, tokens.
//! - [`membership`]: join tokens and node certificates.
//! - [`server`]: wiring: `run` starts everything and stops it on a cancellation token.

pub mod apiserver;
pub mod bootstrap;
pub mod controllers;
pub mod jwt;
pub mod membership;
pub mod pki;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod telemetry;
