//! The node's API client: kube-rs underneath, JSON in and out.

use futures::{AsyncBufReadExt, Stream, StreamExt, TryStreamExt};
use http::{Method, Request};
use serde_json::Value;
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
#[error("{method} {path}: {code} {message}")]
pub struct ApiError {
    pub method: String,
    pub path: String,
    /// HTTP status; 0 when the server could not be reached.
    pub code: u16,
    pub message: String,
}

/// What a client does when its server cannot be reached: given the client and the
/// generation that failed (see [`Client::generation`]), switch to another server.
pub type Unreachable = Arc<dyn Fn(&Client, u64) + Send + Sync>;

/// The node's API client. Cheap to clone; every clone follows [`Client::replace`] (a renewed
/// certificate, another server): requests after it use the new client, requests and watches
/// under way finish on the old one.
#[derive(Clone)]
pub struct Client {
    /// The kube-rs client and its generation (bumped by every replacement).
    current: Arc<RwLock<(kube::Client, u64)>>,
    unreachable: Arc<std::sync::OnceLock<Unreachable>>,
}

impl Client {
    pub fn new(c: kube::Client) -> Client {
        Client { current: Arc::new(RwLock::new((c, 0))), unreachable: Default::default() }
    }

    /// Call `f` whenever a request finds the server unreachable (set once).
    pub fn on_unreachable(&self, f: Unreachable) {
        let _ = self.unreachable.set(f);
    }

    /// The current kube-rs client (a std lock held only for the clone: never across awaits).
    pub fn kube(&self) -> kube::Client {
        self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// The current client and its generation.
    fn kube_gen(&self) -> (kube::Client, u64) {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many times the client was replaced.
    pub fn generation(&self) -> u64 {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Switch every clone to `c`.
    pub fn replace(&self, c: kube::Client) {
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        let generation = cur.1 + 1;
        *cur = (c, generation);
    }

    /// Switch to `c` unless another replacement came since generation `seen`.
    pub fn replace_if(&self, seen: u64, c: kube::Client) -> bool {
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        if cur.1 != seen {
            return false;
        }
        *cur = (c, seen + 1);
        true
    }

    fn unreachable(&self, generation: u64) {
        if let Some(f) = self.unreachable.get() {
            f(self, generation);
        }
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let reply = self.call(method, path, content_type, body).await?;
        Ok(serde_json::from_slice(&reply).unwrap_or(Value::Null))
    }

    /// [`Client::post`] whose answer is not wanted, only whether it succeeded: the reply is
    /// not parsed. A node starting thousands of pods posts their events.
    pub async fn send_post(&self, path: &str, body: &Value) -> Result<(), ApiError> {
        self.call(Method::POST, path, "application/json", Some(body)).await.map(drop)
    }

    /// [`Client::merge_patch`] whose answer (a whole pod, for a status write) is not parsed.
    pub async fn send_merge_patch(&self, path: &str, body: &Value) -> Result<(), ApiError> {
        self.call(Method::PATCH, path, "application/merge-patch+json", Some(body)).await.map(drop)
    }

    /// The reply's body of a 2xx answer; otherwise the error, with the `Status` message.
    async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<bytes::Bytes, ApiError> {
        let err =
            |code, message: String| ApiError { method: method.to_string(), path: path.to_string(), code, message };
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(kube::client::Body::from(bytes))
            .map_err(|e| err(0, e.to_string()))?;
        let (kube, generation) = self.kube_gen();
        let resp = match kube.send(req).await {
            Ok(r) => r,
            Err(e) => {
                // Never answered: the server is down or unreachable.
                self.unreachable(generation);
                return Err(err(0, e.to_string()));
            }
        };
        let code = resp.status().as_u16();
        let body = resp.into_body().collect_bytes().await.map_err(|e| err(0, e.to_string()))?;
        if (200..300).contains(&code) {
            return Ok(body);
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let message = v.get("message").and_then(Value::as_str).map(String::from);
        Err(err(code, message.unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())))
    }

    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.json(Method::GET, path, "application/json", None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.json(Method::POST, path, "application/json", Some(body)).await
    }

    pub async fn merge_patch(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.json(Method::PATCH, path, "application/merge-patch+json", Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ApiError> {
        self.json(Method::DELETE, path, "application/json", None).await
    }

    /// Watch events, one JSON value per line.
    pub async fn watch(&self, path: &str) -> Result<impl Stream<Item = Result<Value, ApiError>> + use<>, ApiError> {
        let p = path.to_string();
        let req = Request::builder().uri(path).body(Vec::new()).map_err(|e| ApiError {
            method: "GET".into(),
            path: p.clone(),
            code: 0,
            message: e.to_string(),
        })?;
        let (kube, generation) = self.kube_gen();
        let reader = kube.request_stream(req).await.map_err(|e| {
            if !matches!(e, kube::Error::Api(_)) {
                self.unreachable(generation);
            }
            ApiError { method: "GET".into(), path: p.clone(), code: 0, message: e.to_string() }
        })?;
        Ok(reader
            .lines()
            .map_err(move |e| ApiError { method: "GET".into(), path: p.clone(), code: 0, message: e.to_string() })
            .map(|l| {
                l.and_then(|l| {
                    serde_json::from_str(&l).map_err(|e| ApiError {
                        method: "GET".into(),
                        path: String::new(),
                        code: 0,
                        message: e.to_string(),
                    })
                })
            })
            .boxed())
    }
}
