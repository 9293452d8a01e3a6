//! Cluster membership, the pure part: join tokens, the bootstrap-token Secrets that hold them,
//! and the names node identities use.
//!
//! A join token is `K10<sha256 of the cluster CA certificate (DER), hex>::<id>.<secret>`
//! (k3s' layout, with a kubeadm bootstrap token as its credential). The hash lets a joining
//! node check the server before it sends the secret; `<id>.<secret>` is the bearer credential
//! the server checks against the Secret `kube-system/bootstrap-token-<id>` (Kubernetes'
//! `bootstrap.kubernetes.io/token` type, with `expiration`).

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// What a full join token starts with.
pub const PREFIX: &str = "K10";
/// Type of the Secrets that hold join tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Where those Secrets live.
pub const NAMESPACE: &str = "kube-system";
/// A node's user name is this prefix and the node's name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The group of every node credential.
pub const NODES_GROUP: &str = "system:nodes";
/// The group of a join-token credential: it may only ask for a node certificate.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// The identity the API server presents to nodes' endpoints (logs).
pub const APISERVER_CLIENT: &str = "wasmorch:apiserver-kubelet-client";

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A join token: the CA pin (absent in the short `<id>.<secret>` form) and the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_hash: Option<String>,
    pub id: String,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid join token: {0}")]
pub struct TokenError(pub String);

fn valid_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl JoinToken {
    /// A new token from 22 random bytes (each maps onto `[a-z0-9]`).
    pub fn from_random(ca_hash: &str, random: &[u8; ID_LEN + SECRET_LEN]) -> JoinToken {
        let pick = |b: &[u8]| b.iter().map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char).collect::<String>();
        JoinToken { ca_hash: Some(ca_hash.to_string()), id: pick(&random[..ID_LEN]), secret: pick(&random[ID_LEN..]) }
    }

    /// Parse `K10<hash>::<id>.<secret>` or `<id>.<secret>`.
    pub fn parse(s: &str) -> Result<JoinToken, TokenError> {
        let s = s.trim();
        let (hash, cred) = match s.strip_prefix(PREFIX).and_then(|r| r.split_once("::")) {
            Some((h, c)) => {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(TokenError("the CA hash after K10 must be 64 hex digits".into()));
                }
                (Some(h.to_ascii_lowercase()), c)
            }
            None if s.contains("::") => return Err(TokenError("a full token starts with K10".into())),
            None => (None, s),
        };
        let Some((id, secret)) = cred.split_once('.') else {
            return Err(TokenError("the credential must be <id>.<secret>".into()));
        };
        if !valid_part(id, ID_LEN) || !valid_part(secret, SECRET_LEN) {
            return Err(TokenError(format!(
                "the credential must be {ID_LEN} and {SECRET_LEN} characters of [a-z0-9], joined by a dot"
            )));
        }
        Ok(JoinToken { ca_hash: hash, id: id.into(), secret: secret.into() })
    }

    /// The bearer credential: `<id>.<secret>`.
    pub fn credential(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// Whether a bearer value has the form of a join-token credential.
    pub fn looks_like_credential(s: &str) -> bool {
        s.split_once('.').is_some_and(|(i, c)| valid_part(i, ID_LEN) && valid_part(c, SECRET_LEN))
    }

    /// The Secret that stores this token.
    pub fn secret(&self, expiration: Option<DateTime<Utc>>, description: &str) -> Value {
        let mut data = json!({
            "token-id": self.id,
            "token-secret": self.secret,
            "usage-bootstrap-authentication": "true",
            "description": description,
        });
        if let Some(e) = expiration {
            data["expiration"] = json!(e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
            "metadata": {"name": secret_name(&self.id), "namespace": NAMESPACE},
            "stringData": data,
        })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ca_hash {
            Some(h) => write!(f, "{PREFIX}{h}::{}.{}", self.id, self.secret),
            None => write!(f, "{}.{}", self.id, self.secret),
        }
    }
}

/// Name of the Secret holding token `id`.
pub fn secret_name(id: &str) -> String {
    format!("bootstrap-token-{id}")
}

/// A token Secret as stored (base64 `data`), read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub id: String,
    pub secret: String,
    pub expiration: Option<DateTime<Utc>>,
    pub description: String,
}

impl StoredToken {
    pub fn from_secret(obj: &Value) -> Option<StoredToken> {
        if obj["type"] != SECRET_TYPE {
            return None;
        }
        let field = |k: &str| -> Option<String> {
            let b = obj["data"][k].as_str()?;
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).ok()?).ok()
        };
        if field("usage-bootstrap-authentication").as_deref() != Some("true") {
            return None;
        }
        let expiration = match field("expiration") {
            Some(e) => Some(DateTime::parse_from_rfc3339(&e).ok()?.with_timezone(&Utc)),
            None => None,
        };
        Some(StoredToken {
            id: field("token-id")?,
            secret: field("token-secret")?,
            expiration,
            description: field("description").unwrap_or_default(),
        })
    }

    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expiration.is_some_and(|e| e <= now)
    }
}

/// The node name of a node identity (`system:node:<name>` in group `system:nodes`).
pub fn node_name<'a>(user: &'a str, groups: &[String]) -> Option<&'a str> {
    if !groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    user.strip_prefix(NODE_USER_PREFIX).filter(|n| !n.is_empty())
}

/// Name of the Secret that records the public key a node joined with (its identity beside
/// its name; a join under the same name with another key is refused).
pub fn node_key_secret(node: &str) -> String {
    format!("{node}.node-key")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn full_and_short_tokens_round_trip() {
        let t = JoinToken::from_random(HASH, &[7; 22]);
        assert_eq!(t.id.len(), 6);
        assert_eq!(t.secret.len(), 16);
        let s = t.to_string();
        assert!(s.starts_with("K10") && s.contains("::"), "{s}");
        assert_eq!(JoinToken::parse(&s).unwrap(), t);
        let short = JoinToken::parse(&t.credential()).unwrap();
        assert_eq!(short.ca_hash, None);
        assert!(JoinToken::looks_like_credential(&t.credential()));
        assert!(!JoinToken::looks_like_credential("abcdef"));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let cases = [
            ("K10abc::abcdef.0123456789abcdef", "64 hex digits"),
            ("X10::abcdef.0123456789abcdef", "starts with K10"),
            ("abcdef0123456789abcdef", "<id>.<secret>"),
            ("ABCDEF.0123456789abcdef", "[a-z0-9]"),
            ("abcdef.short", "[a-z0-9]"),
        ];
        for (tok, want) in cases {
            let e = JoinToken::parse(tok).unwrap_err().to_string();
            assert!(e.contains(want), "{tok}: {e}");
        }
    }

    #[test]
    fn stored_tokens_read_back_with_expiry() {
        let t = JoinToken::parse("abcdef.0123456789abcdef").unwrap();
        let when = DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z").unwrap().with_timezone(&Utc);
        let mut s = t.secret(Some(when), "for the lab");
        // As the API stores it: stringData folded into base64 data.
        let enc = |v: &Value| json!(base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap()));
        let data: serde_json::Map<String, Value> =
            s["stringData"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), enc(v))).collect();
        s["data"] = Value::Object(data);
        let st = StoredToken::from_secret(&s).unwrap();
        assert_eq!((st.id.as_str(), st.secret.as_str()), ("abcdef", "0123456789abcdef"));
        assert_eq!(st.expiration, Some(when));
        assert!(!st.expired(when - chrono::Duration::seconds(1)));
        assert!(st.expired(when));
        assert_eq!(st.description, "for the lab");
        s["type"] = json!("Opaque");
        assert!(StoredToken::from_secret(&s).is_none(), "only bootstrap-token Secrets count");
    }

    #[test]
    fn node_identities() {
        let g = vec![NODES_GROUP.to_string()];
        assert_eq!(node_name("system:node:n1", &g), Some("n1"));
        assert_eq!(node_name("system:node:n1", &[]), None);
        assert_eq!(node_name("admin", &g), None);
        assert_eq!(node_name("system:node:", &g), None);
    }
}
