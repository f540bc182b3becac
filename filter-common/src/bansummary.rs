//! The bans summary (`BANS_EMPTY`): one bit per slot of a hash of ban keys, set while no key in
//! `BANS` hashes to the slot. A source whose slot's bit is set has no ban, so the program skips
//! the `BANS` lookup (a kernel call that hashes the 20-byte key, walks a bucket and compares
//! keys) for almost every packet from a source that is not banned, however many bans there are:
//! with the table full ([`crate::maps::DEFAULT_MAX_BANS`] keys), about 6% of the slots hold a
//! ban. The summary is 128 KiB, so it stays in the CPU's cache under a flood of random sources.
//!
//! A clear bit only means "look": a new map (all zero) makes the program look every ban up, as
//! does a slot whose ban has gone until the daemon's sweep sets its bit again. A set bit must
//! never hide a ban, so every writer of a ban clears its key's bit once the ban is in `BANS`,
//! and the sweep sets bits in two passes: it sets the bits of the slots no ban it read hashes
//! to, then reads the table again and clears the bits of every ban it finds. A ban written
//! between its two reads whose writer cleared the bit before the first pass set it is in the
//! second read, so its bit ends clear; one written after the second read has its bit cleared by
//! its writer after both passes. A ban skipped between the passes lasts only as long as the
//! sweep's own two reads of the table.

use crate::{hash::MIX, source::SourceKey, verified::tag};

/// log2 of the slots (bits) of the summary: 2^20, 128 KiB.
pub const SLOTS_LOG2: u32 = 20;

/// Words (`u64`) of the summary: the `BANS_EMPTY` array's entries.
pub const SUMMARY_WORDS: u32 = 1 << (SLOTS_LOG2 - 6);

/// A summary word none of whose slots holds a ban.
pub const NO_BAN: u64 = u64::MAX;

/// The word of `key`'s slot (below [`SUMMARY_WORDS`]) and the slot's bit in it. `key` is a ban
/// key (`BANS`): its class takes no part, so any class of the same source gives the same slot.
#[inline(always)]
pub fn slot(key: &SourceKey) -> (u32, u64) {
    let mixed = (tag(key).folded() ^ u64::from(key.ip_version)).wrapping_mul(MIX);
    let bit = (mixed >> (64 - SLOTS_LOG2)) as u32;
    (bit >> 6, 1 << (bit & 63))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::BAN_CLASS;

    extern crate std;
    use std::collections::HashSet;

    fn key(addr: &str) -> SourceKey {
        SourceKey::for_addr(addr.parse().expect("an address"), BAN_CLASS, 64)
    }

    #[test]
    fn a_slot_lies_inside_the_summary_and_names_one_bit() {
        for addr in ["192.0.2.1", "198.51.100.7", "2001:db8::1", "::", "0.0.0.0"] {
            let (word, mask) = slot(&key(addr));
            assert!(word < SUMMARY_WORDS, "{addr}: word {word}");
            assert_eq!(mask.count_ones(), 1, "{addr}");
        }
    }

    #[test]
    fn the_class_takes_no_part_and_the_family_does() {
        let v4 = key("192.0.2.1");
        assert_eq!(slot(&v4), slot(&v4.with_class(3)));
        // The IPv6 address whose tag's high word equals the IPv4 address's.
        let v6 = key("0:0:c000:201::");
        assert_ne!(slot(&v4), slot(&v6));
    }

    #[test]
    fn neighbouring_sources_spread_over_the_summary() {
        let slots: HashSet<(u32, u64)> = (0..4096u32)
            .map(|n| {
                let [_, _, c, d] = n.to_be_bytes();
                slot(&key(&std::format!("10.1.{c}.{d}")))
            })
            .collect();
        // 4,096 keys in 2^20 slots: a handful of collisions at most.
        assert!(slots.len() > 4080, "{} distinct slots", slots.len());
        let words: HashSet<u32> = slots.iter().map(|(word, _)| *word).collect();
        assert!(words.len() > 3900, "{} distinct words", words.len());
    }
}
