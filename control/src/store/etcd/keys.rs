//! Where objects live in etcd: kube-apiserver's layout under a prefix
//! (`/registry/<resource>/<namespace>/<name>`; custom resources, and a built-in resource whose
//! plural another group also uses, keep their group: `/registry/<group>/<resource>/…`).
//!
//! Store keys above the engine are `/<group or core>/<plural>/<rest>`; these functions map
//! them to etcd keys and back, preserving order within a prefix (so paged lists page alike).

use std::collections::HashMap;
use std::sync::OnceLock;

/// Built-in plurals served by one group only, and their group.
fn builtin_plurals() -> &'static HashMap<&'static str, &'static str> {
    static MAP: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut groups: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
        for r in wasmorch_api::resources::RESOURCES {
            let g = if r.group.is_empty() { "core" } else { r.group };
            let list = groups.entry(r.plural).or_default();
            if !list.contains(&g) {
                list.push(g);
            }
        }
        groups.into_iter().filter(|(_, gs)| gs.len() == 1).map(|(p, gs)| (p, gs[0])).collect()
    })
}

/// The etcd key of store key `key` under `prefix` (no trailing slash, e.g. `/registry`).
pub fn to_etcd(prefix: &str, key: &str) -> String {
    let rest = key.strip_prefix('/').unwrap_or(key);
    let Some((group, after)) = rest.split_once('/') else { return format!("{prefix}/{rest}") };
    let plural = after.split('/').next().unwrap_or("");
    match builtin_plurals().get(plural) {
        Some(g) if *g == group => format!("{prefix}/{after}"),
        _ => format!("{prefix}/{rest}"),
    }
}

/// The store key of etcd key `key`, or `None` for a key outside `prefix`.
pub fn from_etcd(prefix: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    let first = rest.split('/').next().unwrap_or("");
    Some(match builtin_plurals().get(first) {
        Some(g) => format!("/{g}/{rest}"),
        None => format!("/{rest}"),
    })
}

/// The end of the key range holding every key that starts with `start` (etcd's prefix end).
pub fn range_end(start: &[u8]) -> Vec<u8> {
    let mut end = start.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_resources_are_laid_out_as_kube_apiserver_does() {
        assert_eq!(to_etcd("/registry", "/core/pods/default/web-1"), "/registry/pods/default/web-1");
        assert_eq!(to_etcd("/registry", "/apps/deployments/default/web"), "/registry/deployments/default/web");
        assert_eq!(to_etcd("/registry", "/core/nodes/n1"), "/registry/nodes/n1");
        assert_eq!(to_etcd("/registry", "/core/pods/"), "/registry/pods/", "prefixes map alike");
        assert_eq!(to_etcd("/registry", "/core/pods/default/"), "/registry/pods/default/");
    }

    #[test]
    fn custom_resources_keep_their_group() {
        let k = "/stable.example.com/crontabs/default/c1";
        assert_eq!(to_etcd("/registry", k), "/registry/stable.example.com/crontabs/default/c1");
        // A custom group reusing a built-in plural does not take the built-in's place.
        let k = "/example.com/pods/default/p";
        assert_eq!(to_etcd("/registry", k), "/registry/example.com/pods/default/p");
        assert_eq!(from_etcd("/registry", "/registry/example.com/pods/default/p").as_deref(), Some(k));
    }

    #[test]
    fn keys_come_back_unchanged() {
        for k in [
            "/core/pods/default/web-1",
            "/apps/deployments/kube-system/x",
            "/core/namespaces/default",
            "/stable.example.com/crontabs/ns/c",
            "/rbac.authorization.k8s.io/clusterroles/admin",
        ] {
            assert_eq!(from_etcd("/wasmorch", &to_etcd("/wasmorch", k)).as_deref(), Some(k), "{k}");
        }
        assert_eq!(from_etcd("/registry", "/other/pods/x"), None, "outside the prefix");
        assert_eq!(from_etcd("/registry", "/registryx/pods/x"), None);
    }

    #[test]
    fn a_prefix_range_ends_after_its_last_key() {
        assert_eq!(range_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(range_end(b"\xff\xff"), vec![0]);
    }
}
