//! ServiceAccount tokens: the `serviceaccounts/token` subresource (TokenRequest) and
//! authentication by a bound token. The rules are `wasmorch_api::serviceaccount`'s; this
//! module signs, checks signatures and looks up what a token is bound to.

use super::ServerState;
use super::request::Target;
use crate::pki::Identity;
use serde_json::{Value, json};
use wasmorch_api::resources::ResourceKind;
use wasmorch_api::serviceaccount::{self as sa, Bound};
use wasmorch_api::{ApiError, object};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// How fresh the answer of [`bound_uid`] must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// The server's pod cache may answer: issuing a token (each pod's token is requested as
    /// it starts). A pod deleted a moment ago may still be found; the token it gets is
    /// refused by [`authenticate`], which reads the store.
    Cached,
    /// The store only: authenticating. A token bound to a deleted pod ends with the delete.
    Stored,
}

/// The uid of the stored object `b` names in `ns`, if it exists (and, when `b` carries a
/// uid, has that uid).
async fn bound_uid(state: &ServerState, ns: &str, b: &Bound, read: Read) -> Result<String, ApiError> {
    let kind = if b.kind == "Pod" { ResourceKind::Pod } else { ResourceKind::Secret };
    // A pod's uid from the server's cache when allowed; the store is read when the cache does
    // not know it or names another uid.
    let cached = |o: &Value| object::meta(o).get("uid").and_then(Value::as_str).unwrap_or("").to_string();
    if read == Read::Cached
        && kind == ResourceKind::Pod
        && let Some(uid) = state.api.cached_with(kind, ns, &b.name, cached)
        && !uid.is_empty()
        && (b.uid.is_empty() || b.uid == uid)
    {
        return Ok(uid);
    }
    let obj = state.api.get(&Target::object(kind, ns, &b.name)).await?;
    let uid = object::meta(&obj).get("uid").and_then(Value::as_str).unwrap_or("").to_string();
    if !b.uid.is_empty() && b.uid != uid {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!("the UID in the bound object reference ({}) does not match the UID in record ({uid})", b.uid),
        ));
    }
    Ok(uid)
}

/// `POST …/serviceaccounts/NAME/token`: a token for the account, bound to a Pod or Secret when
/// asked. Answers the TokenRequest with `status.token` and `status.expirationTimestamp`.
pub async fn token_request(state: &ServerState, t: &Target, body: &Value, dry_run: bool) -> Result<Value, ApiError> {
    let (ns, name) = (t.namespace.as_deref().unwrap_or(""), t.name.as_deref().unwrap_or(""));
    let mut req = sa::request(name, body)?;
    // From the informer when it is fresh (a pod's start waits on this request). An account
    // deleted or replaced a moment ago through another server may still answer: its token
    // names the old uid, and `authenticate` (which reads the store) refuses it.
    let account = state
        .api
        .lookup(ResourceKind::ServiceAccount, ns, name)
        .await?
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
    if let Some(b) = req.bound.as_mut() {
        b.uid = bound_uid(state, ns, b, Read::Cached).await?;
    }
    let issued = now();
    let token = if dry_run {
        String::new()
    } else {
        let claims = sa::claims(&account, &req, issued, &uuid::Uuid::new_v4().to_string());
        state.pki.tokens.sign(&claims).map_err(|e| ApiError::internal(e.to_string()))?
    };
    let expires = chrono::DateTime::from_timestamp(issued + req.expiration_seconds, 0).unwrap_or_default();
    let mut spec = json!({"audiences": req.audiences, "expirationSeconds": req.expiration_seconds});
    if let Some(b) = &req.bound {
        spec["boundObjectRef"] = json!({"kind": b.kind, "apiVersion": "v1", "name": b.name, "uid": b.uid});
    }
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
    }))
}

/// The identity of a service-account token, or `None` (a 401): signed by this cluster,
/// within its lifetime, for the API server's audience, and its account (and the object it
/// is bound to) still exist with the uids it names.
pub async fn authenticate(state: &ServerState, token: &str) -> Option<Identity> {
    let claims = state.pki.tokens.verify(token)?;
    let subject = match sa::check_claims(&claims, now()) {
        Ok(s) => s,
        Err(why) => {
            tracing::debug!("service-account token refused: {why}");
            return None;
        }
    };
    let account =
        state.api.get(&Target::object(ResourceKind::ServiceAccount, &subject.namespace, &subject.name)).await.ok()?;
    if object::meta(&account).get("uid").and_then(Value::as_str) != Some(subject.uid.as_str()) {
        return None;
    }
    if let Some(b) = &subject.bound {
        let uid = bound_uid(state, &subject.namespace, b, Read::Stored).await.ok()?;
        if uid != b.uid {
            return None;
        }
    }
    Some(Identity { user: sa::user_name(&subject.namespace, &subject.name), groups: sa::groups(&subject.namespace) })
}
