//! Rewrites a SYN, in place, into the SYN-ACK that answers it with a SYN cookie, to be sent back
//! with `XDP_TX`: MACs swapped, VLAN tags kept, a fresh IP header (IPv4 options and IPv6
//! extension headers are not echoed), and a TCP header whose only option is the MSS: the host's
//! own, from the receiving device's MTU (`bpf_check_mtu`, read as each SYN is answered, so an
//! MTU changed on a running filter is said at once; see `filter_common::synack::advertised_mss`).
//! The headers come from `filter_common::synack`, checksums included; the frame is resized to
//! end exactly after them.
//!
//! The client's own checksums are never read: on veth and with offloads they may be partial.

use aya_ebpf::{
    helpers::generated::{bpf_check_mtu, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use filter_common::{
    Packet,
    synack::{self, Reply, advertised_mss},
};

use crate::{maps::HEADERS, parse::ptr_at};

/// How a rewrite ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// The frame is now the SYN-ACK.
    Done,
    /// The frame could not be resized and is unchanged: the SYN should go to the kernel.
    Unchanged,
    /// The frame was resized but a header no longer fitted: a broken invariant.
    Broken,
}

/// Turns the SYN in `ctx` (summarised in `packet`) into its SYN-ACK carrying `cookie` and the
/// host's MSS ([`host_mss`]; `cookie_mss`, the client's as the cookie encodes it, should the
/// device's MTU be unreadable).
#[inline(always)]
pub fn synack(ctx: &XdpContext, packet: &Packet, cookie: u32, cookie_mss: u16) -> Rewrite {
    let l3 = packet.l3_offset as usize;
    let l4 = packet.l4_offset as usize;
    let Some(seq) = ptr_at::<[u8; 4]>(ctx, l4 + 4) else {
        return Rewrite::Unchanged;
    };
    // SAFETY: `ptr_at` checked the bytes lie in the frame.
    let client_seq = u32::from_be_bytes(unsafe { *seq });
    let reply = Reply {
        src_port: packet.dst_port,
        dst_port: packet.src_port,
        seq: cookie,
        ack: client_seq.wrapping_add(1),
        mss: host_mss(ctx, packet.ip_version).unwrap_or(cookie_mss),
    };
    let ip_len = if packet.ip_version == 4 {
        synack::IPV4_LEN
    } else {
        synack::IPV6_LEN
    };
    // Addresses are read before the resize, which may cut the frame short of them.
    let mut dst6 = [0u8; 16];
    if packet.ip_version == 4 {
        let Some(dst) = ptr_at::<[u8; 4]>(ctx, l3 + 16) else {
            return Rewrite::Unchanged;
        };
        // SAFETY: `ptr_at` checked the bytes lie in the frame.
        dst6[..4].copy_from_slice(unsafe { &*dst });
    } else {
        let Some(dst) = ptr_at::<[u8; 16]>(ctx, l3 + 24) else {
            return Rewrite::Unchanged;
        };
        // SAFETY: `ptr_at` checked the bytes lie in the frame.
        dst6 = unsafe { *dst };
    }
    let old_len = (ctx.data_end() - ctx.data()) as i32;
    let new_len = (l3 + ip_len + synack::TCP_LEN) as i32;
    // SAFETY: the context is this program's; the helper checks the new size itself.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, new_len - old_len) } != 0 {
        return Rewrite::Unchanged;
    }
    // Every packet pointer is invalid after the resize; `ptr_at` takes fresh ones.
    let Some(macs) = ptr_at::<[u8; 12]>(ctx, 0) else {
        return Rewrite::Broken;
    };
    // SAFETY: `ptr_at` checked the 12 bytes lie in the frame, which this program may write.
    let macs = unsafe { &mut *(macs as *mut [u8; 12]) };
    for i in 0..6 {
        macs.swap(i, i + 6);
    }
    // The headers are built in this CPU's `HEADERS` slot and then copied whole into the frame:
    // zero-filling packet memory in place would call `memset`, across which the verifier
    // forgets the packet bounds.
    let Some(copy) = HEADERS.get_ptr_mut(0) else {
        return Rewrite::Broken;
    };
    // SAFETY: this CPU's map slot; only this program run uses it.
    let copy = unsafe { &mut *copy };
    // SAFETY: both arrays are longer than the prefixes taken; u8 arrays have alignment 1.
    let tcp_out = unsafe { &mut *(copy.tcp.as_mut_ptr() as *mut [u8; synack::TCP_LEN]) };
    if packet.ip_version == 4 {
        let mut ours = [0u8; 4];
        ours.copy_from_slice(&dst6[..4]);
        let mut theirs = [0u8; 4];
        theirs.copy_from_slice(&packet.src_addr_be[..4]);
        // SAFETY: as above.
        let ip_out = unsafe { &mut *(copy.ip.as_mut_ptr() as *mut [u8; synack::IPV4_LEN]) };
        synack::write_ipv4(ip_out, tcp_out, ours, theirs, &reply);
        if copy_into(ctx, l3, ip_out) && copy_into(ctx, l3 + synack::IPV4_LEN, tcp_out) {
            return Rewrite::Done;
        }
    } else {
        synack::write_ipv6(&mut copy.ip, tcp_out, &dst6, &packet.src_addr_be, &reply);
        if copy_into(ctx, l3, &copy.ip) && copy_into(ctx, l3 + synack::IPV6_LEN, tcp_out) {
            return Rewrite::Done;
        }
    }
    Rewrite::Broken
}

/// Copies `bytes` into the frame at `offset`; false if they would not fit.
#[inline(always)]
fn copy_into<const N: usize>(ctx: &XdpContext, offset: usize, bytes: &[u8; N]) -> bool {
    match ptr_at::<[u8; N]>(ctx, offset) {
        Some(at) => {
            // SAFETY: `ptr_at` checked the N bytes lie inside the frame, which this program may
            // write; the source is map memory, so the ranges do not overlap. A copy of constant
            // size is expanded inline by the BPF backend.
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, N) };
            true
        }
        None => false,
    }
}

/// The MSS this host advertises on IP version `ip_version`: what the MTU of the device that
/// received the frame leaves after the headers; none if the helper cannot read it.
#[inline(always)]
fn host_mss(ctx: &XdpContext, ip_version: u8) -> Option<u16> {
    let mut mtu: u32 = 0;
    // SAFETY: `ctx.ctx` is the program's context; `mtu` is a 4-byte stack slot the helper
    // writes. Interface 0 is the receiving device; a zero `mtu_len` asks about the frame as
    // it is, whose size does not matter here (only the MTU written back is used).
    let result = unsafe { bpf_check_mtu(ctx.ctx.cast(), 0, &raw mut mtu, 0, 0) };
    (result >= 0 && mtu != 0).then(|| advertised_mss(mtu, ip_version))
}
