//! IPv4, with any header length (options are skipped, not interpreted).

use aya_ebpf::programs::XdpContext;
use filter_common::{Fragment, Packet, Reason};

use super::{L3, frame_u32, ptr_at};

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    total_len_be: [u8; 2],
    id_be: [u8; 2],
    flags_frag_be: [u8; 2],
    ttl: u8,
    protocol: u8,
    check_be: [u8; 2],
    src_be: [u8; 4],
    dst_be: [u8; 4],
}

const MORE_FRAGMENTS: u16 = 0x2000;
const FRAGMENT_OFFSET: u16 = 0x1FFF;

/// Parses the IPv4 header at `offset` into `packet`.
#[inline(always)]
pub fn parse(
    ctx: &XdpContext,
    offset: usize,
    frame_len: usize,
    packet: &mut Packet,
) -> Result<L3, Reason> {
    let header = ptr_at::<Ipv4Hdr>(ctx, offset).ok_or(Reason::Malformed)?;
    // SAFETY: `ptr_at` checked that the whole header lies inside the frame; it has alignment 1.
    let hdr = unsafe { *header };
    if hdr.version_ihl >> 4 != 4 {
        return Err(Reason::Malformed);
    }
    // Known before the lengths are checked, so a sampled malformed packet still names its
    // source.
    packet.ip_version = 4;
    packet.l4_proto = hdr.protocol;
    // SAFETY: the source address, bytes 12 to 15 of the header checked above.
    packet.set_src_v4_word(unsafe { frame_u32::<12>(header.cast::<u8>()) });
    let header_len = ((hdr.version_ihl & 0x0F) as usize) * 4;
    let total_len = u16::from_be_bytes(hdr.total_len_be) as usize;
    // The header must be at least 20 bytes, the datagram at least its header, and the frame
    // must hold the whole datagram (anything after it is Ethernet padding).
    if header_len < 20 || total_len < header_len || offset + total_len > frame_len {
        return Err(Reason::Malformed);
    }
    let flags_frag = u16::from_be_bytes(hdr.flags_frag_be);
    packet.fragment = if flags_frag & FRAGMENT_OFFSET != 0 {
        Fragment::Later
    } else if flags_frag & MORE_FRAGMENTS != 0 {
        Fragment::First
    } else {
        Fragment::None
    };
    Ok(L3 {
        l4_offset: offset + header_len,
        ip_end: offset + total_len,
    })
}
