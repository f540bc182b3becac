//! The lab's and the benchmark's flood generator: the settings its XDP program reads, and the
//! names of the programs beside it in the same object (the lab router's fast path, the
//! pass-everything program for veth peers). The generator is run with BPF_PROG_TEST_RUN live
//! frames; nothing here is loaded or attached by `moat run`.

/// Program name of the generator.
pub const FLOOD_PROGRAM: &str = "moat_flood";

/// Single-entry array of [`FloodConfig`].
pub const FLOOD_CONFIG: &str = "FLOOD_CONFIG";

/// Single-entry array of [`FloodTemplate`].
pub const FLOOD_TEMPLATE: &str = "FLOOD_TEMPLATE";

/// The most template bytes the generator restores in each frame.
pub const TEMPLATE_BYTES: usize = 128;

/// The template frame's first bytes, which the generator writes back into every frame before
/// rewriting it. Live frames are recycled pages whose contents the kernel does not reset, and a
/// receiver that answers a frame in place (moat's SYN cookies rewrite a SYN into a SYN-ACK and
/// cut it short) hands the page back changed; without the restore, the next copy from that page
/// would be the answer, not the attack.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodTemplate {
    /// The bytes, from the frame's start.
    pub bytes: [u8; TEMPLATE_BYTES],
}
const _: () = assert!(core::mem::size_of::<FloodTemplate>() == TEMPLATE_BYTES);
#[cfg(feature = "user")]
unsafe impl aya::Pod for FloodTemplate {}

/// Program name of the lab router's fast path.
pub const FORWARD_PROGRAM: &str = "moat_forward";

/// Single-entry array of [`ForwardConfig`].
pub const FORWARD_CONFIG: &str = "FORWARD_CONFIG";

/// Program name of the pass-everything program. A frame an XDP program sends back with
/// `XDP_TX` on a veth is dropped unless the veth's peer end has an XDP program attached, so the
/// tests and the lab attach this one to the peer of the interface the filter runs on.
pub const PASS_PROGRAM: &str = "moat_pass";

/// Program name of the lab router's sink: attached where moat's answers arrive (the peer of
/// the origin's interface), it drops frames addressed to the lab's spoofed sources at XDP, as
/// the internet would carry them away, and passes the rest to the router's kernel.
pub const SINK_PROGRAM: &str = "moat_sink";

/// The spoofed IPv4 sources' prefix the sink drops (198.19.0.0/16): its first two bytes.
pub const SPOOFED_V4_BYTES: [u8; 2] = [198, 19];

/// The spoofed IPv6 sources' prefix the sink drops (2001:db8:ff00::/40): its first five bytes.
pub const SPOOFED_V6_BYTES: [u8; 5] = [0x20, 0x01, 0x0d, 0xb8, 0xff];

/// Where the lab router's fast path sends every frame arriving from the attackers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardConfig {
    /// The router's interface towards the origin.
    pub ifindex: u32,
    /// The router's MAC on that interface (new source MAC).
    pub src_mac: [u8; 6],
    /// The origin's MAC (new destination MAC).
    pub dst_mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<ForwardConfig>() == 16);
#[cfg(feature = "user")]
unsafe impl aya::Pod for ForwardConfig {}

/// No transport rewriting (ICMP, fragments).
pub const L4_NONE: u8 = 0;
/// The template carries TCP at `l4_offset`.
pub const L4_TCP: u8 = 6;
/// The template carries UDP at `l4_offset`.
pub const L4_UDP: u8 = 17;

/// [`FloodConfig::v6_random_host`] flag: randomise bits 64..96 of an IPv6 source (the host
/// part's upper half; [`FloodConfig::src_count`] varies the lower half).
pub const V6_RANDOM_HOST: u32 = 1;
/// [`FloodConfig::v6_random_host`] flag: randomise the 16-bit subnet ID of an IPv6 source
/// (bytes 6..8 of the address), so each copy comes from a random /64 inside the base's /48.
pub const V6_RANDOM_SUBNET: u32 = 2;

/// How to rewrite each copy of the template frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodConfig {
    /// First source address (network order; IPv4 in the first four bytes).
    pub src_base_be: [u8; 16],
    /// Sources are `base + random % src_count` (in the last 32 bits); 0 or 1 keeps the base.
    pub src_count: u32,
    /// For IPv6, flags saying what else to randomise in each copy: [`V6_RANDOM_HOST`] (bits
    /// 64..96 of the source, so sources rotate inside each /64) and [`V6_RANDOM_SUBNET`] (the
    /// 16-bit subnet ID, bits 48..64, so sources rotate over the /64s of one /48). 0 changes
    /// only the last 32 bits. The name predates the second flag.
    pub v6_random_host: u32,
    /// Offset of the IP header in the frame.
    pub l3_offset: u16,
    /// Offset of the transport header in the frame.
    pub l4_offset: u16,
    /// 4 or 6.
    pub ip_version: u8,
    /// [`L4_TCP`], [`L4_UDP`] or [`L4_NONE`]: whose checksum follows the source address.
    pub l4_kind: u8,
    /// Non-zero: randomise the source port too.
    pub random_src_port: u8,
    /// Non-zero: randomise the destination port too, over 1..=65535.
    pub random_dst_port: u8,
}
const _: () = assert!(core::mem::size_of::<FloodConfig>() == 32);
#[cfg(feature = "user")]
unsafe impl aya::Pod for FloodConfig {}

/// One's-complement update of an Internet checksum (RFC 1624, eqn. 3) when one 16-bit word of
/// the covered data changes from `old` to `new`. All values are the big-endian words as read.
#[inline(always)]
pub const fn checksum_update(checksum: u16, old: u16, new: u16) -> u16 {
    let mut sum = (!checksum) as u32 + (!old) as u32 + new as u32;
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full Internet checksum of `words`, for checking the update.
    fn full(words: &[u16]) -> u16 {
        let mut sum: u32 = words.iter().map(|w| u32::from(*w)).sum();
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn update_matches_recomputation() {
        let mut words = [
            0x4500, 0x0073, 0x0000, 0x4000, 0x4011, 0xc0a8, 0x0001, 0xc0a8, 0x00c7,
        ];
        let checksum = full(&words);
        for (index, new) in [(5, 0x0a00u16), (6, 0xffff), (8, 0x0000), (1, 0x1234)] {
            let updated = checksum_update(full(&words), words[index], new);
            words[index] = new;
            assert_eq!(updated, full(&words), "word {index}");
        }
        assert_ne!(checksum, full(&words));
    }
}
