//! The summary of one parsed packet: the few fields policy stages need, copied out of the frame
//! once by the parser so later stages never touch packet memory.

/// Where a packet sits in a fragmented IP datagram.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    None,
    /// The first fragment: it carries the transport header.
    First,
    /// A later fragment: no transport header, so no ports or flags.
    Later,
}

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

/// One parsed IP packet. It lives in the per-CPU `SCRATCH` map while the program runs, so it
/// is `#[repr(C)]` with no implicit padding, and 8-byte aligned so the parser can clear it a
/// word at a time ([`PACKET_WORDS`]).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Source address in network order; an IPv4 address fills the first four bytes.
    pub src_addr_be: [u8; 16],
    /// Frame length in bytes.
    pub frame_len: u32,
    /// TCP or UDP source port (host order); 0 otherwise.
    pub src_port: u16,
    /// TCP or UDP destination port (host order); 0 otherwise.
    pub dst_port: u16,
    /// 4 or 6.
    pub ip_version: u8,
    /// The transport protocol number after any IPv6 extension headers.
    pub l4_proto: u8,
    /// 1 if the transport header was parsed (`l4_proto` is TCP, UDP or ICMP for the family,
    /// and the packet is not a later fragment), else 0. See [`Packet::has_l4`].
    pub l4_parsed: u8,
    /// Fragment position.
    pub fragment: Fragment,
    /// TCP flags byte (FIN 0x01 ... CWR 0x80); 0 otherwise.
    pub tcp_flags: u8,
    /// ICMP or ICMPv6 type; 0 otherwise.
    pub icmp_type: u8,
    /// ICMP or ICMPv6 code; 0 otherwise.
    pub icmp_code: u8,
    /// 1 when the rate stage banned this packet's source on it, so the verdict writes a ban
    /// record to `SAMPLES`; 0 otherwise.
    pub ban_issued: u8,
    /// Offset of the IP header in the frame (after any VLAN tags).
    pub l3_offset: u16,
    /// Offset of the transport header in the frame (after IPv4 options or IPv6 extension
    /// headers); 0 when there is none.
    pub l4_offset: u16,
    /// Explicit padding to a whole number of words; always zero.
    pub _pad: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<Packet>() == 40);

/// 64-bit words in a [`Packet`].
pub const PACKET_WORDS: usize = core::mem::size_of::<Packet>() / 8;

impl Packet {
    /// An IP packet of `ip_version` with nothing parsed beyond the IP header yet.
    pub const fn new(ip_version: u8, frame_len: u32) -> Packet {
        Packet {
            src_addr_be: [0; 16],
            frame_len,
            src_port: 0,
            dst_port: 0,
            ip_version,
            l4_proto: 0,
            l4_parsed: 0,
            fragment: Fragment::None,
            tcp_flags: 0,
            icmp_type: 0,
            icmp_code: 0,
            ban_issued: 0,
            l3_offset: 0,
            l4_offset: 0,
            _pad: [0; 4],
        }
    }

    /// Whether the transport header was parsed.
    pub const fn has_l4(&self) -> bool {
        self.l4_parsed != 0
    }

    /// The source address as two words holding its bytes in memory order (network order, read
    /// natively): two loads, where copying the byte array costs sixteen loads and stores.
    #[inline(always)]
    pub const fn src_words(&self) -> [u64; 2] {
        // SAFETY: `Packet` is 8-byte aligned and `src_addr_be` is its first field, so the
        // field's sixteen bytes are a valid, aligned `[u64; 2]`.
        unsafe { core::ptr::read((&raw const self.src_addr_be).cast::<[u64; 2]>()) }
    }

    /// Sets the source address from two words holding its bytes in memory order (see
    /// [`Packet::src_words`]): two stores, which the later word loads take straight from the
    /// store buffer, where sixteen byte stores make them wait until the stores land.
    #[inline(always)]
    pub const fn set_src_words(&mut self, words: [u64; 2]) {
        // SAFETY: as for `src_words`.
        unsafe { core::ptr::write((&raw mut self.src_addr_be).cast::<[u64; 2]>(), words) }
    }

    /// Sets an IPv4 source address from its four bytes as one word in memory order (see
    /// [`Packet::src_v4_word`]); the other twelve bytes are left as they are.
    #[inline(always)]
    pub const fn set_src_v4_word(&mut self, word: u32) {
        // SAFETY: as for `src_v4_word`.
        unsafe { core::ptr::write((&raw mut self.src_addr_be).cast::<u32>(), word) }
    }

    /// An IPv4 source address's four bytes as one word in memory order (network order, read
    /// natively): `u32::from_be` of it is the address as a number.
    #[inline(always)]
    pub const fn src_v4_word(&self) -> u32 {
        // SAFETY: as for `src_words`: the first four bytes of an 8-byte-aligned struct.
        unsafe { core::ptr::read((&raw const self.src_addr_be).cast::<u32>()) }
    }
}
const _: () = assert!(core::mem::offset_of!(Packet, src_addr_be) == 0);
