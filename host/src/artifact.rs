//! Fetching a container's component: `file://` paths for now, content-addressed by digest.

use std::path::PathBuf;

/// Why an image could not be had, as a waiting reason and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullError {
    /// `ErrImagePull` or `InvalidImage`.
    pub reason: &'static str,
    pub message: String,
}

/// Read the component bytes an image reference names.
pub async fn fetch(image: &str) -> Result<Vec<u8>, PullError> {
    if let Some(path) = image.strip_prefix("file://") {
        let p = PathBuf::from(path);
        return tokio::fs::read(&p)
            .await
            .map_err(|e| PullError { reason: "ErrImagePull", message: format!("reading {}: {e}", p.display()) });
    }
    if image.trim().is_empty() {
        return Err(PullError { reason: "InvalidImage", message: "empty image reference".into() });
    }
    Err(PullError {
        reason: "InvalidImage",
        message: format!(
            "image {image:?}: only file:// references are supported by this node so far (OCI and https come next)"
        ),
    })
}
