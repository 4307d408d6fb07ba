//! The global allocator the binary (and the examples that measure it)
//! installs: mimalloc rather than glibc's malloc. A review allocates and
//! frees thousands of small blocks, and glibc's malloc slows down next to the
//! large heap of the posture index and the background audit: at 10,000
//! namespaces a review took 1.9x as long as next to a small heap, with
//! mimalloc the same (docs/src/operations/benchmarks-background.md).
//!
//! mimalloc keeps freed pages for its default purge delay (10 ms) before
//! returning them to the OS, and purges only when the thread that freed them
//! allocates again. Purging at once (delay 0) made the request path pay a
//! page fault and an `madvise` for memory it was about to reuse: /mutate
//! cost 166 µs instead of 84 at 16 connections, the 85 KB pod 541 instead
//! of 243 (docs/src/operations/benchmarks.md). So the delay stays, and the threads that
//! free a large peak and then go idle (the `--state-from` load, the
//! background audit's passes) hand it back with [`release_freed_memory`].
//!
//! Built with mimalloc's `no_thp` feature: it then never asks the kernel for
//! transparent huge pages, with which touching one byte of a 2 MiB range
//! made all of it resident. An idle `meshgate serve` held 16.3 MiB with
//! them and 10.3 without; `meshgate audit` on 30,000 objects peaked at
//! 150-160 MiB with them and 120-133 without, and spent less time in page
//! faults.

pub use mimalloc::MiMalloc as Allocator;

/// Returns the memory this thread freed to the OS now, rather than when it
/// next allocates: after the `--state-from` load, 244 MiB stayed resident
/// instead of 62 with 10,000 namespaces. Costs a walk of this thread's heap.
pub fn release_freed_memory() {
    // SAFETY: mi_collect takes no pointers; it collects the calling
    // thread's heap, which any thread may do at any time.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}
