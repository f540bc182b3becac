//! UDP from known reflector source ports (DNS, NTP, memcached...) that is not from a trusted
//! upstream and that no socket of the host's expects: one connected to its sender (a local
//! resolver's query to an authoritative server, `dig @server`), or a service bound on the very
//! port it comes from. Maps read: `PORTS`, then `TRUSTED_V4`/`TRUSTED_V6` only for reflector
//! ports. Reasons: `Reflection`, `Internal`. Lookups per packet: one per UDP datagram, two from
//! reflector ports, and a socket lookup for one from an untrusted reflector port under
//! `FLAG_UDP_SOCKETS`.

use aya_ebpf::{maps::lpm_trie::Key, programs::XdpContext};
use filter_common::{
    Packet, Reason, Settings,
    lists::{SLOT_PREFIX, V4_MAX_PREFIX, V4Key, V6_MAX_PREFIX, trusted_v4_key, trusted_v6_key},
    packet::IPPROTO_UDP,
    ports::{PORT_REFLECTOR, port_index},
    settings::FLAG_UDP_SOCKETS,
};

use crate::{
    maps::{PORTS, TRUSTED_V4, TRUSTED_V6},
    socket,
};

/// What the stage found.
pub enum Outcome {
    /// The packet is decided.
    Decided(Reason),
    /// A socket of the host's expects the datagram (see `socket::udp_reply`), which the
    /// lookup found: the sockets stage need not look again.
    AnswersSocket,
    /// Nothing decided; the later stages judge.
    Undecided,
}

/// Decides `Reflection` for UDP from a reflector port and an untrusted source that no socket
/// of the host's expects (see `socket::udp_reply`).
#[inline(always)]
pub fn check(ctx: &XdpContext, packet: &Packet, settings: &Settings) -> Outcome {
    if !packet.has_l4() || packet.l4_proto != IPPROTO_UDP {
        return Outcome::Undecided;
    }
    // PORTS has every port of both slots, so a failed lookup is a broken invariant.
    let Some(flags) = PORTS.get(port_index(settings.slot, packet.src_port)) else {
        return Outcome::Decided(Reason::Internal);
    };
    if flags & PORT_REFLECTOR == 0 {
        return Outcome::Undecided;
    }
    let slot = (settings.slot & 1) as u8;
    let trusted = if packet.ip_version == 4 {
        let mut addr: V4Key = [0; 4];
        addr.copy_from_slice(&packet.src_addr_be[..4]);
        let key = Key::new(SLOT_PREFIX + V4_MAX_PREFIX, trusted_v4_key(slot, &addr));
        TRUSTED_V4.get(&key).is_some()
    } else {
        let key = Key::new(
            SLOT_PREFIX + V6_MAX_PREFIX,
            trusted_v6_key(slot, &packet.src_addr_be),
        );
        TRUSTED_V6.get(&key).is_some()
    };
    if trusted {
        return Outcome::Undecided;
    }
    // Where sockets decide (see the sockets stage), a reply to the host's own query passes.
    if settings.flags & FLAG_UDP_SOCKETS != 0 {
        let Some(tuple) = socket::tuple(ctx, packet) else {
            return Outcome::Decided(Reason::Internal);
        };
        if socket::udp_reply(ctx, packet, tuple) {
            return Outcome::AnswersSocket;
        }
    }
    Outcome::Decided(Reason::Reflection)
}
