//! Encryption at rest for Secrets.
//!
//! Every stored Secret — in the objects table and in history — is sealed with AES-256-GCM
//! (authenticated: a flipped bit fails to open instead of decoding to something else). The
//! store key (`/core/secrets/NS/NAME`) is the associated data, so a sealed value copied to
//! another key does not open. Layout: `wmseal:v1:<key name>:` + 12-byte random nonce +
//! ciphertext and tag.
//!
//! Keys live in a file beside the store (`state.key`, mode 0600), one `NAME BASE64` per line;
//! the first line seals, every line opens. The file is created on first start. Rotation
//! (`wasmorch rotate-secrets-key`, [`rotate`]) adds a new first line, re-seals every Secret
//! and every history record of one in one transaction, then drops the old lines.

use super::embedded::{HISTORY, OBJECTS};
use super::storage_err;
use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use redb::{Database, ReadableTable};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::{Path, PathBuf};
use wasmorch_api::ApiError;

const MAGIC: &[u8] = b"wmseal:v1:";
/// Store keys whose values are sealed.
pub const SEALED_PREFIX: &str = "/core/secrets/";

pub fn is_sealed_key(key: &str) -> bool {
    key.starts_with(SEALED_PREFIX)
}

pub struct Sealer {
    /// (name, key); the first seals.
    keys: Vec<(String, LessSafeKey)>,
    rng: SystemRandom,
}

/// Where the key file of the store at `db` lives.
pub fn key_path(db: &Path) -> PathBuf {
    db.with_extension("key")
}

fn parse_keys(text: &str, path: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (name, b64) = line
            .trim()
            .split_once(' ')
            .with_context(|| format!("{} line {}: expected `NAME BASE64KEY`", path.display(), i + 1))?;
        let raw = B64.decode(b64.trim()).with_context(|| format!("{} line {}: bad base64", path.display(), i + 1))?;
        if raw.len() != 32 {
            bail!("{} line {}: a key must be 32 bytes, this one is {}", path.display(), i + 1, raw.len());
        }
        if name.contains(':') {
            bail!("{} line {}: a key name cannot contain ':'", path.display(), i + 1);
        }
        out.push((name.to_string(), raw));
    }
    if out.is_empty() {
        bail!("{} holds no key", path.display());
    }
    Ok(out)
}

fn write_keys(path: &Path, keys: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    let text: String = keys.iter().map(|(n, k)| format!("{n} {}\n", B64.encode(k))).collect();
    let tmp = path.with_extension("key.tmp");
    {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn new_key(rng: &SystemRandom) -> anyhow::Result<(String, Vec<u8>)> {
    let mut k = vec![0u8; 32];
    rng.fill(&mut k).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut tag = [0u8; 3];
    rng.fill(&mut tag).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok((format!("k{secs}-{}", hex::encode(tag)), k))
}

impl Sealer {
    fn from_raw(raw: Vec<(String, Vec<u8>)>) -> anyhow::Result<Sealer> {
        let keys = raw
            .into_iter()
            .map(|(n, k)| {
                let k = UnboundKey::new(&AES_256_GCM, &k).map_err(|_| anyhow::anyhow!("bad key {n}"))?;
                Ok((n, LessSafeKey::new(k)))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Sealer { keys, rng: SystemRandom::new() })
    }

    /// Load the key file, creating it with a fresh key if it does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Sealer> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_raw(parse_keys(&text, path)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = new_key(&SystemRandom::new())?;
                write_keys(path, std::slice::from_ref(&k))?;
                Self::from_raw(vec![k])
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Name of the key that seals.
    pub fn active(&self) -> &str {
        &self.keys[0].0
    }

    /// Seal `plain` stored under `key` with the active key.
    pub fn seal(&self, key: &str, plain: &[u8]) -> Result<Vec<u8>, ApiError> {
        let (name, k) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| storage_err("no system randomness"))?;
        let mut body = plain.to_vec();
        k.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(key.as_bytes()), &mut body)
            .map_err(|_| storage_err("sealing failed"))?;
        let mut out = Vec::with_capacity(MAGIC.len() + name.len() + 1 + NONCE_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The key name a value was sealed with; `None` for a plain value.
    pub fn sealed_with(bytes: &[u8]) -> Option<&str> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let end = rest.iter().position(|b| *b == b':')?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// Open a stored value; plain values (stored before sealing applied) pass through.
    pub fn open(&self, key: &str, bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
        let Some(rest) = bytes.strip_prefix(MAGIC) else { return Ok(bytes.to_vec()) };
        let end = rest.iter().position(|b| *b == b':').ok_or_else(|| storage_err(format!("{key}: bad seal")))?;
        let name = std::str::from_utf8(&rest[..end]).unwrap_or("?");
        let (_, k) = self.keys.iter().find(|(n, _)| n == name).ok_or_else(|| {
            storage_err(format!("{key} is sealed with key {name:?}, which the key file does not hold"))
        })?;
        let rest = &rest[end + 1..];
        if rest.len() < NONCE_LEN {
            return Err(storage_err(format!("{key}: truncated seal")));
        }
        let nonce = Nonce::try_assume_unique_for_key(&rest[..NONCE_LEN]).map_err(|_| storage_err("bad nonce"))?;
        let mut body = rest[NONCE_LEN..].to_vec();
        let plain = k
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut body)
            .map_err(|_| storage_err(format!("{key}: the sealed value does not authenticate")))?;
        Ok(plain.to_vec())
    }

    /// Stored bytes of the object JSON `plain` under `key`: sealed for Secrets.
    pub fn encode(&self, key: &str, plain: Vec<u8>) -> Result<Vec<u8>, ApiError> {
        if is_sealed_key(key) { self.seal(key, &plain) } else { Ok(plain) }
    }
}

/// A history record: the change's head plus its object, or the object sealed.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Record {
    pub rev: u64,
    #[serde(rename = "type")]
    pub kind: super::EventType,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<serde_json::Value>,
    /// Base64 of the sealed object JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

impl Record {
    pub fn into_event(self, s: &Sealer) -> Result<super::Event, ApiError> {
        let object = match (self.object, self.sealed) {
            (Some(o), _) => o,
            (None, Some(b)) => {
                let raw = B64.decode(b).map_err(storage_err)?;
                serde_json::from_slice(&s.open(&self.key, &raw)?).map_err(storage_err)?
            }
            (None, None) => return Err(storage_err(format!("history record {} has no object", self.rev))),
        };
        Ok(super::Event { rev: self.rev, kind: self.kind, key: self.key, object })
    }
}

/// Re-seal every Secret, in the objects table and in history, with a new key; the store must
/// not be open elsewhere. Returns (secrets, history records) re-sealed.
pub fn rotate(db_path: &Path) -> anyhow::Result<(usize, usize)> {
    let kp = key_path(db_path);
    let text = std::fs::read_to_string(&kp).with_context(|| format!("reading {}", kp.display()))?;
    let old = parse_keys(&text, &kp)?;
    let db = Database::create(db_path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            anyhow::anyhow!("{} is in use: stop the server first", db_path.display())
        }
        e => anyhow::anyhow!("opening {}: {e}", db_path.display()),
    })?;
    // Writes still only in the log are applied first, so they are re-sealed too.
    let log = super::embedded::wal::path_of(db_path);
    super::embedded::wal::replay(&db, &log)?;
    super::embedded::wal::Wal::open_empty(&log).with_context(|| format!("emptying {}", log.display()))?;
    let rng = SystemRandom::new();
    let fresh = new_key(&rng)?;
    // The new key first, the old ones still listed: a crash before the commit leaves a file
    // that opens everything stored.
    let mut both = vec![fresh.clone()];
    both.extend(old);
    write_keys(&kp, &both)?;
    let sealer = Sealer::from_raw(both)?;
    let txn = db.begin_write()?;
    let (mut n_obj, mut n_hist) = (0, 0);
    {
        let mut objects = txn.open_table(OBJECTS)?;
        let mut updates = Vec::new();
        for item in objects.range(SEALED_PREFIX..)? {
            let (k, v) = item?;
            let k = k.value().to_string();
            if !is_sealed_key(&k) {
                break;
            }
            let plain = sealer.open(&k, v.value())?;
            updates.push((k.clone(), sealer.seal(&k, &plain)?));
        }
        for (k, v) in updates {
            objects.insert(k.as_str(), v.as_slice())?;
            n_obj += 1;
        }
        let mut history = txn.open_table(HISTORY)?;
        let mut updates = Vec::new();
        for item in history.iter()? {
            let (rev, v) = item?;
            let rec: Record = serde_json::from_slice(v.value())?;
            if !is_sealed_key(&rec.key) {
                continue;
            }
            let key = rec.key.clone();
            let ev = rec.into_event(&sealer)?;
            let plain = serde_json::to_vec(&ev.object)?;
            let rec = Record {
                rev: ev.rev,
                kind: ev.kind,
                key: ev.key,
                object: None,
                sealed: Some(B64.encode(sealer.seal(&key, &plain)?)),
            };
            updates.push((rev.value(), serde_json::to_vec(&rec)?));
        }
        for (rev, v) in updates {
            history.insert(rev, v.as_slice())?;
            n_hist += 1;
        }
    }
    txn.commit()?;
    write_keys(&kp, &[fresh])?;
    Ok((n_obj, n_hist))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_opens_only_under_its_own_key_and_detects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::load_or_create(&dir.path().join("t.key")).unwrap();
        let sealed = s.seal("/core/secrets/a/b", b"{\"data\":1}").unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"\"data\":1"));
        assert_eq!(s.open("/core/secrets/a/b", &sealed).unwrap(), b"{\"data\":1}");
        assert!(s.open("/core/secrets/a/c", &sealed).is_err(), "moved to another key");
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(s.open("/core/secrets/a/b", &bad).is_err(), "tampered");
        // The key file is reused, not regenerated.
        let again = Sealer::load_or_create(&dir.path().join("t.key")).unwrap();
        assert_eq!(again.active(), s.active());
        assert_eq!(again.open("/core/secrets/a/b", &sealed).unwrap(), b"{\"data\":1}");
        assert_eq!(Sealer::sealed_with(&sealed), Some(s.active()));
        assert_eq!(s.open("/core/configmaps/a/b", b"{}").unwrap(), b"{}", "plain passes through");
    }
}
