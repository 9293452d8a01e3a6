//! The wasm runtime of a node: one `Engine`, one epoch ticker, the pooling allocator,
//! components compiled once per content digest (and cached on disk), a fresh `Store` per
//! instance, and the node's resource accounting: each container a [`cgroup::Cgroup`] with
//! its CPU account ([`cpu`]), memory budget ([`memory`], [`alloc`]) and, for HTTP,
//! admission ([`admission`]).

pub mod admission;
pub mod alloc;
pub mod cgroup;
pub mod cpu;
pub mod http;
pub mod memory;
mod mounts;
mod names;
pub mod output;
pub mod policy;
pub mod ports;
pub mod process;
mod state;
mod tunnel;

pub use mounts::{ContainerMounts, Mount, Preopens, held_dirs_bound};
pub use policy::NetPolicy;

pub use state::{Cluster, EgressHooks, InstanceState, SendFuture, SendResult};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Epoch tick: the unit of CPU time slicing.
pub const TICK: Duration = Duration::from_millis(10);

/// The wasmtime version the node reports as its container runtime.
pub const WASMTIME_VERSION: &str = "48.0.8";

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled code is cached (`<digest>.cwasm`).
    pub cache_dir: PathBuf,
    /// Instance slots of the pooling allocator (concurrent instances on this node).
    pub max_instances: u32,
    /// Largest linear memory of one instance, whatever its pod asks.
    pub max_memory: usize,
    /// Cores that run wasm at once (run slots), and the CPU all of it may use per second
    /// (millicores: the node's allocatable, `cores − system-reserved`).
    pub cpu_slots: u32,
    pub allocatable_cpu_millis: u64,
    /// Memory all instances (and the host memory they cause) may hold together.
    pub allocatable_memory: usize,
    /// Pod ports mapped onto ports of 127.0.0.1 (see [`ports`]).
    pub mapped_ports: bool,
    /// Most directory handles held open for containers' mounts ([`mounts::held_dirs_bound`]).
    pub max_held_dirs: usize,
}

/// Bytes of each linear memory the pooling allocator keeps resident (zeroed with `memset`)
/// in a freed slot instead of returning them with `madvise`, whose TLB shootdown interrupts
/// every core (see [`memory::WarmSlots`], which charges them to the node). A hello-http
/// instance's memory (1.1 MiB) fits whole; only Linux honours it.
pub const KEEP_RESIDENT_MEMORY: usize = 4 << 20;
/// The same for each table.
pub const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// Entries one instance's resource table may hold (handles: streams, fields, requests…).
pub const MAX_RESOURCES: usize = 65_536;
/// Bytes one `fields` resource (a header map) may hold, in its in-memory form.
pub const MAX_FIELDS_BYTES: usize = 64 << 10;

/// What a component is, by the world it exports.
#[derive(Clone)]
pub enum Loaded {
    /// Exports `wasi:http/incoming-handler`: a fresh instance per request.
    Http(http::HttpComponent),
    /// Exports `wasi:cli/run`: a process.
    Command(CommandPre<InstanceState>),
}

pub struct Runtime {
    pub engine: Engine,
    linker: Linker<InstanceState>,
    cfg: RuntimeConfig,
    /// Pre-instantiated components by content digest. std Mutex: held only for map access.
    loaded: Mutex<HashMap<String, Loaded>>,
    /// One lock per digest being loaded: pods starting together with one image compile it
    /// once (a hundred concurrent compiles of one component took ~5 MiB of heap each).
    loading: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    pub cpu: Arc<cpu::NodeCpu>,
    /// The node's memory budget, parent of every container's.
    pub memory: Arc<memory::MemoryBudget>,
    /// Where pod addresses are served on this machine (see [`ports`]).
    pub ports: Arc<ports::PortMap>,
    /// Pages kept resident in free instance slots, charged to `memory`.
    pub warm: memory::WarmPools,
    /// Instances started and alive, components compiled and loaded from the code cache (for
    /// `/metrics`).
    pub counts: Arc<Counts>,
    /// Directory handles held open for running containers' mounts ([`ContainerMounts`]).
    held_dirs: Arc<std::sync::atomic::AtomicUsize>,
}

/// The runtime's counters.
#[derive(Debug, Default)]
pub struct Counts {
    pub instances_started: std::sync::atomic::AtomicU64,
    pub instances_live: std::sync::atomic::AtomicI64,
    pub compiled: std::sync::atomic::AtomicU64,
    pub cache_loads: std::sync::atomic::AtomicU64,
}

/// A container's resources, from its `resources` (limits and requests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu: cpu::CpuSpec,
    /// `limits.memory` in bytes; `None`: the node's allocatable memory.
    pub memory: Option<usize>,
}

pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Runtime {
    pub fn new(cfg: RuntimeConfig) -> anyhow::Result<Arc<Runtime>> {
        // What the allocator keeps resident in a freed slot (only the pooling allocator on
        // Linux does).
        let keep = if cfg!(all(target_os = "linux", target_pointer_width = "64")) {
            (KEEP_RESIDENT_MEMORY, KEEP_RESIDENT_TABLE)
        } else {
            (0, 0)
        };
        let mut c = Config::new();
        c.wasm_component_model(true);
        c.epoch_interruption(true);
        if cfg!(target_pointer_width = "32") {
            // A 32-bit board (armv7, where wasm runs on the Pulley interpreter) has 3 GiB of
            // address space: no slots reserved ahead, memories grow in place, bounds checked.
            c.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            c.memory_reservation(0);
            c.memory_guard_size(0);
            c.memory_reservation_for_growth(1 << 20);
        } else {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(cfg.max_instances)
                .total_core_instances(cfg.max_instances * 4)
                .total_memories(cfg.max_instances * 2)
                .total_tables(cfg.max_instances * 4)
                .total_stacks(cfg.max_instances)
                .max_memories_per_component(4)
                .max_memory_size(cfg.max_memory)
                // Freed memory past `keep` is returned to the OS at once: a batch would keep
                // up to that many finished instances' memory resident, unbounded per slot.
                .decommit_batch_size(1)
                // What is kept is bounded and charged to the node (memory::WarmSlots): at
                // most `keep` per slot, in no more slots than were ever live at once, which
                // holds only while warm slots are reused before cold ones.
                .linear_memory_keep_resident(keep.0)
                .table_keep_resident(keep.1)
                .max_unused_warm_slots(0)
                // Where the kernel can say which pages an instance touched (Linux ≥ 6.7),
                // only those are reset, instead of `memset` over all `keep` bytes.
                .pagemap_scan(wasmtime::Enabled::Auto);
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
            c.memory_reservation(cfg.max_memory as u64);
            c.memory_guard_size(32 << 20);
        }
        let engine = Engine::new(&c).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e:#}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        names::add_to_linker(&mut linker)?;
        tunnel::add_to_linker(&mut linker)?;
        std::fs::create_dir_all(&cfg.cache_dir).with_context(|| format!("creating {}", cfg.cache_dir.display()))?;
        let cpu = cpu::NodeCpu::new(cfg.cpu_slots, cfg.allocatable_cpu_millis);
        let memory = memory::MemoryBudget::root(cfg.allocatable_memory);
        let ports = Arc::new(ports::PortMap::new(cfg.mapped_ports));
        let warm = memory::WarmPools {
            memories: memory::WarmSlots::new(memory.clone(), keep.0),
            tables: memory::WarmSlots::new(memory.clone(), keep.1),
        };
        let rt = Arc::new(Runtime {
            engine,
            linker,
            cfg,
            loaded: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            cpu,
            memory,
            ports,
            warm,
            counts: Arc::default(),
            held_dirs: Arc::default(),
        });
        // One ticker for the whole node; it stops when the runtime is dropped.
        let weak = Arc::downgrade(&rt);
        std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
            while let Some(rt) = weak.upgrade() {
                rt.engine.increment_epoch();
                drop(rt);
                std::thread::sleep(TICK);
            }
        })?;
        Ok(rt)
    }

    /// Drop compiled components held in memory whose digest is not in `keep`; returns how many.
    pub fn forget_except(&self, keep: &std::collections::HashSet<String>) -> usize {
        let mut m = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let before = m.len();
        m.retain(|d, _| keep.contains(d));
        before - m.len()
    }

    /// Bytes the node carries for free slots' kept pages (an upper bound), and the bytes
    /// actually resident in them now, as the allocator counts them.
    pub fn warm_bytes(&self) -> (usize, usize) {
        let charged = self.warm.memories.charged() + self.warm.tables.charged();
        let resident = self
            .engine
            .pooling_allocator_metrics()
            .map_or(0, |m| m.unused_memory_bytes_resident() + m.unused_table_bytes_resident());
        (charged, resident)
    }

    /// Where compiled code is kept on disk (`<sha256>.cwasm`).
    pub fn cache_dir(&self) -> &std::path::Path {
        &self.cfg.cache_dir
    }

    /// Compile (or load from the disk cache) and pre-instantiate a component.
    pub fn load(&self, bytes: &[u8]) -> anyhow::Result<(String, Loaded)> {
        self.load_known(digest(bytes), bytes)
    }

    /// [`load`](Self::load) of a fetched component: one whose digest its source vouches for
    /// (a built-in) is looked up by it without hashing the bytes, which a start of cached
    /// code would otherwise spend most of its time on; the bytes are checked against it
    /// before they are compiled.
    pub fn load_fetched(&self, f: &crate::artifact::Fetched) -> anyhow::Result<(String, Loaded)> {
        match &f.digest {
            Some(d) => self.load_known(d.clone(), &f.bytes),
            None => self.load(&f.bytes),
        }
    }

    /// Load `bytes`, whose digest is `d`: from what is loaded, the compiled cache, or compiled.
    fn load_known(&self, d: String, bytes: &[u8]) -> anyhow::Result<(String, Loaded)> {
        let cached = || self.loaded.lock().unwrap_or_else(|e| e.into_inner()).get(&d).cloned();
        if let Some(l) = cached() {
            return Ok((d, l));
        }
        let gate = self.loading.lock().unwrap_or_else(|e| e.into_inner()).entry(d.clone()).or_default().clone();
        let result = {
            let _one = gate.lock().unwrap_or_else(|e| e.into_inner());
            match cached() {
                // Loaded by whoever held the gate before us.
                Some(l) => Ok(l),
                None => self.compile_cached(&d, bytes).and_then(|c| self.classify(&c)).inspect(|l| {
                    self.loaded.lock().unwrap_or_else(|e| e.into_inner()).insert(d.clone(), l.clone());
                }),
            }
        };
        // The last one through removes the gate.
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if loading.get(&d).is_some_and(|g| Arc::strong_count(g) <= 2) {
            loading.remove(&d);
        }
        drop(loading);
        result.map(|l| (d, l))
    }

    fn compile_cached(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<Component> {
        let path = self.cfg.cache_dir.join(format!("{digest}.cwasm"));
        if path.exists() {
            match load_precompiled(&self.engine, &path) {
                Ok(c) => {
                    self.counts.cache_loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(c);
                }
                Err(e) => tracing::warn!("discarding cached code {}: {e:#}", path.display()),
            }
        }
        if !bytes.starts_with(b"\0asm") {
            bail!("not a WebAssembly binary");
        }
        // A digest handed in (see load_fetched) is checked before its code is kept under it.
        let actual = self::digest(bytes);
        if actual != digest {
            bail!("the component's bytes do not match their digest: expected sha256:{digest}, got sha256:{actual}");
        }
        let component = Component::from_binary(&self.engine, bytes).map_err(|e| {
            if wasmparser_says_module(bytes) {
                anyhow::anyhow!("a core wasm module, not a component: build for wasm32-wasip2")
            } else {
                anyhow::anyhow!("not a valid component: {e:#}")
            }
        })?;
        self.counts.compiled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, component.serialize()?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(component)
    }

    fn classify(&self, component: &Component) -> anyhow::Result<Loaded> {
        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let pre = self.linker.instantiate_pre(component).map_err(|e| anyhow::anyhow!("missing imports: {e:#}"))?;
        let is = |prefix: &str| exports.iter().any(|e| e.starts_with(prefix));
        if is("wasi:http/incoming-handler@0.2") {
            return Ok(Loaded::Http(http::HttpComponent::new(ProxyPre::new(pre)?)));
        }
        if is("wasi:cli/run@0.2") {
            return Ok(Loaded::Command(CommandPre::new(pre)?));
        }
        bail!(
            "the component exports neither wasi:http/incoming-handler nor wasi:cli/run (exports: {})",
            exports.join(", ")
        )
    }

    /// A container's resource group: CPU account and memory budget inside the node's.
    pub fn cgroup(&self, r: &Resources) -> Arc<cgroup::Cgroup> {
        let mem = memory::MemoryBudget::child(&self.memory, Some(r.memory.unwrap_or(self.cfg.allocatable_memory)));
        cgroup::Cgroup::new(self.cpu.group(r.cpu), mem)
    }

    /// Largest linear memory of one instance.
    pub fn max_memory(&self) -> usize {
        self.cfg.max_memory
    }

    /// Instance slots of the node.
    pub fn max_instances(&self) -> u32 {
        self.cfg.max_instances
    }

    /// A fresh store for one instance of `group`: its memory is charged to the group's
    /// budget, and it yields at every epoch tick (the node's CPU scheduler decides who runs
    /// next, see [`cpu`]).
    pub fn store(
        &self,
        wasi: wasmtime_wasi::WasiCtx,
        group: &cgroup::Cgroup,
        net: Arc<NetPolicy>,
        cluster: Option<Arc<dyn Cluster>>,
    ) -> InstanceStore {
        let mut table = wasmtime::component::ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let mut http = wasmtime_wasi_http::WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        let hold = memory::WarmHold::new(self.warm.clone());
        let state = InstanceState {
            wasi,
            http,
            table,
            limits: memory::InstanceMemory::new(group.memory.clone(), self.cfg.max_memory).with_warm(hold.clone()),
            hooks: EgressHooks { net, cluster },
            tunnels: Default::default(),
            binds: Default::default(),
            ports: self.ports.clone(),
            live: Live::new(self.counts.clone()),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        InstanceStore { store, _warm: hold }
    }
}

/// A store and its hold on the node's warm slots, given back only after the store dropped
/// (fields drop in order) and with it freed its slots.
pub struct InstanceStore {
    store: Store<InstanceState>,
    _warm: Arc<memory::WarmHold>,
}

impl std::ops::Deref for InstanceStore {
    type Target = Store<InstanceState>;
    fn deref(&self) -> &Store<InstanceState> {
        &self.store
    }
}

impl std::ops::DerefMut for InstanceStore {
    fn deref_mut(&mut self) -> &mut Store<InstanceState> {
        &mut self.store
    }
}

impl wasmtime::AsContext for InstanceStore {
    type Data = InstanceState;
    fn as_context(&self) -> wasmtime::StoreContext<'_, InstanceState> {
        self.store.as_context()
    }
}

impl wasmtime::AsContextMut for InstanceStore {
    fn as_context_mut(&mut self) -> wasmtime::StoreContextMut<'_, InstanceState> {
        self.store.as_context_mut()
    }
}

/// Counts an instance alive until its store is dropped.
pub struct Live(Arc<Counts>);

impl Live {
    fn new(c: Arc<Counts>) -> Live {
        c.instances_started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.instances_live.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Live(c)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.instances_live.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Standard streams of an instance other than its log (and empty stdin): an exec session's,
/// or a process's stdin that attach sessions write to.
#[derive(Default)]
pub struct Stdio {
    pub stdin: Option<wasmtime_wasi::cli::AsyncStdinStream>,
    pub stdout: Option<wasmtime_wasi::cli::AsyncStdoutStream>,
    pub stderr: Option<wasmtime_wasi::cli::AsyncStdoutStream>,
}

/// WASI context of one instance: environment, arguments, stdout/stderr into the pod's log,
/// sockets under the pod's network policy, and the container's volume mounts as preopened
/// directories (nothing else of the node's filesystem).
#[allow(clippy::too_many_arguments)]
pub fn wasi_ctx(
    env: &[(String, String)],
    args: &[String],
    log: Option<&output::LogSink>,
    stdio: Option<Stdio>,
    net: &Arc<NetPolicy>,
    fs: &Preopens,
    cluster: Option<&Arc<dyn Cluster>>,
    ports: &Arc<ports::PortMap>,
) -> wasmtime_wasi::WasiCtx {
    let mut b = wasmtime_wasi::WasiCtxBuilder::new();
    b.envs(env).args(args);
    let policy = net.clone();
    let cluster = cluster.cloned();
    let ports = ports.clone();
    // Name lookups are judged in `names` (cluster names for every pod, others with a grant).
    b.allow_tcp(true).allow_udp(true).allow_ip_name_lookup(true).socket_addr_check(move |addr, use_| {
        let ok = socket_use_allowed(&policy, cluster.as_ref(), &ports, addr, use_);
        if !ok {
            tracing::debug!(%addr, ?use_, "socket use refused by the pod's network policy");
        }
        Box::pin(std::future::ready(ok))
    });
    if let Some(sink) = log {
        b.stdout(sink.clone()).stderr(sink.clone());
    }
    if let Some(io) = stdio {
        if let Some(stdin) = io.stdin {
            b.stdin(stdin);
        }
        if let Some(out) = io.stdout {
            b.stdout(out);
        }
        if let Some(err) = io.stderr {
            b.stderr(err);
        }
    }
    let mut ctx = b.build();
    *ctx.filesystem() = fs.0.clone();
    ctx
}

/// Whether a pod's socket may be used so. With mapped pod ports the address is a real one:
/// a bind of the pod's own address became one of 127.0.0.1 port 0 (`tunnel`), and such a
/// socket may listen only once it serves a mapped address of the pod; a connection is judged
/// as to the virtual address its real one serves. Pure but for the map and the cluster's view.
pub(crate) fn socket_use_allowed(
    policy: &NetPolicy,
    cluster: Option<&Arc<dyn Cluster>>,
    ports: &ports::PortMap,
    addr: std::net::SocketAddr,
    use_: wasmtime_wasi::sockets::SocketAddrUse,
) -> bool {
    use wasmtime_wasi::sockets::SocketAddrUse as U;
    let seen = ports.virtual_of(addr).unwrap_or(addr);
    match use_ {
        U::TcpBind => policy.may_bind(addr) || (ports.mapped() && addr == ports.bind_addr(addr)),
        U::UdpBind => policy.may_bind(addr),
        U::TcpListen => policy.may_listen(seen),
        U::TcpAccept | U::UdpReceive => true,
        // The cluster (Services' addresses, where the node's proxy listens, and pod
        // addresses) is open to every pod, outside it what `wasmorch.io/egress` grants;
        // NetworkPolicies judge both.
        U::TcpConnect => may_connect(policy, cluster, seen, "TCP"),
        U::UdpSend => may_connect(policy, cluster, addr, "UDP"),
    }
}

/// Whether a pod may open a connection (or send a datagram) to `addr`. The cluster
/// (Services' addresses, where the node's proxy listens, and pod addresses) is open to every
/// pod, outside it what `wasmorch.io/egress` grants; NetworkPolicies judge both.
pub(crate) fn may_connect(
    policy: &NetPolicy,
    cluster: Option<&Arc<dyn Cluster>>,
    addr: std::net::SocketAddr,
    protocol: &str,
) -> bool {
    let sandbox = policy.may_connect(addr) || cluster.is_some_and(|c| c.in_cluster(addr));
    sandbox
        && cluster.is_none_or(|c| match c.policy_allows(addr, protocol) {
            Ok(()) => true,
            Err(why) => {
                tracing::debug!("{why}");
                false
            }
        })
}

fn wasmparser_says_module(bytes: &[u8]) -> bool {
    // Core modules have version 1 (`01 00 00 00`); components have a layer byte of 1 after the version.
    bytes.len() >= 8 && bytes[4..8] == [1, 0, 0, 0]
}

/// Load code this node compiled and wrote to its own cache directory.
#[allow(unsafe_code)]
fn load_precompiled(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be code produced by `Component::serialize`
    // for a compatible engine. Only this runtime writes to the cache directory (the node's data
    // dir), files are named by the digest of the source they were compiled from and written by
    // rename, and wasmtime checks the engine/version header before use.
    unsafe { Component::deserialize_file(engine, path) }.map_err(anyhow::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi::sockets::SocketAddrUse as U;

    #[test]
    fn a_component_is_compiled_only_if_its_bytes_match_the_digest_it_came_with() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(RuntimeConfig {
            cache_dir: dir.path().to_path_buf(),
            max_instances: 2,
            max_memory: 1 << 20,
            cpu_slots: 1,
            allocatable_cpu_millis: 1000,
            allocatable_memory: 64 << 20,
            mapped_ports: false,
            max_held_dirs: 0,
        })
        .unwrap();
        let bytes: &'static [u8] = b"\0asm\x0d\0\x01\0";
        let fetched = |digest: &str| crate::artifact::Fetched {
            bytes: std::borrow::Cow::Borrowed(bytes),
            digest: Some(digest.to_string()),
        };
        let e = rt.load_fetched(&fetched(&"0".repeat(64))).err().expect("a wrong digest is refused");
        assert!(format!("{e:#}").contains("do not match their digest"), "{e:#}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing is kept under the wrong digest");
        // With the right digest the bytes reach the compiler (which judges them: no component).
        let e = rt.load_fetched(&fetched(&digest(bytes))).err().expect("not a component");
        assert!(!format!("{e:#}").contains("digest"), "{e:#}");
    }

    #[test]
    fn mapped_sockets_are_judged_as_the_pod_addresses_they_stand_for() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let pod = NetPolicy::new(Some("127.64.0.2".parse().unwrap()), vec![7000], None).unwrap();
        let ports = ports::PortMap::new(true);
        let allowed = |addr: &str, u: U| socket_use_allowed(&pod, None, &ports, a(addr), u);
        // The shadowed bind of 127.64.0.2:7000 binds 127.0.0.1:0.
        assert!(allowed("127.0.0.1:0", U::TcpBind));
        assert!(!allowed("127.0.0.1:7000", U::TcpBind), "only port 0 of 127.0.0.1");
        // Listening: only a socket that serves a declared port of the pod.
        ports.insert(a("127.64.0.2:7000"), a("127.0.0.1:40000"));
        ports.insert(a("127.64.0.2:7001"), a("127.0.0.1:40001"));
        assert!(allowed("127.0.0.1:40000", U::TcpListen));
        assert!(!allowed("127.0.0.1:40001", U::TcpListen), "an undeclared port");
        assert!(!allowed("127.0.0.1:40002", U::TcpListen), "a bind of 127.0.0.1:0 of its own");
        // Connecting to a real socket is judged as to its pod address (here: its own).
        assert!(allowed("127.0.0.1:40000", U::TcpConnect));
        ports.insert(a("127.64.0.9:8080"), a("127.0.0.1:40003"));
        assert!(!allowed("127.0.0.1:40003", U::TcpConnect), "another pod, with no cluster to open it");
        // Unmapped, nothing of this applies.
        let plain = ports::PortMap::new(false);
        assert!(!socket_use_allowed(&pod, None, &plain, a("127.0.0.1:0"), U::TcpBind));
        assert!(socket_use_allowed(&pod, None, &plain, a("127.64.0.2:7000"), U::TcpListen));
    }
}
