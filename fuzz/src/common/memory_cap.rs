//! A global allocator that aborts when live heap memory passes a cap, so an input that makes a
//! reader allocate far beyond its documented limits shows up as a crash in AFL. AFL's own `-m`
//! (an address-space rlimit) cannot be used: the allocator and thread pools reserve address
//! space they never touch, and the target stops before it runs.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Live heap bytes allowed (the issue: no allocation over 1 GB); the readers' limits (256 MB
/// files, 10 M notes) need far less from inputs of the size AFL makes.
pub const CAP_BYTES: usize = 1 << 30;

pub struct MemoryCap {
    live: AtomicUsize,
}

impl MemoryCap {
    pub const fn new() -> MemoryCap {
        MemoryCap { live: AtomicUsize::new(0) }
    }

    fn grow(&self, by: usize) {
        let now = self.live.fetch_add(by, Ordering::Relaxed) + by;
        if now > CAP_BYTES {
            // No allocation from here on: write with the raw syscall's wrapper and abort.
            let msg = b"memory cap exceeded: more than 1 GiB of live heap\n";
            unsafe { libc_write(2, msg.as_ptr(), msg.len()) };
            std::process::abort();
        }
    }
}

extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, count: usize) -> isize;
}

unsafe impl GlobalAlloc for MemoryCap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.grow(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.grow(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.live.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            self.grow(new_size - layout.size());
        } else {
            self.live.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}
