//! How the process's allocator hands large buffers back.
//!
//! A job allocates buffers of megabytes: the stored evidence (the VEX alone is 5 MB for 10,000
//! statements), the parsed findings and each rendered document (8 MB for the CycloneDX VEX of
//! 10,000 statements). glibc serves an allocation of 128 KiB or more with its own `mmap` and
//! unmaps it on free, but the first time it frees such a block it raises that threshold to the
//! block's size (up to 32 MiB), so from then on every buffer below the largest freed one comes
//! from the heap arenas, where freed space stays resident and is split between arenas (one per
//! thread that allocated: the object store reads on tokio's blocking threads). Measured on the
//! bench job (`bench_enrich`, 10,000 statements): peak RSS 39–75 MB with the moving threshold,
//! 28 MB with it fixed at 128 KiB, at the same time per job. Fixing it (which is what setting it
//! explicitly does) keeps every large buffer out of the arenas, so its pages go back to the system
//! as soon as it is dropped, and a long-running stage does not keep the high-water mark of its
//! largest job spread across its threads' arenas.

/// The glibc default before it starts moving (`DEFAULT_MMAP_THRESHOLD_MIN`).
pub const LARGE_ALLOCATION_BYTES: usize = 128 * 1024;

/// Makes glibc serve every allocation of [`LARGE_ALLOCATION_BYTES`] or more with its own mapping,
/// for the rest of the process (the threshold no longer moves). Idempotent; on other C libraries
/// (their allocators do not move a threshold) it does nothing.
pub fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters under the allocator's own lock; it
        // is safe to call at any time from any thread. It returns 0 only for an unknown option
        // or a value out of range (neither applies), and then the allocator is unchanged.
        let changed =
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_ALLOCATION_BYTES as i32) };
        if changed == 0 {
            tracing::warn!(
                "glibc refused to fix its mmap threshold; enrich's peak memory may be up to twice as high"
            );
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// glibc marks a chunk it mapped on its own with bit 1 (`IS_MMAPPED`) of the size word just
    /// before the pointer.
    fn mapped_on_its_own(buffer: &[u8]) -> bool {
        // SAFETY: every malloc'd chunk is preceded by its size word, readable as a usize.
        unsafe { *(buffer.as_ptr() as *const usize).sub(1) & 2 != 0 }
    }

    #[test]
    fn a_large_buffer_gets_its_own_mapping_even_after_a_larger_one_was_freed() {
        return_large_buffers_to_the_system();
        // Freeing a mapped 8 MiB block is what would raise glibc's moving threshold to 8 MiB.
        drop(std::hint::black_box(vec![1u8; 8 << 20]));
        let buffer = std::hint::black_box(vec![1u8; 1 << 20]);
        assert!(mapped_on_its_own(&buffer));
        let small = std::hint::black_box(vec![1u8; 1024]);
        assert!(!mapped_on_its_own(&small));
    }
}
