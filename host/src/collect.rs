//! What a node accumulates, and its collector. Pulled components (`images/<sha256>.wasm`),
//! compiled code (`cache/<sha256>.cwasm`, and in memory the runtime's loaded components) stay
//! while a container on this node uses them and for `image_max_age` after the last one stops
//! (kubelet's `imageMaximumGCAge`); then they go. Pod directories (logs, volumes) go with
//! their pod (see `agent.rs`). Built-in components live in the binary and take no disk.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Which components (by digest) containers on this node use, and when each was last let go.
#[derive(Default)]
pub struct Uses {
    inner: Mutex<HashMap<String, Use>>,
}

struct Use {
    count: usize,
    last: Instant,
}

/// One container's use of a component; dropping it lets go.
pub struct UseGuard {
    uses: Arc<Uses>,
    digest: String,
}

impl Drop for UseGuard {
    fn drop(&mut self) {
        let mut m = self.uses.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(u) = m.get_mut(&self.digest) {
            u.count = u.count.saturating_sub(1);
            u.last = Instant::now();
        }
    }
}

impl Uses {
    pub fn acquire(self: &Arc<Self>, digest: &str) -> UseGuard {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(digest.to_string()).or_insert(Use { count: 0, last: Instant::now() }).count += 1;
        UseGuard { uses: self.clone(), digest: digest.to_string() }
    }

    /// Digests in use now.
    pub fn in_use(&self) -> HashSet<String> {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().filter(|(_, u)| u.count > 0).map(|(d, _)| d.clone()).collect()
    }

    /// Digests in use now or let go less than `age` ago; older records are forgotten.
    pub fn recent(&self, age: Duration) -> HashSet<String> {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, u| u.count > 0 || u.last.elapsed() < age);
        m.keys().cloned().collect()
    }
}

/// Pod directories (`NS_NAME_UID`) whose pod is not among `live` uids.
pub fn stale_pod_dirs<'a>(dirs: &'a [String], live: &HashSet<&str>) -> Vec<&'a String> {
    dirs.iter().filter(|d| d.rsplit_once('_').is_some_and(|(_, uid)| !live.contains(uid))).collect()
}

/// Files named `<digest>.<ext>` to remove: a digest not kept, last written before `cutoff`.
/// Anything else (a partial download, an unknown file) is left alone.
pub fn unused_files<'a>(
    files: &'a [(String, SystemTime)],
    ext: &str,
    keep: &HashSet<String>,
    cutoff: SystemTime,
) -> Vec<&'a String> {
    files
        .iter()
        .filter(|(name, modified)| {
            name.strip_suffix(ext)
                .and_then(|d| d.strip_suffix('.'))
                .is_some_and(|d| d.len() == 64 && !keep.contains(d) && *modified < cutoff)
        })
        .map(|(name, _)| name)
        .collect()
}

fn listing(dir: &Path) -> Vec<(String, SystemTime)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), modified))
        })
        .collect()
}

/// Remove unused components and compiled code from `dirs` (directory, extension).
pub fn sweep_files(dirs: &[(&Path, &str)], keep: &HashSet<String>, max_age: Duration) -> usize {
    let cutoff = SystemTime::now().checked_sub(max_age).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut removed = 0;
    for (dir, ext) in dirs {
        let files = listing(dir);
        for name in unused_files(&files, ext, keep, cutoff) {
            match std::fs::remove_file(dir.join(name)) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!("removing {}: {e}", dir.join(name).display()),
            }
        }
    }
    removed
}

/// Remove the pod directories under `pods` that belong to none of the `live` pods.
pub fn sweep_pod_dirs(pods: &Path, live: &HashSet<&str>) {
    let dirs: Vec<String> = listing(pods).into_iter().map(|(n, _)| n).collect();
    for d in stale_pod_dirs(&dirs, live) {
        if let Err(e) = std::fs::remove_dir_all(pods.join(d)) {
            tracing::warn!("removing {}: {e}", pods.join(d).display());
        }
    }
}

/// The collector: every `every`, forget compiled components no container uses, and remove
/// components and compiled code unused for `max_age` (`None`: kept on disk forever).
pub async fn run(ctx: Arc<crate::pod::NodeCtx>, max_age: Option<Duration>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let forgotten = ctx.rt.forget_except(&ctx.uses.in_use());
        let Some(age) = max_age else { continue };
        let keep = ctx.uses.recent(age);
        let images = ctx.puller.cache_dir().to_path_buf();
        let code = ctx.rt.cache_dir().to_path_buf();
        let removed = tokio::task::spawn_blocking(move || {
            let n = sweep_files(&[(&images, "wasm"), (&code, "cwasm")], &keep, age);
            crate::artifact::sweep_refs(&images);
            n
        })
        .await
        .unwrap_or(0);
        if removed + forgotten > 0 {
            tracing::info!(removed, forgotten, "collected unused components and compiled code");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_count_containers_and_remember_when_let_go() {
        let uses = Arc::new(Uses::default());
        let a = uses.acquire("a");
        let a2 = uses.acquire("a");
        let b = uses.acquire("b");
        assert_eq!(uses.in_use(), HashSet::from(["a".to_string(), "b".to_string()]));
        drop(a);
        assert!(uses.in_use().contains("a"), "one container still uses a");
        drop(a2);
        drop(b);
        assert!(uses.in_use().is_empty());
        // Let go just now: recent for an hour, not for nothing.
        assert_eq!(uses.recent(Duration::from_secs(3600)).len(), 2);
        assert!(uses.recent(Duration::ZERO).is_empty());
        assert!(uses.recent(Duration::from_secs(3600)).is_empty(), "forgotten records stay forgotten");
    }

    #[test]
    fn only_unkept_digest_files_older_than_the_cutoff_go() {
        let now = SystemTime::now();
        let old = now - Duration::from_secs(7200);
        let (d1, d2, d3) = ("1".repeat(64), "2".repeat(64), "3".repeat(64));
        let files = vec![
            (format!("{d1}.wasm"), old),
            (format!("{d2}.wasm"), old),
            (format!("{d3}.wasm"), now),
            (format!("{d1}.partial"), old),
            ("notes.txt".to_string(), old),
            ("refs".to_string(), old),
        ];
        let keep = HashSet::from([d2.clone()]);
        let gone = unused_files(&files, "wasm", &keep, now - Duration::from_secs(3600));
        assert_eq!(gone, [&format!("{d1}.wasm")]);
    }

    #[test]
    fn pod_dirs_of_pods_not_live_are_stale() {
        let dirs = vec!["default_web-1_u1".to_string(), "kube-system_a_u2".to_string(), "stray".to_string()];
        let live = HashSet::from(["u2"]);
        assert_eq!(stale_pod_dirs(&dirs, &live), [&dirs[0]]);
    }
}
