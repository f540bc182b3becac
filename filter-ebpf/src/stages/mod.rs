//! The policy stages, run in a fixed order on a parsed packet, cheapest and most decisive
//! first: lists, bans, sanity (TCP flags, fragments, ports), reflection, then verification (SYN
//! cookies, sockets), then rate limits, which only ever see sources that cannot be spoofed or
//! traffic that matched a socket. Each returns `Some(reason)` to decide or `None` to continue; a
//! packet no stage stops passes.

mod bans;
mod fragments;
mod lists;
mod ports;
mod rate;
mod reflection;
mod sockets;
mod syn;
mod tcp_flags;

use aya_ebpf::programs::XdpContext;
use filter_common::{Fragment, Packet, Reason, Settings};

use crate::clock::Clock;

/// Judges a parsed packet by `clock`'s time: the first stage that decides wins, else it passes.
#[inline(always)]
pub fn judge(
    ctx: &XdpContext,
    packet: &mut Packet,
    settings: &Settings,
    clock: &mut Clock,
) -> Reason {
    if let Some(reason) = lists::check(packet) {
        return reason;
    }
    if let Some(reason) = bans::check(packet, settings, clock) {
        return reason;
    }
    if let Some(reason) = tcp_flags::check(packet) {
        return reason;
    }
    if let Some(reason) = fragments::check(packet, settings, clock) {
        return reason;
    }
    if let Some(reason) = ports::check(packet, settings) {
        return reason;
    }
    if let Some(reason) = reflection::check(packet, settings) {
        return reason;
    }
    if let Some(reason) = syn::check(ctx, packet, settings, clock) {
        return reason;
    }
    if let Some(reason) = sockets::check(ctx, packet, settings, clock) {
        return reason;
    }
    if let Some(reason) = rate::check(packet, settings, clock) {
        return reason;
    }
    if packet.has_l4() || packet.fragment == Fragment::Later {
        Reason::Pass
    } else {
        Reason::OtherL4
    }
}
