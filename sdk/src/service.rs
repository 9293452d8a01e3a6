//! Calling another Service of the cluster by name. The node routes the request to a ready
//! replica (in process when one runs on the same node); no egress grant is needed.

use crate::http::{Response, SendError, send};

/// `method` `path` on Service `name` (`web`, `web.other-namespace`, or a full
/// `web.ns.svc.cluster.local`, optionally with `:port`; without a port a one-port Service is
/// reached on its port).
///
/// ```ignore
/// let r = wasmorch_sdk::service::call("backend", "GET", "/items", b"")?;
/// ```
pub fn call(name: &str, method: &str, path: &str, body: &[u8]) -> Result<Response, SendError> {
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    send(method, &format!("http://{name}{path}"), body)
}

/// `GET path` on Service `name`.
pub fn get(name: &str, path: &str) -> Result<Response, SendError> {
    call(name, "GET", path, b"")
}
