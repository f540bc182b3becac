//! The refusal budget: TCP and UDP that no socket on the host takes is dropped, except a few
//! per second for the whole host, which pass so the kernel refuses them as it would without
//! moat (a TCP reset, an ICMP port unreachable). A visitor whose connection vanished with a
//! reboot, or whose browser tries a port the site does not serve, learns at once instead of
//! retransmitting into silence; a flood for no socket costs the kernel no more than the budget.
//!
//! Maps read/written: `AGGREGATE` (refusal slot), only for a packet no socket takes and only
//! when the budget is set. Reason: `Refusal`. Lookups: for a port closed by the operator's
//! list, one socket lookup per packet the budget admits (see [`or_drop_unheard`]).

use aya_ebpf::programs::XdpContext;
use filter_common::{
    Packet, Reason, Settings,
    maps::AGGREGATE_REFUSAL_SLOT,
    packet::{IPPROTO_TCP, IPPROTO_UDP},
};

use crate::{
    clock::Clock,
    maps::AGGREGATE,
    socket::{self, Found},
    word as shared,
};

/// `Refusal` if the budget admits this packet, for which no socket was found and `reason`
/// (`PortClosed`, `NoSocket` or `CookieBad`) was decided; `reason` otherwise, or `Internal`
/// for a missing slot (a broken invariant).
#[inline(always)]
pub fn or_drop(reason: Reason, packet: &Packet, settings: &Settings, clock: &mut Clock) -> Reason {
    let pace = &settings.refusals_pace;
    // No budget set means none: unlike the other limits, zero passes nothing.
    if !pace.is_limited() {
        return reason;
    }
    let Some(buckets) = AGGREGATE.get_ptr_mut(AGGREGATE_REFUSAL_SLOT) else {
        return Reason::Internal;
    };
    if shared::admit(buckets, pace, clock.now_ns(), packet.frame_len as u64) {
        Reason::Refusal
    } else {
        reason
    }
}

/// [`or_drop`] for a SYN or datagram to a port the operator's `[ports]` list closes: refused
/// only if, besides the budget admitting it, no socket on the host would take it. A port the
/// list closes though something listens there is closed by the operator's word, and the kernel
/// would accept the connection, so it stays dropped in silence.
#[inline(always)]
pub fn or_drop_unheard(
    ctx: &XdpContext,
    reason: Reason,
    packet: &Packet,
    settings: &Settings,
    clock: &mut Clock,
) -> Reason {
    if or_drop(reason, packet, settings, clock) != Reason::Refusal {
        return reason;
    }
    let Some(tuple) = socket::tuple(ctx, packet) else {
        return Reason::Internal;
    };
    let heard = match packet.l4_proto {
        IPPROTO_TCP => socket::tcp_found(ctx, tuple) != Found::Nothing,
        IPPROTO_UDP => socket::udp_socket(ctx, tuple),
        _ => true,
    };
    if heard { reason } else { Reason::Refusal }
}
