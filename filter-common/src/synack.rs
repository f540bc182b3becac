//! The SYN-ACK moat sends in answer to a SYN when it answers with a SYN cookie: its IP and TCP
//! headers, built byte by byte with both checksums. Pure functions over fixed-size arrays, so
//! the XDP program writes exactly what the host tests check.
//!
//! The reply carries one TCP option, the MSS: the kernel cannot recover window scaling, SACK or
//! timestamps from a cookie made by `bpf_tcp_gen_syncookie`, so a cookie-made connection has
//! none of them. The MSS is the host's own ([`advertised_mss`]), what the kernel's SYN-ACK
//! would say: the largest segment the host takes. The cookie encodes the client's, which only
//! bounds what the host sends.

/// Length of the SYN-ACK's TCP header: 20 bytes and the 4-byte MSS option.
pub const TCP_LEN: usize = 24;
/// Length of an IPv4 header without options.
pub const IPV4_LEN: usize = 20;
/// Length of an IPv6 header.
pub const IPV6_LEN: usize = 40;
/// The receive window the SYN-ACK advertises (the kernel's default initial window, 44 MSS of
/// 1460 bytes).
pub const WINDOW: u16 = 64_240;
/// TTL (IPv4) and hop limit (IPv6) of the SYN-ACK.
pub const HOP_LIMIT: u8 = 64;

/// What the TCP header of a SYN-ACK says; ports and numbers in host order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Our port: the SYN's destination port.
    pub src_port: u16,
    /// The client's port: the SYN's source port.
    pub dst_port: u16,
    /// Our sequence number: the cookie.
    pub seq: u32,
    /// The client's sequence number plus one.
    pub ack: u32,
    /// The MSS the host advertises ([`advertised_mss`]).
    pub mss: u16,
}

/// The MSS a host whose receiving device has an MTU of `mtu` bytes advertises over IP version
/// `ip_version`, as the kernel derives a route's default `advmss` (`ipv4_default_advmss`,
/// `ip6_default_advmss`): the MTU less the IP and TCP headers (40 bytes over IPv4, 60 over
/// IPv6), at least 256 over IPv4 and 1,220 over IPv6 (the kernel's `min_adv_mss` defaults),
/// at most 65,535. A host behind a 1,400-byte tunnel says 1,360 whatever the client offered;
/// saying the client's 1,460 would have it send segments the host's link cannot carry.
pub const fn advertised_mss(mtu: u32, ip_version: u8) -> u16 {
    let (headers, least) = if ip_version == 4 {
        (40, 256)
    } else {
        (60, 1_220)
    };
    let mss = mtu.saturating_sub(headers);
    if mss < least {
        least as u16
    } else if mss > u16::MAX as u32 {
        u16::MAX
    } else {
        mss as u16
    }
}

/// Adds the big-endian 16-bit words of `bytes` (an even number of them) to `sum`.
#[inline(always)]
fn add_words<const N: usize>(bytes: &[u8; N], mut sum: u32) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

/// Folds a 32-bit one's-complement sum to 16 bits and complements it.
#[inline(always)]
const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    !(sum as u16)
}

/// Writes the SYN-ACK's TCP header with its checksum field zero.
#[inline(always)]
fn write_tcp(tcp: &mut [u8; TCP_LEN], reply: &Reply) {
    // Every byte is written once, the zeros by name: zero-filling the whole header first
    // compiles to a byte-at-a-time memset loop in the program.
    tcp[0..2].copy_from_slice(&reply.src_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&reply.dst_port.to_be_bytes());
    tcp[4..8].copy_from_slice(&reply.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&reply.ack.to_be_bytes());
    // Data offset 6 words, flags SYN|ACK.
    tcp[12] = ((TCP_LEN / 4) as u8) << 4;
    tcp[13] = 0x12;
    tcp[14..16].copy_from_slice(&WINDOW.to_be_bytes());
    // Checksum (filled in later) and urgent pointer.
    tcp[16..20].copy_from_slice(&[0; 4]);
    // Option: kind 2 (MSS), length 4.
    tcp[20] = 2;
    tcp[21] = 4;
    tcp[22..24].copy_from_slice(&reply.mss.to_be_bytes());
}

/// Writes the IPv4 and TCP headers of a SYN-ACK from `src_be` to `dst_be`, checksums filled in.
/// The targets may be packet memory: every byte is written before any is read back.
#[inline(always)]
pub fn write_ipv4(
    ip: &mut [u8; IPV4_LEN],
    tcp: &mut [u8; TCP_LEN],
    src_be: [u8; 4],
    dst_be: [u8; 4],
    reply: &Reply,
) {
    // Every byte is written once, the zeros by name (see `write_tcp`).
    ip[0] = 0x45;
    // Type of service.
    ip[1] = 0;
    ip[2..4].copy_from_slice(&((IPV4_LEN + TCP_LEN) as u16).to_be_bytes());
    // Identification 0; don't fragment, offset 0.
    ip[4..8].copy_from_slice(&[0, 0, 0x40, 0]);
    ip[8] = HOP_LIMIT;
    ip[9] = crate::packet::IPPROTO_TCP;
    // The checksum, zero while it is summed.
    ip[10..12].copy_from_slice(&[0; 2]);
    ip[12..16].copy_from_slice(&src_be);
    ip[16..20].copy_from_slice(&dst_be);
    let check = fold(add_words(ip, 0));
    ip[10..12].copy_from_slice(&check.to_be_bytes());

    write_tcp(tcp, reply);
    let pseudo = add_words(&src_be, 0)
        + add_words(&dst_be, 0)
        + u32::from(crate::packet::IPPROTO_TCP)
        + TCP_LEN as u32;
    let check = fold(add_words(tcp, pseudo));
    tcp[16..18].copy_from_slice(&check.to_be_bytes());
}

/// Writes the IPv6 and TCP headers of a SYN-ACK from `src_be` to `dst_be`, the TCP checksum
/// filled in (IPv6 has none of its own). The targets may be packet memory.
#[inline(always)]
pub fn write_ipv6(
    ip: &mut [u8; IPV6_LEN],
    tcp: &mut [u8; TCP_LEN],
    src_be: &[u8; 16],
    dst_be: &[u8; 16],
    reply: &Reply,
) {
    // Every byte is written once, the zeros by name (see `write_tcp`): version 6, traffic
    // class and flow label 0.
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[4..6].copy_from_slice(&(TCP_LEN as u16).to_be_bytes());
    ip[6] = crate::packet::IPPROTO_TCP;
    ip[7] = HOP_LIMIT;
    ip[8..24].copy_from_slice(src_be);
    ip[24..40].copy_from_slice(dst_be);

    write_tcp(tcp, reply);
    let pseudo = add_words(src_be, 0)
        + add_words(dst_be, 0)
        + u32::from(crate::packet::IPPROTO_TCP)
        + TCP_LEN as u32;
    let check = fold(add_words(tcp, pseudo));
    tcp[16..18].copy_from_slice(&check.to_be_bytes());
}

/// Scratch room for the SYN-ACK's IP and TCP headers, built here and then copied whole into the
/// frame (zero-filling packet memory in place would call `memset`, across which the verifier
/// forgets the packet bounds). Kept in a per-CPU map: the 512-byte stack is nearly full.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HeaderCopy {
    /// The IP header: 20 bytes for IPv4, 40 for IPv6.
    pub ip: [u8; 40],
    /// The TCP header ([`TCP_LEN`] bytes used; room for 60).
    pub tcp: [u8; 60],
}
const _: () = assert!(core::mem::size_of::<HeaderCopy>() == 100);
#[cfg(feature = "user")]
unsafe impl aya::Pod for HeaderCopy {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_mss_is_the_mtu_less_the_headers_within_the_kernels_bounds() {
        assert_eq!(advertised_mss(1500, 4), 1460);
        assert_eq!(advertised_mss(1500, 6), 1440);
        assert_eq!(advertised_mss(1400, 4), 1360);
        assert_eq!(advertised_mss(1400, 6), 1340);
        assert_eq!(advertised_mss(9000, 4), 8960);
        assert_eq!(advertised_mss(68, 4), 256, "IPv4's least");
        assert_eq!(advertised_mss(1280, 6), 1220, "IPv6's least");
        assert_eq!(advertised_mss(0, 6), 1220);
        assert_eq!(advertised_mss(65_536, 4), 65_496, "loopback");
        assert_eq!(advertised_mss(u32::MAX, 6), u16::MAX);
    }

    /// An independent checksum: the one's-complement sum of all words must be 0xFFFF.
    fn verifies(parts: &[&[u8]]) -> bool {
        let mut sum: u64 = 0;
        for part in parts {
            for pair in part.chunks(2) {
                let hi = u64::from(pair[0]) << 8;
                let lo = pair.get(1).map_or(0, |b| u64::from(*b));
                sum += hi | lo;
            }
        }
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        sum == 0xFFFF
    }

    const REPLY: Reply = Reply {
        src_port: 80,
        dst_port: 40_000,
        seq: 0xDEAD_BEEF,
        ack: 0x0102_0304,
        mss: 1460,
    };

    #[test]
    fn ipv4_synack_has_valid_checksums_and_the_mss_option() {
        let (src, dst) = ([192, 0, 2, 1], [198, 51, 100, 7]);
        let (mut ip, mut tcp) = ([0xAA; IPV4_LEN], [0xAA; TCP_LEN]);
        write_ipv4(&mut ip, &mut tcp, src, dst, &REPLY);
        assert!(verifies(&[&ip]), "IPv4 header checksum");
        let pseudo = [&src[..], &dst[..], &[0, 6, 0, TCP_LEN as u8]].concat();
        assert!(verifies(&[&pseudo, &tcp]), "TCP checksum");
        assert_eq!(&tcp[20..24], &[2, 4, 0x05, 0xB4], "MSS option 1460");
        assert_eq!(tcp[13], 0x12, "SYN|ACK");
        assert_eq!(tcp[12] >> 4, 6, "data offset");
        assert_eq!(
            u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            0xDEAD_BEEF
        );
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 44, "total length");
    }

    #[test]
    fn ipv6_synack_has_a_valid_tcp_checksum() {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src[0] = 0xfd;
        src[15] = 1;
        dst[0] = 0xfd;
        dst[15] = 2;
        let (mut ip, mut tcp) = ([0xAA; IPV6_LEN], [0xAA; TCP_LEN]);
        write_ipv6(&mut ip, &mut tcp, &src, &dst, &REPLY);
        let pseudo = [&src[..], &dst[..], &[0, 0, 0, TCP_LEN as u8, 0, 0, 0, 6]].concat();
        assert!(verifies(&[&pseudo, &tcp]), "TCP checksum");
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 24, "payload length");
        assert_eq!(ip[6], 6, "next header TCP");
    }
}
