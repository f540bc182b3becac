//! TCP: ports and flags; the header length must be valid and inside the datagram.

use aya_ebpf::programs::XdpContext;
use filter_common::{Packet, Reason};

use super::{L3, read_at, within};

#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHdr {
    src_port_be: [u8; 2],
    dst_port_be: [u8; 2],
    seq_be: [u8; 4],
    ack_be: [u8; 4],
    data_offset: u8,
    flags: u8,
    window_be: [u8; 2],
    check_be: [u8; 2],
    urgent_be: [u8; 2],
}

/// Parses the TCP header at `l3.l4_offset` into `packet`.
#[inline(always)]
pub fn parse(ctx: &XdpContext, l3: &L3, packet: &mut Packet) -> Result<(), Reason> {
    let hdr: TcpHdr = read_at(ctx, l3.l4_offset)?;
    let header_len = ((hdr.data_offset >> 4) as usize) * 4;
    if header_len < core::mem::size_of::<TcpHdr>() {
        return Err(Reason::Malformed);
    }
    within(l3, l3.l4_offset, header_len)?;
    packet.src_port = u16::from_be_bytes(hdr.src_port_be);
    packet.dst_port = u16::from_be_bytes(hdr.dst_port_be);
    packet.tcp_flags = hdr.flags;
    Ok(())
}
