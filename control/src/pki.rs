//! The cluster CA, the server's certificate, client certificates, and bearer tokens.
//!
//! Created on first start under `<data-dir>/pki/` (keys mode 0600) and reused after.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn admin() -> Self {
        Identity { user: "admin".into(), groups: vec!["system:masters".into(), "system:authenticated".into()] }
    }
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

pub struct Pki {
    dir: PathBuf,
    pub ca_pem: String,
    ca_key_pem: String,
    pub server_cert_pem: String,
    server_key_pem: String,
    /// Signs and checks service-account tokens (`sa.key`).
    pub tokens: crate::jwt::Signer,
}

pub(crate) fn write_private(path: &Path, data: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(data.as_bytes())?;
        f.sync_all()?;
    }
    #[cfg(not(unix))]
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn read_or_create(path: &Path, make: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let s = make()?;
            write_private(path, &s)?;
            Ok(s)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl Pki {
    /// Load the CA and server certificate from `dir`, creating what is missing.
    /// `sans` are the server certificate's extra names and addresses.
    pub fn load_or_create(dir: &Path, sans: &[String]) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca_key_pem = read_or_create(&dir.join("ca.key"), || Ok(KeyPair::generate()?.serialize_pem()))?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).context("parsing ca.key")?;
        let ca_pem = read_or_create(&dir.join("ca.crt"), || {
            let mut p = CertificateParams::new(Vec::<String>::new())?;
            p.distinguished_name.push(DnType::CommonName, "wasmorch-ca");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages =
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            p.not_before = rcgen::date_time_ymd(2024, 1, 1);
            p.not_after = rcgen::date_time_ymd(2124, 1, 1);
            Ok(p.self_signed(&ca_key)?.pem())
        })?;
        let mut pki = Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            ca_key_pem,
            server_cert_pem: String::new(),
            server_key_pem: String::new(),
            tokens: crate::jwt::Signer::load_or_create(&dir.join("sa.key"))?,
        };
        let server_key_pem = read_or_create(&dir.join("server.key"), || Ok(KeyPair::generate()?.serialize_pem()))?;
        let mut names: Vec<String> =
            vec!["localhost".into(), "127.0.0.1".into(), "::1".into(), "kubernetes.default.svc".into()];
        if let Ok(h) = hostname() {
            names.push(h);
        }
        names.extend(sans.iter().cloned());
        names.sort();
        names.dedup();
        // Reissue the server certificate when the set of names changes.
        let sans_file = dir.join("server.sans");
        let want = names.join(",");
        let have = std::fs::read_to_string(&sans_file).unwrap_or_default();
        let cert_path = dir.join("server.crt");
        let server_cert_pem = match std::fs::read_to_string(&cert_path) {
            Ok(c) if have == want => c,
            _ => {
                let key = KeyPair::from_pem(&server_key_pem)?;
                let c = pki.sign(&key, "wasmorch-apiserver", &[], &names, true)?;
                write_private(&cert_path, &c)?;
                write_private(&sans_file, &want)?;
                c
            }
        };
        pki.server_cert_pem = server_cert_pem;
        pki.server_key_pem = server_key_pem;
        Ok(pki)
    }

    fn sign(&self, key: &KeyPair, cn: &str, orgs: &[&str], sans: &[String], server: bool) -> anyhow::Result<String> {
        let usage =
            if server { vec![ExtendedKeyUsagePurpose::ServerAuth] } else { vec![ExtendedKeyUsagePurpose::ClientAuth] };
        let p = leaf_params(cn, orgs, sans, usage, std::time::Duration::from_secs(365 * 24 * 3600))?;
        Ok(p.signed_by(key, &self.issuer()?)?.pem())
    }

    fn issuer(&self) -> anyhow::Result<Issuer<'static, KeyPair>> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        Ok(Issuer::from_ca_cert_pem(&self.ca_pem, ca_key)?)
    }

    /// Sign a node's certificate request. The subject is the server's choice, not the
    /// request's: CN `system:node:<node>`, O `system:nodes`, the node name as DNS name (the API
    /// server checks a node's serving identity by name, not address), client and server use,
    /// valid for `ttl`. The request's signature proves the node holds the key.
    pub fn sign_node_csr(&self, csr_pem: &str, node: &str, ttl: std::time::Duration) -> Result<NodeCert, String> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("the certificate request is not valid: {e}"))?;
        let key_sha256 = hex::encode(Sha256::digest(rcgen::PublicKeyData::der_bytes(&csr.public_key)));
        let params = leaf_params(
            &format!("{}{node}", wasmorch_api::join::NODE_USER_PREFIX),
            &[wasmorch_api::join::NODES_GROUP],
            &[node.to_string()],
            vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth],
            ttl,
        )
        .map_err(|e| e.to_string())?;
        let signed = rcgen::CertificateSigningRequestParams { params, public_key: csr.public_key };
        let issuer = self.issuer().map_err(|e| e.to_string())?;
        let cert = signed.signed_by(&issuer).map_err(|e| format!("signing: {e}"))?;
        Ok(NodeCert { cert_pem: cert.pem(), key_sha256 })
    }

    /// TLS client configuration of the API server towards nodes (their log endpoints): it
    /// trusts the cluster CA and presents a certificate with CN
    /// `wasmorch:apiserver-kubelet-client`, which nodes require.
    pub fn kubelet_client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let (cert, key) = self.issue_client(wasmorch_api::join::APISERVER_CLIENT, &[])?;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(certs, key)?;
        Ok(Arc::new(cfg))
    }

    fn roots(&self) -> anyhow::Result<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c?)?;
        }
        Ok(roots)
    }

    /// Issue a client certificate (CN = user, O = groups). Returns (cert PEM, key PEM).
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let cert = self.sign(&key, user, groups, &[], false)?;
        Ok((cert, key.serialize_pem()))
    }

    /// The TLS configuration of the API server: client certificates optional (bearer tokens
    /// are the other way in), verified against the cluster CA when presented.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes()).collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes())?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// SHA-256 of the CA certificate (DER), hex: what a join token pins.
    pub fn ca_hash(&self) -> String {
        let der = CertificateDer::pem_slice_iter(self.ca_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .map(|d| d.to_vec())
            .unwrap_or_default();
        hex::encode(Sha256::digest(der))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A signed node certificate and the SHA-256 of the public key it certifies.
pub struct NodeCert {
    pub cert_pem: String,
    pub key_sha256: String,
}

/// Parameters of a leaf certificate valid for `ttl` from now (a little before: clock skew).
fn leaf_params(
    cn: &str,
    orgs: &[&str],
    sans: &[String],
    usage: Vec<ExtendedKeyUsagePurpose>,
    ttl: std::time::Duration,
) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    for o in orgs {
        p.distinguished_name.push(DnType::OrganizationName, *o);
    }
    for s in sans {
        p.subject_alt_names.push(match s.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(s.clone().try_into()?),
        });
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = usage;
    let now = time_now();
    // Backdated for clocks a little behind ours: five minutes, or a tenth of a short lifetime
    // (a holder renews by the lifetime it sees, from not_before to not_after).
    p.not_before = now - std::time::Duration::from_secs(300).min(ttl / 10);
    p.not_after = now + ttl;
    Ok(p)
}

/// Identity from a verified client certificate: CN is the user, O entries are groups.
pub fn identity_from_cert(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let mut groups: Vec<String> =
        subject.iter_organization().filter_map(|o| o.as_str().ok().map(String::from)).collect();
    groups.push("system:authenticated".into());
    Some(Identity { user, groups })
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

pub(crate) fn hostname() -> std::io::Result<String> {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_lowercase())
        .and_then(|h| if h.is_empty() { Err(std::io::Error::other("empty hostname")) } else { Ok(h) })
}

/// Bearer tokens the server accepts, each mapped to an identity.
#[derive(Clone, Default)]
pub struct Tokens {
    /// (sha256 of token, identity). Hashes so comparison time does not depend on the secret.
    entries: Vec<([u8; 32], Identity)>,
}

impl Tokens {
    pub fn add(&mut self, token: &str, id: Identity) {
        self.entries.push((Sha256::digest(token.as_bytes()).into(), id));
    }
    pub fn lookup(&self, token: &str) -> Option<&Identity> {
        let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.entries.iter().find(|(t, _)| *t == h).map(|(_, id)| id)
    }
}

/// Read a token file, or create it with 32 random bytes (hex).
pub fn token_file(path: &Path) -> anyhow::Result<String> {
    let t = read_or_create(path, || {
        let bytes: [u8; 32] = rand::random();
        Ok(hex::encode(bytes))
    })?;
    Ok(t.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_persists_and_issues_verifiable_client_certs() {
        let d = tempfile::tempdir().unwrap();
        let a = Pki::load_or_create(d.path(), &[]).unwrap();
        let b = Pki::load_or_create(d.path(), &[]).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(a.server_cert_pem, b.server_cert_pem);
        let c = Pki::load_or_create(d.path(), &["10.1.2.3".into()]).unwrap();
        assert_ne!(a.server_cert_pem, c.server_cert_pem, "new SAN reissues the server cert");
        assert_eq!(a.ca_hash().len(), 64);
        a.server_config().unwrap();
        let (cert, _key) = a.issue_client("alice", &["system:masters"]).unwrap();
        let der = CertificateDer::pem_slice_iter(cert.as_bytes()).next().unwrap().unwrap();
        let id = identity_from_cert(&der).unwrap();
        assert_eq!(id.user, "alice");
        assert!(id.is_admin());
    }

    #[test]
    fn tokens() {
        let mut t = Tokens::default();
        t.add("s3cret", Identity::admin());
        assert!(t.lookup("s3cret").is_some());
        assert!(t.lookup("s3cre").is_none());
    }
}
