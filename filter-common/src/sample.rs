//! A sampled dropped packet, or the packet that earned a ban, as the XDP program writes it to
//! the `SAMPLES` ring buffer.

/// One sampled packet: enough to rank sources, prefixes and ports in `moat top`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Source address in network order; IPv4 in the first four bytes (zero if unparsed).
    pub src_addr_be: [u8; 16],
    /// Frame length in bytes.
    pub frame_len: u32,
    /// Destination port (host order), 0 without TCP/UDP.
    pub dst_port: u16,
    /// 4, 6, or 0 if the packet was not parsed that far.
    pub ip_version: u8,
    /// Transport protocol number.
    pub l4_proto: u8,
    /// The [`crate::Reason`] discriminant.
    pub reason: u8,
    /// The [`crate::Verdict`] discriminant.
    pub verdict: u8,
    /// [`SAMPLE_DROP`] or [`SAMPLE_BAN`].
    pub kind: u8,
    /// Explicit padding; always zero.
    pub _pad: u8,
}

/// [`Sample::kind`]: a dropped packet, sampled one in `sample_every`.
pub const SAMPLE_DROP: u8 = 0;

/// [`Sample::kind`]: the packet on which the program banned its source (always written, so
/// the daemon logs and counts bans as they happen instead of walking the ban table).
pub const SAMPLE_BAN: u8 = 1;
const _: () = assert!(core::mem::size_of::<Sample>() == 28);
#[cfg(feature = "user")]
unsafe impl aya::Pod for Sample {}
