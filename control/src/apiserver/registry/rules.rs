//! The registry's decisions, pure: what a path asks for, valid names, tags and digests, what a
//! manifest references, what the collector may delete, who may push and pull.

use crate::pki::Identity;
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// What a `/v2/…` path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    Tags {
        name: String,
    },
    Manifest {
        name: String,
        reference: String,
    },
    Blob {
        name: String,
        digest: String,
    },
    /// `/v2/<name>/blobs/uploads/`: start an upload.
    Uploads {
        name: String,
    },
    Upload {
        name: String,
        id: String,
    },
}

/// An OCI error: status, code (the spec's), message.
#[derive(Debug, PartialEq, Eq)]
pub struct Error(pub u16, pub &'static str, pub String);

impl Error {
    pub(super) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Error {
        Error(status, code, message.into())
    }
}

/// A repository name as the spec allows it: path components of `[a-z0-9]+` joined by `.`,
/// `_`, `__` or `-`s, separated by `/`.
pub fn valid_name(name: &str) -> bool {
    let component = |c: &str| {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        // Separators between alphanumerics: `.`, `_`, `__` or one or more `-`.
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
                return false;
            }
        }
        true
    };
    !name.is_empty() && name.len() <= 255 && name.split('/').all(component)
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The hex of a `sha256:<64 hex>` digest (the only algorithm stored).
pub fn sha256_hex(digest: &str) -> Result<String, Error> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
        .ok_or_else(|| Error::new(400, "DIGEST_INVALID", format!("{digest:?} is not a sha256 digest")))?;
    Ok(hex.to_string())
}

/// Route a path under `/v2/` (without it: `segs` are the path's segments after `v2`).
pub fn route(segs: &[&str]) -> Result<Route, Error> {
    let bad_name = |n: &str| Error::new(400, "NAME_INVALID", format!("{n:?} is not a valid repository name"));
    let name_of = |parts: &[&str]| {
        let n = parts.join("/");
        if valid_name(&n) { Ok(n) } else { Err(bad_name(&n)) }
    };
    let unknown = || Error::new(404, "NOT_FOUND", "no such registry endpoint");
    match segs {
        [] => Ok(Route::Base),
        [name @ .., "tags", "list"] if !name.is_empty() => Ok(Route::Tags { name: name_of(name)? }),
        [name @ .., "manifests", reference] if !name.is_empty() => {
            if !valid_tag(reference) && sha256_hex(reference).is_err() {
                return Err(Error::new(
                    400,
                    "MANIFEST_INVALID",
                    format!("{reference:?} is neither a tag nor a digest"),
                ));
            }
            Ok(Route::Manifest { name: name_of(name)?, reference: reference.to_string() })
        }
        [name @ .., "blobs", "uploads"] if !name.is_empty() => Ok(Route::Uploads { name: name_of(name)? }),
        [name @ .., "blobs", "uploads", id] if !name.is_empty() => {
            if uuid::Uuid::parse_str(id).is_err() {
                return Err(Error::new(404, "BLOB_UPLOAD_UNKNOWN", format!("upload {id:?} is not known")));
            }
            Ok(Route::Upload { name: name_of(name)?, id: id.to_string() })
        }
        [name @ .., "blobs", digest] if !name.is_empty() => {
            sha256_hex(digest)?;
            Ok(Route::Blob { name: name_of(name)?, digest: digest.to_string() })
        }
        _ => Err(unknown()),
    }
}

/// The digests a manifest (or index) refers to: its config, layers and sub-manifests.
pub fn references(manifest: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(d) = manifest.pointer("/config/digest").and_then(Value::as_str) {
        out.push(d.to_string());
    }
    for list in ["layers", "manifests", "blobs"] {
        for item in manifest.get(list).and_then(Value::as_array).into_iter().flatten() {
            if let Some(d) = item.get("digest").and_then(Value::as_str) {
                out.push(d.to_string());
            }
        }
    }
    out
}

/// Of `blobs` (hex, age), those to delete: not in `referenced` and older than `grace`.
pub fn unreferenced(blobs: &[(String, Duration)], referenced: &HashSet<String>, grace: Duration) -> Vec<String> {
    blobs.iter().filter(|(h, age)| !referenced.contains(h) && *age >= grace).map(|(h, _)| h.clone()).collect()
}

/// Whether `id` may use the registry for `write` (push, delete) or reading.
pub fn permitted(id: &Identity, write: bool) -> bool {
    let peer = id.user == wasmorch_api::join::APISERVER_CLIENT;
    id.is_admin() || (!write && (peer || id.groups.iter().any(|g| g == "system:nodes")))
}

/// `k=v&k2=v2`, percent-decoded.
pub(super) fn url_query(q: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16)
            {
                out.push(x);
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn paths_route_as_the_distribution_spec_says() {
        assert_eq!(route(&[]), Ok(Route::Base));
        assert_eq!(route(&["a", "b", "tags", "list"]), Ok(Route::Tags { name: "a/b".into() }));
        assert_eq!(
            route(&["hello", "manifests", "1.0"]),
            Ok(Route::Manifest { name: "hello".into(), reference: "1.0".into() })
        );
        assert_eq!(
            route(&["hello", "manifests", D]),
            Ok(Route::Manifest { name: "hello".into(), reference: D.into() })
        );
        assert_eq!(route(&["x", "blobs", D]), Ok(Route::Blob { name: "x".into(), digest: D.into() }));
        assert_eq!(route(&["x", "blobs", "uploads"]), Ok(Route::Uploads { name: "x".into() }));
        let id = "6b3c8f3e-2f4e-4c65-9f0a-4a9c0f7f1d2e";
        assert_eq!(route(&["x", "blobs", "uploads", id]), Ok(Route::Upload { name: "x".into(), id: id.into() }));
        assert_eq!(route(&["x", "blobs", "uploads", "../../etc"]).unwrap_err().1, "BLOB_UPLOAD_UNKNOWN");
        assert_eq!(route(&["Hello", "manifests", "1"]).unwrap_err().1, "NAME_INVALID");
        assert_eq!(route(&["..", "manifests", "1"]).unwrap_err().1, "NAME_INVALID");
        assert_eq!(route(&["x", "manifests", "no:tag"]).unwrap_err().1, "MANIFEST_INVALID");
        assert_eq!(route(&["x", "manifests", "-bad"]).unwrap_err().1, "MANIFEST_INVALID");
        assert_eq!(route(&["x", "blobs", "sha256:zz"]).unwrap_err().1, "DIGEST_INVALID");
        assert_eq!(route(&["x", "other"]).unwrap_err().0, 404);
    }

    #[test]
    fn names_tags_and_digests() {
        for ok in ["a", "a/b", "my-app", "a__b", "a.b/c_d", "x--y", "0"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "A", "a/", "/a", "a//b", "_a", "a_", "a._b", "a___b", "_manifests", ".."] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_tag("1.0") && valid_tag("_x") && valid_tag(&"a".repeat(128)));
        assert!(!valid_tag("") && !valid_tag(".x") && !valid_tag("-x") && !valid_tag(&"a".repeat(129)));
        assert!(sha256_hex(D).is_ok());
        assert!(sha256_hex(&D.to_uppercase()).is_err() && sha256_hex("sha512:00").is_err());
    }

    #[test]
    fn only_unreferenced_blobs_past_the_grace_go() {
        let m = json!({"config": {"digest": D}, "layers": [{"digest": "sha256:ab"}], "manifests": [{"digest": "sha256:cd"}]});
        assert_eq!(references(&m), [D, "sha256:ab", "sha256:cd"]);
        let referenced: HashSet<String> = ["kept".to_string()].into();
        let h = Duration::from_secs(3600);
        let blobs =
            vec![("kept".to_string(), 2 * h), ("old".to_string(), 2 * h), ("new".to_string(), Duration::from_secs(5))];
        assert_eq!(unreferenced(&blobs, &referenced, h), ["old"]);
    }

    #[test]
    fn admins_push_nodes_pull() {
        let node = Identity { user: "system:node:n1".into(), groups: vec!["system:nodes".into()] };
        let other = Identity { user: "x".into(), groups: vec!["system:authenticated".into()] };
        assert!(permitted(&Identity::admin(), true) && permitted(&Identity::admin(), false));
        assert!(permitted(&node, false) && !permitted(&node, true));
        assert!(!permitted(&other, false));
        let peer = Identity { user: wasmorch_api::join::APISERVER_CLIENT.into(), groups: vec![] };
        assert!(permitted(&peer, false) && !permitted(&peer, true), "another API server pulls only");
    }

    #[test]
    fn queries_decode() {
        assert_eq!(
            url_query("digest=sha256%3Aab&n=2"),
            [("digest".to_string(), "sha256:ab".to_string()), ("n".to_string(), "2".to_string())]
        );
    }
}
