//! ICMP (with IPv4) and ICMPv6 (with IPv6): type and code from the 8-byte header both share.

use aya_ebpf::programs::XdpContext;
use filter_common::{Packet, Reason};

use super::{L3, read_at, within};

#[repr(C)]
#[derive(Clone, Copy)]
struct IcmpHdr {
    icmp_type: u8,
    code: u8,
    check_be: [u8; 2],
    rest: [u8; 4],
}

/// Parses the ICMP or ICMPv6 header at `l3.l4_offset` into `packet`.
#[inline(always)]
pub fn parse(ctx: &XdpContext, l3: &L3, packet: &mut Packet) -> Result<(), Reason> {
    let hdr: IcmpHdr = read_at(ctx, l3.l4_offset)?;
    within(l3, l3.l4_offset, core::mem::size_of::<IcmpHdr>())?;
    packet.icmp_type = hdr.icmp_type;
    packet.icmp_code = hdr.code;
    Ok(())
}
