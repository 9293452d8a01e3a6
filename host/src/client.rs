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

/// The node's API client. Cheap to clone; every clone follows [`Client::replace`] (a renewed
/// certificate): requests after it use the new client, requests and watches under way finish
/// on the old one.
#[derive(Clone)]
pub struct Client(Arc<RwLock<kube::Client>>);

impl Client {
    pub fn new(c: kube::Client) -> Client {
        Client(Arc::new(RwLock::new(c)))
    }

    /// The current kube-rs client (a std lock held only for the clone: never across awaits).
    pub fn kube(&self) -> kube::Client {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Switch every clone to `c`.
    pub fn replace(&self, c: kube::Client) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = c;
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
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
        let resp = self.kube().send(req).await.map_err(|e| err(0, e.to_string()))?;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect_bytes().await.map_err(|e| err(0, e.to_string()))?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if (200..300).contains(&code) {
            Ok(v)
        } else {
            Err(err(
                code,
                v["message"].as_str().map(String::from).unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned()),
            ))
        }
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
        let reader = self.kube().request_stream(req).await.map_err(|e| ApiError {
            method: "GET".into(),
            path: p.clone(),
            code: 0,
            message: e.to_string(),
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
