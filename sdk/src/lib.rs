//! # wasmorch-sdk
//!
//! Write workloads for wasmorch in plain Rust, built with `cargo build --target wasm32-wasip2`
//! (no `cargo component`).
//!
//! ```ignore
//! use wasmorch_sdk::http::{Request, Response};
//!
//! struct App;
//! impl wasmorch_sdk::http::Handler for App {
//!     fn handle(req: Request) -> Response {
//!         wasmorch_sdk::log::info(&format!("{} {}", req.method, req.path));
//!         Response::text(200, format!("hello from {}\n", wasmorch_sdk::config::get("POD_NAME").unwrap_or_default()))
//!     }
//! }
//! wasmorch_sdk::http_component!(App);
//! ```
//!
//! - [`http`]: the request/response types, the [`http::Handler`] trait, [`http_component!`] to
//!   export it as `wasi:http/incoming-handler`, and [`http::send`] for outbound requests
//!   (`wasi:http/outgoing-handler`; the node decides which destinations are allowed).
//! - [`config`]: configuration from the environment the pod spec sets.
//! - [`log`]: structured log lines on stderr, collected by the node (`wasmorch logs`).
//! - [`service`]: call another Service of the cluster by name.
//! - [`kube`]: the Kubernetes API from inside the cluster (the pod's service-account token):
//!   get, list, create, patch, apply, delete, watch — for controllers written as components.

pub mod config;
pub mod http;
pub mod kube;
pub mod log;
pub mod service;

#[doc(hidden)]
pub use wasip2;

/// Export a [`http::Handler`] as the component's `wasi:http/incoming-handler`.
#[macro_export]
macro_rules! http_component {
    ($handler:ty) => {
        struct __WasmorchHttpExport;
        impl $crate::wasip2::exports::http::incoming_handler::Guest for __WasmorchHttpExport {
            fn handle(request: $crate::wasip2::http::types::IncomingRequest, out: $crate::wasip2::http::types::ResponseOutparam) {
                $crate::http::__serve::<$handler>(request, out)
            }
        }
        $crate::wasip2::http::proxy::export!(__WasmorchHttpExport);
    };
}
