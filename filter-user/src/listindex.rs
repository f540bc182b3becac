//! Keeps the list index (`LIST_INDEX`, see [`filter_common::listindex`]) in step with the allow
//! and deny tries: every writer of a list notes each entry here, raising the counts before it
//! inserts and lowering them after it deletes.
//!
//! The index is mapped into this process's memory, and each byte is updated with an atomic
//! compare-and-swap, so the daemon and a `moat deny add` running beside it never lose each
//! other's counts, and marking a /0 (16 million bytes) takes milliseconds instead of a system
//! call per byte.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use aya::maps::{Map, MapData, MapError, lpm_trie::LpmTrie};
use filter_common::{
    listindex::{self, INDEX_BYTES, INDEX_WORDS, Side},
    lists::{ListValue, V4Key, V6Key},
    maps::{ALLOW_V4, ALLOW_V6, CROWDSEC_V4, CROWDSEC_V6, DENY_V4, DENY_V6, LIST_INDEX},
};

use crate::{cidr::Cidr, mapping::Mapping};

/// Why the index could not be mapped or rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The object or pin has no index map of the expected kind.
    #[error("{LIST_INDEX} is missing or not an array")]
    Missing,
    /// The kernel refused the mapping.
    #[error("mapping {LIST_INDEX} into memory: {0}")]
    Mmap(std::io::Error),
    /// A list could not be read while rebuilding the index.
    #[error("reading {list} to rebuild {LIST_INDEX}: {source}")]
    Read {
        /// The list map.
        list: &'static str,
        /// What aya reported (boxed: `MapError` is large).
        source: Box<MapError>,
    },
}

/// How a list's entries count in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// The allowlist: the allow side.
    Allow,
    /// The operator's denylist: the deny side, and the IPv4 cover bytes of the /24s its
    /// entries of /24 or shorter cover.
    Deny,
    /// CrowdSec's decisions: the deny side only (a covered /24 would drop under `denylist`).
    Decisions,
}

impl Counted {
    /// The side of the list counts.
    pub const fn side(self) -> Side {
        match self {
            Counted::Allow => Side::Allow,
            Counted::Deny | Counted::Decisions => Side::Deny,
        }
    }
}

/// The list index, mapped read-write; every access is atomic.
#[derive(Debug)]
pub struct ListIndex {
    mapping: Mapping,
}

/// Bytes of the mapping: every word of the index.
const INDEX_LEN: usize = INDEX_WORDS as usize * 8;

impl ListIndex {
    /// Maps the index `data` holds (the `LIST_INDEX` map of an object or a pin).
    pub fn of(data: &MapData) -> Result<ListIndex, IndexError> {
        let mapping = Mapping::of(data, INDEX_LEN).map_err(IndexError::Mmap)?;
        Ok(ListIndex { mapping })
    }

    /// Maps the index of a loaded object's `map`.
    pub fn of_map(map: &Map) -> Result<ListIndex, IndexError> {
        match map {
            Map::Array(data) => ListIndex::of(data),
            _ => Err(IndexError::Missing),
        }
    }

    /// Raises (`add`) or lowers the counts of `list` on every byte `cidr` marks (and, for the
    /// denylist, the cover bytes of the /24s it covers), and its family's entry count. Raising
    /// comes before the entry is inserted, lowering after it is deleted.
    pub fn note(&self, list: Counted, cidr: &Cidr, add: bool) {
        let ipv6 = matches!(cidr, Cidr::V6 { .. });
        let side = list.side();
        if add {
            self.count_entry(ipv6, true);
        }
        match cidr {
            Cidr::V4 { addr, prefix } => {
                let (first, count) = listindex::v4_span(addr, *prefix);
                self.bump_span(
                    first,
                    count,
                    |byte| listindex::bumped(byte, side, add),
                    |word| listindex::bumped_word(word, side, add),
                );
                if list == Counted::Deny
                    && let Some((first, count)) = listindex::v4_cover_span(addr, *prefix)
                {
                    self.bump_span(
                        first,
                        count,
                        |byte| listindex::cover_bumped(byte, add),
                        |word| listindex::cover_bumped_word(word, add),
                    );
                }
            }
            Cidr::V6 { addr, prefix } => {
                // The level is counted before its byte is raised and after it is lowered, so
                // the program never skips a level that holds a marked byte.
                let level = listindex::v6_level(*prefix);
                if add {
                    self.count_level(level, true);
                }
                let index = listindex::v6_entry(addr, *prefix);
                self.bump(index, |byte| listindex::bumped(byte, side, add));
                if !add {
                    self.count_level(level, false);
                }
            }
        }
        if !add {
            self.count_entry(ipv6, false);
        }
    }

    /// Bumps the `count` bytes from `first`: a whole word at a time with `word` (one
    /// compare-and-swap per eight bytes) for a span of whole words (a /21 or wider), else byte
    /// by byte with `byte`.
    fn bump_span(
        &self,
        first: u32,
        count: u32,
        byte: impl Fn(u8) -> u8,
        word: impl Fn(u64) -> u64,
    ) {
        if first.is_multiple_of(8) && count.is_multiple_of(8) {
            for index in first / 8..(first + count) / 8 {
                self.bump_word(index, &word);
            }
        } else {
            for index in first..first + count {
                self.bump(index, &byte);
            }
        }
    }

    /// Raises or lowers one family's entry count, each half saturating on its own (an unpaired
    /// removal leaves zero, never a wrapped count or a borrow from the other family).
    fn count_entry(&self, ipv6: bool, add: bool) {
        let shift = if ipv6 { 32 } else { 0 };
        // Never fails: the closure always returns a value.
        let _ = self.word(listindex::ENTRIES_WORD).fetch_update(
            Ordering::SeqCst,
            Ordering::SeqCst,
            |value| {
                let count = (value >> shift) as u32;
                let count = if add {
                    count.saturating_add(1)
                } else {
                    count.saturating_sub(1)
                };
                Some((value & !(0xffff_ffff_u64 << shift)) | (u64::from(count) << shift))
            },
        );
    }

    /// Raises or lowers the count of IPv6 entries marking `level` ([`listindex::LEVELS_WORD`]).
    fn count_level(&self, level: u32, add: bool) {
        // Never fails: the closure always returns a value.
        let _ = self.word(listindex::LEVELS_WORD).fetch_update(
            Ordering::SeqCst,
            Ordering::SeqCst,
            |value| Some(listindex::levels_bumped(value, level, add)),
        );
    }

    /// The word of IPv6 level counts, as the program reads it.
    pub fn levels(&self) -> u64 {
        self.word(listindex::LEVELS_WORD).load(Ordering::Relaxed)
    }

    /// Advances the lists' generation: what every writer of a list does once its edit is in the
    /// tries and the index, so no verified source skips the list check on a stamp from before
    /// the edit.
    pub fn advance_generation(&self) {
        self.word(listindex::GENERATION_WORD)
            .fetch_add(1, Ordering::SeqCst);
    }

    /// The entries counted in the family of `ipv6`.
    pub fn entries(&self, ipv6: bool) -> u32 {
        let value = self.word(listindex::ENTRIES_WORD).load(Ordering::Relaxed);
        if ipv6 {
            (value >> 32) as u32
        } else {
            value as u32
        }
    }

    fn word(&self, word: u32) -> &AtomicU64 {
        assert!(word < INDEX_WORDS, "list index word {word} out of range");
        // SAFETY: in bounds (checked above) of a live, page-aligned mapping, so the word is
        // 8-byte aligned; AtomicU64 has u64's layout.
        unsafe { &*self.mapping.base().cast::<AtomicU64>().add(word as usize) }
    }

    /// Byte `index`, as the program reads it.
    pub fn byte(&self, index: u32) -> u8 {
        self.cell(index).load(Ordering::Relaxed)
    }

    fn cell(&self, index: u32) -> &AtomicU8 {
        assert!(index < INDEX_BYTES, "list index byte {index} out of range");
        // SAFETY: in bounds (checked above) of a live mapping; AtomicU8 has u8's layout.
        unsafe { &*self.mapping.base().add(index as usize).cast::<AtomicU8>() }
    }

    fn bump_word(&self, word: u32, bumped: impl Fn(u64) -> u64) {
        assert!(
            word < INDEX_BYTES / 8,
            "list index word {word} out of range"
        );
        let cell = self.word(word);
        // Never fails: the closure always returns a value.
        let _ = cell.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |value| {
            Some(bumped(value))
        });
    }

    fn bump(&self, index: u32, bumped: impl Fn(u8) -> u8) {
        let cell = self.cell(index);
        // Never fails: the closure always returns a value.
        let _ = cell.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |byte| {
            Some(bumped(byte))
        });
    }

    /// Marks every entry of the allow, deny and CrowdSec tries of `ebpf` (for an index created empty
    /// beside tries that already hold entries: a take-over by a version that adds the index);
    /// returns how many entries it marked. The generation starts at a value taken from the
    /// clock, so no list stamp a verified-source cache kept from an earlier index matches it.
    pub fn rebuild(&self, ebpf: &aya::Ebpf) -> Result<usize, IndexError> {
        let v4 = |addr, prefix| Cidr::V4 { addr, prefix };
        let v6 = |addr, prefix| Cidr::V6 { addr, prefix };
        let marked = self.mark_trie::<V4Key>(ebpf, ALLOW_V4, v4)?
            + self.mark_trie::<V4Key>(ebpf, DENY_V4, v4)?
            + self.mark_trie::<V6Key>(ebpf, ALLOW_V6, v6)?
            + self.mark_trie::<V6Key>(ebpf, DENY_V6, v6)?
            + self.mark_trie::<V4Key>(ebpf, CROWDSEC_V4, v4)?
            + self.mark_trie::<V6Key>(ebpf, CROWDSEC_V6, v6)?;
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64);
        self.word(listindex::GENERATION_WORD)
            .store(start, Ordering::SeqCst);
        Ok(marked)
    }

    /// Marks every entry of the trie `list` of `ebpf` (keys of type `K`, made into prefixes by
    /// `cidr`); returns how many.
    fn mark_trie<K: aya::Pod>(
        &self,
        ebpf: &aya::Ebpf,
        list: &'static str,
        cidr: impl Fn(K, u32) -> Cidr,
    ) -> Result<usize, IndexError> {
        let counted = counted_as(list).ok_or(IndexError::Missing)?;
        let trie: LpmTrie<&MapData, K, ListValue> = ebpf
            .map(list)
            .ok_or(IndexError::Missing)
            .and_then(|map| LpmTrie::try_from(map).map_err(|e| read_error(list, e)))?;
        let mut marked = 0;
        for key in trie.keys() {
            let key = key.map_err(|e| read_error(list, e))?;
            self.note(counted, &cidr(key.data(), key.prefix_len()), true);
            marked += 1;
        }
        Ok(marked)
    }
}

/// How the entries of the list map `name` count in the index: `None` for any map but the
/// allow, deny and CrowdSec tries.
pub fn counted_as(name: &str) -> Option<Counted> {
    match name {
        ALLOW_V4 | ALLOW_V6 => Some(Counted::Allow),
        DENY_V4 | DENY_V6 => Some(Counted::Deny),
        CROWDSEC_V4 | CROWDSEC_V6 => Some(Counted::Decisions),
        _ => None,
    }
}

/// Raises the index counts of `cidr`, about to be inserted into the list map `list` of `ebpf`
/// (for callers that write a loaded object's tries directly: the tests and the bench). Does
/// nothing for a map that is not an allow or deny trie.
pub fn note_insert(ebpf: &aya::Ebpf, list: &str, cidr: &Cidr) -> Result<(), IndexError> {
    let Some(counted) = counted_as(list) else {
        return Ok(());
    };
    let index = ListIndex::of_map(ebpf.map(LIST_INDEX).ok_or(IndexError::Missing)?)?;
    index.note(counted, cidr, true);
    Ok(())
}

fn read_error(list: &'static str, source: MapError) -> IndexError {
    IndexError::Read {
        list,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An anonymous mapping the size of the index, standing in for the kernel's.
    fn scratch_index() -> ListIndex {
        ListIndex {
            mapping: Mapping::anonymous(INDEX_LEN).expect("an anonymous mapping"),
        }
    }

    #[test]
    fn wide_and_narrow_entries_mark_the_same_bytes_either_way() {
        let index = scratch_index();
        let cidr = |text: &str| -> Cidr { text.parse().expect("valid") };
        // Word-wise (a /16: 256 /24s) and byte-wise (a /22: 4 /24s) marks, then removals.
        index.note(Counted::Deny, &cidr("10.1.0.0/16"), true);
        index.note(Counted::Deny, &cidr("10.1.4.0/22"), true);
        index.note(Counted::Allow, &cidr("10.1.5.9/32"), true);
        let byte = |a, b, c| index.byte(listindex::v4_index(&[a, b, c, 0]));
        assert_eq!((index.entries(false), index.entries(true)), (3, 0));
        assert_eq!(byte(10, 1, 0), 0x10);
        assert_eq!(byte(10, 1, 255), 0x10);
        assert_eq!(byte(10, 1, 4), 0x20);
        assert_eq!(byte(10, 1, 5), 0x21);
        assert_eq!(byte(10, 2, 0), 0);
        assert_eq!(byte(10, 0, 255), 0);
        index.note(Counted::Deny, &cidr("10.1.0.0/16"), false);
        index.note(Counted::Allow, &cidr("2001:db8::/32"), true);
        assert_eq!((index.entries(false), index.entries(true)), (2, 1));
        // An unpaired removal leaves the other family's count alone.
        index.note(Counted::Deny, &cidr("2001:db8:1::/48"), false);
        index.note(Counted::Deny, &cidr("2001:db8:1::/48"), false);
        assert_eq!((index.entries(false), index.entries(true)), (2, 0));
        assert_eq!(byte(10, 1, 0), 0);
        assert_eq!(byte(10, 1, 5), 0x11);
        // IPv6 entries count per level: the /32 above is on the /32 level (bits 32-47).
        assert_eq!(index.levels(), 1 << 32);
        index.note(Counted::Decisions, &cidr("2001:db8::1/128"), true);
        index.note(Counted::Deny, &cidr("2001:db8:1::/64"), true);
        index.note(Counted::Deny, &cidr("::/0"), true);
        assert_eq!(index.levels(), (1 << 48) | (1 << 32) | 2);
        index.note(Counted::Allow, &cidr("2001:db8::/32"), false);
        index.note(Counted::Deny, &cidr("2001:db8:1::/64"), false);
        assert_eq!(index.levels(), (1 << 48) | 1);
        // /0 marks every /24, word by word.
        index.note(Counted::Deny, &cidr("0.0.0.0/0"), true);
        assert_eq!(byte(0, 0, 0), 0x10);
        assert_eq!(byte(255, 255, 255), 0x10);
        assert_eq!(byte(10, 1, 5), 0x21);
    }
}
