//! pod-roster: a controller written as a wasm component. It keeps the ConfigMap `CONFIGMAP`
//! in step with the pods that `SELECTOR` picks in its own namespace: one key per pod (its
//! name), the pod's address as the value (empty until it has one). It lists, applies the
//! ConfigMap (server-side apply, so keys of pods that are gone go away), then follows a
//! watch from the list's resourceVersion, applying again on every change; when the watch
//! ends or fails it lists again.
//!
//! Everything it does is an ordinary API call with the pod's service-account token: give its
//! account `get/list/watch` on pods and `get/create/patch` on ConfigMaps (see
//! `manifests/pod-roster.yaml`).

use serde_json::{Value, json};
use std::collections::BTreeMap;
use wasmorch_sdk::kube::{Client, Error};
use wasmorch_sdk::{config, log};

const MANAGER: &str = "pod-roster";

/// The roster of a list of pods: name → address.
fn roster<'a>(pods: impl Iterator<Item = &'a Value>) -> BTreeMap<String, String> {
    pods.filter(|p| p["metadata"].get("deletionTimestamp").is_none())
        .filter_map(|p| {
            let name = p["metadata"]["name"].as_str()?;
            Some((name.to_string(), p["status"]["podIP"].as_str().unwrap_or("").to_string()))
        })
        .collect()
}

fn apply(api: &Client, name: &str, selector: &str, data: &BTreeMap<String, String>) -> Result<(), Error> {
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": MANAGER},
            "annotations": {"wasmorch.io/pod-roster-selector": selector}},
        "data": data,
    });
    api.apply(&format!("/api/v1/namespaces/{}/configmaps/{name}", api.namespace()), &cm, MANAGER).map(|_| ())
}

fn run(api: &Client, selector: &str, name: &str) -> Result<(), Error> {
    let pods = format!("/api/v1/namespaces/{}/pods?labelSelector={}", api.namespace(), escape(selector));
    let list = api.list(&pods)?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let mut by_name: BTreeMap<String, Value> =
        items.into_iter().filter_map(|p| Some((p["metadata"]["name"].as_str()?.to_string(), p))).collect();
    let mut last = roster(by_name.values());
    apply(api, name, selector, &last)?;
    log::info(&format!("{name}: {} pods", last.len()));
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let mut failed = None;
    api.watch(&format!("{pods}&resourceVersion={rv}&allowWatchBookmarks=true"), |kind, obj| {
        let Some(pod) = obj["metadata"]["name"].as_str().map(String::from) else { return true };
        match kind {
            "ADDED" | "MODIFIED" => {
                by_name.insert(pod, obj.clone());
            }
            "DELETED" => {
                by_name.remove(&pod);
            }
            "ERROR" => return false,
            _ => return true,
        }
        let now = roster(by_name.values());
        if now != last {
            if let Err(e) = apply(api, name, selector, &now) {
                failed = Some(e);
                return false;
            }
            log::info(&format!("{name}: {} pods", now.len()));
            last = now;
        }
        true
    })?;
    failed.map_or(Ok(()), Err)
}

/// A label selector as a query value.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn main() {
    let (selector, name) = match (config::require("SELECTOR"), config::require("CONFIGMAP")) {
        (Ok(s), Ok(n)) => (s, n),
        (Err(e), _) | (_, Err(e)) => {
            log::error(&e);
            std::process::exit(2);
        }
    };
    let api = match Client::in_cluster() {
        Ok(a) => a,
        Err(e) => {
            log::error(&e.to_string());
            std::process::exit(2);
        }
    };
    loop {
        match run(&api, &selector, &name) {
            Ok(()) => log::info("the watch ended; listing again"),
            Err(e) => {
                log::error(&format!("{e}; listing again in a second"));
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
}
