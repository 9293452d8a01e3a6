//! Watch over HTTP: a chunked stream of `{"type": …, "object": …}` lines.
//!
//! Semantics follow Kubernetes: without a resourceVersion (or with "0") the current objects
//! come first as ADDED; with one, changes after it; `sendInitialEvents=true` adds a BOOKMARK
//! annotated `k8s.io/initial-events-end` after the initial state. Selectors are applied per
//! event with transitions: an object that stops matching is sent as DELETED. A revision that
//! was compacted away is answered with an ERROR event carrying a 410 `Status`.

use super::api::{Api, ListOptions};
use crate::store::EventType;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc;
use wasmorch_api::ApiError;
use wasmorch_api::resources::Resource;
use wasmorch_api::table::{self, IncludeObject};
use wasmorch_api::{convert, object, protobuf};

pub struct WatchRequest {
    pub res: &'static Resource,
    pub namespace: Option<String>,
    pub opts: ListOptions,
    /// `None`: start with the current state. `Some(rv)`: changes after `rv`.
    pub after: Option<u64>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    /// The version the client watches in (`res` is the stored one); events are converted.
    pub view: &'static Resource,
    pub timeout: Duration,
    /// `Some` when the client asked for Tables.
    pub table: Option<IncludeObject>,
    /// Frames of protobuf `WatchEvent`s instead of JSON lines.
    pub protobuf: bool,
}

/// Encodes events as lines, in Table form when asked, with column definitions once.
struct Encoder {
    res: &'static Resource,
    view: &'static Resource,
    table: Option<IncludeObject>,
    sent_columns: bool,
    protobuf: bool,
}

impl Encoder {
    fn line(&mut self, kind: &str, obj: &Value) -> Bytes {
        self.line_with(kind, obj, None)
    }

    /// `json`, when given, is `obj` serialized (the writer's bytes).
    fn line_with(&mut self, kind: &str, obj: &Value, json: Option<&[u8]>) -> Bytes {
        if self.table.is_none() && !self.protobuf && !wasmorch_api::convert::converts(self.view) {
            // The object as stored is the object served: written straight out, not copied
            // into a new JSON value first (the copy and its drop were half of this
            // function's time while a node started thousands of pods), and not serialized
            // again when the writer's bytes came along.
            let mut s = Vec::with_capacity(json.map_or(1024, |j| j.len() + 32));
            s.extend_from_slice(b"{\"type\":");
            let _ = serde_json::to_writer(&mut s, kind);
            s.extend_from_slice(b",\"object\":");
            let written = match json {
                Some(j) => {
                    s.extend_from_slice(j);
                    true
                }
                None => serde_json::to_writer(&mut s, obj).is_ok(),
            };
            if written {
                s.extend_from_slice(b"}\n");
                return Bytes::from(s);
            }
        }
        let object = match (self.table, kind) {
            (Some(include), "ADDED" | "MODIFIED" | "DELETED") => {
                let mut t = table::table(
                    self.res,
                    std::slice::from_ref(obj),
                    &object::resource_version(obj).to_string(),
                    include,
                    chrono::Utc::now(),
                );
                if self.sent_columns {
                    t["columnDefinitions"] = json!([]);
                }
                self.sent_columns = true;
                convert::from_storage(self.view, t)
            }
            _ => convert::from_storage(self.view, obj.clone()),
        };
        if self.protobuf {
            return match protobuf::encode_watch_event(kind, &object) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    let status = ApiError::new(500, "InternalError", format!("encoding the event: {e}")).to_status();
                    Bytes::from(protobuf::encode_watch_event("ERROR", &status).unwrap_or_default())
                }
            };
        }
        let mut s = json!({"type": kind, "object": object}).to_string();
        s.push('\n');
        Bytes::from(s)
    }
}

fn bookmark(res: &Resource, rev: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta})
}

pub fn respond(api: Api, req: WatchRequest) -> Response {
    let req_protobuf = req.protobuf;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    tokio::spawn(async move {
        let mut enc =
            Encoder { res: req.res, view: req.view, table: req.table, sent_columns: false, protobuf: req.protobuf };
        let open = crate::telemetry::get()
            .watchers
            .get_or_create(&crate::telemetry::Resource { resource: req.res.plural.to_string() })
            .clone();
        open.inc();
        struct Closed(prometheus_client::metrics::gauge::Gauge);
        impl Drop for Closed {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        let _closed = Closed(open);

        if let Err(e) = run(&api, &req, &mut enc, &tx).await {
            let _ = tx.send(Ok(enc.line("ERROR", &e.to_status()))).await;
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let content_type = if req_protobuf { protobuf::WATCH_MEDIA_TYPE } else { "application/json" };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

type Tx = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Send one line; `false` when the client has gone.
async fn send(tx: &Tx, b: Bytes) -> bool {
    tx.send(Ok(b)).await.is_ok()
}

async fn run(api: &Api, req: &WatchRequest, enc: &mut Encoder, tx: &Tx) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + req.timeout;
    let mut present: HashSet<String> = HashSet::new();
    let key_of = |o: &Value| format!("{}/{}", object::namespace(o), object::name(o));
    let after = match req.after {
        Some(rv) if !req.send_initial_events => rv,
        _ => {
            let mut opts = req.opts.clone();
            opts.limit = 0;
            let list = api.list(req.res, req.namespace.as_deref(), &opts).await?;
            let rev: u64 = list["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            for o in list["items"].as_array().into_iter().flatten() {
                present.insert(key_of(o));
                if !send(tx, enc.line("ADDED", o)).await {
                    return Ok(());
                }
            }
            if req.send_initial_events && !send(tx, enc.line("BOOKMARK", &bookmark(req.view, rev, true))).await {
                return Ok(());
            }
            rev
        }
    };
    let mut stream = api.store.watch(&req.res.key_prefix(req.namespace.as_deref()), after)?;
    let mut ticker = tokio::time::interval(api.bookmark_interval);
    ticker.tick().await;
    loop {
        let change = tokio::select! {
            change = stream.next_change() => change?,
            _ = tokio::time::sleep_until(deadline) => return Ok(()),
            _ = api.shutdown.cancelled() => return Ok(()),
            _ = tx.closed() => return Ok(()),
            _ = ticker.tick(), if req.bookmarks => {
                if !send(tx, enc.line("BOOKMARK", &bookmark(req.view, stream.last_rev(), false))).await {
                    return Ok(());
                }
                continue;
            }
        };
        let ev = &change.event;
        let key = key_of(&ev.object);
        let matches = req.opts.matches(&ev.object);
        let kind = match (ev.kind, matches, present.contains(&key)) {
            (EventType::Deleted, _, true) => {
                present.remove(&key);
                "DELETED"
            }
            (EventType::Deleted, m, false) => {
                if !m {
                    continue;
                }
                "DELETED"
            }
            (_, true, true) => "MODIFIED",
            (k, true, false) => {
                present.insert(key);
                if k == EventType::Modified && req.after.is_some() && !req.send_initial_events {
                    "MODIFIED"
                } else {
                    "ADDED"
                }
            }
            (_, false, true) => {
                present.remove(&key);
                "DELETED"
            }
            (_, false, false) => continue,
        };
        if !send(tx, enc.line_with(kind, &ev.object, change.json.as_deref())).await {
            return Ok(());
        }
    }
}
