//! The in-process API harness the control-plane tests share: the router as a tower
//! service, requests as the admin or as any identity.

#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmorch_control::apiserver::api::Api;
use wasmorch_control::apiserver::{self, ServerState};
use wasmorch_control::pki::{Identity, Tokens};
use wasmorch_control::store::Store;

pub const TOKEN: &str = "test-admin-token";

pub struct T {
    pub app: Router,
    pub api: Api,
    pub pki: Arc<wasmorch_control::pki::Pki>,
    pub shutdown: CancellationToken,
    pub _dir: tempfile::TempDir,
    /// The etcd member the store runs on, when the suite runs on etcd.
    #[cfg(feature = "etcd")]
    pub _etcd: Option<wasmorch_control::store::etcd::testing::Member>,
}

/// The store the suite runs on: the embedded one, or with `WASMORCH_TEST_DATASTORE=etcd` (and
/// the `etcd` feature) a member of its own started from Debian's etcd.
async fn test_store(dir: &std::path::Path) -> (Store, Option<Box<dyn std::any::Any + Send>>) {
    if std::env::var("WASMORCH_TEST_DATASTORE").as_deref() == Ok("etcd") {
        #[cfg(feature = "etcd")]
        {
            use wasmorch_control::store::etcd::testing::Member;
            let m = tokio::task::spawn_blocking(Member::start).await.unwrap().unwrap();
            let cfg = wasmorch_control::store::EtcdConfig::from_endpoints(&m.client_url).unwrap();
            let s = wasmorch_control::store::open_etcd(&cfg, &dir.join("state.key")).await.unwrap();
            return (s, Some(Box::new(m)));
        }
        #[cfg(not(feature = "etcd"))]
        panic!("WASMORCH_TEST_DATASTORE=etcd needs the tests built with --features etcd");
    }
    (Store::open(&dir.join("state.redb")).unwrap(), None)
}

pub enum Who {
    Bearer(String),
    Cert(Identity),
}

pub fn node_identity(name: &str) -> Who {
    Who::Cert(Identity {
        user: format!("system:node:{name}"),
        groups: vec!["system:nodes".into(), "system:authenticated".into()],
    })
}

impl Drop for T {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn setup() -> T {
    let dir = tempfile::tempdir().unwrap();
    #[allow(unused_variables)]
    let (store, etcd) = test_store(dir.path()).await;
    #[allow(unused_mut)]
    let mut t = setup_on(store, dir).await;
    #[cfg(feature = "etcd")]
    {
        t._etcd = etcd.and_then(|m| m.downcast::<wasmorch_control::store::etcd::testing::Member>().ok().map(|m| *m));
    }
    t
}

/// An API server on `store` (several may share one etcd), its files in `dir`.
pub async fn setup_on(store: Store, dir: tempfile::TempDir) -> T {
    let shutdown = CancellationToken::new();
    let mut api = Api::new(store, shutdown.clone());
    api.bookmark_interval = Duration::from_millis(200);
    wasmorch_control::server::bootstrap(&api).await.unwrap();
    apiserver::rbac::bootstrap(&api).await;
    apiserver::rbac::start(&api);
    apiserver::lookups::start(&api);
    apiserver::crds::start(&api);
    tokio::spawn(wasmorch_control::controllers::namespace::run(api.clone()));
    let mut tokens = Tokens::default();
    tokens.add(TOKEN, Identity::admin());
    let pki = Arc::new(wasmorch_control::pki::Pki::load_or_create(&dir.path().join("pki"), &[]).unwrap());
    let state = Arc::new(ServerState {
        api: api.clone(),
        tokens,
        data_dir: dir.path().to_path_buf(),
        kubelet_tls: pki.kubelet_client_config().unwrap(),
        pki: pki.clone(),
        node_cert_ttl: Duration::from_secs(3600),
        registry: Arc::new(wasmorch_control::apiserver::registry::Registry::new(dir.path())),
        metrics: Arc::default(),
        anonymous_metrics: false,
    });
    T {
        app: apiserver::router(state),
        api,
        pki,
        shutdown,
        _dir: dir,
        #[cfg(feature = "etcd")]
        _etcd: None,
    }
}

impl T {
    pub async fn raw(&self, method: Method, path: &str, ct: &str, accept: &str, body: Vec<u8>) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", ct)
            .header("accept", accept)
            .body(Body::from(body))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
    /// A request as someone else: a bearer token, or a verified client certificate's identity
    /// (what the TLS accept loop attaches).
    pub async fn call_as(&self, who: &Who, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let ct = if method == Method::PATCH { "application/merge-patch+json" } else { "application/json" };
        let mut req = Request::builder().method(method).uri(path).header("content-type", ct);
        if let Who::Bearer(t) = who {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut req = req.body(Body::from(body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default())).unwrap();
        if let Who::Cert(id) = who {
            req.extensions_mut().insert(apiserver::handlers::PeerIdentity(Some(id.clone())));
        }
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let b = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
        self.raw(method, path, "application/json", "application/json", b).await
    }
    /// A JSON merge patch.
    pub async fn merge(&self, path: &str, body: Value) -> (u16, Value) {
        let b = serde_json::to_vec(&body).unwrap();
        self.raw(Method::PATCH, path, "application/merge-patch+json", "application/json", b).await
    }
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
    /// Poll `f` until it returns true, for at most 10 s (caches follow the store).
    pub async fn until<F, Fut>(&self, mut f: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if f().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
    /// Open a watch and return a reader of its events.
    pub async fn watch(&self, path: &str, accept: &str) -> Watch {
        let req = Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("accept", accept)
            .body(Body::empty())
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        Watch { body: resp.into_body(), buf: Vec::new() }
    }
}

pub struct Watch {
    pub body: Body,
    pub buf: Vec<u8>,
}

impl Watch {
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("watch event within 10s")?;
            if let Ok(d) = frame.unwrap().into_data() {
                self.buf.extend_from_slice(&d);
            }
        }
    }
}
