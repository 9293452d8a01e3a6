//! The Kubernetes API from inside the cluster, for controllers written as components.
//!
//! A pod finds the API server as Kubernetes pods do: the `kubernetes` Service
//! (`KUBERNETES_SERVICE_HOST`/`PORT`) and the token the node keeps in
//! `/var/run/secrets/kubernetes.io/serviceaccount/token` (read again for every request, so
//! renewals take effect). The node makes the TLS connection to the API server for the pod,
//! trusting only the cluster CA; what the token may do is RBAC's to decide.
//!
//! ```ignore
//! use wasmorch_sdk::kube::Client;
//! let api = Client::in_cluster()?;
//! let pods = api.list("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")?;
//! api.watch("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb", |event, pod| {
//!     wasmorch_sdk::log::info(&format!("{event} {}", pod["metadata"]["name"]));
//!     true // keep watching
//! })?;
//! ```

use crate::http::{SendError, send_with, stream_with};
use serde_json::Value;

/// Where the node keeps the pod's service-account files.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Why an API call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Not in a pod with a service-account token (or the environment is incomplete).
    NotInCluster(String),
    /// The request did not get an answer.
    Transport(String),
    /// The API server answered with a `Status`: its code, reason and message.
    Api { code: u16, reason: String, message: String },
    /// The answer was not the JSON expected.
    Decode(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotInCluster(why) => write!(f, "not in a cluster: {why}"),
            Error::Transport(e) => write!(f, "{e}"),
            Error::Api { code, reason, message } => write!(f, "{code} {reason}: {message}"),
            Error::Decode(e) => write!(f, "decoding the answer: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// A client of the API server the pod runs under.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token_file: String,
    namespace: String,
}

/// The `Status` of a failed call, as an [`Error`].
fn api_error(code: u16, body: &[u8]) -> Error {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let message = if v.is_object() { text("message") } else { String::from_utf8_lossy(body).into_owned() };
    Error::Api { code, reason: text("reason"), message }
}

impl Client {
    /// The client of the pod this component runs in.
    pub fn in_cluster() -> Result<Client, Error> {
        let var = |k: &str| std::env::var(k).map_err(|_| Error::NotInCluster(format!("{k} is not set")));
        let (host, port) = (var("KUBERNETES_SERVICE_HOST")?, var("KUBERNETES_SERVICE_PORT")?);
        let token_file = format!("{SERVICE_ACCOUNT_DIR}/token");
        let namespace = std::fs::read_to_string(format!("{SERVICE_ACCOUNT_DIR}/namespace"))
            .map_err(|e| Error::NotInCluster(format!("{SERVICE_ACCOUNT_DIR}/namespace: {e}")))?;
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        Ok(Client { base: format!("https://{host}:{port}"), token_file, namespace: namespace.trim().to_string() })
    }

    /// The namespace the pod runs in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn token(&self) -> Result<String, Error> {
        std::fs::read_to_string(&self.token_file)
            .map(|t| t.trim().to_string())
            .map_err(|e| Error::NotInCluster(format!("{}: {e}", self.token_file)))
    }

    /// One call: `path` is the API path with its query (`/api/v1/namespaces/ns/pods?limit=5`).
    pub fn request(&self, method: &str, path: &str, content_type: &str, body: Option<&Value>) -> Result<Value, Error> {
        let auth = format!("Bearer {}", self.token()?);
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let headers = [("authorization", auth.as_str()), ("accept", "application/json"), ("content-type", content_type)];
        let r = send_with(method, &format!("{}{path}", self.base), &headers, &bytes)
            .map_err(|e| Error::Transport(e.to_string()))?;
        if !(200..300).contains(&r.status) {
            return Err(api_error(r.status, &r.body));
        }
        serde_json::from_slice(&r.body).map_err(|e| Error::Decode(e.to_string()))
    }

    pub fn get(&self, path: &str) -> Result<Value, Error> {
        self.request("GET", path, "application/json", None)
    }

    /// A list; its objects are in `items`.
    pub fn list(&self, path: &str) -> Result<Value, Error> {
        self.get(path)
    }

    /// Create `obj` in the collection at `path`.
    pub fn create(&self, path: &str, obj: &Value) -> Result<Value, Error> {
        self.request("POST", path, "application/json", Some(obj))
    }

    /// A JSON merge patch (RFC 7386) of the object at `path`.
    pub fn patch(&self, path: &str, patch: &Value) -> Result<Value, Error> {
        self.request("PATCH", path, "application/merge-patch+json", Some(patch))
    }

    /// Server-side apply of `obj` at `path` by `manager` (creates it when missing).
    pub fn apply(&self, path: &str, obj: &Value, manager: &str) -> Result<Value, Error> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}fieldManager={manager}&force=true");
        self.request("PATCH", &path, "application/apply-patch+yaml", Some(obj))
    }

    pub fn delete(&self, path: &str) -> Result<Value, Error> {
        self.request("DELETE", path, "application/json", None)
    }

    /// Watch the collection at `path` (with its selectors): `on_event(type, object)` for each
    /// event (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`) until it returns false or
    /// the server ends the watch. Returns how it ended (`Ok` when the server closed it).
    pub fn watch(&self, path: &str, mut on_event: impl FnMut(&str, &Value) -> bool) -> Result<(), Error> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{sep}watch=true", self.base);
        let auth = format!("Bearer {}", self.token()?);
        let headers = [("authorization", auth.as_str()), ("accept", "application/json")];
        let mut buf: Vec<u8> = Vec::new();
        let mut failed: Option<Error> = None;
        let r = stream_with("GET", &url, &headers, b"", |chunk| {
            buf.extend_from_slice(chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let ev: Value = match serde_json::from_slice(&line) {
                    Ok(v) => v,
                    Err(e) => {
                        failed = Some(Error::Decode(e.to_string()));
                        return false;
                    }
                };
                let kind = ev.get("type").and_then(Value::as_str).unwrap_or("");
                let obj = ev.get("object").unwrap_or(&Value::Null);
                if !on_event(kind, obj) {
                    return false;
                }
            }
            true
        });
        match (r, failed) {
            (_, Some(e)) => Err(e),
            (Ok(_), None) => Ok(()),
            (Err(SendError::Status(code, body)), None) => Err(api_error(code, body.as_bytes())),
            (Err(e), None) => Err(Error::Transport(e.to_string())),
        }
    }
}
