//! Rate limits: per source and class (with automatic bans for sources that keep exceeding),
//! then per class over all sources (for floods from random spoofed sources, where per-source
//! state is useless).
//!
//! Both are shared by every CPU and updated by compare-and-swap (`filter_common::rate`), so a
//! source or a class never gets more than its limit however its packets are spread over CPUs.
//!
//! SYNs meet only their per-source limit here ([`syn_within_limit`], asked by `judge` before
//! the `syn` stage), and only a verified source's, whose SYN buckets live in its way of the
//! verified-source cache (no `SOURCES` lookup): past it, its SYNs are treated as a first-time
//! visitor's (a SYN cookie during a flood), never dropped and never struck, since anyone can
//! send SYNs in a verified visitor's name. The program's bans are earned by UDP, ICMP or other
//! traffic only, and cover none of the source's TCP.
//!
//! Maps read/written: `SOURCES` (not for SYNs), `AGGREGATE` (not for SYNs), `VERIFIED` (a
//! verified source's SYN buckets; read for a UDP, ICMP or other packet over its source's limit:
//! a verified source earns no ban from those), `BANS`, `BANS_EMPTY` and `BAN_EVENTS` (written
//! only when a ban is earned). Echo replies have no per-source limit. Reasons: `Rate*` but
//! `RateSyn`, `Flood*` but `FloodSyn`. Lookups per packet: for a limited class, the source's
//! two candidate sets in `SOURCES` (inlined array accesses; the second read only when the
//! first does not hold it), a third set when a new source finds all four ways taken, two more
//! when a ban is earned; the aggregate bucket; none for unlimited traffic or a SYN.

use filter_common::{
    Class, Packet, Reason, Settings,
    classify::{class_of, is_echo_reply, may_earn_ban},
    rate::{RateState, ban_length_ns},
    source::{BAN_DRY_RUN, Ban, SourceKey},
    sources::{self, DEFAULT_SOURCE_SETS, SourcePlace, SourceSlot},
    verified::VerifiedSlot,
};

use crate::{
    bansummary,
    clock::Clock,
    maps::{AGGREGATE, BAN_EVENTS, BANS, SOURCES},
    verified, word as shared,
};

/// What a source's bucket of one class said of a packet.
enum Bucket {
    /// The packet fits (or the class has no per-source limit).
    Admitted,
    /// Over the limit: the source's state, for a strike.
    Over(*mut RateState),
    /// A new source's first packet over its full burst (a byte limit below the frame): no
    /// strike.
    OverAtOnce,
    /// A set past the map's end: a broken invariant (userspace sizes both together).
    Missing,
}

/// Whether a verified source's SYN fits its per-source SYN limit, taking it from the SYN
/// buckets of `way`, the cache way that verified the source (see `crate::verified::find`).
/// Past the limit nothing is struck: the SYN may be anyone's.
#[inline(always)]
pub fn syn_within_limit(
    packet: &Packet,
    way: *mut VerifiedSlot,
    settings: &Settings,
    clock: &mut Clock,
) -> bool {
    let pace = &settings.source_pace[Class::Syn as usize];
    if !pace.is_limited() {
        return true;
    }
    // SAFETY: `way` is a way of a map value from a successful lookup, valid for this run;
    // every writer updates its SYN buckets through the atomics of `shared` or rewrites them
    // whole (see `VerifiedSlot`).
    let buckets = unsafe { &raw mut (*way).syn };
    shared::admit(buckets, pace, clock.now_ns(), packet.frame_len as u64)
}

/// Decides a rate or flood reason when the packet is over a limit.
#[inline(always)]
pub fn check(
    packet: &mut Packet,
    source: &SourceKey,
    settings: &Settings,
    clock: &mut Clock,
) -> Option<Reason> {
    let class = class_of(packet)?;
    // A SYN's per-source limit was `judge`'s (`syn_within_limit`), its aggregate the `syn`
    // stage's.
    if class == Class::Syn {
        return None;
    }
    match take(packet, source, class, settings, clock) {
        Bucket::Admitted => {}
        Bucket::Missing => return Some(Reason::Internal),
        Bucket::OverAtOnce => return Some(class.source_reason()),
        Bucket::Over(state) => {
            // A verified source earns no ban from traffic anyone could send in its name (see
            // `may_earn_ban`); asked only here, on the way to a drop.
            if may_earn_ban(class, verified::holds(source, clock))
                && shared::strike(
                    state,
                    clock.now_ns(),
                    settings.strike_window_ns,
                    settings.ban_after_strikes,
                )
            {
                ban(
                    packet,
                    source,
                    settings,
                    clock.now_ns(),
                    class.source_reason(),
                );
            }
            return Some(class.source_reason());
        }
    }
    let aggregate_pace = &settings.aggregate_pace[class as usize];
    if aggregate_pace.is_limited() {
        // AGGREGATE has every class's slot, so a failed lookup is a broken invariant.
        let Some(buckets) = AGGREGATE.get_ptr_mut(class as u32) else {
            return Some(Reason::Internal);
        };
        if !shared::admit(
            buckets,
            aggregate_pace,
            clock.now_ns(),
            packet.frame_len as u64,
        ) {
            return Some(class.flood_reason());
        }
    }
    None
}

/// Takes `packet` from `source`'s bucket of `class`, a new source's state made with a full
/// burst.
#[inline(always)]
fn take(
    packet: &Packet,
    source: &SourceKey,
    class: Class,
    settings: &Settings,
    clock: &mut Clock,
) -> Bucket {
    let source_pace = &settings.source_pace[class as usize];
    // Echo replies answer the origin's own pings: no per-source limit (see `is_echo_reply`).
    if !source_pace.is_limited() || is_echo_reply(packet) {
        return Bucket::Admitted;
    }
    let len = packet.frame_len as u64;
    let now_ns = clock.now_ns();
    let sets = if settings.source_sets == 0 {
        DEFAULT_SOURCE_SETS
    } else {
        settings.source_sets
    };
    let place = sources::place(&source.with_class(class as u8), sets);
    let (Some(first), Some(second)) = (
        SOURCES.get_ptr_mut(place.sets[0]),
        SOURCES.get_ptr_mut(place.sets[1]),
    ) else {
        return Bucket::Missing;
    };
    // SAFETY: fields of map values from successful lookups, valid for this run; other CPUs
    // rewrite ways a word at a time (see `filter_common::sources`), so each word is read once,
    // volatile.
    let ways = unsafe {
        [
            &raw mut (*first).slots[0],
            &raw mut (*first).slots[1],
            &raw mut (*second).slots[0],
            &raw mut (*second).slots[1],
        ]
    };
    let found = if holds(ways[0], &place) {
        Some(ways[0])
    } else if holds(ways[1], &place) {
        Some(ways[1])
    } else if holds(ways[2], &place) {
        Some(ways[2])
    } else if holds(ways[3], &place) {
        Some(ways[3])
    } else {
        None
    };
    match found {
        Some(way) => {
            // SAFETY: a field of a way of a map value from a successful lookup; every CPU
            // updates it through the atomics of `shared` only.
            let state = unsafe { &raw mut (*way).state };
            let buckets = unsafe { &raw mut (*state).buckets };
            if shared::admit(buckets, source_pace, now_ns, len) {
                Bucket::Admitted
            } else {
                Bucket::Over(state)
            }
        }
        None => {
            let mut state = RateState::new(now_ns);
            // A new source's first packet always fits its full burst (burst >= 1).
            let admitted = state.buckets.admit(source_pace, now_ns, len);
            let way = way_for_new(&ways, &place, sets);
            // SAFETY: a way of a map value from a successful lookup.
            unsafe { write_way(way, &place.slot(state)) };
            if admitted {
                Bucket::Admitted
            } else {
                Bucket::OverAtOnce
            }
        }
    }
}

/// Whether `way` holds the source at `place`.
#[inline(always)]
fn holds(way: *mut SourceSlot, place: &SourcePlace) -> bool {
    // SAFETY: `way` is a way of a map value from a successful lookup (see `check`); each word
    // is read once, volatile.
    unsafe {
        core::ptr::read_volatile(&raw const (*way).meta) == place.meta
            && core::ptr::read_volatile(&raw const (*way).hi) == place.tag.hi
            && core::ptr::read_volatile(&raw const (*way).lo) == place.tag.lo
    }
}

/// The way a new source at `place` takes, of its four candidate `ways` (the first set's two,
/// then the second's): the first empty one; else the way of a source that moves
/// to an empty way of its other set; else the way quiet longest.
#[inline(always)]
fn way_for_new(ways: &[*mut SourceSlot; 4], place: &SourcePlace, sets: u32) -> *mut SourceSlot {
    // SAFETY: ways of map values from successful lookups; each word is read once, volatile.
    let metas = ways.map(|way| unsafe { core::ptr::read_volatile(&raw const (*way).meta) });
    if let Some(index) = sources::empty_way(metas) {
        return pick(ways, index);
    }
    // Constant indices, unrolled: no way pointer is chosen by a runtime index.
    if move_away(ways[0], place.sets[0], sets) {
        return ways[0];
    }
    if move_away(ways[1], place.sets[0], sets) {
        return ways[1];
    }
    if move_away(ways[2], place.sets[1], sets) {
        return ways[2];
    }
    if move_away(ways[3], place.sets[1], sets) {
        return ways[3];
    }
    // SAFETY: as above.
    let last = ways
        .map(|way| unsafe { core::ptr::read_volatile(&raw const (*way).state.buckets) }.latest());
    pick(ways, sources::quietest_way(last))
}

/// `ways[index]`, chosen by branches.
#[inline(always)]
fn pick(ways: &[*mut SourceSlot; 4], index: usize) -> *mut SourceSlot {
    match index {
        0 => ways[0],
        1 => ways[1],
        2 => ways[2],
        _ => ways[3],
    }
}

/// Moves the source in `way` (of set `current`) to an empty way of its other candidate set,
/// if that has one; true when it moved, leaving `way` free.
#[inline(always)]
fn move_away(way: *mut SourceSlot, current: u32, sets: u32) -> bool {
    // SAFETY: `way` is a way of a map value from a successful lookup, read whole, volatile.
    let resident = unsafe { core::ptr::read_volatile(way) };
    let other = sources::other_set(&resident.place(sets), current);
    if other == current {
        return false;
    }
    let Some(target) = SOURCES.get_ptr_mut(other) else {
        return false;
    };
    // SAFETY: ways of a map value from a successful lookup, valid for this run.
    let (first, second) = unsafe { (&raw mut (*target).slots[0], &raw mut (*target).slots[1]) };
    let metas = unsafe {
        [
            core::ptr::read_volatile(&raw const (*first).meta),
            core::ptr::read_volatile(&raw const (*second).meta),
        ]
    };
    let empty = match sources::empty_in(metas) {
        Some(0) => first,
        Some(_) => second,
        None => return false,
    };
    // SAFETY: as above; the caller rewrites `way` next, meta first.
    unsafe { write_way(empty, &resident) };
    true
}

/// Rewrites `way` to hold `slot`: its meta word cleared first and written last, so a reader
/// never matches a half-written way.
///
/// # Safety
/// `way` must be a way of a map value from a successful lookup, valid for this run.
#[inline(always)]
unsafe fn write_way(way: *mut SourceSlot, slot: &SourceSlot) {
    // SAFETY: the caller's contract.
    unsafe {
        core::ptr::write_volatile(&raw mut (*way).meta, 0);
        core::ptr::write_volatile(&raw mut (*way).hi, slot.hi);
        core::ptr::write_volatile(&raw mut (*way).lo, slot.lo);
        core::ptr::write_volatile(&raw mut (*way).state, slot.state);
        core::ptr::write_volatile(&raw mut (*way).meta, slot.meta);
    }
}

/// Bans the packet's source, for longer on each repeat offence.
#[inline(always)]
fn ban(packet: &mut Packet, key: &SourceKey, settings: &Settings, now_ns: u64, reason: Reason) {
    let dry_run = settings.dry_run();
    let offences = match BANS.get_ptr(key) {
        // SAFETY: a pointer from a successful lookup, valid for this run. Offences earned in
        // a dry run do not lengthen an enforced ban.
        Some(old) if dry_run || unsafe { (*old).flags } & BAN_DRY_RUN == 0 => unsafe {
            (*old).offences
        },
        _ => 0,
    };
    let until_ns = now_ns.saturating_add(ban_length_ns(
        settings.ban_base_ns,
        settings.ban_max_ns,
        offences,
    ));
    let flags = if dry_run { BAN_DRY_RUN } else { 0 };
    let entry = Ban {
        until_ns,
        offences: offences.saturating_add(1),
        reason: reason as u16,
        flags,
    };
    // A full table records no new ban; the source stays rate-limited.
    if BANS.insert(key, entry, 0).is_err() {
        return;
    }
    // After the insert: the daemon's sweep may have just found the key's slot empty. The ban is
    // for UDP, ICMP or other traffic, which covers none of the source's TCP, so its
    // verification stays.
    bansummary::note_ban(key);
    if let Some(count) = BAN_EVENTS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot from a successful lookup; only this CPU writes it now.
        unsafe { *count += 1 };
    }
    packet.ban_issued = 1;
}
