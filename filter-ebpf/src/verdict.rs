//! Turns a reason into a verdict and an XDP action, and counts it.
//!
//! Maps: writes `COUNTERS` (one lookup per packet); for a dropped packet, `SAMPLING` (the
//! per-CPU countdown) and, for one in `sample_every`, `SAMPLES`.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_NO_WAKEUP, xdp_action},
    programs::XdpContext,
};
use filter_common::{
    Packet, Reason, Verdict, counter_index, decide,
    maps::SAMPLES_WAKE_BYTES,
    sample::{SAMPLE_BAN, SAMPLE_DROP, Sample},
};

use crate::maps::{COUNTERS, SAMPLES, SAMPLES_LOST, SAMPLING};

/// Decides the verdict for `reason`, counts the frame under it, samples it if it is dropped and
/// chosen, and returns the XDP action that carries the verdict out.
#[inline(always)]
pub fn apply(
    ctx: &XdpContext,
    reason: Reason,
    dry_run: bool,
    sample_every: u32,
    packet: Option<&Packet>,
) -> u32 {
    let verdict = decide(reason, dry_run);
    if packet.is_some_and(|packet| packet.ban_issued != 0) {
        sample(ctx, verdict, reason, packet, SAMPLE_BAN);
    } else if sample_every != 0
        && matches!(verdict, Verdict::Drop | Verdict::WouldDrop)
        && sample_due(sample_every)
    {
        sample(ctx, verdict, reason, packet, SAMPLE_DROP);
    }
    count(ctx, verdict, reason)
}

/// Counts one drop down on this CPU's countdown; true (and the countdown restarted) when it
/// is this drop's turn to be sampled: every `sample_every`-th drop per CPU.
#[inline(always)]
fn sample_due(sample_every: u32) -> bool {
    let Some(left) = SAMPLING.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot from a successful lookup; only this CPU writes it now.
    unsafe {
        // A countdown above a newly lowered `sample_every` restarts from it.
        if *left == 0 || *left > sample_every {
            *left = sample_every;
        }
        *left -= 1;
        *left == 0
    }
}

/// Writes one sample; a full ring buffer drops it (sampling is best effort).
#[inline(always)]
fn sample(ctx: &XdpContext, verdict: Verdict, reason: Reason, packet: Option<&Packet>, kind: u8) {
    let mut value = Sample {
        frame_len: (ctx.data_end() - ctx.data()) as u32,
        reason: reason as u8,
        verdict: verdict as u8,
        kind,
        ..Sample::default()
    };
    if let Some(packet) = packet {
        value.src_addr_be = packet.src_addr_be;
        value.dst_port = packet.dst_port;
        value.ip_version = packet.ip_version;
        value.l4_proto = packet.l4_proto;
    }
    // Wake the daemon only once the ring holds a batch (see SAMPLES_WAKE_BYTES).
    let flags = if SAMPLES.query(u64::from(BPF_RB_AVAIL_DATA)) >= SAMPLES_WAKE_BYTES {
        0
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    };
    if SAMPLES.output::<Sample>(&value, flags).is_err()
        && let Some(lost) = SAMPLES_LOST.get_ptr_mut(0)
    {
        // SAFETY: a per-CPU slot from a successful lookup; only this CPU writes it now.
        unsafe { *lost += 1 };
    }
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
        Verdict::Answered => xdp_action::XDP_TX,
    }
}
