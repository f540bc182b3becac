//! The benchmark's second floor, "parse + count": an XDP program that parses each frame with
//! moat's own parser (`parse/`, the very files moat builds, not a copy) into a
//! [`filter_common::Packet`] and counts it in a per-CPU `COUNTERS` map as moat's verdict step
//! does, but runs no policy stage and decides nothing: every frame is dropped, like the
//! XDP_DROP floor's, so the two time the same frames the same way through BPF_PROG_TEST_RUN
//! and over veth. What moat costs over this floor is what its policy costs; what this floor
//! costs over XDP_DROP is what any filter that reads the headers and counts must pay.
//! `moat run` never loads it.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

#[path = "parse/mod.rs"]
mod parse;

use aya_ebpf::programs::XdpContext;
use aya_ebpf::{bindings::xdp_action, macros::map, macros::xdp, maps::PerCpuArray};
use filter_common::{COUNTER_SLOTS, Counter, Packet, Reason, Verdict, counter_index, decide};

/// Packets and bytes per `(Verdict, Reason)`, per CPU, laid out as moat's own `COUNTERS`:
/// `(Pass, Pass)` for a frame the parser accepts, the parser's reason (with the verdict moat
/// would give it) for one it rejects.
#[map]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// The floor's entry point: parse, count, drop.
///
/// Maps: writes `COUNTERS` (one lookup per packet).
#[xdp]
pub fn moat_parse_count(ctx: XdpContext) -> u32 {
    let mut packet = Packet::new(0, 0);
    let (verdict, reason) = match parse::packet(&ctx, &mut packet) {
        Ok(()) => (Verdict::Pass, Reason::Pass),
        Err(reason) => (decide(reason, false), reason),
    };
    // Keeps every store the parser made to the summary: moat's stages read it, so moat's
    // parser writes it all, and without this the compiler could drop the stores this program
    // never reads and make the floor cheaper than moat's parse.
    core::hint::black_box(&mut packet);
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    if let Some(counter) = COUNTERS.get_ptr_mut(counter_index(verdict, reason)) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU array, so it is valid,
        // aligned and only this CPU writes it while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += frame_len;
        }
    }
    // Always XDP_DROP, whatever the parser found: this is a floor to compare with the XDP_DROP
    // one, and passing frames to the stack over veth would time the stack instead.
    xdp_action::XDP_DROP
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
