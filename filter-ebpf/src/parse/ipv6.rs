//! IPv6 and its extension headers: hop-by-hop, routing, fragment, destination options and
//! authentication, walked in a loop of at most [`MAX_EXTENSION_HEADERS`] steps.

use aya_ebpf::programs::XdpContext;
use filter_common::{Fragment, Packet, Reason};

use super::{L3, MAX_HEADER_OFFSET, frame_u64, ptr_at, read_at};

/// Extension headers walked before the packet is called malformed. Legitimate packets carry at
/// most a few (RFC 8200 §4.1 orders six kinds, each once); a longer chain is an evasion attempt.
pub const MAX_EXTENSION_HEADERS: usize = 8;

const IPV6_HLEN: usize = 40;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Hdr {
    version_class_flow: [u8; 4],
    payload_len_be: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    src_be: [u8; 16],
    dst_be: [u8; 16],
}

/// The first two bytes every extension header shares.
#[repr(C)]
#[derive(Clone, Copy)]
struct ExtHdr {
    next_header: u8,
    len: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct FragHdr {
    next_header: u8,
    reserved: u8,
    offset_flags_be: [u8; 2],
    id_be: [u8; 4],
}

/// Parses the IPv6 header at `offset` and its extension headers into `packet`.
#[inline(always)]
pub fn parse(
    ctx: &XdpContext,
    offset: usize,
    frame_len: usize,
    packet: &mut Packet,
) -> Result<L3, Reason> {
    let header = ptr_at::<Ipv6Hdr>(ctx, offset).ok_or(Reason::Malformed)?;
    // SAFETY: `ptr_at` checked that the whole header lies inside the frame; it has alignment 1.
    let hdr = unsafe { *header };
    if hdr.version_class_flow[0] >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    // Known before the lengths are checked, so a sampled malformed packet still names its
    // source.
    packet.ip_version = 6;
    // SAFETY: the source address, bytes 8 to 23 of the header checked above.
    packet.set_src_words(unsafe {
        [
            frame_u64::<8>(header.cast::<u8>()),
            frame_u64::<16>(header.cast::<u8>()),
        ]
    });
    let ip_end = offset + IPV6_HLEN + u16::from_be_bytes(hdr.payload_len_be) as usize;
    if ip_end > frame_len {
        return Err(Reason::Malformed);
    }

    let mut next = hdr.next_header;
    let mut cursor = offset + IPV6_HLEN;
    for _ in 0..MAX_EXTENSION_HEADERS {
        let len = match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let ext: ExtHdr = read_at(ctx, cursor)?;
                next = ext.next_header;
                (ext.len as usize + 1) * 8
            }
            NEXTHDR_AUTH => {
                let ext: ExtHdr = read_at(ctx, cursor)?;
                next = ext.next_header;
                (ext.len as usize + 2) * 4
            }
            NEXTHDR_FRAGMENT => {
                let frag: FragHdr = read_at(ctx, cursor)?;
                next = frag.next_header;
                let offset_flags = u16::from_be_bytes(frag.offset_flags_be);
                if offset_flags >> 3 != 0 {
                    packet.fragment = Fragment::Later;
                } else if offset_flags & 1 != 0 {
                    packet.fragment = Fragment::First;
                }
                8
            }
            _ => break,
        };
        cursor += len;
        // Bound needed by the verifier, and an extension header must end inside the datagram.
        if cursor > ip_end || cursor > MAX_HEADER_OFFSET {
            return Err(Reason::Malformed);
        }
        if packet.fragment == Fragment::Later {
            break;
        }
    }
    if packet.fragment != Fragment::Later
        && matches!(
            next,
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AUTH | NEXTHDR_FRAGMENT
        )
    {
        return Err(Reason::Malformed);
    }
    packet.l4_proto = next;
    Ok(L3 {
        l4_offset: cursor,
        ip_end,
    })
}
