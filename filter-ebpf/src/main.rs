//! moat's XDP program: the entry point, the license section and the panic handler.
//!
//! Each frame is parsed once into a [`filter_common::Packet`], judged by the policy stages in a
//! fixed order, counted under its `(Verdict, Reason)` pair and returned as an XDP action.
#![no_std]
#![no_main]

mod maps;
mod parse;
mod stages;
mod verdict;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use filter_common::Reason;

/// The XDP entry point; its name is [`filter_common::maps::PROGRAM_NAME`].
#[xdp]
pub fn moat(ctx: XdpContext) -> u32 {
    let reason = run(&ctx);
    verdict::apply(&ctx, reason)
}

/// Judges one frame and returns why it gets its verdict.
#[inline(always)]
fn run(ctx: &XdpContext) -> Reason {
    match parse::packet(ctx) {
        Ok(packet) => stages::judge(&packet),
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
