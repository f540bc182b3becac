//! What one random memory access costs on this machine, measured in the same run as the
//! tracked-sources series: the price a table lookup pays once its working set outgrows the
//! caches, set by the machine, not the program.
//!
//! A pointer chase in userspace: a buffer the size of the sources table, on 4 KiB pages as the
//! kernel's vmalloc'd map is, `touched` of its 128-byte sets (the table's set size) linked in
//! one random cycle, each load's address read by the load before. Every access then waits for
//! the previous one, as a packet's lookup waits for its set: the figure is latency (cache and
//! TLB misses, page walks), not bandwidth. A packet can hide part of it behind its other work
//! (out-of-order execution), so it is a yardstick for a lookup's miss, not a bound.

use moat::mapping::Mapping;

use crate::{BenchError, measure::thread_cpu_ns, prefixes::Rng};

/// Bytes per set of the sources table: one set per source is what any lookup must read.
pub const SET_BYTES: usize = core::mem::size_of::<filter_common::sources::SourceSet>();

/// Dependent loads timed per figure (the cycle is walked once before, untimed).
const LOADS: u64 = 2_000_000;

/// `len` bytes of zeroed memory on 4 KiB pages (no transparent huge pages).
fn small_pages(len: usize) -> Result<Mapping, BenchError> {
    let mapping = Mapping::anonymous(len).map_err(|source| BenchError::Io {
        action: "mapping",
        target: format!("{len} bytes for the memory-latency chase"),
        source,
    })?;
    // SAFETY: the range is the mapping just made. A failure only leaves huge pages possible
    // (the system's default applies), so it is not an error.
    unsafe { libc::madvise(mapping.base().cast(), len, libc::MADV_NOHUGEPAGE) };
    Ok(mapping)
}

/// A pointer to the word at byte `offset` of `mapping`; the callers' offsets are set starts
/// inside it, so the word is in the mapping and aligned.
fn word(mapping: &Mapping, offset: usize) -> *mut u64 {
    mapping.base().wrapping_add(offset).cast()
}

/// The byte offsets of `touched` distinct sets of `sets` (`touched` at most `sets`), in the
/// order the chase visits them: the first places of a partial Fisher-Yates shuffle, so
/// consecutive loads land on unrelated pages.
fn chain(sets: usize, touched: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<u32> = (0..sets as u32).collect();
    let mut rng = Rng::new(seed);
    for i in 0..touched {
        let j = i + rng.below((sets - i) as u64) as usize;
        order.swap(i, j);
    }
    order[..touched]
        .iter()
        .map(|&set| set as usize * SET_BYTES)
        .collect()
}

/// CPU time of one dependent load, in ns, chasing through `touched` random sets of a buffer of
/// `table_bytes` (rounded down to whole sets; at least one set is touched).
pub fn random_access_ns(table_bytes: usize, touched: u32, seed: u64) -> Result<f64, BenchError> {
    let sets = (table_bytes / SET_BYTES).max(1);
    let touched = (touched as usize).clamp(1, sets);
    let mapping = small_pages(sets * SET_BYTES)?;
    let offsets = chain(sets, touched, seed);
    for (i, &at) in offsets.iter().enumerate() {
        let next = offsets[(i + 1) % offsets.len()];
        // SAFETY: a set start inside the mapping; only this thread touches it.
        unsafe { word(&mapping, at).write(next as u64) };
    }
    let chase = |loads: u64, mut at: u64| {
        for _ in 0..loads {
            // SAFETY: every stored word is a set start inside the mapping.
            at = unsafe { word(&mapping, at as usize).read_volatile() };
        }
        at
    };
    let warm = chase(touched as u64, offsets[0] as u64);
    let start = thread_cpu_ns();
    let end = std::hint::black_box(chase(LOADS, warm));
    let spent = thread_cpu_ns().saturating_sub(start);
    std::hint::black_box(end);
    Ok(spent as f64 / LOADS as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chase_visits_each_touched_set_once() {
        let offsets = chain(1_000, 300, 7);
        assert_eq!(offsets.len(), 300);
        let distinct: std::collections::HashSet<usize> = offsets.iter().copied().collect();
        assert_eq!(distinct.len(), 300);
        assert!(
            offsets
                .iter()
                .all(|&at| at.is_multiple_of(SET_BYTES) && at < 1_000 * SET_BYTES)
        );
    }

    #[test]
    fn a_chase_over_more_sets_than_the_buffer_holds_runs_over_all_of_them() {
        assert_eq!(chain(4, 4, 2).len(), 4);
        let ns = random_access_ns(4 * SET_BYTES, 1_000, 2).expect("a small mapping");
        assert!(ns > 0.0, "{ns} ns");
    }
}
