//! Support shared by the fuzz targets: an allocator that refuses any single allocation larger
//! than [`MAX_ALLOCATION`], so that a parser sizing a buffer from a length the input merely
//! declares is reported as a crash on the input that did it, whatever sanitizer (or none) the
//! targets are built with. libFuzzer's own `-malloc_limit_mb` needs the malloc hooks of a
//! sanitizer runtime and does nothing in a `--sanitizer none` build; this works in both.
//!
//! Every target links this crate (`use signalr_fuzz as _;`) to install the allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;

/// The largest single allocation a target may make. Inputs are at most a few hundred KiB
/// (`-max_len`), and nothing a parser does with them legitimately needs more than a small
/// multiple of that.
pub const MAX_ALLOCATION: usize = 16 << 20;

/// [`System`], with the size check.
pub struct LimitedAllocator;

impl LimitedAllocator {
    #[cold]
    fn too_large(size: usize) -> ! {
        // No formatting machinery here: it could allocate.
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = size;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b"\n==signalr-fuzz== allocation of ");
        let _ = err.write_all(&digits[i..]);
        let _ = err.write_all(b" bytes exceeds the fuzzing limit (MAX_ALLOCATION)\n");
        std::process::abort();
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the check only aborts.
unsafe impl GlobalAlloc for LimitedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            Self::too_large(layout.size());
        }
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            Self::too_large(layout.size());
        }
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            Self::too_large(new_size);
        }
        // SAFETY: `ptr` came from `System` with `layout`; same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LimitedAllocator = LimitedAllocator;
