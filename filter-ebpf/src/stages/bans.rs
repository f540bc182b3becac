//! Banned sources. Maps read: `BANS`. Reason: `Banned`. Lookups per packet: one. A ban
//! recorded during a dry run counts only while dry run is on.

use filter_common::{Reason, Settings, source::SourceKey};

use crate::{clock::Clock, maps::BANS};

/// Decides `Banned` while the ban of `source` (its ban key) is in force.
#[inline(always)]
pub fn check(source: &SourceKey, settings: &Settings, clock: &mut Clock) -> Option<Reason> {
    let ban = BANS.get_ptr(source)?;
    // SAFETY: the pointer comes from a successful lookup and is valid for this program run.
    if unsafe { (*ban).enforced(clock.now_ns(), settings.dry_run()) } {
        Some(Reason::Banned)
    } else {
        None
    }
}
