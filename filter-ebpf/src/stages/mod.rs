//! The policy stages, run in a fixed order on a parsed packet, cheapest and most decisive
//! first: lists, bans, sanity (TCP flags, fragments, ports), reflection, rate limits. Each
//! returns `Some(reason)` to decide or `None` to continue; a packet no stage stops passes.

mod bans;
mod fragments;
mod lists;
mod ports;
mod rate;
mod reflection;
mod tcp_flags;

use filter_common::{Fragment, Packet, Reason, Settings};

/// Judges a parsed packet at `now_ns`: the first stage that decides wins, else it passes.
#[inline(always)]
pub fn judge(packet: &Packet, settings: &Settings, now_ns: u64) -> Reason {
    if let Some(reason) = lists::check(packet) {
        return reason;
    }
    if let Some(reason) = bans::check(packet, settings, now_ns) {
        return reason;
    }
    if let Some(reason) = tcp_flags::check(packet) {
        return reason;
    }
    if let Some(reason) = fragments::check(packet, settings, now_ns) {
        return reason;
    }
    if let Some(reason) = ports::check(packet, settings) {
        return reason;
    }
    if let Some(reason) = reflection::check(packet) {
        return reason;
    }
    if let Some(reason) = rate::check(packet, settings, now_ns) {
        return reason;
    }
    if packet.has_l4() || packet.fragment == Fragment::Later {
        Reason::Pass
    } else {
        Reason::OtherL4
    }
}
