//! Allowlist, then denylist, by longest-prefix match on the source address.
//!
//! Maps read: `ALLOW_V4`/`ALLOW_V6`, `DENY_V4`/`DENY_V6`. Reasons: `Allowlist` (pass at once),
//! `Denylist` (drop). Lookups per packet: two (one per list, in the packet's family).

use aya_ebpf::maps::lpm_trie::Key;
use filter_common::{
    Packet, Reason,
    lists::{V4_MAX_PREFIX, V4Key, V6_MAX_PREFIX},
};

use crate::maps::{ALLOW_V4, ALLOW_V6, DENY_V4, DENY_V6};

/// Decides `Allowlist` or `Denylist` if the source is on a list.
#[inline(always)]
pub fn check(packet: &Packet) -> Option<Reason> {
    if packet.ip_version == 4 {
        let mut addr: V4Key = [0; 4];
        addr.copy_from_slice(&packet.src_addr_be[..4]);
        let key = Key::new(V4_MAX_PREFIX, addr);
        if ALLOW_V4.get(&key).is_some() {
            return Some(Reason::Allowlist);
        }
        if DENY_V4.get(&key).is_some() {
            return Some(Reason::Denylist);
        }
    } else {
        let key = Key::new(V6_MAX_PREFIX, packet.src_addr_be);
        if ALLOW_V6.get(&key).is_some() {
            return Some(Reason::Allowlist);
        }
        if DENY_V6.get(&key).is_some() {
            return Some(Reason::Denylist);
        }
    }
    None
}
