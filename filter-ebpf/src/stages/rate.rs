//! Rate limits: per source and class (with automatic bans for sources that keep exceeding),
//! then per class over all sources (for floods from random spoofed sources, where per-source
//! state is useless).
//!
//! Both are shared by every CPU and updated by compare-and-swap (`filter_common::rate`), so a
//! source or a class never gets more than its limit however its packets are spread over CPUs.
//!
//! Maps read/written: `SOURCES`, `AGGREGATE` (not for SYNs), `BANS`, `BANS_EMPTY`, `BAN_EVENTS`
//! and `VERIFIED`
//! (only when a ban is earned). The only SYNs that reach this stage come from verified sources (the `syn`
//! stage decides the rest), so a spoofed SYN flood never creates per-source state. Reasons:
//! `Rate*`, `Flood*`. Lookups per packet: two for a limited class (one more to insert a new
//! source, two more when a ban is earned), none for unlimited traffic.

use filter_common::{
    Class, Packet, Reason, Settings,
    classify::class_of,
    rate::{RateState, ban_length_ns},
    source::{BAN_DRY_RUN, Ban, SourceKey},
    sources::{self, DEFAULT_SOURCE_SETS, SourceSlot},
};

use crate::{
    clock::Clock,
    maps::{AGGREGATE, BAN_EVENTS, BANS, SOURCES},
    verified, word as shared,
};

/// Decides a rate or flood reason when the packet is over a limit.
#[inline(always)]
pub fn check(
    packet: &mut Packet,
    source: &SourceKey,
    settings: &Settings,
    clock: &mut Clock,
) -> Option<Reason> {
    let class = class_of(packet)?;
    let len = packet.frame_len as u64;
    let source_pace = &settings.source_pace[class as usize];
    if source_pace.is_limited() {
        let now_ns = clock.now_ns();
        let sets = if settings.source_sets == 0 {
            DEFAULT_SOURCE_SETS
        } else {
            settings.source_sets
        };
        let place = sources::place(&source.with_class(class as u8), sets);
        // A set past the map's end is a broken invariant (userspace sizes both together).
        let Some(set) = SOURCES.get_ptr_mut(place.set) else {
            return Some(Reason::Internal);
        };
        // SAFETY: fields of a map value from a successful lookup, valid for this run; other
        // CPUs rewrite ways a word at a time (see `filter_common::sources`), so each word is
        // read once, volatile.
        let (way0, way1) = unsafe { (&raw mut (*set).slots[0], &raw mut (*set).slots[1]) };
        let holds = |way: *mut SourceSlot| unsafe {
            core::ptr::read_volatile(&raw const (*way).meta) == place.meta
                && core::ptr::read_volatile(&raw const (*way).hi) == place.tag.hi
                && core::ptr::read_volatile(&raw const (*way).lo) == place.tag.lo
        };
        let found = if holds(way0) {
            Some(way0)
        } else if holds(way1) {
            Some(way1)
        } else {
            None
        };
        match found {
            Some(way) => {
                // SAFETY: a field of a way of a map value from a successful lookup; every CPU
                // updates it through the atomics of `shared` only.
                let state = unsafe { &raw mut (*way).state };
                let buckets = unsafe { &raw mut (*state).buckets };
                if !shared::admit(buckets, source_pace, now_ns, len) {
                    if shared::strike(
                        state,
                        now_ns,
                        settings.strike_window_ns,
                        settings.ban_after_strikes,
                    ) {
                        ban(packet, source, settings, now_ns, class.source_reason());
                    }
                    return Some(class.source_reason());
                }
            }
            None => {
                let mut state = RateState::new(now_ns);
                // A new source's first packet always fits its full burst (burst >= 1).
                let admitted = state.buckets.admit(source_pace, now_ns, len);
                // SAFETY: as above; the way is rewritten a word at a time, its meta word
                // cleared first and written last, so a reader never matches a half-written way.
                // Two CPUs racing to the same new source may each take a way: the second copy
                // is never found first and is the next to be replaced.
                unsafe {
                    let current = core::ptr::read_volatile(set);
                    let way = if current.way_for_new() == 0 {
                        way0
                    } else {
                        way1
                    };
                    core::ptr::write_volatile(&raw mut (*way).meta, 0);
                    core::ptr::write_volatile(&raw mut (*way).hi, place.tag.hi);
                    core::ptr::write_volatile(&raw mut (*way).lo, place.tag.lo);
                    core::ptr::write_volatile(&raw mut (*way).state, state);
                    core::ptr::write_volatile(&raw mut (*way).meta, place.meta);
                }
                if !admitted {
                    return Some(class.source_reason());
                }
            }
        }
    }
    // SYNs reach this stage only from verified sources; the `syn` stage applies the aggregate
    // SYN bucket to the others.
    let aggregate_pace = &settings.aggregate_pace[class as usize];
    if aggregate_pace.is_limited() && class != Class::Syn {
        // AGGREGATE has every class's slot, so a failed lookup is a broken invariant.
        let Some(buckets) = AGGREGATE.get_ptr_mut(class as u32) else {
            return Some(Reason::Internal);
        };
        if !shared::admit(buckets, aggregate_pace, clock.now_ns(), len) {
            return Some(class.flood_reason());
        }
    }
    None
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
    // After the insert: the daemon's sweep may have just found the table empty.
    super::bans::note_ban();
    // No verified source is banned (see `crate::verified`): its next segments meet the ban.
    verified::forget(key);
    if let Some(count) = BAN_EVENTS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot from a successful lookup; only this CPU writes it now.
        unsafe { *count += 1 };
    }
    packet.ban_issued = 1;
}
