//! Banned sources. Maps read: `BANS_EMPTY`, then `BANS` unless the daemon found it empty.
//! Reason: `Banned`. Lookups per packet: one array word, and one hash lookup while any ban
//! exists; for a TCP segment (not a SYN) of a source under a SYN ban, one socket lookup. A ban
//! recorded during a dry run counts only while dry run is on; a ban the program issued for
//! UDP, ICMP or other traffic drops none of the source's TCP, and one it issued for SYNs drops
//! no segment of a connection the host already has.

use aya_ebpf::programs::XdpContext;
use filter_common::{
    Packet, Reason, Settings,
    classify::is_syn,
    maps::{BANS_ARE_EMPTY, BANS_LOOK_UP},
    source::SourceKey,
};

use crate::{
    clock::Clock,
    maps::{BANS, BANS_EMPTY},
    socket::{self, Found},
};

/// Decides `Banned` while the ban of `source` (its ban key) is in force.
#[inline(always)]
pub fn check(
    ctx: &XdpContext,
    packet: &Packet,
    source: &SourceKey,
    tcp: bool,
    settings: &Settings,
    clock: &mut Clock,
) -> Option<Reason> {
    if known_empty() {
        return None;
    }
    let ban = BANS.get_ptr(source)?;
    // SAFETY: the pointer comes from a successful lookup and is valid for this program run.
    let ban = unsafe { &*ban };
    // A ban for UDP, ICMP or other traffic leaves TCP alone (see `Ban::covers_tcp`).
    if !ban.enforced(clock.now_ns(), settings.dry_run()) || (tcp && !ban.covers_tcp()) {
        return None;
    }
    // A SYN ban lets the segments of the source's open connections through (see
    // `Ban::spares_connections`); the sockets stage then finds the connection again.
    if tcp
        && ban.spares_connections()
        && !is_syn(packet.tcp_flags)
        && let Some(tuple) = socket::tuple(ctx, packet)
        && socket::tcp_found(ctx, tuple) == Found::Connection
    {
        return None;
    }
    Some(Reason::Banned)
}

/// Whether the daemon found `BANS` empty and nothing has banned since.
#[inline(always)]
fn known_empty() -> bool {
    match BANS_EMPTY.get_ptr(0) {
        // SAFETY: a pointer to a map value from a successful lookup; the daemon and other CPUs
        // write the word at any time, so it is read once, volatile.
        Some(flag) => (unsafe { core::ptr::read_volatile(flag) }) == BANS_ARE_EMPTY,
        None => false,
    }
}

/// Records that `BANS` holds a ban (this program just wrote one), so no CPU skips the lookup.
#[inline(always)]
pub fn note_ban() {
    if let Some(flag) = BANS_EMPTY.get_ptr_mut(0) {
        // SAFETY: as in `known_empty`; written only when it would change, so bans issued
        // during a flood do not bounce the word's cache line between CPUs.
        unsafe {
            if core::ptr::read_volatile(flag) != BANS_LOOK_UP {
                core::ptr::write_volatile(flag, BANS_LOOK_UP);
            }
        }
    }
}
