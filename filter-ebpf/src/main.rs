//! moat's XDP program: the entry point, the license section and the panic handler.
//!
//! Each frame is parsed once into a [`filter_common::Packet`], judged by the policy stages in a
//! fixed order, counted under its `(Verdict, Reason)` pair and returned as an XDP action.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod answer;
mod bansummary;
mod clock;
mod maps;
mod parse;
mod socket;
mod stages;
mod verdict;
mod verified;
mod word;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_jiffies64, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};
use filter_common::{Packet, Reason, Settings};

use crate::{
    clock::Clock,
    maps::{ACTIVE, SCRATCH, SETTINGS},
};

/// The XDP entry point; its name is [`filter_common::maps::PROGRAM_NAME`].
#[xdp]
#[inline(always)]
pub fn moat(ctx: XdpContext) -> u32 {
    // ACTIVE has one entry and SETTINGS both slots, so a failed lookup is a broken invariant.
    let (Some(settings), Some(packet)) = (
        ACTIVE.get(0).and_then(|slot| SETTINGS.get(slot & 1)),
        SCRATCH.get_ptr_mut(0),
    ) else {
        return verdict::apply(&ctx, Reason::Internal, false, 0, None);
    };
    // SAFETY: a per-CPU slot from a successful lookup; only this program run uses it.
    let packet = unsafe { &mut *packet };
    let reason = run(&ctx, settings, packet);
    #[cfg(feature = "debug-log")]
    aya_log_ebpf::debug!(
        &ctx,
        "moat: reason {} proto {} dst port {}",
        reason as u32,
        packet.l4_proto,
        packet.dst_port
    );
    verdict::apply(
        &ctx,
        reason,
        settings.dry_run(),
        settings.sample_every,
        Some(packet),
    )
}

/// The clock's sampler (`filter_common::maps::CLOCK_PROGRAM_NAME`), never attached: userspace
/// runs it by BPF_PROG_TEST_RUN on a frame of at least 16 bytes and reads back jiffies, then
/// CLOCK_MONOTONIC in ns, as the frame's first two native-endian words (see
/// `filter_common::clock::calibrate`). A shorter frame is aborted.
#[xdp]
#[inline(always)]
pub fn moat_clock(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 16 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: neither helper has preconditions. Jiffies first, so the time read after them
    // is never before the start of their jiffy.
    let (jiffies, mono_ns) = unsafe { (bpf_jiffies64(), bpf_ktime_get_ns()) };
    let words = start as *mut u64;
    // SAFETY: the 16 bytes from `start` lie inside the frame (checked above); frames need not
    // be aligned, so the words are written unaligned.
    unsafe {
        core::ptr::write_unaligned(words, jiffies);
        core::ptr::write_unaligned(words.add(1), mono_ns);
    }
    xdp_action::XDP_PASS
}

/// Judges one frame, parsing it into `packet`, and returns why it gets its verdict.
#[inline(always)]
fn run(ctx: &XdpContext, settings: &Settings, packet: &mut Packet) -> Reason {
    match parse::packet(ctx, packet) {
        Ok(()) => stages::judge(ctx, packet, settings, &mut Clock::new(settings)),
        Err(reason) => reason,
    }
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
