//! Traffic must belong to a socket on the host. TCP that is not a SYN passes when its source
//! is verified or it matches a connection; at a listener it must carry a valid SYN cookie (its
//! source then counts as verified); with no socket at all it is dropped. UDP passes when a
//! socket would receive it. SYNs are the `syn` stage's. What would be dropped for want of a
//! socket passes instead within the host's refusal budget (see `refusal`).
//!
//! Maps read/written: `VERIFIED` (written when a cookie is valid; `judge` reads it), `PORTS`
//! (TCP with no socket, under an enforced list), `AGGREGATE` (refusal slot). Reasons:
//! `NoSocket`, `CookieAck`, `CookieBad`, `PortClosed`, `Refusal`. Lookups per packet: for TCP
//! under `FLAG_TCP_SOCKETS`, one socket lookup unless the source is verified; for UDP, one
//! socket lookup under `FLAG_UDP_SOCKETS` (with an enforced UDP list, only to a port open for
//! replies alone, after one more `PORTS` read), unless the reflection stage's lookup found the
//! socket a datagram answers; none otherwise.

use aya_ebpf::programs::XdpContext;
use filter_common::{
    Packet, Reason, Settings,
    classify::{is_syn, tcp_flags},
    packet::{IPPROTO_TCP, IPPROTO_UDP},
    ports::{PORT_UDP_REPLIES, port_index},
    settings::{FLAG_ENFORCE_UDP_PORTS, FLAG_TCP_SOCKETS, FLAG_UDP_SOCKETS},
    source::SourceKey,
};

use super::{refusal, syn::listed_open};
use crate::{
    clock::Clock,
    maps::PORTS,
    socket::{self, Segment},
    verified,
};

/// Decides a TCP segment or UDP datagram that no socket would take; `answers_socket` says
/// the reflection stage already found the socket that expects a datagram.
#[inline(always)]
pub fn check(
    ctx: &XdpContext,
    packet: &Packet,
    source: &SourceKey,
    verified: bool,
    answers_socket: bool,
    settings: &Settings,
    clock: &mut Clock,
) -> Option<Reason> {
    if !packet.has_l4() {
        return None;
    }
    match packet.l4_proto {
        IPPROTO_TCP if settings.flags & FLAG_TCP_SOCKETS != 0 && !is_syn(packet.tcp_flags) => {
            // A verified source completed a handshake with this host (the daemon marks the
            // peers of established connections, this stage the senders of valid cookies): its
            // segments go on to its rate limits without a socket lookup, the costliest step of
            // an established connection's packets. Spoofed floods never verify, so they still
            // meet the lookup.
            if verified {
                return None;
            }
            let Some(tuple) = socket::tuple(ctx, packet) else {
                return Some(Reason::Internal);
            };
            // Only an ACK (without RST) can complete a cookie handshake.
            let ack = packet.tcp_flags & (tcp_flags::ACK | tcp_flags::RST) == tcp_flags::ACK;
            match socket::segment(ctx, packet, tuple, ack) {
                Segment::Connection => None,
                Segment::CookieValid => {
                    verified::mark(source, settings, clock);
                    Some(Reason::CookieAck)
                }
                Segment::CookieInvalid => {
                    Some(refusal::or_drop(Reason::CookieBad, packet, settings, clock))
                }
                Segment::Listener | Segment::Nothing => {
                    if listed_open(packet, settings) {
                        None
                    } else if packet.tcp_flags & tcp_flags::RST != 0 {
                        // The kernel answers no reset: it would spend the budget for nothing.
                        Some(Reason::NoSocket)
                    } else {
                        Some(refusal::or_drop(Reason::NoSocket, packet, settings, clock))
                    }
                }
            }
        }
        IPPROTO_UDP
            if settings.flags & FLAG_UDP_SOCKETS != 0
                && !answers_socket
                && (settings.flags & FLAG_ENFORCE_UDP_PORTS == 0
                    || only_replies(packet, settings)) =>
        {
            let Some(tuple) = socket::tuple(ctx, packet) else {
                return Some(Reason::Internal);
            };
            if socket::udp_socket(ctx, tuple) {
                None
            } else {
                Some(refusal::or_drop(
                    Reason::PortClosed,
                    packet,
                    settings,
                    clock,
                ))
            }
        }
        _ => None,
    }
}

/// Whether an enforced UDP port list leaves the destination port open only for replies (the
/// kernel's ephemeral range, not listed): such a datagram must match a socket as well. A port
/// the list names takes datagrams with no socket (forwarded to a container or another host).
#[inline(always)]
fn only_replies(packet: &Packet, settings: &Settings) -> bool {
    PORTS
        .get(port_index(settings.slot, packet.dst_port))
        .is_some_and(|flags| flags & PORT_UDP_REPLIES != 0)
}
