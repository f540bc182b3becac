//! Parses a frame once, header by header, into a [`Packet`] summary.
//!
//! Every read of packet memory goes through [`ptr_at`], or lies inside a header it checked
//! ([`frame_u32`] and [`frame_u64`], which load an address as one word). A frame truncated or
//! malformed at any header yields `Err(Reason::Malformed)`; a frame that is not IP yields
//! `Err(Reason::NonIp)`. Ports and lengths are converted to host order here, once; addresses
//! stay in network order.

mod eth;
mod icmp;
mod ipv4;
mod ipv6;
mod tcp;
mod udp;

use core::arch::asm;

use aya_ebpf::programs::XdpContext;
use filter_common::{
    Fragment, Packet, Reason,
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, PACKET_WORDS},
};

/// Headers must start within this many bytes of the frame start. Bounds the variable offsets
/// (IPv4 options, IPv6 extension headers) so the verifier can track packet pointers; a frame
/// whose headers go further is malformed.
pub const MAX_HEADER_OFFSET: usize = 2048;

/// A pointer to a `T` at `offset` bytes into the frame, or `None` if it would run past the end.
///
/// `T` must be a `#[repr(C)]` struct of byte arrays (alignment 1), so dereferencing it is valid at
/// any offset.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    // Bound needed by the verifier: a packet pointer plus an unbounded scalar is rejected.
    if offset > MAX_HEADER_OFFSET {
        return None;
    }
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Defines `$name`, which loads the `$ty` `OFFSET` bytes into a header (checked to lie in the
/// frame) with one `$width` load whatever its alignment, its bytes in memory order: Rust's BPF
/// target splits an unaligned load into byte loads, and the kernel lets programs load
/// unaligned words from packets where the CPU handles them (x86-64, arm64).
macro_rules! frame_load {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $width:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The bytes at `header + OFFSET` must lie inside the frame, as checked by [`ptr_at`].
        #[inline(always)]
        pub unsafe fn $name<const OFFSET: i16>(header: *const u8) -> $ty {
            let word: $ty;
            // SAFETY: the caller's contract; the load only reads.
            unsafe {
                asm!(
                    concat!("{word} = *(", $width, " *)({header} + {offset})"),
                    header = in(reg) header,
                    offset = const OFFSET,
                    word = lateout(reg) word,
                    options(nostack, readonly, preserves_flags),
                );
            }
            word
        }
    };
}

frame_load!(
    /// The 32-bit word `OFFSET` bytes into the header at `header`, loaded whole.
    frame_u32,
    u32,
    "u32"
);
frame_load!(
    /// The 64-bit word `OFFSET` bytes into the header at `header`, loaded whole.
    frame_u64,
    u64,
    "u64"
);

/// Reads a `T` at `offset`, or `Err(Malformed)` if the frame is too short.
#[inline(always)]
pub fn read_at<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, Reason> {
    let ptr = ptr_at::<T>(ctx, offset).ok_or(Reason::Malformed)?;
    // SAFETY: `ptr_at` checked that `size_of::<T>()` bytes at `ptr` lie inside the frame, and
    // every header type has alignment 1.
    Ok(unsafe { *ptr })
}

/// Where the IP header ends: transport headers must lie within `[l4_offset, ip_end)`.
pub struct L3 {
    /// Offset of the transport header.
    pub l4_offset: usize,
    /// Offset one past the last byte of the IP datagram (excludes Ethernet padding).
    pub ip_end: usize,
}

/// Parses the whole frame into `packet`, overwriting every field.
#[inline(always)]
pub fn packet(ctx: &XdpContext, packet: &mut Packet) -> Result<(), Reason> {
    let frame_len = ctx.data_end() - ctx.data();
    // Reset first, so nothing of the previous frame survives an early error: five word
    // stores. (Assigning `Packet::new` compiles to two calls of a byte-at-a-time memset, about
    // a third of the parser's cost.)
    let words = (packet as *mut Packet).cast::<u64>();
    let mut word = 0;
    while word < PACKET_WORDS {
        // SAFETY: `packet` is a valid, 8-byte aligned Packet of PACKET_WORDS words, all of
        // whose fields are integers (or a fieldless enum whose zero is a variant), so zero is
        // a valid value for each.
        unsafe { core::ptr::write_volatile(words.add(word), 0) };
        word += 1;
    }
    packet.frame_len = frame_len as u32;
    let (ether_type, l3_offset) = eth::parse(ctx)?;
    packet.l3_offset = l3_offset as u16;
    let l3 = match ether_type {
        eth::ETH_P_IP => ipv4::parse(ctx, l3_offset, frame_len, packet)?,
        eth::ETH_P_IPV6 => ipv6::parse(ctx, l3_offset, frame_len, packet)?,
        _ => return Err(Reason::NonIp),
    };
    if packet.fragment == Fragment::Later {
        return Ok(());
    }
    packet.l4_offset = l3.l4_offset as u16;
    match (packet.l4_proto, packet.ip_version) {
        (IPPROTO_TCP, _) => tcp::parse(ctx, &l3, packet)?,
        (IPPROTO_UDP, _) => udp::parse(ctx, &l3, packet)?,
        (IPPROTO_ICMP, 4) | (IPPROTO_ICMPV6, 6) => icmp::parse(ctx, &l3, packet)?,
        _ => return Ok(()),
    }
    packet.l4_parsed = 1;
    Ok(())
}

/// Checks that a header of `len` bytes at `offset` lies inside the IP datagram.
#[inline(always)]
pub fn within(l3: &L3, offset: usize, len: usize) -> Result<(), Reason> {
    if offset + len > l3.ip_end {
        Err(Reason::Malformed)
    } else {
        Ok(())
    }
}
