//! Turns a reason into a verdict and an XDP action, and counts it.
//!
//! Maps: writes `COUNTERS`. One lookup per packet.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use filter_common::{Reason, Verdict, counter_index, decide};

use crate::maps::COUNTERS;

/// Decides the verdict for `reason`, counts the frame under it and returns the XDP action that
/// carries it out.
#[inline(always)]
pub fn apply(ctx: &XdpContext, reason: Reason, dry_run: bool) -> u32 {
    count(ctx, decide(reason, dry_run), reason)
}

#[inline(always)]
fn count(ctx: &XdpContext, verdict: Verdict, reason: Reason) -> u32 {
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    if let Some(counter) = COUNTERS.get_ptr_mut(counter_index(verdict, reason)) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU array, so it is valid,
        // aligned and only this CPU writes it while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += frame_len;
        }
    }
    action(verdict)
}

#[inline(always)]
const fn action(verdict: Verdict) -> u32 {
    match verdict {
        Verdict::Pass | Verdict::WouldDrop => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Aborted => xdp_action::XDP_ABORTED,
    }
}
