//! What the node reads of the machine it runs on, from each platform's own sources.

/// Cores of this machine (or of its CPU quota, where the OS applies one).
pub fn cores() -> u64 {
    std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1)
}

/// Memory of this machine in bytes: Linux's `/proc/meminfo`, lowered to the cgroup's
/// `memory.max` when the node runs inside a limit (a container on a board); the OS's own
/// figure on macOS and Windows. 1 GiB only when nothing can be read.
pub fn total_memory() -> u64 {
    platform_memory().unwrap_or(1 << 30)
}

#[cfg(target_os = "linux")]
fn platform_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    effective_memory(&meminfo, cgroup.as_deref())
}

#[cfg(any(target_os = "macos", target_os = "windows"))]
fn platform_memory() -> Option<u64> {
    let mut s = sysinfo::System::new();
    s.refresh_memory();
    Some(s.total_memory()).filter(|m| *m > 0)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn platform_memory() -> Option<u64> {
    None
}

/// `MemTotal` of a meminfo text, capped by a cgroup v2 `memory.max` (`max`: no limit).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn effective_memory(meminfo: &str, cgroup_max: Option<&str>) -> Option<u64> {
    let total = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())?
        * 1024;
    let limit = cgroup_max.and_then(|m| m.trim().parse::<u64>().ok());
    Some(limit.map_or(total, |l| l.min(total)))
}

/// The machine's host name, lowercased, if it is a valid node name (a DNS subdomain).
pub fn host_name() -> Option<String> {
    let name = hostname::get().ok()?.into_string().ok()?.trim().to_lowercase();
    // Windows and macOS names may carry a `.local` or be NetBIOS-style; what is left must
    // still be a DNS subdomain to name a Node.
    wasmorch_api::validation::dns1123_subdomain_errors(&name).is_none().then_some(name)
}

/// Raise this process's soft limit on open files to its hard limit, as Go programs (the
/// kubelet, containerd) do at start, and past it where the process may: every HTTP pod holds
/// a listening socket and its log file, and the usual soft limit of 1,024 would stop a node
/// long before its `--max-pods`. Returns the limit now in force, if it is known.
#[cfg(unix)]
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let below = match (l.current, l.maximum) {
        (Some(c), Some(m)) => c < m,
        (Some(_), None) => true,
        (None, _) => false,
    };
    // With the privilege to (root, CAP_SYS_RESOURCE), past the hard limit up to the kernel's
    // ceiling, as container runtimes' service units do (LimitNOFILE=1048576).
    #[cfg(target_os = "linux")]
    if let Some(ceiling) =
        std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<u64>().ok())
        && l.maximum.is_some_and(|m| m < ceiling)
        && setrlimit(Resource::Nofile, rustix::process::Rlimit { current: Some(ceiling), maximum: Some(ceiling) })
            .is_ok()
    {
        return Some(ceiling);
    }
    if below {
        let maximum = l.maximum;
        l.current = maximum;
        if setrlimit(Resource::Nofile, l).is_err() {
            // macOS refuses unlimited; its kernel's own ceiling still beats 256.
            let ceiling = rustix::process::Rlimit { current: Some(10_240), maximum };
            let _ = setrlimit(Resource::Nofile, ceiling);
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Windows has no such limit on sockets.
#[cfg(not(unix))]
pub fn raise_open_files_limit() -> Option<u64> {
    None
}

/// This process's limit on open files in force, if it has one.
#[cfg(unix)]
pub fn open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(not(unix))]
pub fn open_files_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_open_files_limit_rises_to_the_hard_limit() {
        use rustix::process::{Resource, getrlimit};
        let now = raise_open_files_limit();
        let l = getrlimit(Resource::Nofile);
        assert_eq!(now, l.current);
        assert!(l.current == l.maximum || (l.maximum.is_none() && l.current.is_some()), "{l:?}");
        let hard_before = l.maximum;
        assert_eq!(raise_open_files_limit(), now, "a second call changes nothing");
        assert_eq!(getrlimit(Resource::Nofile).maximum, hard_before);
    }

    #[test]
    fn a_cgroup_limit_below_the_machine_is_the_memory() {
        let meminfo = "MemTotal:        1024000 kB\nMemFree:  10 kB\n";
        assert_eq!(effective_memory(meminfo, None), Some(1_048_576_000));
        assert_eq!(effective_memory(meminfo, Some("max\n")), Some(1_048_576_000));
        assert_eq!(effective_memory(meminfo, Some("536870912\n")), Some(536_870_912));
        assert_eq!(effective_memory(meminfo, Some("99999999999999")), Some(1_048_576_000));
        assert_eq!(effective_memory("nothing", None), None);
    }

    #[test]
    fn this_machine_has_cores_memory_and_a_name() {
        assert!(cores() >= 1);
        assert!(total_memory() >= 16 << 20);
        if let Some(n) = host_name() {
            assert!(wasmorch_api::validation::dns1123_subdomain_errors(&n).is_none());
        }
    }
}
