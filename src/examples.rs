//! The example components built into the binary (by `build.rs`), served by every node as
//! `wasmorch.local/NAME:1.0` — hello-http, sdk-demo, tcp-echo, batch-job, pod-roster, toolbox — so that a fresh
//! cluster runs `manifests/` with no registry and no guest build.

include!(concat!(env!("OUT_DIR"), "/examples.rs"));

/// The built-in images a node serves.
pub fn builtins() -> wasmorch_host::artifact::Builtins {
    wasmorch_host::artifact::Builtins::new(EXAMPLES)
}
