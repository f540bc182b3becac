//! IP fragments, by the configured policy. Maps read/written: `AGGREGATE` (fragment slot, only
//! under rate-limit). Reason: `Fragment`. Lookups per packet: one for fragments, none otherwise.

use filter_common::{
    Fragment, Packet, Reason, Settings, maps::AGGREGATE_FRAGMENT_SLOT, settings::FragmentPolicy,
};

use crate::maps::AGGREGATE;

/// Decides `Fragment` for a fragment the policy refuses.
#[inline(always)]
pub fn check(packet: &Packet, settings: &Settings, now_ns: u64) -> Option<Reason> {
    if packet.fragment == Fragment::None {
        return None;
    }
    match settings.fragment_policy() {
        FragmentPolicy::Pass => None,
        FragmentPolicy::Drop => Some(Reason::Fragment),
        FragmentPolicy::RateLimit => {
            let buckets = AGGREGATE.get_ptr_mut(AGGREGATE_FRAGMENT_SLOT)?;
            // SAFETY: a per-CPU slot from a successful lookup; only this CPU writes it now.
            let admitted =
                unsafe { (*buckets).admit(&settings.fragments, now_ns, packet.frame_len as u64) };
            if admitted {
                None
            } else {
                Some(Reason::Fragment)
            }
        }
    }
}
