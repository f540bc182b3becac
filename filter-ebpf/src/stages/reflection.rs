//! UDP from known reflector source ports (DNS, NTP, memcached...) that is not from a trusted
//! upstream. Maps read: `PORTS`, then `TRUSTED_V4`/`TRUSTED_V6` only for reflector ports.
//! Reason: `Reflection`. Lookups per packet: one per UDP datagram, two from reflector ports.

use aya_ebpf::maps::lpm_trie::Key;
use filter_common::{
    Packet, Reason,
    lists::{V4_MAX_PREFIX, V4Key, V6_MAX_PREFIX},
    packet::IPPROTO_UDP,
    ports::PORT_REFLECTOR,
};

use crate::maps::{PORTS, TRUSTED_V4, TRUSTED_V6};

/// Decides `Reflection` for UDP from a reflector port and an untrusted source.
#[inline(always)]
pub fn check(packet: &Packet) -> Option<Reason> {
    if !packet.has_l4() || packet.l4_proto != IPPROTO_UDP {
        return None;
    }
    let flags = PORTS.get(u32::from(packet.src_port)).copied().unwrap_or(0);
    if flags & PORT_REFLECTOR == 0 {
        return None;
    }
    let trusted = if packet.ip_version == 4 {
        let mut addr: V4Key = [0; 4];
        addr.copy_from_slice(&packet.src_addr_be[..4]);
        TRUSTED_V4.get(&Key::new(V4_MAX_PREFIX, addr)).is_some()
    } else {
        TRUSTED_V6
            .get(&Key::new(V6_MAX_PREFIX, packet.src_addr_be))
            .is_some()
    };
    if trusted {
        None
    } else {
        Some(Reason::Reflection)
    }
}
