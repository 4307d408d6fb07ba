//! The global allocator the binary (and the examples that measure it)
//! installs: mimalloc rather than glibc's malloc. A review allocates and
//! frees thousands of small blocks, and glibc's malloc slows down next to the
//! large heap of the posture index and the background audit: at 10,000
//! namespaces a review took 1.9x as long as next to a small heap, with
//! mimalloc the same (docs/benchmarks-background.md).

pub use mimalloc::MiMalloc as Allocator;

/// `mi_option_purge_delay` in mimalloc.h (v3): how long freed memory stays
/// committed. Not exported by `libmimalloc-sys`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Returns freed memory to the OS at once. By default (10 ms) mimalloc
/// purges only when the thread that freed the memory allocates again, so the
/// peak of a cache sync or a `--state-from` load stayed resident once the
/// threads went idle: 225 MiB held instead of 204 for the background audit of
/// 110,000 objects, 244 instead of 62 for `serve --state-from` with 10,000
/// namespaces. Reviews measured no slower. Call before starting threads.
pub fn return_freed_memory_promptly() {
    // SAFETY: mi_option_set only stores an integer option; any value is
    // valid for this option, and it is called before other threads exist.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}
