//! Banned sources. Maps read: `BANS_EMPTY` (the bans summary), then `BANS` unless the source's
//! slot in the summary holds no ban. Reason: `Banned`. Lookups per packet: one word of the
//! summary, and one hash lookup for a source whose slot may hold a ban (a banned source, or about
//! one in sixteen others with the table full); for a TCP segment (not a SYN) of a source under a
//! SYN ban, one socket lookup. A ban recorded during a dry run counts only while dry run is on; a
//! ban the program issued for UDP, ICMP or other traffic drops none of the source's TCP, and one
//! it issued for SYNs drops no segment of a connection the host already has.

use aya_ebpf::programs::XdpContext;
use filter_common::{Packet, Reason, Settings, classify::is_syn, source::SourceKey};

use crate::{
    bansummary::holds_no_ban,
    clock::Clock,
    maps::BANS,
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
    if holds_no_ban(source) {
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
