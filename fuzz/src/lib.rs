//! What the fuzz targets share: an allocator that measures, so a target can assert that
//! memory follows the input's size and never a size that the input merely claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One allocation larger than this aborts at once: far beyond anything a
/// fuzz input (at most a few hundred KiB) justifies, and caught before the machine runs
/// out of memory.
pub const MAX_ALLOCATION: usize = 256 << 20;

/// `System`, counting the bytes live now and the most live since the last [`measure`].
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn check(size: usize) {
    if size > MAX_ALLOCATION {
        // No panic machinery here (it allocates): say it and abort, which libFuzzer
        // reports as a crash with the input that caused it.
        use std::io::Write;
        let _ = std::io::stderr().write_all(b"tolk-fuzz: one allocation over MAX_ALLOCATION\n");
        std::process::abort();
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            // Both blocks may be live during the move: count the new one before the old
            // one goes.
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

/// Runs `f` and returns its result with the most bytes that were live at once during it,
/// beyond those live before it.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    (r, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}
