//! Configuration: the environment the pod spec gives the container (`env`, and the node's
//! `POD_NAME`, `POD_NAMESPACE`, `POD_IP`, `NODE_NAME`).

/// A setting, if set.
pub fn get(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// A setting that must be there; the error names it.
pub fn require(key: &str) -> Result<String, String> {
    get(key).ok_or_else(|| format!("configuration {key} is not set"))
}

/// A setting parsed into `T`, or `default` when absent; the error names the key and value.
pub fn parse_or<T: std::str::FromStr>(key: &str, default: T) -> Result<T, String> {
    match get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| format!("configuration {key}={v:?} is not valid")),
    }
}
