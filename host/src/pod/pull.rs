//! A pod's registry credentials: the docker config documents of its `imagePullSecrets`.

use super::NodeCtx;
use serde_json::Value;

/// The docker config documents of a pod's `imagePullSecrets`. One that is missing or not a
/// docker config is passed over with a warning and the pull goes on without it, as the
/// kubelet does; each pull attempt reads them again (a Secret created later is used).
pub async fn pull_secrets(ctx: &NodeCtx, pod: &Value, ns: &str) -> Vec<Value> {
    let names: Vec<&str> = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .collect();
    let mut out = Vec::new();
    for name in names {
        match ctx.client.get(&format!("/api/v1/namespaces/{ns}/secrets/{name}")).await {
            Ok(secret) => match docker_config(&secret) {
                Some(doc) => out.push(doc),
                None => tracing::warn!("image pull secret {ns}/{name} holds no .dockerconfigjson or .dockercfg"),
            },
            Err(e) => tracing::warn!("image pull secret {ns}/{name}: {e}"),
        }
    }
    out
}

/// The docker config in a Secret: `data[".dockerconfigjson"]` (kubernetes.io/dockerconfigjson)
/// or `data[".dockercfg"]` (the legacy type), decoded.
fn docker_config(secret: &Value) -> Option<Value> {
    use base64::Engine as _;
    let data = secret.get("data")?;
    let encoded = data.get(".dockerconfigjson").or_else(|| data.get(".dockercfg"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn docker_configs_come_from_either_secret_type() {
        use base64::Engine as _;
        let enc = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        let doc = r#"{"auths":{"r:5000":{"auth":"dTpw"}}}"#;
        let s = json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": enc(doc)}});
        assert_eq!(docker_config(&s).unwrap()["auths"]["r:5000"]["auth"], "dTpw");
        let legacy = json!({"data": {".dockercfg": enc(r#"{"r:5000":{"auth":"dTpw"}}"#)}});
        assert!(docker_config(&legacy).unwrap()["r:5000"].is_object());
        assert!(docker_config(&json!({"data": {".dockerconfigjson": "%%%"}})).is_none());
        assert!(docker_config(&json!({"data": {"other": enc("{}")}})).is_none());
        assert!(docker_config(&json!({})).is_none());
    }
}
