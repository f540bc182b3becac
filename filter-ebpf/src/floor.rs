//! The benchmark's floor: an XDP program that drops every frame without reading it. What it
//! costs per packet (through BPF_PROG_TEST_RUN) and how fast it drops (over veth) is the least
//! any XDP filter can cost, so `cargo xtask bench` states moat's figures as ratios to it.
//! `moat run` never loads it.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// The floor's entry point: every frame is dropped.
#[xdp]
pub fn moat_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Nothing here can panic; the verifier rejects any path that could reach this.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
