//! Components built into the binary (the examples), answered as `wasmorch.local/NAME:1.0`.

use super::{PullError, pull_err};
use sha2::{Digest, Sha256};

/// The registry name of the components built into the binary (the examples): every node
/// answers `wasmorch.local/NAME:1.0` from its own binary, without a network, whatever the
/// pull policy, as k3s imports its air-gap images.
pub const BUILTIN_REGISTRY: &str = "wasmorch.local";
/// The tags a built-in component answers to (and `@sha256:` of its component digest).
pub const BUILTIN_TAGS: [&str; 2] = ["1.0", "latest"];

/// Components built into the binary, by image name.
#[derive(Clone, Default)]
pub struct Builtins(std::sync::Arc<Vec<Builtin>>);

struct Builtin {
    name: String,
    component: &'static [u8],
    digest: String,
}

impl std::fmt::Debug for Builtins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|b| &b.name)).finish()
    }
}

impl Builtins {
    pub fn new(list: &[(&str, &'static [u8])]) -> Builtins {
        Builtins(std::sync::Arc::new(
            list.iter()
                .map(|(name, component)| Builtin {
                    name: name.to_string(),
                    component,
                    digest: hex::encode(Sha256::digest(component)),
                })
                .collect(),
        ))
    }

    /// Each built-in image: its references (`REGISTRY/NAME:1.0`, `REGISTRY/NAME@sha256:…`)
    /// and its size, as a Node's `status.images` lists them.
    pub fn images(&self) -> Vec<(Vec<String>, usize)> {
        self.0
            .iter()
            .map(|b| {
                let base = format!("{BUILTIN_REGISTRY}/{}", b.name);
                (vec![format!("{base}@sha256:{}", b.digest), format!("{base}:{}", BUILTIN_TAGS[0])], b.component.len())
            })
            .collect()
    }

    /// The component a reference in the built-in registry names: `None` for references
    /// elsewhere, an error naming what is built in for one that names nothing here.
    pub fn lookup(&self, image: &str) -> Option<Result<&'static [u8], PullError>> {
        self.lookup_with_digest(image).map(|r| r.map(|(c, _)| c))
    }

    /// [`lookup`](Self::lookup), with the component's digest (hex SHA-256).
    pub fn lookup_with_digest(&self, image: &str) -> Option<Result<(&'static [u8], &str), PullError>> {
        let rest = image.strip_prefix(BUILTIN_REGISTRY)?.strip_prefix('/')?;
        let (name, found) = match rest.split_once('@') {
            Some((name, digest)) => {
                let digest = digest.strip_prefix("sha256:").unwrap_or("").to_ascii_lowercase();
                (name, self.0.iter().find(|b| b.name == name && b.digest == digest))
            }
            None => {
                let (name, tag) = rest.split_once(':').unwrap_or((rest, "latest"));
                (name, self.0.iter().find(|b| b.name == name && BUILTIN_TAGS.contains(&tag)))
            }
        };
        Some(found.map(|b| (b.component, b.digest.as_str())).ok_or_else(|| {
            let known: Vec<String> =
                self.0.iter().map(|b| format!("{BUILTIN_REGISTRY}/{}:{}", b.name, BUILTIN_TAGS[0])).collect();
            let what = if self.0.iter().any(|b| b.name == name) { "tag or digest" } else { "component" };
            pull_err(format!(
                "{image}: no such {what} built into this wasmorch (built in: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        }))
    }
}
