//! Allocator settings for `cadenza train`: keep freed memory instead of handing it back to the kernel.
//!
//! A training step allocates and frees the same few hundred tensors (activations, gradients,
//! optimizer temporaries), many of them megabytes. glibc serves blocks that large with `mmap` and
//! returns them with `munmap` on free, and trims the heap top eagerly, so every step paid for
//! fresh zeroed pages again. Measured with `benches/train_speed.rs` on one thread, the folk GPT
//! step (batch 16 x 256) ran at 1,360-1,430 tokens/s with glibc's defaults (`GLIBC_HEAP=default`)
//! and 1,870-1,950 with these settings; the LSTM step, made of small tensors, is unchanged.
//! Holding on to freed memory costs address space and keeps the process at the peak resident
//! size a step needs, which it reaches every step anyway.

/// Serves every block from the heap (no `mmap`), never trims it, and pads its growth, once per
/// process. A setting
/// already given through `MALLOC_*` environment variables is left as the user set it. Returns
/// whether the settings were applied (`false` on other C libraries, where this does nothing).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_set = |name: &str| std::env::var_os(name).is_some();
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            let mut ok = true;
            if !user_set("MALLOC_MMAP_THRESHOLD_") {
                // The largest value glibc accepts on 64-bit (HEAP_MAX_SIZE / 2 = 32 MiB).
                ok &= libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1;
            }
            if !user_set("MALLOC_MMAP_MAX_") {
                // The threshold alone is not enough: a 32 MiB block (the folk GPT's MLP
                // activations at batch 8 × 1,024: 8,192 rows × 1,024 floats) is still mapped and
                // unmapped at every use. In `cadenza train` that was 95,000 page faults a second
                // and half the speed (1,944 → 4,114 tokens/s with no mapped blocks at all).
                ok &= libc::mallopt(libc::M_MMAP_MAX, 0) == 1;
            }
            if !user_set("MALLOC_TRIM_THRESHOLD_") {
                ok &= libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1;
            }
            if !user_set("MALLOC_TOP_PAD_") {
                ok &= libc::mallopt(libc::M_TOP_PAD, 512 << 20) == 1;
            }
            ok
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_every_setting() {
        // mallopt refuses an mmap threshold above 32 MiB on 64-bit (it returns 0 and keeps the
        // default); this pins the values to ones it takes.
        assert!(super::keep_freed_memory());
    }
}
