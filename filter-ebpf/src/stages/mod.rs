//! The policy stages, run in a fixed order on a parsed packet, cheapest and most decisive
//! first. Each returns `Some(reason)` to decide or `None` to continue.

mod lists;

use filter_common::{Fragment, Packet, Reason};

/// Judges a parsed packet: the first stage that decides wins, else it passes.
#[inline(always)]
pub fn judge(packet: &Packet) -> Reason {
    if let Some(reason) = lists::check(packet) {
        return reason;
    }
    if packet.l4_parsed || packet.fragment == Fragment::Later {
        Reason::Pass
    } else {
        Reason::OtherL4
    }
}
