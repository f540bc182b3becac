//! Banned sources. Maps read: `BANS`. Reason: `Banned`. Lookups per packet: one. A ban
//! recorded during a dry run counts only while dry run is on.

use filter_common::{Packet, Reason, Settings, source::SourceKey};

use crate::{clock::Clock, maps::BANS};

/// Decides `Banned` while the source's ban is in force.
#[inline(always)]
pub fn check(packet: &Packet, settings: &Settings, clock: &mut Clock) -> Option<Reason> {
    let key = SourceKey::for_ban(packet, settings.v6_source_prefix);
    let ban = BANS.get_ptr(key)?;
    // SAFETY: the pointer comes from a successful lookup and is valid for this program run.
    if unsafe { (*ban).enforced(clock.now_ns(), settings.dry_run()) } {
        Some(Reason::Banned)
    } else {
        None
    }
}
