//! Allocator tuning for training.

/// Keeps freed memory in the process instead of returning it to the kernel.
///
/// A training step allocates and frees the same few hundred-megabyte tensors every time; by
/// default glibc serves blocks that large with `mmap`, hands them back to the kernel when they are
/// freed, and then faults every page in again on the next step, which costs about 15% of a CPU
/// step (measured in docs/benchmarks.md). With no `mmap` for large blocks and no trimming of the
/// heap, they are reused instead; the process's resident size stays at its peak.
///
/// Call it once, at the start of the program, before libtorch allocates: it changes the allocator
/// for the whole process. It does nothing outside Linux with glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_MAX: i32 = -4;
        // SAFETY: mallopt only changes allocator tuning, which glibc allows at any time.
        unsafe {
            mallopt(M_MMAP_MAX, 0);
            // -1 becomes SIZE_MAX inside glibc: never trim.
            mallopt(M_TRIM_THRESHOLD, -1);
        }
    }
}
