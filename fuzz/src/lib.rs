//! What the fuzz targets share: an allocator that turns any single allocation above
//! [`ALLOCATION_MAX`] into a crash libFuzzer reports, as `-malloc_limit_mb` does under a
//! sanitizer (the targets are built without one: the toolchain here is stable Rust).

use std::alloc::{GlobalAlloc, Layout, System};

/// The largest single allocation a target may make (as `-malloc_limit_mb=512`).
pub const ALLOCATION_MAX: usize = 512 << 20;

/// The system allocator, with [`ALLOCATION_MAX`] enforced.
pub struct Capped;

// SAFETY: every call goes to the system allocator unchanged, or aborts before allocating.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn check(size: usize) {
    if size > ALLOCATION_MAX {
        // No allocation may happen here: write a fixed message and abort.
        let msg = b"strom-fuzz: allocation above ALLOCATION_MAX (512 MiB)\n";
        // SAFETY: writing a static buffer to stderr.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        std::process::abort();
    }
}

/// Declares [`Capped`] as the target's global allocator.
#[macro_export]
macro_rules! capped_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::Capped = $crate::Capped;
    };
}
