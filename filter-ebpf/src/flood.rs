//! moat's flood generator, the lab router's fast path and sink, and a pass-everything program
//! for veth peers.
//!
//! `moat_flood` is an XDP program run with BPF_PROG_TEST_RUN live frames
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`) on a template frame. Each run rewrites the copy's source
//! address from the configured pool (for IPv6, if configured, also its host part and its /64
//! inside the base's /48) and, if configured, its source and destination ports, fixes the
//! checksums incrementally and transmits it with `XDP_TX`. `moat_forward`, attached
//! to the lab router's interface from the attackers, redirects every frame to the origin at XDP
//! speed (rewriting the MACs), so the flood reaches the origin at the rate it is offered instead
//! of the rate the router's IP stack forwards. `moat_pass` passes every frame: attached to the
//! peer of a veth end, it makes the kernel deliver the frames a program on that end sends back
//! with `XDP_TX` (without it they are dropped); `moat_sink` does the same and drops what is
//! addressed to the lab's spoofed sources. `moat run` never loads any of them; the lab,
//! the benchmark and the tests do.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_prandom_u32,
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};
use filter_common::flood::{
    FloodConfig, FloodTemplate, ForwardConfig, L4_NONE, L4_TCP, L4_UDP, SPOOFED_V4_BYTES,
    SPOOFED_V6_BYTES, V6_RANDOM_HOST, V6_RANDOM_SUBNET, checksum_update,
};

/// The generator's settings.
#[map]
static FLOOD_CONFIG: Array<FloodConfig> = Array::with_max_entries(1, 0);

/// The template's first bytes, restored into every frame.
#[map]
static FLOOD_TEMPLATE: Array<FloodTemplate> = Array::with_max_entries(1, 0);

/// The fast path's settings.
#[map]
static FORWARD_CONFIG: Array<ForwardConfig> = Array::with_max_entries(1, 0);

/// The lab router's fast path: new MACs, then out of the interface towards the origin.
#[xdp]
pub fn moat_forward(ctx: XdpContext) -> u32 {
    let Some(config) = FORWARD_CONFIG.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(eth) = bytes_at::<12>(&ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: `eth` points at the 12 MAC bytes inside the frame (from `bytes_at`).
    let eth = unsafe { &mut *eth };
    eth[..6].copy_from_slice(&config.dst_mac);
    eth[6..].copy_from_slice(&config.src_mac);
    // SAFETY: bpf_redirect has no memory preconditions.
    unsafe { aya_ebpf::helpers::bpf_redirect(config.ifindex, 0) as u32 }
}

/// Passes every frame. Attached to a veth peer only so that frames the other end's program
/// returns with `XDP_TX` are received there (veth drops them when the peer has no XDP program).
#[xdp]
pub fn moat_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The lab router's sink: drops frames to the spoofed sources (moat's SYN-ACKs and the
/// origin's answers to forged addresses), which the router would otherwise route to a
/// blackhole through its IP stack on the CPUs the origin and the attack share; passes the rest.
/// Like [`moat_pass`], it also lets veth deliver what the other end sends with `XDP_TX`.
#[xdp]
pub fn moat_sink(ctx: XdpContext) -> u32 {
    if to_spoofed(&ctx).unwrap_or(false) {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Whether an untagged IPv4 or IPv6 frame is addressed to the spoofed prefixes.
#[inline(always)]
fn to_spoofed(ctx: &XdpContext) -> Option<bool> {
    // SAFETY (all reads below): each pointer comes from `bytes_at`, inside the frame.
    let ethertype = unsafe { *bytes_at::<2>(ctx, 12)? };
    match u16::from_be_bytes(ethertype) {
        0x0800 => {
            // IPv4 destination at 14 + 16.
            let dst = unsafe { *bytes_at::<2>(ctx, 30)? };
            Some(dst == SPOOFED_V4_BYTES)
        }
        0x86dd => {
            // IPv6 destination at 14 + 24.
            let dst = unsafe { *bytes_at::<5>(ctx, 38)? };
            Some(dst == SPOOFED_V6_BYTES)
        }
        _ => Some(false),
    }
}

/// Bound needed by the verifier on the configured header offsets.
const MAX_OFFSET: usize = 128;

/// A pointer to `N` bytes at `offset`, or `None` past the end of the frame.
#[inline(always)]
fn bytes_at<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<*mut [u8; N]> {
    if offset > MAX_OFFSET {
        return None;
    }
    let start = ctx.data();
    if start + offset + N > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut [u8; N])
}

/// Replaces the big-endian word at `word` with `new`, updating each checksum in `checksums`
/// that covers it.
#[inline(always)]
fn set_word(word: *mut [u8; 2], new: u16, checksums: [Option<*mut [u8; 2]>; 2]) {
    // SAFETY: every pointer comes from `bytes_at`, inside the frame, alignment 1.
    unsafe {
        let old = u16::from_be_bytes(*word);
        *word = new.to_be_bytes();
        for checksum in checksums.into_iter().flatten() {
            let sum = u16::from_be_bytes(*checksum);
            *checksum = checksum_update(sum, old, new).to_be_bytes();
        }
    }
}

/// The generator's entry point.
#[xdp]
pub fn moat_flood(ctx: XdpContext) -> u32 {
    match rewrite(&ctx) {
        Some(()) => xdp_action::XDP_TX,
        None => xdp_action::XDP_ABORTED,
    }
}

/// Writes the template's first bytes back into the frame (see [`FloodTemplate`]): as many as
/// an answer in place can have changed (Ethernet, IPv6 and a TCP header with the MSS option is
/// 78 bytes), or all of a shorter frame up to its last even length. Every copy has a constant
/// length, which the verifier can check against the frame and the BPF backend expands inline (a
/// variable length or offset is what the verifier cannot follow through LLVM's rewriting).
#[inline(always)]
fn restore(ctx: &XdpContext) -> Option<()> {
    let template = FLOOD_TEMPLATE.get(0)?;
    let _ = copy_prefix::<80>(ctx, template)
        || copy_prefix::<78>(ctx, template)
        || copy_prefix::<76>(ctx, template)
        || copy_prefix::<74>(ctx, template)
        || copy_prefix::<72>(ctx, template)
        || copy_prefix::<70>(ctx, template)
        || copy_prefix::<68>(ctx, template)
        || copy_prefix::<66>(ctx, template)
        || copy_prefix::<64>(ctx, template)
        || copy_prefix::<62>(ctx, template)
        || copy_prefix::<60>(ctx, template)
        || copy_prefix::<58>(ctx, template)
        || copy_prefix::<56>(ctx, template)
        || copy_prefix::<54>(ctx, template)
        || copy_prefix::<42>(ctx, template)
        || copy_prefix::<14>(ctx, template);
    Some(())
}

/// Copies the template's first `N` bytes over the frame's, if the frame holds `N` bytes.
#[inline(always)]
fn copy_prefix<const N: usize>(ctx: &XdpContext, template: &FloodTemplate) -> bool {
    let Some(frame) = bytes_at::<N>(ctx, 0) else {
        return false;
    };
    // SAFETY: `frame` points at N bytes inside the frame (from `bytes_at`); the template holds
    // TEMPLATE_BYTES >= N bytes of map memory, which does not overlap the frame.
    unsafe { core::ptr::copy_nonoverlapping(template.bytes.as_ptr(), frame.cast::<u8>(), N) };
    true
}

#[inline(always)]
fn rewrite(ctx: &XdpContext) -> Option<()> {
    restore(ctx)?;
    let config = FLOOD_CONFIG.get(0)?;
    let l3 = config.l3_offset as usize;
    let l4 = config.l4_offset as usize;
    let l4_checksum = match config.l4_kind {
        L4_TCP => Some(bytes_at::<2>(ctx, l4 + 16)?),
        L4_UDP => Some(bytes_at::<2>(ctx, l4 + 6)?),
        L4_NONE => None,
        _ => return None,
    };
    // SAFETY: bpf_get_prandom_u32 has no preconditions.
    let random = unsafe { bpf_get_prandom_u32() };
    let offset = if config.src_count > 1 {
        random % config.src_count
    } else {
        0
    };
    let mut base_low = [0u8; 4];
    let (src, ip_checksum, base_low_at) = if config.ip_version == 4 {
        (l3 + 12, Some(bytes_at::<2>(ctx, l3 + 10)?), 0)
    } else {
        (l3 + 8, None, 12)
    };
    base_low.copy_from_slice(&config.src_base_be[base_low_at..base_low_at + 4]);
    let address = u32::from_be_bytes(base_low).wrapping_add(offset);
    let [a, b, c, d] = address.to_be_bytes();
    // The last 32 bits of the source (all of an IPv4 address). The IPv4 header checksum covers
    // them, and so does the transport checksum, through its pseudo-header.
    let last = src + if config.ip_version == 4 { 0 } else { 12 };
    for (index, word) in [[a, b], [c, d]].into_iter().enumerate() {
        let at = bytes_at::<2>(ctx, last + index * 2)?;
        set_word(at, u16::from_be_bytes(word), [ip_checksum, l4_checksum]);
    }
    if config.ip_version == 6 && config.v6_random_host & V6_RANDOM_HOST != 0 {
        // SAFETY: bpf_get_prandom_u32 has no preconditions.
        let host = unsafe { bpf_get_prandom_u32() };
        let [e, f, g, h] = host.to_be_bytes();
        for (index, word) in [[e, f], [g, h]].into_iter().enumerate() {
            let at = bytes_at::<2>(ctx, src + 8 + index * 2)?;
            set_word(at, u16::from_be_bytes(word), [None, l4_checksum]);
        }
    }
    if config.ip_version == 6 && config.v6_random_host & V6_RANDOM_SUBNET != 0 {
        // The subnet ID, bytes 6..8: a random /64 inside the base's /48. IPv6 has no header
        // checksum; the transport checksum covers the source through its pseudo-header.
        let at = bytes_at::<2>(ctx, src + 6)?;
        // SAFETY: bpf_get_prandom_u32 has no preconditions.
        let subnet = unsafe { bpf_get_prandom_u32() } as u16;
        set_word(at, subnet, [None, l4_checksum]);
    }
    if config.random_src_port != 0 && config.l4_kind != L4_NONE {
        let port = bytes_at::<2>(ctx, l4)?;
        let new = (random >> 16) as u16 | 1024;
        set_word(port, new, [None, l4_checksum]);
    }
    if config.random_dst_port != 0 && config.l4_kind != L4_NONE {
        // The destination port follows the source port in both TCP and UDP headers.
        let port = bytes_at::<2>(ctx, l4 + 2)?;
        // SAFETY: bpf_get_prandom_u32 has no preconditions.
        let random = unsafe { bpf_get_prandom_u32() };
        // 1..=65535: port 0 is not a port a flood's target could have open.
        let new = (random % 65_535) as u16 + 1;
        set_word(port, new, [None, l4_checksum]);
    }
    Some(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here, so this never runs.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
