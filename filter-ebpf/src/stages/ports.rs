//! Destination ports that are not open. Maps read: `PORTS`. Reasons: `PortClosed`, `Internal`.
//! Lookups per packet: one for a TCP SYN or UDP when that protocol's port policy is on, none
//! otherwise.
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

use crate::maps::PORTS;

/// Decides `PortClosed` for a TCP SYN or UDP datagram to a port not marked open.
#[inline(always)]
pub fn check(packet: &Packet, settings: &Settings) -> Option<Reason> {
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
        Some(Reason::PortClosed)
    } else {
        None
    }
}
