//! New TCP connections (SYN without ACK). A SYN from a verified source (one that completed a
//! handshake recently) goes on to its per-source limit. Any other SYN can come from a spoofed
//! address, so it gets no per-source state: it is answered with a SYN cookie when cookies are on
//! and its listener would use one, dropped when nobody listens on its port, and otherwise handed
//! to the kernel.
//!
//! Maps read: `VERIFIED`; `AGGREGATE` (SYN slot) when a cookie is answered, or for every
//! unverified SYN when cookies are off. Reasons: `SynCookie`, `PortClosed`, `FloodSyn`, `Pass`,
//! `Internal`. Lookups per SYN: one map lookup and one socket lookup (plus the cookie helper
//! for a listener).

use aya_ebpf::programs::XdpContext;
use filter_common::{
    Class, Packet, Reason, Settings,
    classify::is_syn,
    packet::IPPROTO_TCP,
    ports::{PORT_TCP_OPEN, port_index},
    settings::{FLAG_ENFORCE_TCP_PORTS, FLAG_TCP_SOCKETS, SYN_COOKIES_OFF},
    source::{SourceKey, VERIFIED_CLASS},
};

use crate::{
    answer::{self, Rewrite},
    maps::{AGGREGATE, PORTS, VERIFIED},
    socket::{self, Cookie, Found},
};

/// Decides an unverified SYN; `None` for a verified SYN or any other packet.
#[inline(always)]
pub fn check(
    ctx: &XdpContext,
    packet: &Packet,
    settings: &Settings,
    now_ns: u64,
) -> Option<Reason> {
    if !packet.has_l4() || packet.l4_proto != IPPROTO_TCP || !is_syn(packet.tcp_flags) {
        return None;
    }
    if verified(packet, settings, now_ns) {
        return None;
    }
    let cookies = settings.syn_cookies != SYN_COOKIES_OFF && !settings.dry_run();
    let sockets = settings.flags & FLAG_TCP_SOCKETS != 0;
    if cookies || sockets {
        let Some(tuple) = socket::tuple(ctx, packet) else {
            return Some(Reason::Internal);
        };
        let found = if cookies {
            match socket::syn_cookie(ctx, packet, tuple) {
                Cookie::Made { cookie, mss } => {
                    if !admit(packet, settings, now_ns) {
                        return Some(Reason::FloodSyn);
                    }
                    return Some(match answer::synack(ctx, packet, cookie, mss) {
                        Rewrite::Done => Reason::SynCookie,
                        Rewrite::Unchanged => Reason::Pass,
                        Rewrite::Broken => Reason::Internal,
                    });
                }
                // The listener's queue has room: the kernel answers with every TCP option.
                Cookie::NotNow => return Some(Reason::Pass),
                Cookie::NotListening(found) => found,
            }
        } else {
            socket::tcp_found(ctx, tuple)
        };
        if sockets && found == Found::Nothing && !listed_open(packet, settings) {
            return Some(Reason::PortClosed);
        }
    }
    if admit(packet, settings, now_ns) {
        Some(Reason::Pass)
    } else {
        Some(Reason::FloodSyn)
    }
}

/// Whether the source completed a TCP handshake with the origin recently.
#[inline(always)]
fn verified(packet: &Packet, settings: &Settings, now_ns: u64) -> bool {
    let key = SourceKey::new(packet, VERIFIED_CLASS, settings.v6_source_prefix);
    match VERIFIED.get_ptr(&key) {
        // SAFETY: a pointer from a successful lookup, valid for this run.
        Some(until) => now_ns < unsafe { *until },
        None => false,
    }
}

/// Takes one SYN from the aggregate SYN bucket of this CPU: the cap on cookies answered, and
/// with cookies off the cap on unverified SYNs passed.
#[inline(always)]
fn admit(packet: &Packet, settings: &Settings, now_ns: u64) -> bool {
    let limit = &settings.aggregate[Class::Syn as usize];
    if !filter_common::rate::is_limited(limit) {
        return true;
    }
    match AGGREGATE.get_ptr_mut(Class::Syn as u32) {
        // SAFETY: a per-CPU slot from a successful lookup; only this CPU writes it now.
        Some(buckets) => unsafe { (*buckets).admit(limit, now_ns, packet.frame_len as u64) },
        None => false,
    }
}

/// Whether an enforced TCP port list names the destination port open: such ports take traffic
/// with no socket on the host (forwarded to a container or another host).
#[inline(always)]
pub fn listed_open(packet: &Packet, settings: &Settings) -> bool {
    settings.flags & FLAG_ENFORCE_TCP_PORTS != 0
        && PORTS
            .get(port_index(settings.slot, packet.dst_port))
            .is_some_and(|flags| flags & PORT_TCP_OPEN != 0)
}
