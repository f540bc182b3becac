//! Allowlist, then denylist, then the CrowdSec decisions, by longest-prefix match on the source
//! address, each trie walked only when the list index says the source might be on it (the
//! CrowdSec tries count on the denylist's side).
//!
//! Maps read: `LIST_INDEX`, `ALLOW_V4`/`ALLOW_V6`, `DENY_V4`/`DENY_V6`,
//! `CROWDSEC_V4`/`CROWDSEC_V6`. Reasons: `Allowlist` (pass at once), `Denylist` and `CrowdSec`
//! (drop). Lookups per packet: for IPv4, the entries word (one cache line for every
//! packet; no IPv4 entries stops there), then one index word; for IPv6, the level counts (in
//! the same cache line; all zero without IPv6 entries, so nothing more is read), then one word
//! per level some entry marks; then a trie walk per
//! list whose count is not zero — none for a source on neither list's marked buckets, and no
//! denylist walk for an IPv4 source whose /24 a denylist entry covers (its cover byte, one more
//! word, decides). An established segment of a verified source asks none of this while its way
//! holds the stamp of the lists' current generation (`GENERATION_WORD`, read by
//! [`generation`]; see `stages`).

use aya_ebpf::maps::lpm_trie::Key;
use filter_common::{
    Packet, Reason,
    listindex::{self, Side},
    lists::{V4_MAX_PREFIX, V4Key, V6_MAX_PREFIX, V6Key},
};

use crate::maps::{ALLOW_V4, ALLOW_V6, CROWDSEC_V4, CROWDSEC_V6, DENY_V4, DENY_V6, LIST_INDEX};

/// Decides `Allowlist` or `Denylist` if the source is on a list.
#[inline(always)]
pub fn check(packet: &Packet) -> Option<Reason> {
    if packet.ip_version == 4 {
        // A family with no entries at all skips its index bytes (and their cache misses).
        let entries = read_word(listindex::ENTRIES_WORD, u64::MAX);
        if !listindex::has_entries(entries, false) {
            return None;
        }
        let word = packet.src_v4_word();
        let slash24 = listindex::v4_number_index(u32::from_be(word));
        let marks = index_byte(slash24);
        if marks == 0 {
            return None;
        }
        let addr: V4Key = word.to_ne_bytes();
        let key = Key::new(V4_MAX_PREFIX, addr);
        if listindex::may_match(marks, Side::Allow) && ALLOW_V4.get(&key).is_some() {
            return Some(Reason::Allowlist);
        }
        if listindex::may_match(marks, Side::Deny) {
            // A /24 a denylist entry covers whole needs no walk.
            if listindex::covered(index_byte(listindex::V4_COVER + slash24))
                || DENY_V4.get(&key).is_some()
            {
                return Some(Reason::Denylist);
            }
            if CROWDSEC_V4.get(&key).is_some() {
                return Some(Reason::CrowdSec);
            }
        }
    } else {
        let words = packet.src_words();
        let buckets = listindex::v6_head_lookup(u64::from_be(words[0]));
        // Only the levels some entry marks: a bucket another level's entry marked (they share
        // one region) sends no source to the tries.
        let levels = read_word(listindex::LEVELS_WORD, u64::MAX);
        let mut marks = 0;
        let mut level = 0;
        while level < 4 {
            if listindex::level_used(levels, level) {
                marks |= index_byte(buckets[level as usize]);
            }
            level += 1;
        }
        if marks == 0 {
            return None;
        }
        // SAFETY: sixteen bytes of plain integers either way, in the same order.
        let key = Key::new(V6_MAX_PREFIX, unsafe {
            core::mem::transmute::<[u64; 2], V6Key>(words)
        });
        if listindex::may_match(marks, Side::Allow) && ALLOW_V6.get(&key).is_some() {
            return Some(Reason::Allowlist);
        }
        if listindex::may_match(marks, Side::Deny) {
            if DENY_V6.get(&key).is_some() {
                return Some(Reason::Denylist);
            }
            if CROWDSEC_V6.get(&key).is_some() {
                return Some(Reason::CrowdSec);
            }
        }
    }
    None
}

/// The lists' generation (`GENERATION_WORD`); none if the index cannot be read.
#[inline(always)]
pub fn generation() -> Option<u64> {
    word(listindex::GENERATION_WORD)
}

/// Word `index` of the list index, read once; `absent` if it cannot be read (it always can:
/// the word is below `INDEX_WORDS`).
#[inline(always)]
fn read_word(index: u32, absent: u64) -> u64 {
    word(index).unwrap_or(absent)
}

/// Word `index` of the list index, read once; none if the lookup fails.
#[inline(always)]
fn word(index: u32) -> Option<u64> {
    let word = LIST_INDEX.get_ptr(index)?;
    // SAFETY: a pointer to a map value from a successful lookup; userspace updates it through
    // its mapping at any time, so it is read once, volatile.
    Some(unsafe { core::ptr::read_volatile(word) })
}

/// Byte `index` of the list index; if its word cannot be read (it always can: the index is
/// below `INDEX_BYTES`), every count, so both tries are walked.
#[inline(always)]
fn index_byte(index: u32) -> u8 {
    (read_word(index >> 3, u64::MAX) >> ((index & 7) * 8)) as u8
}
