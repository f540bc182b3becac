//! moat's XDP program: the entry point, the license section and the panic handler.
//!
//! Each frame is parsed once into a [`filter_common::Packet`], judged, counted under its
//! `(Verdict, Reason)` pair and returned as an XDP action. Policy stages arrive with issue #3;
//! today every well-formed frame passes and every malformed one is dropped.
#![no_std]
#![no_main]

mod maps;
mod parse;
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
        Ok(packet) if packet.l4_parsed || packet.fragment == filter_common::Fragment::Later => {
            Reason::Pass
        }
        Ok(_) => Reason::OtherL4,
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
