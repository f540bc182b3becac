//! IP fragments, by the configured policy. Maps read/written: `AGGREGATE` (fragment slot, only
//! under rate-limit). Reason: `Fragment`. Lookups per packet: one for fragments, none otherwise.

use filter_common::{
    Fragment, Packet, Reason, Settings, maps::AGGREGATE_FRAGMENT_SLOT, settings::FragmentPolicy,
};

use crate::{clock::Clock, maps::AGGREGATE, word as shared};

/// Decides `Fragment` for a fragment the policy refuses.
#[inline(always)]
pub fn check(packet: &Packet, settings: &Settings, clock: &mut Clock) -> Option<Reason> {
    if packet.fragment == Fragment::None {
        return None;
    }
    match settings.fragment_policy() {
        FragmentPolicy::Pass => None,
        FragmentPolicy::Drop => Some(Reason::Fragment),
        FragmentPolicy::RateLimit => {
            // AGGREGATE has every slot, so a failed lookup is a broken invariant.
            let Some(buckets) = AGGREGATE.get_ptr_mut(AGGREGATE_FRAGMENT_SLOT) else {
                return Some(Reason::Internal);
            };
            let admitted = shared::admit(
                buckets,
                &settings.fragments_pace,
                clock.now_ns(),
                packet.frame_len as u64,
            );
            if admitted {
                None
            } else {
                Some(Reason::Fragment)
            }
        }
    }
}
