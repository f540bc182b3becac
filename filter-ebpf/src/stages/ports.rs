//! Destination ports that are not open. Maps read: `PORTS`. Reasons: `PortClosed`, `Refusal`
//! (a closed port nothing listens on, within the refusal budget), `Internal`. Lookups per
//! packet: one for a TCP SYN or UDP when that protocol's port policy is on, none otherwise;
//! for a closed port, the refusal budget's (see `refusal`).
//!
//! Only new TCP connections (SYN without ACK) are checked: replies to the origin's own
//! outgoing connections arrive on ephemeral ports and must pass.

use filter_common::{
    Packet, Reason, Settings,
    classify::is_syn,
    packet::{IPPROTO_TCP, IPPROTO_UDP},
    ports::{PORT_TCP_OPEN, PORT_UDP_OPEN, port_index},
    settings::{FLAG_ENFORCE_TCP_PORTS, FLAG_ENFORCE_UDP_PORTS},
};

use aya_ebpf::programs::XdpContext;

use super::refusal;
use crate::{clock::Clock, maps::PORTS};

/// Decides `PortClosed` for a TCP SYN or UDP datagram to a port not marked open (`Refusal`
/// within the refusal budget when nothing listens there either).
#[inline(always)]
pub fn check(
    ctx: &XdpContext,
    packet: &Packet,
    settings: &Settings,
    clock: &mut Clock,
) -> Option<Reason> {
    if !packet.has_l4() {
        return None;
    }
    let open_flag = match packet.l4_proto {
        IPPROTO_TCP if settings.flags & FLAG_ENFORCE_TCP_PORTS != 0 && is_syn(packet.tcp_flags) => {
            PORT_TCP_OPEN
        }
        IPPROTO_UDP if settings.flags & FLAG_ENFORCE_UDP_PORTS != 0 => PORT_UDP_OPEN,
        _ => return None,
    };
    // PORTS has every port of both slots, so a failed lookup is a broken invariant.
    let Some(flags) = PORTS.get(port_index(settings.slot, packet.dst_port)) else {
        return Some(Reason::Internal);
    };
    if flags & open_flag == 0 {
        Some(refusal::or_drop_unheard(
            ctx,
            Reason::PortClosed,
            packet,
            settings,
            clock,
        ))
    } else {
        None
    }
}
