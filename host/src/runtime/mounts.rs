//! A container's volume mounts as its instances get them: WASI preopened directories,
//! opened once per run and shared while the node's bound on held handles allows.

use super::Runtime;
use std::sync::Arc;

/// One preopened directory of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host: std::path::PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// A container's volume mounts opened as directories, to give its instances: each gets
/// clones of the same handles, so an HTTP container opens them once per run rather than
/// once per request. The roots stay the same while a run lasts (`pod::volumes` resolves
/// them before it starts; updates replace files inside them).
#[derive(Clone, Default)]
pub struct Preopens(pub(super) wasmtime_wasi::filesystem::WasiFilesystemCtx);

/// Most directory handles the node holds open for containers' mounts between requests, given
/// the process's limit on open descriptors (`None`: none known) and the pods the node may
/// run. Each pod already takes descriptors of its own (a listening socket, its log file while
/// written), and connections and the API client need room: two per pod and 1,024 are set
/// aside, and half of what is left may hold mounts, at most [`MAX_HELD_DIRS`]. Unbounded, a
/// node of 10,000 idle pods held a descriptor per mount per pod beside its listeners and ran
/// out of descriptors at this machine's limit of 20,000; past the bound a container opens its
/// mounts per instance, as a process does per run.
pub fn held_dirs_bound(open_files: Option<u64>, max_pods: u32) -> usize {
    let Some(limit) = open_files else { return MAX_HELD_DIRS };
    let set_aside = u64::from(max_pods) * 2 + 1024;
    (limit.saturating_sub(set_aside) / 2).min(MAX_HELD_DIRS as u64) as usize
}

/// The most held mount handles on any node: past it, holding more saves an `openat` per
/// request of a few pods but keeps kernel memory for every idle one.
pub const MAX_HELD_DIRS: usize = 65_536;

/// A container's mounts as its instances get them: opened once and shared while the node
/// holds fewer than its bound ([`held_dirs_bound`]) of such handles, else opened for each
/// instance.
pub struct ContainerMounts {
    mounts: Arc<[Mount]>,
    held: Option<(Preopens, HeldDirs)>,
}

/// A share of the node's held handles, given back when dropped.
struct HeldDirs {
    count: usize,
    of: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for HeldDirs {
    fn drop(&mut self) {
        self.of.fetch_sub(self.count, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ContainerMounts {
    /// Open `mounts` to hold, if the node's bound allows; an error names a mount that
    /// cannot be opened.
    pub fn new(rt: &Runtime, mounts: Arc<[Mount]>) -> anyhow::Result<ContainerMounts> {
        Self::within(&rt.held_dirs, rt.cfg.max_held_dirs, mounts)
    }

    fn within(
        held: &Arc<std::sync::atomic::AtomicUsize>,
        max: usize,
        mounts: Arc<[Mount]>,
    ) -> anyhow::Result<ContainerMounts> {
        use std::sync::atomic::Ordering::Relaxed;
        let n = mounts.len();
        if held.fetch_update(Relaxed, Relaxed, |h| (n > 0 && h + n <= max).then_some(h + n)).is_err() {
            // Not held: opened now only to name a mount that cannot be.
            Preopens::open(&mounts)?;
            return Ok(ContainerMounts { mounts, held: None });
        }
        let guard = HeldDirs { count: n, of: held.clone() };
        let fs = Preopens::open(&mounts)?;
        Ok(ContainerMounts { mounts, held: Some((fs, guard)) })
    }

    /// The mounts for one instance.
    pub fn preopens(&self) -> anyhow::Result<Preopens> {
        match &self.held {
            Some((fs, _)) => Ok(fs.clone()),
            None => Preopens::open(&self.mounts),
        }
    }

    /// Whether the handles are held (shared by instances).
    pub fn held(&self) -> bool {
        self.held.is_some()
    }
}

impl Preopens {
    pub fn open(mounts: &[Mount]) -> anyhow::Result<Preopens> {
        let mut b = wasmtime_wasi::WasiCtxBuilder::new();
        for m in mounts {
            let perms = if m.read_only { wasmtime_wasi::FsPerms::ReadOnly } else { wasmtime_wasi::FsPerms::ReadWrite };
            b.preopened_dir(&m.host, &m.guest, perms)
                .map_err(|e| anyhow::anyhow!("mounting {} at {}: {e:#}", m.host.display(), m.guest))?;
        }
        Ok(Preopens(b.build().filesystem().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_held_open_only_within_the_node_s_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mount = |guest: &str| Mount { host: dir.path().to_path_buf(), guest: guest.into(), read_only: true };
        let two: Arc<[Mount]> = vec![mount("/a"), mount("/b")].into();
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = || held.load(std::sync::atomic::Ordering::Relaxed);
        let first = ContainerMounts::within(&held, 3, two.clone()).unwrap();
        assert!(first.held() && count() == 2);
        let second = ContainerMounts::within(&held, 3, two.clone()).unwrap();
        assert!(!second.held() && count() == 2, "over the bound: opened per instance");
        assert!(second.preopens().is_ok() && first.preopens().is_ok());
        let none = ContainerMounts::within(&held, 3, Vec::new().into()).unwrap();
        assert!(!none.held() && count() == 2, "nothing to hold");
        drop(first);
        assert_eq!(count(), 0, "given back with the container");
        assert!(ContainerMounts::within(&held, 3, two.clone()).unwrap().held());
        assert_eq!(count(), 0);
        // A mount that cannot be opened fails, held or not, and keeps no share.
        let gone: Arc<[Mount]> =
            vec![Mount { host: dir.path().join("gone"), guest: "/g".into(), read_only: true }].into();
        assert!(ContainerMounts::within(&held, 3, gone.clone()).is_err());
        assert!(ContainerMounts::within(&held, 0, gone).is_err());
        assert_eq!(count(), 0);
    }

    #[test]
    fn the_bound_leaves_each_pod_its_descriptors() {
        // This machine: a hard limit of 20,000.
        assert_eq!(held_dirs_bound(Some(20_000), 1_000), (20_000 - 2_000 - 1_024) / 2);
        assert_eq!(held_dirs_bound(Some(20_000), 10_000), 0, "10,000 pods leave no room: opened per instance");
        // macOS's usual 10,240 and the kubelet's 110 pods.
        assert_eq!(held_dirs_bound(Some(10_240), 110), (10_240 - 220 - 1_024) / 2);
        // A raised limit (1,048,576) and an unknown one stop at the cap.
        assert_eq!(held_dirs_bound(Some(1 << 20), 1_000), MAX_HELD_DIRS);
        assert_eq!(held_dirs_bound(None, 1_000), MAX_HELD_DIRS);
        assert_eq!(held_dirs_bound(Some(100), 1_000), 0);
    }

    #[test]
    fn a_mount_that_cannot_be_opened_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mount = |host: std::path::PathBuf| Mount { host, guest: "/data".into(), read_only: true };
        assert!(Preopens::open(&[mount(dir.path().to_path_buf())]).is_ok());
        let e = Preopens::open(&[mount(dir.path().join("gone"))]).err().expect("a missing directory");
        let e = format!("{e:#}");
        assert!(e.contains("gone") && e.contains("at /data"), "{e}");
    }
}
