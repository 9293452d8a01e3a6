//! The node's counting allocator: host memory that wasm instances cause, per container.
//!
//! Every heap allocation of the node process carries a 16-byte header naming the account it
//! was made for (or none). While an instance's future is polled, the thread's current account
//! is its container's ([`enter`]), so whatever the host allocates on its behalf — resource
//! table entries, header fields, body and stream buffers, outgoing requests — is counted
//! there, and freed bytes are taken off the account that allocated them, whichever thread
//! frees them. An account's slot gets a new generation when it is dropped, so memory freed
//! later is not taken off the next owner.
//!
//! The binary installs it with `#[global_allocator]`; where it is not installed (unit tests,
//! embedders) accounts simply read zero. Allocations aligned to more than 16 bytes (rare:
//! SIMD buffers, page-aligned regions) carry no header and are not counted. The blocks come
//! from mimalloc (thread-local free lists; glibc's malloc spent a fifth of the API server's
//! CPU under concurrent creates).

use std::alloc::{GlobalAlloc, Layout};

/// Where the blocks come from.
const INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` (its option enum, v3; the bindings' constants
/// follow v2's order).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Tune the allocator for a small resident set; call first thing in `main`. Arenas are
/// committed as they are used instead of at once (idle API server: 64 → 45 MB RSS where
/// transparent huge pages are always on).
#[allow(unsafe_code)]
pub fn tune() {
    // SAFETY: sets a process-wide option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) }
}
use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

const HEADER: usize = 16;
/// Accounts that can exist at once (containers running on the node).
const SLOTS: usize = 16384;

struct Slot {
    generation: AtomicU32,
    bytes: AtomicI64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot { generation: AtomicU32::new(0), bytes: AtomicI64::new(0) };
static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
/// Free slot numbers (slot 0 means "no account" and is never handed out).
static FREE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static NEXT: AtomicU32 = AtomicU32::new(1);

thread_local! {
    /// The account allocations of this thread are made for: `slot | generation << 32`.
    static CURRENT: Cell<u64> = const { Cell::new(0) };
}

/// The allocator; install it in the binary with `#[global_allocator]`.
pub struct Counting;

fn tag(t: u64) -> (usize, u32) {
    ((t & 0xffff_ffff) as usize, (t >> 32) as u32)
}

fn account_add(t: u64, n: i64) {
    let (slot, generation) = tag(t);
    if slot == 0 || slot >= SLOTS {
        return;
    }
    let s = &TABLE[slot];
    if s.generation.load(Ordering::Relaxed) == generation {
        s.bytes.fetch_add(n, Ordering::Relaxed);
    }
}

// SAFETY (whole impl): every block handed out is `HEADER` bytes into a block obtained from
// `INNER` with the caller's alignment (at most 16, so the offset keeps it) and a size grown
// by `HEADER`; every block given back is moved back by `HEADER` and returned to `INNER` with
// the same grown layout. Blocks aligned to more than 16 bytes go to `INNER` untouched, and
// `dealloc`/`realloc` tell the two kinds apart by the layout's alignment, which Rust passes
// unchanged. The header is plain memory inside the block, written before it is handed out.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { self.alloc_with(layout, false) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { self.alloc_with(layout, true) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.align() > HEADER {
            return unsafe { INNER.dealloc(ptr, layout) };
        }
        unsafe {
            let base = ptr.sub(HEADER);
            let t = (base as *const u64).read();
            account_add(t, -(layout.size() as i64));
            INNER.dealloc(base, Layout::from_size_align_unchecked(layout.size() + HEADER, layout.align()));
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() > HEADER {
            return unsafe { INNER.realloc(ptr, layout, new_size) };
        }
        let Some(grown) = new_size.checked_add(HEADER) else { return std::ptr::null_mut() };
        if Layout::from_size_align(grown, layout.align()).is_err() {
            return std::ptr::null_mut();
        }
        unsafe {
            let base = ptr.sub(HEADER);
            let old = Layout::from_size_align_unchecked(layout.size() + HEADER, layout.align());
            let t = (base as *const u64).read();
            let new = INNER.realloc(base, old, grown);
            if new.is_null() {
                return new;
            }
            account_add(t, new_size as i64 - layout.size() as i64);
            new.add(HEADER)
        }
    }
}

impl Counting {
    #[allow(unsafe_code)]
    unsafe fn alloc_with(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        if layout.align() > HEADER {
            return unsafe { if zeroed { INNER.alloc_zeroed(layout) } else { INNER.alloc(layout) } };
        }
        let Some(grown) =
            layout.size().checked_add(HEADER).and_then(|s| Layout::from_size_align(s, layout.align()).ok())
        else {
            return std::ptr::null_mut();
        };
        unsafe {
            let base = if zeroed { INNER.alloc_zeroed(grown) } else { INNER.alloc(grown) };
            if base.is_null() {
                return base;
            }
            // `try_with`: during thread teardown the thread-local may be gone.
            let t = CURRENT.try_with(|c| c.get()).unwrap_or(0);
            (base as *mut u64).write(t);
            account_add(t, layout.size() as i64);
            base.add(HEADER)
        }
    }
}

/// Host memory charged to one container. Dropping it retires the slot.
#[derive(Debug)]
pub struct HostAccount {
    tag: u64,
}

impl HostAccount {
    /// A new account (one that counts nothing when all slots are taken).
    pub fn new() -> HostAccount {
        let slot = FREE.lock().unwrap_or_else(|e| e.into_inner()).pop().or_else(|| {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            ((n as usize) < SLOTS).then_some(n)
        });
        let Some(slot) = slot else {
            tracing::warn!("host memory accounts exhausted ({SLOTS}); a container's host memory goes uncounted");
            return HostAccount { tag: 0 };
        };
        let s = &TABLE[slot as usize];
        s.bytes.store(0, Ordering::Relaxed);
        let generation = s.generation.load(Ordering::Relaxed);
        HostAccount { tag: slot as u64 | (generation as u64) << 32 }
    }

    /// Bytes allocated for this account and not yet freed.
    pub fn bytes(&self) -> usize {
        let (slot, _) = tag(self.tag);
        if slot == 0 {
            return 0;
        }
        TABLE[slot].bytes.load(Ordering::Relaxed).max(0) as usize
    }

    /// Count the calling thread's allocations here until the guard is dropped.
    pub fn enter(&self) -> Entered {
        let prev = CURRENT.with(|c| c.replace(self.tag));
        Entered { prev }
    }
}

impl Default for HostAccount {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for HostAccount {
    fn drop(&mut self) {
        let (slot, generation) = tag(self.tag);
        if slot == 0 {
            return;
        }
        // Later frees of this account's blocks no longer match and are ignored.
        TABLE[slot].generation.store(generation.wrapping_add(1), Ordering::Relaxed);
        FREE.lock().unwrap_or_else(|e| e.into_inner()).push(slot as u32);
    }
}

/// Restores the thread's previous account when dropped.
pub struct Entered {
    prev: u64,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let prev = self.prev;
        let _ = CURRENT.try_with(|c| c.set(prev));
    }
}

#[cfg(test)]
mod tests {
    /// The option number names arena eager commit: its documented default is 2 ("on where
    /// the OS overcommits"), and `tune` turns it off.
    #[test]
    #[allow(unsafe_code)]
    fn tune_turns_off_eager_arena_commit() {
        // SAFETY: reads and sets a process-wide option.
        let before = unsafe { libmimalloc_sys::mi_option_get(super::ARENA_EAGER_COMMIT) };
        assert_eq!(before, 2);
        super::tune();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(super::ARENA_EAGER_COMMIT) }, 0);
    }
}
