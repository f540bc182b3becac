//! The host's sockets, asked from XDP with the kernel's socket-lookup helpers, and the SYN-cookie
//! helpers that work on a listener. Every function here takes a socket reference and releases it
//! before it returns, so no reference outlives a call (the verifier checks this).
//!
//! Lookups use the network namespace of the interface the frame arrived on.

use aya_ebpf::{
    bindings::{bpf_sock_tuple, tcphdr},
    cty::c_void,
    helpers::generated::{
        bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp, bpf_tcp_check_syncookie,
        bpf_tcp_gen_syncookie,
    },
    programs::XdpContext,
};
use filter_common::Packet;

use crate::parse::ptr_at;

/// `BPF_F_CURRENT_NETNS`: look up in the namespace of the receiving device.
const CURRENT_NETNS: u64 = u64::MAX;
/// `BPF_TCP_LISTEN` in `struct bpf_sock`'s `state`.
const TCP_LISTEN: u32 = 10;
/// `ENOENT`: the cookie helpers' answer for "no cookie now" and for "invalid cookie".
const ENOENT: i64 = 2;

/// A socket lookup key built from a packet: addresses and ports as on the wire.
pub struct Tuple {
    raw: bpf_sock_tuple,
    size: u32,
}

impl Tuple {
    /// The key's size, as one of its two constants: when a tuple is copied through the stack
    /// (passed between stages), the verifier may no longer know the stored size's value, and a
    /// helper's size argument must be bounded.
    #[inline(always)]
    fn checked_size(&self) -> u32 {
        if self.size == IPV4_TUPLE {
            IPV4_TUPLE
        } else {
            IPV6_TUPLE
        }
    }
}

/// Size of the IPv4 arm of `bpf_sock_tuple`: two addresses and two ports.
const IPV4_TUPLE: u32 = 12;
/// Size of its IPv6 arm.
const IPV6_TUPLE: u32 = 36;

/// The lookup key for `packet`, reading the destination address from the frame; `None` if the
/// frame is shorter than the parser saw (it cannot be).
#[inline(always)]
pub fn tuple(ctx: &XdpContext, packet: &Packet) -> Option<Tuple> {
    let mut raw = zeroed_tuple();
    let l3 = packet.l3_offset as usize;
    let sport = packet.src_port.to_be();
    let dport = packet.dst_port.to_be();
    let size = if packet.ip_version == 4 {
        let dst = ptr_at::<[u8; 4]>(ctx, l3 + 16)?;
        // SAFETY: `ptr_at` checked the four bytes lie in the frame; the union's ipv4 arm is
        // plain integers.
        unsafe {
            raw.__bindgen_anon_1.ipv4.saddr = packet.src_v4_word();
            raw.__bindgen_anon_1.ipv4.daddr = u32::from_ne_bytes(*dst);
            raw.__bindgen_anon_1.ipv4.sport = sport;
            raw.__bindgen_anon_1.ipv4.dport = dport;
        }
        IPV4_TUPLE
    } else {
        let dst = ptr_at::<[u8; 16]>(ctx, l3 + 24)?;
        // SAFETY: as above, for the ipv6 arm.
        unsafe {
            let dst = *dst;
            let v6 = &mut raw.__bindgen_anon_1.ipv6;
            v6.saddr = core::mem::transmute::<[u64; 2], [u32; 4]>(packet.src_words());
            for i in 0..4 {
                let at = i * 4;
                v6.daddr[i] = u32::from_ne_bytes([dst[at], dst[at + 1], dst[at + 2], dst[at + 3]]);
            }
            v6.sport = sport;
            v6.dport = dport;
        }
        IPV6_TUPLE
    };
    Some(Tuple { raw, size })
}

/// An all-zero lookup key, written as nine 32-bit stores: `core::mem::zeroed()` compiles to a
/// call of a byte-at-a-time memset, 36 iterations on every socket lookup.
#[inline(always)]
fn zeroed_tuple() -> bpf_sock_tuple {
    const WORDS: usize = core::mem::size_of::<bpf_sock_tuple>() / 4;
    const _: () = assert!(core::mem::size_of::<bpf_sock_tuple>() == WORDS * 4);
    let mut raw = core::mem::MaybeUninit::<bpf_sock_tuple>::uninit();
    let words = raw.as_mut_ptr().cast::<u32>();
    let mut word = 0;
    while word < WORDS {
        // SAFETY: the union is 4-byte aligned and WORDS words long, so every store is inside it.
        unsafe { core::ptr::write_volatile(words.add(word), 0) };
        word += 1;
    }
    // SAFETY: every byte is written, and zero is a valid value of the plain-integer union.
    unsafe { raw.assume_init() }
}

/// What a TCP lookup found for a segment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No socket at all: nobody listens on the port and no connection has this 4-tuple.
    Nothing,
    /// A listener and no connection.
    Listener,
    /// A connection in any state (established, half-open, closing, time-wait).
    Connection,
}

/// What became of a SYN offered to its listener for a cookie.
#[derive(Clone, Copy)]
pub enum Cookie {
    /// No listener (see [`Found`]).
    NotListening(Found),
    /// The listener would not use a cookie now (its SYN queue has room, or the host turned
    /// SYN cookies off): the kernel should answer this SYN itself.
    NotNow,
    /// The cookie, and the MSS it encodes.
    Made {
        /// The SYN-ACK's sequence number.
        cookie: u32,
        /// The MSS the cookie encodes.
        mss: u16,
    },
}

/// The packet's IP header (without IPv4 options or IPv6 extension headers: the cookie helpers
/// read only its addresses) and its length, as the cookie helpers take them: straight from the
/// frame, no copy.
#[inline(always)]
fn ip_header(ctx: &XdpContext, packet: &Packet) -> Option<(*mut c_void, u32)> {
    let l3 = packet.l3_offset as usize;
    if packet.ip_version == 4 {
        Some((ptr_at::<[u8; 20]>(ctx, l3)? as *mut c_void, 20))
    } else {
        Some((ptr_at::<[u8; 40]>(ctx, l3)? as *mut c_void, 40))
    }
}

/// `bpf_tcp_gen_syncookie` on the SYN's headers in the frame, its TCP header `N` bytes long (the
/// helper wants the whole header; a packet pointer passed with a length the verifier cannot
/// bound is refused, so each possible length has its own call).
#[inline(always)]
fn gen_syncookie<const N: usize>(
    ctx: &XdpContext,
    packet: &Packet,
    sk: *mut aya_ebpf::bindings::bpf_sock,
) -> i64 {
    let (Some((ip, ip_len)), Some(tcp)) = (
        ip_header(ctx, packet),
        ptr_at::<[u8; N]>(ctx, packet.l4_offset as usize),
    ) else {
        return -ENOENT;
    };
    // SAFETY: the socket is a held listener; `ptr_at` checked both headers lie in the frame
    // for the lengths given, and the helper only reads them.
    unsafe { bpf_tcp_gen_syncookie(sk.cast(), ip, ip_len, tcp as *mut tcphdr, N as u32) }
}

/// The SYN's cookie from its listener `sk`: the helper's answer, or `-ENOENT` if the TCP header
/// is cut short.
#[inline(always)]
fn syncookie_of(ctx: &XdpContext, packet: &Packet, sk: *mut aya_ebpf::bindings::bpf_sock) -> i64 {
    let Some(offset_byte) = ptr_at::<[u8; 13]>(ctx, packet.l4_offset as usize) else {
        return -ENOENT;
    };
    // SAFETY: `ptr_at` checked the 13 bytes lie in the frame.
    match unsafe { (*offset_byte)[12] } >> 4 {
        5 => gen_syncookie::<20>(ctx, packet, sk),
        6 => gen_syncookie::<24>(ctx, packet, sk),
        7 => gen_syncookie::<28>(ctx, packet, sk),
        8 => gen_syncookie::<32>(ctx, packet, sk),
        9 => gen_syncookie::<36>(ctx, packet, sk),
        10 => gen_syncookie::<40>(ctx, packet, sk),
        11 => gen_syncookie::<44>(ctx, packet, sk),
        12 => gen_syncookie::<48>(ctx, packet, sk),
        13 => gen_syncookie::<52>(ctx, packet, sk),
        14 => gen_syncookie::<56>(ctx, packet, sk),
        15 => gen_syncookie::<60>(ctx, packet, sk),
        _ => -ENOENT,
    }
}

/// Looks up the socket of a TCP segment: its connection, or else its listener.
#[inline(always)]
fn lookup_tcp(ctx: &XdpContext, tuple: &mut Tuple) -> *mut aya_ebpf::bindings::bpf_sock {
    let size = tuple.checked_size();
    // SAFETY: the tuple is a valid stack value of the size given.
    unsafe { bpf_skc_lookup_tcp(ctx.ctx.cast(), &mut tuple.raw, size, CURRENT_NETNS, 0) }
}

/// Looks up the UDP socket that would receive a datagram: one connected to its sender, or else
/// one bound to its port.
#[inline(always)]
fn lookup_udp(ctx: &XdpContext, tuple: &mut Tuple) -> *mut aya_ebpf::bindings::bpf_sock {
    let size = tuple.checked_size();
    // SAFETY: the tuple is a valid stack value of the size given.
    unsafe { bpf_sk_lookup_udp(ctx.ctx.cast(), &mut tuple.raw, size, CURRENT_NETNS, 0) }
}

/// Offers a SYN to its listener: returns the cookie the listener would accept, or why not.
#[inline(always)]
pub fn syn_cookie(ctx: &XdpContext, packet: &Packet, mut tuple: Tuple) -> Cookie {
    let sk = lookup_tcp(ctx, &mut tuple);
    if sk.is_null() {
        return Cookie::NotListening(Found::Nothing);
    }
    // SAFETY: a non-null socket from the lookup; `state` is readable on every socket kind.
    if unsafe { (*sk).state } != TCP_LISTEN {
        // SAFETY: releases the reference the lookup took.
        unsafe { bpf_sk_release(sk.cast()) };
        return Cookie::NotListening(Found::Connection);
    }
    let result = syncookie_of(ctx, packet, sk);
    // SAFETY: releases the reference the lookup took.
    unsafe { bpf_sk_release(sk.cast()) };
    if result < 0 {
        Cookie::NotNow
    } else {
        Cookie::Made {
            cookie: result as u32,
            mss: (result >> 32) as u16,
        }
    }
}

/// What a TCP lookup found, without offering anything to a listener.
#[inline(always)]
pub fn tcp_found(ctx: &XdpContext, mut tuple: Tuple) -> Found {
    let sk = lookup_tcp(ctx, &mut tuple);
    if sk.is_null() {
        return Found::Nothing;
    }
    // SAFETY: a non-null socket from the lookup.
    let state = unsafe { (*sk).state };
    // SAFETY: releases the reference the lookup took.
    unsafe { bpf_sk_release(sk.cast()) };
    if state == TCP_LISTEN {
        Found::Listener
    } else {
        Found::Connection
    }
}

/// What became of a segment that is not a SYN.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// No socket at all.
    Nothing,
    /// Only a listener, and the segment was not offered to it (not a plain ACK).
    Listener,
    /// It belongs to a connection.
    Connection,
    /// It reached a listener and carried a valid SYN cookie.
    CookieValid,
    /// It reached a listener without a valid SYN cookie.
    CookieInvalid,
}

/// Finds the socket of a segment that is not a SYN and, when only a listener matches and
/// `check_cookie` is set, checks the SYN cookie in its acknowledgement number.
#[inline(always)]
pub fn segment(ctx: &XdpContext, packet: &Packet, mut tuple: Tuple, check_cookie: bool) -> Segment {
    let sk = lookup_tcp(ctx, &mut tuple);
    if sk.is_null() {
        return Segment::Nothing;
    }
    // SAFETY: a non-null socket from the lookup.
    if unsafe { (*sk).state } != TCP_LISTEN {
        // SAFETY: releases the reference the lookup took.
        unsafe { bpf_sk_release(sk.cast()) };
        return Segment::Connection;
    }
    if !check_cookie {
        // SAFETY: releases the reference the lookup took.
        unsafe { bpf_sk_release(sk.cast()) };
        return Segment::Listener;
    }
    let valid = match (
        ip_header(ctx, packet),
        ptr_at::<[u8; 20]>(ctx, packet.l4_offset as usize),
    ) {
        // SAFETY: the socket is a held listener; `ptr_at` checked both headers lie in the frame
        // for the lengths given (the check reads only the fixed 20-byte TCP header), and the
        // helper only reads them.
        (Some((ip, ip_len)), Some(tcp)) => unsafe {
            bpf_tcp_check_syncookie(sk.cast(), ip, ip_len, tcp as *mut tcphdr, 20) == 0
        },
        _ => false,
    };
    // SAFETY: releases the reference the lookup took.
    unsafe { bpf_sk_release(sk.cast()) };
    if valid {
        Segment::CookieValid
    } else {
        Segment::CookieInvalid
    }
}

/// Whether a UDP socket on the host (bound to the port, or connected to the sender) would
/// receive this datagram.
#[inline(always)]
pub fn udp_socket(ctx: &XdpContext, mut tuple: Tuple) -> bool {
    let sk = lookup_udp(ctx, &mut tuple);
    if sk.is_null() {
        return false;
    }
    // SAFETY: releases the reference the lookup took.
    unsafe { bpf_sk_release(sk.cast()) };
    true
}

/// Whether a socket of the host's expects this datagram from a reflector port: one connected
/// to its sender (the answer to a query the host sent: a local resolver's, `dig @server`'s),
/// which a reflection flood cannot imitate without the socket's port and peer; or a service
/// bound, unconnected, on the very port the datagram comes from (a peer of the same protocol
/// speaking from its own service port: NTP 123 to 123, DNS 53 to 53, OpenVPN 1194 to 1194).
/// A reflected flood aimed there reaches only that service, under its per-source limits
/// (reflectors send from their real addresses).
#[inline(always)]
pub fn udp_reply(ctx: &XdpContext, packet: &Packet, mut tuple: Tuple) -> bool {
    let sk = lookup_udp(ctx, &mut tuple);
    if sk.is_null() {
        return false;
    }
    // SAFETY: a non-null socket from the lookup; its peer fields are readable on every
    // socket (zero for one not connected).
    let expected = unsafe {
        let connected_to_sender = (*sk).dst_port == packet.src_port.to_be()
            && if packet.ip_version == 4 {
                (*sk).dst_ip4 == packet.src_v4_word()
            } else {
                (*sk).dst_ip6 == core::mem::transmute::<[u64; 2], [u32; 4]>(packet.src_words())
            };
        let same_port_peer = (*sk).dst_port == 0 && packet.src_port == packet.dst_port;
        connected_to_sender || same_port_peer
    };
    // SAFETY: releases the reference the lookup took.
    unsafe { bpf_sk_release(sk.cast()) };
    expected
}
