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
        let key = source.with_class(class as u8);
        match SOURCES.get_ptr_mut(key) {
            Some(state) => {
                // SAFETY: a field's address in a value from a successful lookup, valid and
                // 8-byte aligned for this run (no read: other CPUs update the same source,
                // only through the atomics of `shared`).
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
                // Insertion into an LRU map evicts the oldest entry when full; failure only
                // means the source is not tracked this time. BPF_NOEXIST: a CPU that raced
                // this one to the same new source keeps its entry.
                let _ = SOURCES.insert(key, state, u64::from(aya_ebpf::bindings::BPF_NOEXIST));
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
