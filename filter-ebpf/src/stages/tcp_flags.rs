//! Invalid TCP flag combinations. Maps: none. Reason: `TcpFlags`. Lookups per packet: none.

use filter_common::{Packet, Reason, classify::tcp_flags_valid, packet::IPPROTO_TCP};

/// Decides `TcpFlags` for a TCP segment whose flags no real connection sends.
#[inline(always)]
pub fn check(packet: &Packet) -> Option<Reason> {
    if packet.has_l4() && packet.l4_proto == IPPROTO_TCP && !tcp_flags_valid(packet.tcp_flags) {
        Some(Reason::TcpFlags)
    } else {
        None
    }
}
