//! The bans summary (`BANS_EMPTY`, see [`filter_common::bansummary`]) as userspace writes it:
//! mapped into this process, every access atomic. Writers of a ban clear its key's bit after
//! the ban is in `BANS` ([`BanSummary::note_ban`]); the daemon's sweep sets the bits of the
//! slots no ban hashes to ([`BanSummary::rebuild`]); a program about to be attached looks every
//! ban up until then ([`BanSummary::look_up_all`]).
//!
//! A program older than the summary has a one-word flag under the same name, where 0 means
//! "look bans up": against such a program, noting a ban writes 0 and the rest does nothing.

use std::{
    io,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{Array, Map, MapData, MapError};
use filter_common::{
    bansummary::{NO_BAN, SUMMARY_WORDS, slot},
    maps::BANS_EMPTY,
    source::SourceKey,
};

use crate::{mapping::Mapping, pins::PinDir};

/// Bytes of the summary.
const SUMMARY_LEN: usize = SUMMARY_WORDS as usize * 8;

/// Why the summary could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// The map could not be opened or read.
    #[error("opening {BANS_EMPTY}: {0}")]
    Map(#[from] MapError),
    /// The map could not be mapped into memory.
    #[error("mapping {BANS_EMPTY} into memory: {0}")]
    Mmap(io::Error),
    /// The object declares no such map.
    #[error("the XDP object has no {BANS_EMPTY} map")]
    Missing,
}

/// A running or loaded program's bans summary.
pub enum BanSummary {
    /// The summary, mapped.
    Summary(Mapping),
    /// An older program's one-word flag (0: look bans up).
    Flag(Array<MapData, u32>),
    /// No such map: a program older still, which always looks bans up.
    Absent,
}

impl BanSummary {
    /// The summary pinned at `pins`.
    pub fn open(pins: &PinDir) -> Result<BanSummary, SummaryError> {
        let path = pins.map(BANS_EMPTY);
        if !path.exists() {
            return Ok(BanSummary::Absent);
        }
        BanSummary::of(MapData::from_pin(&path)?)
    }

    /// The summary of a loaded object.
    pub fn of_object(ebpf: &aya::Ebpf) -> Result<BanSummary, SummaryError> {
        match ebpf.map(BANS_EMPTY) {
            Some(Map::Array(data)) => Ok(BanSummary::Summary(map_summary(data)?)),
            _ => Err(SummaryError::Missing),
        }
    }

    fn of(data: MapData) -> Result<BanSummary, SummaryError> {
        let info = data.info()?;
        if info.value_size() == 8 && info.max_entries() == SUMMARY_WORDS {
            Ok(BanSummary::Summary(map_summary(&data)?))
        } else {
            Ok(BanSummary::Flag(Array::try_from(Map::Array(data))?))
        }
    }

    /// The summary's words; none for an older program's flag.
    fn words(&self) -> &[AtomicU64] {
        match self {
            // SAFETY: the mapping holds SUMMARY_WORDS aligned u64s (a page-aligned mapping of
            // the map's values) and lives as long as `self`; AtomicU64 has u64's layout, and
            // every access to the mapping goes through these atomics.
            BanSummary::Summary(mapping) => unsafe {
                std::slice::from_raw_parts(
                    mapping.base().cast::<AtomicU64>(),
                    SUMMARY_WORDS as usize,
                )
            },
            _ => &[],
        }
    }

    /// Records that `key` has a ban in `BANS`: after every write of a ban, so the program never
    /// skips its lookup.
    pub fn note_ban(&mut self, key: &SourceKey) -> Result<(), MapError> {
        if let BanSummary::Flag(flag) = self {
            return flag.set(0, 0, 0);
        }
        let (index, mask) = slot(key);
        if let Some(word) = self.words().get(index as usize) {
            word.fetch_and(!mask, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Makes the program look every ban up: for a program about to be attached, whose table
    /// may hold bans copied or restored into it.
    pub fn look_up_all(&self) {
        for word in self.words() {
            word.store(0, Ordering::SeqCst);
        }
    }

    /// Sets the bits of the slots none of `first`'s keys hashes to (`first`: every key of
    /// `BANS`, read before), then clears the bits of every key `second` reads from the table
    /// again: a ban written while the first pass ran keeps its lookup (see
    /// [`filter_common::bansummary`]).
    pub fn rebuild<E>(
        &self,
        first: &[SourceKey],
        second: impl FnOnce() -> Result<Vec<SourceKey>, E>,
    ) -> Result<(), E> {
        let words = self.words();
        if words.is_empty() {
            return Ok(());
        }
        let banned = |keys: &[SourceKey]| {
            let mut bits = vec![0u64; words.len()];
            for key in keys {
                let (index, mask) = slot(key);
                bits[index as usize] |= mask;
            }
            bits
        };
        for (word, bits) in words.iter().zip(banned(first)) {
            let empty = NO_BAN & !bits;
            if word.load(Ordering::SeqCst) & empty != empty {
                word.fetch_or(empty, Ordering::SeqCst);
            }
        }
        for (word, bits) in words.iter().zip(banned(&second()?)) {
            if word.load(Ordering::SeqCst) & bits != 0 {
                word.fetch_and(!bits, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

fn map_summary(data: &MapData) -> Result<Mapping, SummaryError> {
    Mapping::of(data, SUMMARY_LEN).map_err(SummaryError::Mmap)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use filter_common::source::BAN_CLASS;

    use super::*;

    fn key(last: u8) -> SourceKey {
        SourceKey::for_addr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), BAN_CLASS, 64)
    }

    fn summary() -> BanSummary {
        BanSummary::Summary(Mapping::anonymous(SUMMARY_LEN).expect("an anonymous mapping"))
    }

    /// Whether `key`'s slot says "no ban".
    fn holds_no_ban(summary: &BanSummary, key: &SourceKey) -> bool {
        let (index, mask) = slot(key);
        summary.words()[index as usize].load(Ordering::SeqCst) & mask != 0
    }

    #[test]
    fn a_new_summary_looks_every_ban_up_and_a_rebuild_skips_only_slots_without_one() {
        let summary = summary();
        let (kept, gone) = (key(1), key(2));
        assert!(!holds_no_ban(&summary, &kept) && !holds_no_ban(&summary, &gone));
        summary
            .rebuild(&[kept], || Ok::<_, ()>(vec![kept]))
            .expect("rebuilt");
        assert!(!holds_no_ban(&summary, &kept), "a ban's slot is looked up");
        assert!(holds_no_ban(&summary, &gone), "an empty slot is skipped");
        let empty: u32 = summary
            .words()
            .iter()
            .map(|w| w.load(Ordering::SeqCst).count_zeros())
            .sum();
        assert_eq!(empty, 1, "only the one ban's slot is looked up");
        summary.look_up_all();
        assert!(
            summary
                .words()
                .iter()
                .all(|w| w.load(Ordering::SeqCst) == 0)
        );
    }

    #[test]
    fn a_ban_written_during_a_rebuild_keeps_its_lookup() {
        let mut summary = summary();
        let (old, new) = (key(1), key(3));
        // The new ban lands after the first read of the table, and its writer clears its bit
        // before the first pass sets it: the second read finds it and clears the bit again.
        summary.note_ban(&new).expect("noted");
        summary
            .rebuild(&[old], || Ok::<_, ()>(vec![old, new]))
            .expect("rebuilt");
        assert!(!holds_no_ban(&summary, &new), "the new ban is looked up");
        assert!(!holds_no_ban(&summary, &old));
        // Noted after the rebuild, a ban's bit is cleared by its own writer.
        let late = key(4);
        assert!(holds_no_ban(&summary, &late));
        summary.note_ban(&late).expect("noted");
        assert!(!holds_no_ban(&summary, &late));
    }
}
