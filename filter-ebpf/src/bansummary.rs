//! The bans summary (see `filter_common::bansummary`): what the bans stage reads before the
//! `BANS` lookup, and what every ban this program writes clears.

use filter_common::{bansummary, source::SourceKey};

use crate::{maps::BANS_EMPTY, word};

/// Whether the summary says no ban key shares `source`'s slot, so `source` has no ban.
#[inline(always)]
pub fn holds_no_ban(source: &SourceKey) -> bool {
    let (index, mask) = bansummary::slot(source);
    match BANS_EMPTY.get_ptr(index) {
        // SAFETY: a pointer to a map value from a successful lookup; the daemon and other CPUs
        // update the word at any time, so it is read once, volatile.
        Some(word) => (unsafe { core::ptr::read_volatile(word) }) & mask != 0,
        None => false,
    }
}

/// Records that `key` has a ban in `BANS` (this program just wrote it): clears its slot's bit,
/// so no CPU skips its lookup.
#[inline(always)]
pub fn note_ban(key: &SourceKey) {
    let (index, mask) = bansummary::slot(key);
    if let Some(word) = BANS_EMPTY.get_ptr_mut(index) {
        // SAFETY: as in `holds_no_ban`; written only when the bit is set, so bans issued during
        // a flood do not bounce the word's cache line between CPUs.
        unsafe {
            if core::ptr::read_volatile(word) & mask != 0 {
                word::and(word, !mask);
            }
        }
    }
}
