//! The policy stages, run in a fixed order on a parsed packet, cheapest and most decisive
//! first: lists, the checks of the packet alone (TCP flags, closed ports, reflection), bans
//! (skipped for a verified source's TCP, which no ban can cover), fragments, then verification
//! (SYN cookies, sockets; a verified source's SYN past its own limit is verified like anyone's),
//! then rate limits, which see no TCP but a verified source's SYN: UDP the socket check let
//! through, ICMP that is not essential, and other protocols, any of which can carry a forged
//! address (so the bans they earn never cover TCP). Each returns `Some(reason)` to decide or
//! `None` to continue; a packet no stage stops passes.
//!
//! A segment of a TCP connection (not a SYN, not a fragment), most of what a site receives,
//! takes a shorter route: besides the lists and the flag check, only the verified-source
//! cache, the bans and the socket check can decide it (the port, reflection, fragment, SYN and
//! rate stages never act on one), so it asks those and nothing else; and a verified source's
//! segment skips the list check while no list has changed since one of its segments passed it.

mod bans;
mod fragments;
mod lists;
mod ports;
mod rate;
mod reflection;
mod refusal;
mod sockets;
mod syn;
mod tcp_flags;

use aya_ebpf::programs::XdpContext;
use filter_common::{
    Fragment, Packet, Reason, Settings,
    classify::{is_network_control, is_syn},
    packet::IPPROTO_TCP,
    source::SourceKey,
    verified::tag_of_packet,
};

use crate::{clock::Clock, verified};

/// Judges a parsed packet by `clock`'s time: the first stage that decides wins, else it passes.
#[inline(always)]
pub fn judge(
    ctx: &XdpContext,
    packet: &mut Packet,
    settings: &Settings,
    clock: &mut Clock,
) -> Reason {
    // Only TCP asks whether its source completed a handshake. A later fragment of a segment
    // (no TCP header, so not parsed as one) is TCP all the same: a ban for spoofable traffic,
    // which leaves the source's TCP alone, must not cut its segments in pieces.
    let tcp =
        packet.l4_proto == IPPROTO_TCP && (packet.has_l4() || packet.fragment == Fragment::Later);
    if tcp && !is_syn(packet.tcp_flags) && packet.fragment == Fragment::None {
        return segment(ctx, packet, settings, clock);
    }
    if let Some(reason) = lists::check(packet) {
        return reason;
    }
    // The checks of the packet alone come before any per-source lookup: a flood they stop
    // (closed ports, impossible flags, reflected UDP) costs no verified-source or bans lookup.
    if let Some(reason) = tcp_flags::check(packet) {
        return reason;
    }
    if let Some(reason) = ports::check(ctx, packet, settings, clock) {
        return reason;
    }
    let answers_socket = match reflection::check(ctx, packet, settings) {
        reflection::Outcome::Decided(reason) => return reason,
        reflection::Outcome::AnswersSocket => true,
        reflection::Outcome::Undecided => false,
    };
    // The source's key, its IPv6 address cut to the tracked prefix once for every stage that
    // looks the source up (bans, verified sources, rate state), each under its own class.
    let source = SourceKey::for_ban(packet, settings.v6_source_mask);
    // A verified source is never banned (see `crate::verified`), so its SYNs skip the bans
    // lookup. The way that verifies it also holds its SYN buckets.
    let verified_way = if tcp {
        verified::find(&source, clock)
    } else {
        None
    };
    let verified = verified_way.is_some();
    // ICMP the network needs is never banned (see `is_network_control`).
    if !verified
        && !is_network_control(packet)
        && let Some(reason) = bans::check(ctx, packet, &source, tcp, settings, clock)
    {
        return reason;
    }
    // After the bans: a banned source's fragments take nothing from the fragment bucket.
    if let Some(reason) = fragments::check(packet, settings, clock) {
        return reason;
    }
    // A verified source's SYN within its own limit skips the cookie; past it, the SYN may be
    // anyone's (any address can be put on one), so it goes on as a first-time visitor's: a
    // cookie during a flood, never a drop or a strike that a spoofed flood in the visitor's
    // name could earn it.
    let verified = match verified_way {
        Some(way) if is_syn(packet.tcp_flags) => {
            rate::syn_within_limit(packet, way, settings, clock)
        }
        _ => verified,
    };
    if let Some(reason) = syn::check(ctx, packet, verified, settings, clock) {
        return reason;
    }
    if let Some(reason) = sockets::check(
        ctx,
        packet,
        &source,
        verified,
        answers_socket,
        settings,
        clock,
    ) {
        return reason;
    }
    if let Some(reason) = rate::check(packet, &source, settings, clock) {
        return reason;
    }
    if packet.has_l4() || packet.fragment == Fragment::Later {
        Reason::Pass
    } else {
        Reason::OtherL4
    }
}

/// Judges a segment of a TCP connection (not a SYN, not a fragment) as the full route would:
/// the lists, the flag check, then a verified source's segment passes at once (no ban covers
/// it, and the socket check takes its word), any other's meets the bans, then the socket check.
/// A verified source whose way records it found on no list under the lists' current generation
/// skips the list check (no list has changed since), and one that passes the check has its way
/// stamped so: most of what a site receives reads no list index byte and walks no trie.
#[inline(always)]
fn segment(ctx: &XdpContext, packet: &Packet, settings: &Settings, clock: &mut Clock) -> Reason {
    let tag = tag_of_packet(packet, settings.v6_source_mask);
    let way = verified::find_tag(tag, packet.ip_version != 4, clock);
    // Read before the list check the stamp will stand for (see `GENERATION_WORD`).
    let generation = if way.is_some() {
        lists::generation()
    } else {
        None
    };
    if let (Some(way), Some(generation)) = (way, generation)
        && verified::unlisted(way, generation, tag)
    {
        return tcp_flags::check(packet).unwrap_or(Reason::Pass);
    }
    if let Some(reason) = lists::check(packet) {
        return reason;
    }
    if let Some(reason) = tcp_flags::check(packet) {
        return reason;
    }
    if let Some(way) = way {
        if let Some(generation) = generation {
            verified::note_unlisted(way, generation, tag);
        }
        return Reason::Pass;
    }
    let source = SourceKey::for_ban(packet, settings.v6_source_mask);
    if let Some(reason) = bans::check(ctx, packet, &source, true, settings, clock) {
        return reason;
    }
    sockets::check(ctx, packet, &source, false, false, settings, clock).unwrap_or(Reason::Pass)
}
