//! UDP: ports; the length field must cover the header and fit inside the datagram.

use aya_ebpf::programs::XdpContext;
use filter_common::{Fragment, Packet, Reason};

use super::{L3, read_at, within};

#[repr(C)]
#[derive(Clone, Copy)]
struct UdpHdr {
    src_port_be: [u8; 2],
    dst_port_be: [u8; 2],
    len_be: [u8; 2],
    check_be: [u8; 2],
}

/// Parses the UDP header at `l3.l4_offset` into `packet`.
#[inline(always)]
pub fn parse(ctx: &XdpContext, l3: &L3, packet: &mut Packet) -> Result<(), Reason> {
    let hdr: UdpHdr = read_at(ctx, l3.l4_offset)?;
    let len = u16::from_be_bytes(hdr.len_be) as usize;
    if len < core::mem::size_of::<UdpHdr>() {
        return Err(Reason::Malformed);
    }
    // In a first fragment the length covers the whole reassembled datagram, so only the header
    // itself must fit; unfragmented, the whole datagram must.
    let must_fit = if packet.fragment == Fragment::None {
        len
    } else {
        core::mem::size_of::<UdpHdr>()
    };
    within(l3, l3.l4_offset, must_fit)?;
    packet.src_port = u16::from_be_bytes(hdr.src_port_be);
    packet.dst_port = u16::from_be_bytes(hdr.dst_port_be);
    Ok(())
}
