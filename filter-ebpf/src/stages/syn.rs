//! New TCP connections (SYN without ACK). A SYN from a verified source (one that completed a
//! handshake recently) within its own per-source limit passes (`judge` asks the limit). Any
//! other SYN, a verified source's past its limit included, can come from a spoofed address, so
//! it gets no per-source state: it is answered with a SYN cookie when cookies are on
//! and its listener would use one, dropped when nobody listens on its port (beyond the refusal
//! budget), and otherwise handed to the kernel.
//!
//! Maps read: `AGGREGATE` (SYN slot) when a cookie is answered, or for every unverified SYN
//! when cookies are off; its refusal slot for a SYN nobody listens for. Reasons: `SynCookie`,
//! `PortClosed`, `Refusal`, `FloodSyn`, `Pass`, `Internal`. Lookups per SYN (the
//! verified-source lookup is `judge`'s): one socket lookup (plus the cookie helper for a
//! listener).

use aya_ebpf::programs::XdpContext;
use filter_common::{
    Class, Packet, Reason, Settings,
    classify::is_syn,
    packet::IPPROTO_TCP,
    ports::{PORT_TCP_OPEN, port_index},
    settings::{FLAG_ENFORCE_TCP_PORTS, FLAG_TCP_SOCKETS, SYN_COOKIES_OFF},
};

use super::refusal;
use crate::{
    answer::{self, Rewrite},
    clock::Clock,
    maps::{AGGREGATE, PORTS},
    socket::{self, Cookie, Found},
    word as shared,
};

/// Decides an unverified SYN; `None` for a SYN from a `verified` source or any other packet.
#[inline(always)]
pub fn check(
    ctx: &XdpContext,
    packet: &Packet,
    verified: bool,
    settings: &Settings,
    clock: &mut Clock,
) -> Option<Reason> {
    if verified || !packet.has_l4() || packet.l4_proto != IPPROTO_TCP || !is_syn(packet.tcp_flags) {
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
                    match admit(packet, settings, clock) {
                        Some(true) => {}
                        Some(false) => return Some(Reason::FloodSyn),
                        None => return Some(Reason::Internal),
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
            return Some(refusal::or_drop(
                Reason::PortClosed,
                packet,
                settings,
                clock,
            ));
        }
    }
    match admit(packet, settings, clock) {
        Some(true) => Some(Reason::Pass),
        Some(false) => Some(Reason::FloodSyn),
        None => Some(Reason::Internal),
    }
}

/// Takes one SYN from the aggregate SYN bucket, shared by every CPU: the cap on cookies
/// answered, and with cookies off the cap on unverified SYNs passed. `None` if the bucket's
/// slot is missing (a broken invariant).
#[inline(always)]
fn admit(packet: &Packet, settings: &Settings, clock: &mut Clock) -> Option<bool> {
    let pace = &settings.aggregate_pace[Class::Syn as usize];
    if !pace.is_limited() {
        return Some(true);
    }
    let buckets = AGGREGATE.get_ptr_mut(Class::Syn as u32)?;
    Some(shared::admit(
        buckets,
        pace,
        clock.now_ns(),
        packet.frame_len as u64,
    ))
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
