//! ServiceAccounts and their bound tokens: the pure rules. Signing and the store lookups live
//! in the control plane (`wasmorch_control::apiserver::serviceaccounts`).
//!
//! Tokens are Kubernetes' bound service-account tokens: JWTs whose claims name the account
//! (and its uid), the audiences, the expiry, and optionally the object they are bound to (a
//! Pod or Secret, by name and uid): the token stops authenticating once that object is gone.

use crate::error::{ApiError, Cause};
use serde_json::{Value, json};

/// `iss` of every token, and the audience the API server accepts (as kubeadm configures
/// Kubernetes).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// A TokenRequest without `expirationSeconds`: one hour, as Kubernetes.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// Shortest token Kubernetes issues: ten minutes.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// Longest token issued (Kubernetes sets no limit unless configured; one year here).
pub const MAX_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;
/// What the node asks for a pod's projected token (Kubernetes' admission default: 1 h + 7 s).
pub const POD_TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// Where the projected token volume is mounted in every container.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The ConfigMap with the cluster CA in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// `system:serviceaccount:NS:NAME`.
pub fn user_name(ns: &str, name: &str) -> String {
    format!("system:serviceaccount:{ns}:{name}")
}

/// The groups of a service account in `ns`.
pub fn groups(ns: &str) -> Vec<String> {
    vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}"), "system:authenticated".into()]
}

/// An object a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// A TokenRequest, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub bound: Option<Bound>,
}

/// Validate the `spec` of a TokenRequest (422 naming the field). Defaults: the API server's
/// audience, one hour. `account` names the request in errors.
pub fn request(account: &str, body: &Value) -> Result<Request, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    let mut causes = Vec::new();
    let audiences: Vec<String> = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v.as_str() {
                Some(s) if !s.is_empty() => Some(s.to_string()),
                _ => {
                    causes.push(Cause::invalid(format!("spec.audiences[{i}]"), v, "must be a non-empty string"));
                    None
                }
            })
            .collect(),
        Some(v) => {
            causes.push(Cause::invalid("spec.audiences", v, "must be a list of strings"));
            Vec::new()
        }
    };
    let audiences = if audiences.is_empty() { vec![ISSUER.to_string()] } else { audiences };
    let expiration_seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => match v.as_i64() {
            Some(s) if s < MIN_EXPIRATION_SECONDS => {
                causes.push(Cause::invalid(
                    "spec.expirationSeconds",
                    s,
                    "may not specify a duration less than 10 minutes",
                ));
                s
            }
            Some(s) if s > MAX_EXPIRATION_SECONDS => {
                causes.push(Cause::invalid(
                    "spec.expirationSeconds",
                    s,
                    "may not specify a duration longer than a year",
                ));
                s
            }
            Some(s) => s,
            None => {
                causes.push(Cause::invalid("spec.expirationSeconds", v, "must be an integer"));
                0
            }
        },
    };
    let bound = match spec.get("boundObjectRef") {
        None | Some(Value::Null) => None,
        Some(r) => {
            let get = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let (kind, name, uid) = (get("kind"), get("name"), get("uid"));
            if !["Pod", "Secret"].contains(&kind.as_str()) {
                causes.push(Cause::new(
                    "FieldValueNotSupported",
                    "spec.boundObjectRef.kind",
                    format!("Unsupported value: {kind:?}: supported values: \"Pod\", \"Secret\""),
                ));
            }
            if name.is_empty() {
                causes.push(Cause::required("spec.boundObjectRef.name"));
            }
            Some(Bound { kind, name, uid })
        }
    };
    if !causes.is_empty() {
        return Err(ApiError::invalid("authentication.k8s.io", "TokenRequest", account, causes));
    }
    Ok(Request { audiences, expiration_seconds, bound })
}

/// The claims of a token for the account `sa` (a stored ServiceAccount) issued at `now`
/// (seconds since the epoch), bound to `bound` (whose uid the caller has resolved).
pub fn claims(sa: &Value, req: &Request, now: i64, jti: &str) -> Value {
    let meta = sa.get("metadata").cloned().unwrap_or(Value::Null);
    let s = |k: &str| meta.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (ns, name, uid) = (s("namespace"), s("name"), s("uid"));
    let mut k8s = json!({"namespace": ns, "serviceaccount": {"name": name, "uid": uid}});
    if let Some(b) = &req.bound {
        k8s[b.kind.to_lowercase()] = json!({"name": b.name, "uid": b.uid});
    }
    json!({
        "aud": req.audiences,
        "exp": now + req.expiration_seconds,
        "iat": now,
        "nbf": now,
        "iss": ISSUER,
        "jti": jti,
        "kubernetes.io": k8s,
        "sub": user_name(&ns, &name),
    })
}

/// Who a verified token's claims name, and what must still exist for it to be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub bound: Option<Bound>,
}

/// Judge the claims of a token whose signature checked out, at `now`: issuer, time window,
/// an audience the API server accepts, and a well-formed subject.
pub fn check_claims(c: &Value, now: i64) -> Result<Subject, String> {
    if c.get("iss").and_then(Value::as_str) != Some(ISSUER) {
        return Err("the token's issuer is not this cluster".into());
    }
    let exp = c.get("exp").and_then(Value::as_i64).ok_or("the token has no expiry")?;
    if now >= exp {
        return Err("the token has expired".into());
    }
    if c.get("nbf").and_then(Value::as_i64).is_some_and(|nbf| now < nbf - 60) {
        return Err("the token is not valid yet".into());
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == ISSUER,
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(ISSUER)),
        _ => false,
    };
    if !aud_ok {
        return Err("the token is not meant for the API server (audience)".into());
    }
    let k = c.get("kubernetes.io").ok_or("the token names no service account")?;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let sa = k.get("serviceaccount").cloned().unwrap_or(Value::Null);
    let subject = Subject {
        namespace: s(k, "namespace"),
        name: s(&sa, "name"),
        uid: s(&sa, "uid"),
        bound: ["pod", "secret"].iter().find_map(|kind| {
            let b = k.get(*kind)?;
            Some(Bound {
                kind: if *kind == "pod" { "Pod" } else { "Secret" }.into(),
                name: s(b, "name"),
                uid: s(b, "uid"),
            })
        }),
    };
    if subject.namespace.is_empty() || subject.name.is_empty() || subject.uid.is_empty() {
        return Err("the token names no service account".into());
    }
    if c.get("sub").and_then(Value::as_str) != Some(user_name(&subject.namespace, &subject.name).as_str()) {
        return Err("the token's subject does not match its service account".into());
    }
    Ok(subject)
}

/// Pod admission for service accounts, as Kubernetes' ServiceAccount admission plugin: the
/// account defaults to `default`; unless automounting is off (on the pod, else on the
/// account), every container gets the projected token volume (token, `ca.crt`, namespace) at
/// [`MOUNT_PATH`]. `sa` is the stored account, `None` when it does not exist: refused, as
/// Kubernetes does, except for `default`, which its controller is about to create (a pod
/// applied together with its namespace does not fail on that race; the node retries the
/// token until the account exists).
pub fn admit_pod(pod: &mut Value, sa: Option<&Value>) -> Result<(), ApiError> {
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    let name = match spec.get("serviceAccountName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        Some(n) => n.to_string(),
        None => spec
            .get("serviceAccount")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string(),
    };
    spec.insert("serviceAccountName".into(), json!(name));
    spec.insert("serviceAccount".into(), json!(name));
    if sa.is_none() && name != "default" {
        return Err(ApiError::forbidden(format!(
            "error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found"
        )));
    }
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| sa.and_then(|sa| sa.get("automountServiceAccountToken")).and_then(Value::as_bool))
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let mounted = |c: &Value| {
        c.get("volumeMounts")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH)))
    };
    let volume = format!("kube-api-access-{}", short_hash(&name));
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    let Some(volumes) = volumes.as_array_mut() else { return Ok(()) };
    if !volumes.iter().any(|v| v.get("name").and_then(Value::as_str) == Some(&volume)) {
        volumes.push(json!({
            "name": volume,
            "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": POD_TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}
        }));
    }
    for key in ["containers", "initContainers"] {
        for c in spec.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten() {
            if mounted(c) {
                continue;
            }
            if let Some(o) = c.as_object_mut() {
                let mounts = o.entry("volumeMounts").or_insert_with(|| json!([]));
                if let Some(m) = mounts.as_array_mut() {
                    m.push(json!({"name": volume, "mountPath": MOUNT_PATH, "readOnly": true}));
                }
            }
        }
    }
    Ok(())
}

/// Five lowercase letters and digits derived from `s` (a stable volume-name suffix).
fn short_hash(s: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    (0..5).map(|i| ALPHABET[((h >> (i * 8)) % ALPHABET.len() as u64) as usize] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa() -> Value {
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot", "namespace": "ns1", "uid": "u-sa"}})
    }

    #[test]
    fn requests_default_and_refuse_what_kubernetes_refuses() {
        let r = request("bot", &json!({"spec": {}})).unwrap();
        assert_eq!((r.audiences, r.expiration_seconds, r.bound), (vec![ISSUER.to_string()], 3600, None));
        let e = request("bot", &json!({"spec": {"expirationSeconds": 60}})).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("spec.expirationSeconds") && e.message.contains("10 minutes"), "{}", e.message);
        let e = request("bot", &json!({"spec": {"boundObjectRef": {"kind": "Deployment", "name": "x"}}})).unwrap_err();
        assert!(e.message.contains("spec.boundObjectRef.kind"), "{}", e.message);
        let e = request("bot", &json!({"spec": {"audiences": [1]}})).unwrap_err();
        assert!(e.message.contains("spec.audiences[0]"), "{}", e.message);
        let r =
            request("bot", &json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "p", "uid": "u-p"}}})).unwrap();
        assert_eq!(r.bound.unwrap().uid, "u-p");
    }

    #[test]
    fn claims_round_trip_through_the_check() {
        let req =
            request("bot", &json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "p", "uid": "u-p"}}})).unwrap();
        let c = claims(&sa(), &req, 1000, "j");
        assert_eq!(c["sub"], "system:serviceaccount:ns1:bot");
        let s = check_claims(&c, 1001).unwrap();
        assert_eq!((s.namespace.as_str(), s.name.as_str(), s.uid.as_str()), ("ns1", "bot", "u-sa"));
        assert_eq!(s.bound, Some(Bound { kind: "Pod".into(), name: "p".into(), uid: "u-p".into() }));
        assert!(check_claims(&c, 1000 + 3600).unwrap_err().contains("expired"));
        let mut other = c.clone();
        other["aud"] = json!(["vault"]);
        assert!(check_claims(&other, 1001).unwrap_err().contains("audience"));
        let mut forged = c.clone();
        forged["sub"] = json!("system:serviceaccount:kube-system:admin");
        assert!(check_claims(&forged, 1001).is_err());
        let mut foreign = c;
        foreign["iss"] = json!("https://elsewhere");
        assert!(check_claims(&foreign, 1001).is_err());
    }

    #[test]
    fn pods_get_the_account_and_its_token_volume() {
        let mut pod = json!({"metadata": {"namespace": "ns1", "name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}]}});
        let default = json!({"metadata": {"name": "default", "namespace": "ns1"}});
        admit_pod(&mut pod, Some(&default)).unwrap();
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        let vol = &pod["spec"]["volumes"][0];
        assert!(vol["name"].as_str().unwrap().starts_with("kube-api-access-"));
        assert_eq!(vol["projected"]["sources"][0]["serviceAccountToken"]["path"], "token");
        for c in pod["spec"]["containers"].as_array().unwrap() {
            let m = c["volumeMounts"].as_array().unwrap().last().unwrap().clone();
            assert_eq!((m["mountPath"].as_str(), m["readOnly"].as_bool()), (Some(MOUNT_PATH), Some(true)));
        }
        // Admitting again (an update) adds nothing twice.
        let before = pod.clone();
        admit_pod(&mut pod, Some(&default)).unwrap();
        assert_eq!(pod, before);
        // Off on the pod, or on the account.
        let mut off = json!({"metadata": {"namespace": "ns1"}, "spec": {"automountServiceAccountToken": false, "containers": [{"name": "a"}]}});
        admit_pod(&mut off, Some(&default)).unwrap();
        assert!(off["spec"].get("volumes").is_none());
        let quiet = json!({"metadata": {"name": "default"}, "automountServiceAccountToken": false});
        let mut p = json!({"metadata": {"namespace": "ns1"}, "spec": {"containers": [{"name": "a"}]}});
        admit_pod(&mut p, Some(&quiet)).unwrap();
        assert!(p["spec"].get("volumes").is_none());
        // A missing `default` is about to exist; any other missing account is refused.
        let mut p = json!({"metadata": {"namespace": "ns1"}, "spec": {"containers": [{"name": "a"}]}});
        admit_pod(&mut p, None).unwrap();
        assert!(p["spec"]["volumes"][0]["projected"].is_object());
        let mut p =
            json!({"metadata": {"namespace": "ns1"}, "spec": {"serviceAccountName": "ghost", "containers": []}});
        let e = admit_pod(&mut p, None).unwrap_err();
        assert!(e.message.contains("serviceaccount \"ghost\" not found"), "{}", e.message);
    }
}
