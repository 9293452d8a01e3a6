//! Reconcile loops run by the control plane. Each observes through the API's watch, decides
//! in a pure function, acts through [`Api`](crate::apiserver::api::Api), and requeues.

pub mod namespace;
pub mod runtime;
