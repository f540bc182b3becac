//! The verified-source cache (`VERIFIED`, see `filter_common::verified`): asked once per TCP
//! segment, written when a source returns a valid SYN cookie, and cleared for a source the
//! moment it is banned.
//!
//! A verified source is never banned from TCP: every writer of such a ban clears the source's
//! verification after inserting it (the daemon and `moat ban add`; this program's own bans, for
//! UDP, ICMP or other traffic, cover none of its TCP), and
//! every writer of a verification looks for an enforced ban after writing it and clears it
//! again if it finds one. Whichever order two writers run in, the one that comes second sees
//! the other's work. So the bans lookup is skipped for a verified source's segments, most of
//! the packets a site serves.
//!
//! Each lookup reads its bucket's summary bit first and the bucket only if the bit is set, so a
//! spoofed flood's random sources cost a word of the summary, not a cache miss on a bucket.
//!
//! A way also holds its source's own SYN buckets (see `filter_common::verified`): [`find`] gives
//! the way, and the rate stage takes a verified source's SYN from it. And it holds the source's
//! list stamp ([`unlisted`], [`note_unlisted`]): the lists' generation under which one of its
//! segments was last found on no list, so its segments skip the list check until a list changes.
//!
//! Maps read/written: `VERIFIED`; `BANS` (read) after a verification is written.

use filter_common::{
    Settings,
    source::SourceKey,
    verified::{self, VerifiedSlot},
};

use crate::{
    bansummary::holds_no_ban,
    clock::Clock,
    maps::{BANS, VERIFIED},
    word,
};

/// The summary word holding bucket `index`'s bit, and the bit.
#[inline(always)]
fn summary_at(index: u32) -> Option<(*mut u64, u64)> {
    let (entry, word, mask) = verified::summary_of(index);
    let value = VERIFIED.get_ptr_mut(entry)?;
    // SAFETY: `word` is below SUMMARY_WORDS_PER_ENTRY (4), so the word lies inside the 96-byte
    // value; map values are 8-byte aligned.
    Some((unsafe { value.cast::<u64>().add(word as usize) }, mask))
}

/// Whether `source` completed a TCP handshake with the origin recently: one word of the
/// summary, then, only if its bucket's bit is set, the bucket, and the clock read only when a
/// way holds its tag.
#[inline(always)]
pub fn holds(source: &SourceKey, clock: &mut Clock) -> bool {
    find(source, clock).is_some()
}

/// The way that holds `source`'s verification in force, as [`holds`] finds it: what a
/// verified source's SYN takes from (its SYN buckets).
#[inline(always)]
pub fn find(source: &SourceKey, clock: &mut Clock) -> Option<*mut VerifiedSlot> {
    find_tag(verified::tag(source), source.ip_version != 4, clock)
}

/// [`find`] for the source tagged `tag`, of IPv6 if `ipv6`.
#[inline(always)]
pub fn find_tag(tag: verified::Tag, ipv6: bool, clock: &mut Clock) -> Option<*mut VerifiedSlot> {
    let index = verified::bucket(tag, ipv6);
    let (summary, mask) = summary_at(index)?;
    // SAFETY: a word of a map value from a successful lookup, valid for this run; other CPUs
    // and the daemon update it whole, so it is read once, volatile.
    if unsafe { core::ptr::read_volatile(summary) } & mask == 0 {
        return None;
    }
    let bucket = VERIFIED.get_ptr_mut(index)?;
    // SAFETY: ways of a map value from a successful lookup, valid for this run.
    let ways = unsafe { [&raw mut (*bucket).slots[0], &raw mut (*bucket).slots[1]] };
    if way_verifies(ways[0], tag, clock) {
        Some(ways[0])
    } else if way_verifies(ways[1], tag, clock) {
        Some(ways[1])
    } else {
        None
    }
}

/// Whether `way` holds `tag` with its verification in force: the tag's two words, then, only if
/// they match, its end and the clock. Word by word, not the whole bucket: a hit reads three
/// words of the six.
#[inline(always)]
fn way_verifies(way: *const VerifiedSlot, tag: verified::Tag, clock: &mut Clock) -> bool {
    // SAFETY: `way` is a way of a map value from a successful lookup (see `holds`). Other CPUs
    // and the daemon rewrite ways at any time, a whole word at a time (see `VerifiedSlot`), so
    // each word is read once, volatile.
    unsafe {
        core::ptr::read_volatile(&raw const (*way).hi) == tag.hi
            && core::ptr::read_volatile(&raw const (*way).lo) == tag.lo
            && clock.now_ns() < core::ptr::read_volatile(&raw const (*way).until_ns)
    }
}

/// Marks `source` verified (it answered a SYN cookie, which a spoofed source cannot) for the
/// configured time, then clears the mark again if a ban of the source is in force.
#[inline(always)]
pub fn mark(source: &SourceKey, settings: &Settings, clock: &mut Clock) {
    if settings.verified_ttl_ns == 0 {
        return;
    }
    let (tag, index) = verified::locate(source);
    let (Some(bucket), Some((summary, mask))) = (VERIFIED.get_ptr_mut(index), summary_at(index))
    else {
        return;
    };
    // The bucket's summary bit first, so no reader skips a way written below.
    // SAFETY: a word of a map value from a successful lookup, valid for this run.
    unsafe { word::or(summary, mask) };
    let now_ns = clock.now_ns();
    let until_ns = now_ns.saturating_add(settings.verified_ttl_ns);
    // SAFETY: a pointer to a map value from a successful lookup, valid for this run. The way
    // is rewritten a word at a time (aligned 64-bit stores are whole on every BPF JIT): its end
    // cleared, then the tag and full SYN buckets, then the new end (see `VerifiedSlot`). A
    // source that keeps its way keeps its SYN credit.
    unsafe {
        let current = core::ptr::read_volatile(bucket);
        // Constant indices: the ways are two, and no bounds check reaches the verifier.
        let (slot, old) = if current.way_for(tag) == 0 {
            (&raw mut (*bucket).slots[0], current.slots[0])
        } else {
            (&raw mut (*bucket).slots[1], current.slots[1])
        };
        if old.holds(tag) {
            if old.until_ns < until_ns {
                core::ptr::write_volatile(&raw mut (*slot).until_ns, until_ns);
            }
        } else {
            core::ptr::write_volatile(&raw mut (*slot).until_ns, 0);
            core::ptr::write_volatile(&raw mut (*slot).hi, tag.hi);
            core::ptr::write_volatile(&raw mut (*slot).lo, tag.lo);
            core::ptr::write_volatile(&raw mut (*slot).syn.packets, 0);
            core::ptr::write_volatile(&raw mut (*slot).syn.bytes, 0);
            core::ptr::write_volatile(&raw mut (*slot).unlisted, 0);
            core::ptr::write_volatile(&raw mut (*slot).until_ns, until_ns);
        }
    }
    // A ban written while this verification was being decided wins. Its writer clears the
    // source's slot in the bans summary before it clears the source's verification, so a
    // slot read here as holding no ban leaves that to the writer.
    if !holds_no_ban(source)
        && let Some(ban) = BANS.get_ptr(source)
    {
        // SAFETY: a pointer from a successful lookup, valid for this run.
        if unsafe { (*ban).enforced(now_ns, settings.dry_run()) && (*ban).covers_tcp() } {
            forget(source);
        }
    }
}

/// Clears `source`'s verification, if the cache holds it: the source was just banned.
#[inline(always)]
pub fn forget(source: &SourceKey) {
    let (tag, index) = verified::locate(source);
    let Some(bucket) = VERIFIED.get_ptr_mut(index) else {
        return;
    };
    // SAFETY: a pointer to a map value from a successful lookup, valid for this run; only the
    // end of the way holding the tag is written, whole.
    unsafe {
        let current = core::ptr::read_volatile(bucket);
        if current.slots[0].holds(tag) {
            core::ptr::write_volatile(&raw mut (*bucket).slots[0].until_ns, 0);
        }
        if current.slots[1].holds(tag) {
            core::ptr::write_volatile(&raw mut (*bucket).slots[1].until_ns, 0);
        }
    }
}

/// Whether `way` (from [`find_tag`] for `tag`) records its source as found on no list under the
/// lists' `generation`: then no list has changed since a check its source passed.
#[inline(always)]
pub fn unlisted(way: *const VerifiedSlot, generation: u64, tag: verified::Tag) -> bool {
    // SAFETY: `way` is a way of a map value from a successful lookup, valid for this run; the
    // stamp is one aligned word, written whole.
    let stamp = unsafe { core::ptr::read_volatile(&raw const (*way).unlisted) };
    stamp == verified::unlisted_stamp(generation, tag)
}

/// Records in `way` (from [`find_tag`] for `tag`) that its source was just found on no list
/// under the lists' `generation`, read before the check. A way given to another source
/// meanwhile gets a stamp that does not match its tag, so it speaks for no one.
#[inline(always)]
pub fn note_unlisted(way: *mut VerifiedSlot, generation: u64, tag: verified::Tag) {
    // SAFETY: as in `unlisted`; a racing writer's word wins whole, either way a stamp or 0.
    unsafe {
        core::ptr::write_volatile(
            &raw mut (*way).unlisted,
            verified::unlisted_stamp(generation, tag),
        )
    };
}
