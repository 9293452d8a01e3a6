//! TLS for Ingresses (`spec.tls`): the `kubernetes.io/tls` Secrets the served Ingresses
//! name, kept current (each read again every [`REFRESH`]; a changed Secret replaces its
//! certificate for new connections), and the certificate for a handshake chosen by SNI:
//! an exact host, else a `*.suffix` wildcard one label deep, else the certificate of a
//! `spec.tls` entry that names no hosts. HTTP/1.1 and HTTP/2 (ALPN).

use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::sign::CertifiedKey;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often the Secrets are read again.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Where a certificate applies, by SNI name.
#[derive(Debug, Clone)]
pub struct SniTable<T> {
    exact: HashMap<String, T>,
    wildcard: HashMap<String, T>,
    default: Option<T>,
}

impl<T> Default for SniTable<T> {
    fn default() -> Self {
        SniTable { exact: HashMap::new(), wildcard: HashMap::new(), default: None }
    }
}

impl<T: Clone> SniTable<T> {
    /// Add `value` for `hosts` (none: the default); the first to claim a name keeps it.
    pub fn add(&mut self, hosts: &[String], value: T) {
        if hosts.is_empty() && self.default.is_none() {
            self.default = Some(value.clone());
        }
        for h in hosts {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix("*.") {
                Some(suffix) => self.wildcard.entry(suffix.to_string()).or_insert_with(|| value.clone()),
                None => self.exact.entry(h).or_insert_with(|| value.clone()),
            };
        }
    }

    pub fn get(&self, sni: Option<&str>) -> Option<&T> {
        let Some(name) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.as_ref();
        };
        self.exact
            .get(&name)
            .or_else(|| name.split_once('.').and_then(|(_, suffix)| self.wildcard.get(suffix)))
            .or(self.default.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }
}

/// A `spec.tls` entry of a served Ingress: (namespace, Secret name, hosts).
pub type TlsEntry = (String, String, Vec<String>);

/// The `spec.tls` entries of `ingresses`, oldest Ingress first (as routing orders them).
pub fn entries<'a>(ingresses: impl IntoIterator<Item = &'a Value>) -> Vec<TlsEntry> {
    let list = wasmorch_api::ingress::by_age(ingresses);
    let mut out = Vec::new();
    for ing in list {
        let ns = wasmorch_api::object::namespace(ing).to_string();
        for t in ing.pointer("/spec/tls").and_then(Value::as_array).into_iter().flatten() {
            let Some(secret) = t.get("secretName").and_then(Value::as_str) else { continue };
            out.push((ns.clone(), secret.to_string(), wasmorch_api::object::strings(t.get("hosts"))));
        }
    }
    out
}

/// The certificate and key of a `kubernetes.io/tls` Secret.
pub fn certified_key(secret: &Value) -> Result<Arc<CertifiedKey>, String> {
    let field = |k: &str| -> Result<Vec<u8>, String> {
        let b64 = secret.pointer(&format!("/data/{}", k.replace('/', "~1"))).and_then(Value::as_str);
        let b64 = b64.ok_or_else(|| format!("the Secret has no {k}"))?;
        base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| format!("{k}: {e}"))
    };
    let (cert, key) = (field("tls.crt")?, field("tls.key")?);
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&cert).collect::<Result<_, _>>().map_err(|e| format!("tls.crt: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("tls.key: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map(Arc::new).map_err(|e| format!("the key pair: {e}"))
}

/// The certificates in use, chosen per handshake.
#[derive(Debug, Default)]
pub struct Resolver {
    pub table: RwLock<SniTable<Arc<CertifiedKey>>>,
}

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).get(hello.server_name()).cloned()
    }
}

/// The server configuration over `resolver`: HTTP/2 and HTTP/1.1.
pub fn server_config(resolver: Arc<Resolver>) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_default() {
        let mut t = SniTable::default();
        t.add(&["a.example.com".into(), "*.example.com".into()], "one");
        t.add(&["a.example.com".into(), "b.example.com".into()], "two");
        t.add(&[], "fallback");
        t.add(&[], "later-fallback");
        assert_eq!(t.get(Some("a.example.com")), Some(&"one"), "the first to claim a name keeps it");
        assert_eq!(t.get(Some("B.Example.com.")), Some(&"two"));
        assert_eq!(t.get(Some("c.example.com")), Some(&"one"));
        assert_eq!(t.get(Some("x.c.example.com")), Some(&"fallback"));
        assert_eq!(t.get(None), Some(&"fallback"));
        assert!(SniTable::<&str>::default().get(Some("a")).is_none());
    }

    #[test]
    fn entries_come_from_each_ingress_tls_in_age_order() {
        let a = json!({"metadata": {"name": "a", "namespace": "x", "creationTimestamp": "2026-02-01T00:00:00Z"},
            "spec": {"tls": [{"hosts": ["a.com"], "secretName": "a-cert"}, {"hosts": ["z.com"]}]}});
        let b = json!({"metadata": {"name": "b", "namespace": "y", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"tls": [{"secretName": "b-cert"}]}});
        assert_eq!(
            entries([&a, &b]),
            vec![("y".into(), "b-cert".into(), vec![]), ("x".into(), "a-cert".into(), vec!["a.com".to_string()])]
        );
    }

    #[test]
    fn bad_secrets_say_what_is_wrong() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        assert!(certified_key(&json!({"data": {}})).unwrap_err().contains("tls.crt"));
        let junk = base64::engine::general_purpose::STANDARD.encode("junk");
        let e = certified_key(&json!({"data": {"tls.crt": junk, "tls.key": junk}})).unwrap_err();
        assert!(e.contains("tls.crt"), "{e}");
        let k = rcgen::generate_simple_self_signed(vec!["a.com".into()]).unwrap();
        let enc = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        let good = json!({"data": {"tls.crt": enc(k.cert.pem()), "tls.key": enc(k.signing_key.serialize_pem())}});
        assert!(certified_key(&good).is_ok());
    }
}
