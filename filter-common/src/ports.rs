//! The `PORTS` array: one byte of flags per port number, so one lookup answers both "is this
//! destination port open" and "is this source port a reflector".

/// Number of entries in `PORTS`.
pub const PORT_COUNT: u32 = 65_536;

/// The `PORTS` index of `port` in policy `slot` (slots beyond the second wrap to it).
#[inline(always)]
pub const fn port_index(slot: u32, port: u16) -> u32 {
    (slot & 1) * PORT_COUNT + port as u32
}

/// Flag: TCP connections to this destination port are accepted.
pub const PORT_TCP_OPEN: u8 = 1;
/// Flag: UDP to this destination port is accepted.
pub const PORT_UDP_OPEN: u8 = 2;
/// Flag: UDP from this source port is reflection unless the source is trusted.
pub const PORT_REFLECTOR: u8 = 4;
/// Flag, beside [`PORT_UDP_OPEN`]: the port is open to UDP only for replies (the kernel's
/// ephemeral range, which a UDP port list leaves open), so a datagram to it must still match a
/// socket on the host when sockets are required. A port the list names needs none.
pub const PORT_UDP_REPLIES: u8 = 8;
