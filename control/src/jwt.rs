//! Compact JWS with ES256 (ECDSA P-256, SHA-256): how the cluster signs and checks
//! service-account tokens.
//!
//! Written over `ring`, which the binary already carries for TLS: the JWT crates need a
//! second crypto backend (RustCrypto's `p256` or aws-lc) for the same two operations. Only
//! this one algorithm and this one key are accepted: a token whose header names another
//! algorithm or key is refused before its signature is looked at (no `alg: none`, no
//! algorithm confusion).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Longest token looked at (Kubernetes' tokens are ~1 KB).
const MAX_TOKEN: usize = 16 * 1024;

pub struct Signer {
    key: EcdsaKeyPair,
    public: Vec<u8>,
    kid: String,
    rng: SystemRandom,
}

impl Signer {
    /// The key in `path` (PKCS#8 PEM), created on first use (mode 0600).
    pub fn load_or_create(path: &Path) -> anyhow::Result<Signer> {
        let pem = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pem = rcgen::KeyPair::generate()?.serialize_pem();
                crate::pki::write_private(path, &pem)?;
                pem
            }
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        };
        let der = rcgen::KeyPair::from_pem(&pem)
            .map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))?
            .serialize_der();
        Self::from_pkcs8(&der)
    }

    pub fn from_pkcs8(der: &[u8]) -> anyhow::Result<Signer> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| anyhow::anyhow!("the service-account signing key is not an ECDSA P-256 key: {e}"))?;
        let public = key.public_key().as_ref().to_vec();
        let kid = B64.encode(&Sha256::digest(&public)[..16]);
        Ok(Signer { key, public, kid, rng })
    }

    /// `header.claims.signature`.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let mut out = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = self.key.sign(&self.rng, out.as_bytes()).map_err(|_| anyhow::anyhow!("signing a token"))?;
        out.push('.');
        out.push_str(&B64.encode(sig.as_ref()));
        Ok(out)
    }

    /// The claims of a token this key signed, or `None`. Says nothing about expiry or
    /// audience: see `wasmorch_api::serviceaccount::check_claims`.
    pub fn verify(&self, token: &str) -> Option<Value> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256")
            || header.get("kid").and_then(Value::as_str) != Some(self.kid.as_str())
        {
            return None;
        }
        let sig = B64.decode(s).ok()?;
        let signed = &token[..h.len() + 1 + c.len()];
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(signed.as_bytes(), &sig)
            .ok()?;
        serde_json::from_slice(&B64.decode(c).ok()?).ok()
    }

    /// Whether `token` has the shape of a JWT (and so is worth verifying).
    pub fn looks_like(token: &str) -> bool {
        token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let der = rcgen::KeyPair::generate().unwrap().serialize_der();
        Signer::from_pkcs8(&der).unwrap()
    }

    #[test]
    fn signs_and_verifies_and_refuses_tampering() {
        let s = signer();
        let t = s.sign(&json!({"sub": "a", "n": 1})).unwrap();
        assert!(Signer::looks_like(&t));
        assert_eq!(s.verify(&t).unwrap()["sub"], "a");
        // Another key's token.
        assert!(signer().verify(&t).is_none());
        // Claims changed after signing.
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], B64.encode(json!({"sub": "root", "n": 1}).to_string()), parts[2]);
        assert!(s.verify(&forged).is_none());
        // `alg: none` with no signature.
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), parts[1]);
        assert!(s.verify(&none).is_none());
        // Garbage of every shape.
        for junk in ["", ".", "..", "a.b.c", "eyJ.eyJ.eyJ", "a.b.c.d"] {
            assert!(s.verify(junk).is_none(), "{junk}");
        }
    }

    #[test]
    fn the_key_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sa.key");
        let t = Signer::load_or_create(&p).unwrap().sign(&json!({"x": 1})).unwrap();
        assert!(Signer::load_or_create(&p).unwrap().verify(&t).is_some());
    }
}
