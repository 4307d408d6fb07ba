//! Spreading independent work over the cores, with results in input order so
//! that what comes out (and the first error a caller reports) does not depend
//! on the threads. Used by `meshgate audit` to parse files and judge objects.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The cores this process may use (its CPU affinity and cgroup quota).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// `items.iter().map(f).collect()` on up to `workers` scoped threads. Each
/// thread takes the next item when it is done with one, so a few large items
/// do not leave the other threads idle.
pub fn map_in_order<I: Sync, T: Send>(
    items: &[I],
    workers: usize,
    f: &(dyn Fn(&I) -> T + Sync),
) -> Vec<T> {
    let workers = workers.clamp(1, items.len().max(1));
    if workers == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, T)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            // A worker only panics on a bug; resume it here, as a
            // single-threaded map would have panicked.
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, made)| made).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_input_order_whatever_the_workers() {
        let items: Vec<u64> = (0..1000).collect();
        let serial: Vec<u64> = items.iter().map(|i| i * i).collect();
        for workers in [0, 1, 2, 7, 5000] {
            assert_eq!(
                map_in_order(&items, workers, &|i| i * i),
                serial,
                "{workers}"
            );
        }
        assert!(map_in_order(&[] as &[u64], 4, &|i| *i).is_empty());
    }
}
