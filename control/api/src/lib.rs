//! The wasmorch API: everything about Kubernetes-shaped objects that needs no I/O.
//!
//! - [`resources`]: the registry of kinds the server serves (group, version, plural, scope).
//! - [`error`]: [`ApiError`], rendered as a Kubernetes `Status` in exactly one place.
//! - [`object`]: small accessors over `serde_json::Value` objects.
//! - [`selector`]: label and field selectors (parse + match).
//! - [`validation`]: schema (typed, via `k8s-openapi`) and semantic validation, naming field paths.
//! - [`table`]: server-side printing (`meta.k8s.io/v1` Table) with kubectl's columns.
//! - [`decode`]: JSON / YAML documents with size and depth limits.
//! - [`join`]: join tokens, bootstrap-token Secrets, node identities.
//!
//! Objects travel as `serde_json::Value` so that unknown-but-valid fields survive a round
//! trip; typed `k8s-openapi` structs are used to validate and to read well-known fields.

pub mod convert;
pub mod custom;
pub mod decode;
pub mod defaults;
pub mod disruption;
pub mod error;
pub mod gateway;
pub mod hpa;
pub mod idle;
pub mod ingress;
pub mod ipam;
pub mod join;
pub mod managed;
pub mod netpol;
pub mod object;
pub mod openapi;
pub mod protobuf;
pub mod quantity;
pub mod quota;
pub mod rbac;
pub mod resources;
pub mod selector;
pub mod serviceaccount;
pub mod services;
pub mod serving;
pub mod smp;
pub mod table;
pub mod validation;

pub use error::ApiError;
pub use resources::{Resource, ResourceKind};
pub use serving::{MAX_CONCURRENCY_ANNOTATION, MAX_QUEUE_ANNOTATION, REQUEST_TIMEOUT_ANNOTATION};

/// The Kubernetes version this server speaks (discovery, `/version`).
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "37";

/// Node annotation naming the directory that holds the node's local-path volumes.
pub const STORAGE_DIR_ANNOTATION: &str = "wasmorch.io/storage-dir";

/// On a Node: how it reaches other nodes' pods (`n2=direct,n3=relay`), kept by the node.
pub const PEER_ROUTES_ANNOTATION: &str = "wasmorch.io/peer-routes";
/// On what one node sends another's gateway (and the relay passes on): the address the
/// connection comes from, a pod or an outside client, for the receiver's NetworkPolicy check.
pub const SOURCE_HEADER: &str = "x-wasmorch-source";

/// This machine's architecture as Kubernetes names it (`amd64`, `arm64`, …): node labels,
/// node info and `/version` all use it.
pub fn kube_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
