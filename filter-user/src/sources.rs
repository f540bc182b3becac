//! The per-source rate table (`SOURCES`, see `filter_common::sources`) from userspace: find a
//! source's state, place one (the bench's pre-tracking), list and count what it holds.

use std::{
    borrow::{Borrow, BorrowMut},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{Array, MapData, MapError};
use filter_common::{
    rate::RateState,
    source::SourceKey,
    sources::{Placed, SOURCE_WAYS, Sets, SourceSet, SourceSlot, insert, place},
};

use crate::mapping::Mapping;

/// `SOURCES`, opened as the array of sets it is.
pub struct SourceTable<T> {
    sets: Array<T, SourceSet>,
    count: u32,
}

impl<T: Borrow<MapData>> SourceTable<T> {
    /// The table over `sets` (its set count is its capacity).
    pub fn new(sets: Array<T, SourceSet>) -> SourceTable<T> {
        let count = sets.len();
        SourceTable { sets, count }
    }

    /// The state of `key` (a `SOURCES` key: address, family and class), if tracked.
    pub fn get(&self, key: &SourceKey) -> Result<Option<RateState>, MapError> {
        let place = place(key, self.count);
        for index in place.sets {
            let set = self.sets.get(&index, 0)?;
            if let Some(way) = set.way_of(&place) {
                return Ok(Some(set.slots[way].state));
            }
        }
        Ok(None)
    }

    /// Every tracked source, with its key and state.
    pub fn entries(&self) -> Result<Vec<(SourceKey, RateState)>, MapError> {
        let mut out = Vec::new();
        for set in self.sets.iter() {
            for way in set?.slots {
                if way.meta != 0 {
                    out.push((key_of(&way), way.state));
                }
            }
        }
        Ok(out)
    }
}

impl<T: BorrowMut<MapData>> SourceTable<T> {
    /// Places `key` with `state` as the program would (its own way, else an empty one, else
    /// a move, else the way quiet longest); says how.
    pub fn insert(&mut self, key: &SourceKey, state: RateState) -> Result<Placed, MapError> {
        let place = place(key, self.count);
        insert(self, &place, state)
    }

    /// Empties every set.
    pub fn clear(&mut self) -> Result<(), MapError> {
        for index in 0..self.count {
            self.sets.set(index, SourceSet::default(), 0)?;
        }
        Ok(())
    }
}

impl<T: BorrowMut<MapData>> Sets for SourceTable<T> {
    type Error = MapError;

    fn count(&self) -> u32 {
        self.count
    }

    fn read(&self, index: u32) -> Result<SourceSet, MapError> {
        self.sets.get(&index, 0)
    }

    fn write(&mut self, index: u32, set: SourceSet) -> Result<(), MapError> {
        self.sets.set(index, set, 0)
    }
}

/// How many ways of the `SOURCES` map in `data` (mappable, see `filter-ebpf`'s maps) hold a
/// source, read through a mapping of its values: one load per way, where a lookup per set
/// would cost a syscall each.
pub fn tracked(data: &MapData) -> std::io::Result<u64> {
    let sets = data.info().map_err(std::io::Error::other)?.max_entries() as usize;
    let mapping = Mapping::of(data, sets * size_of::<SourceSet>())?;
    let words = mapping.base().cast::<AtomicU64>();
    let mut tracked = 0;
    for way in 0..sets * SOURCE_WAYS {
        // SAFETY: the meta word of way `way` lies inside the mapping (`sets` values of
        // SOURCE_WAYS ways each), 8-byte aligned; the program writes it whole, so it is read
        // atomically.
        let meta = unsafe { &*words.add(way * SLOT_WORDS + META_WORD) };
        tracked += u64::from(meta.load(Ordering::Relaxed) != 0);
    }
    Ok(tracked)
}

/// 64-bit words per way.
const SLOT_WORDS: usize = size_of::<SourceSlot>() / 8;

/// The word of a way holding its meta word.
const META_WORD: usize = core::mem::offset_of!(SourceSlot, meta) / 8;

/// The key a way holds: its tag's address, family and class.
fn key_of(way: &SourceSlot) -> SourceKey {
    let ip_version = (way.meta >> 8) as u8;
    let class = way.meta as u8;
    let mut key = SourceKey {
        ip_version,
        class,
        ..SourceKey::default()
    };
    if ip_version == 4 {
        key.addr_be[..4].copy_from_slice(&(way.hi as u32).to_be_bytes());
    } else {
        key.addr_be[..8].copy_from_slice(&way.hi.to_be_bytes());
        key.addr_be[8..].copy_from_slice(&way.lo.to_be_bytes());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ways_key_is_the_key_placed_there() {
        for (text, prefix) in [
            ("192.0.2.9", 64),
            ("2001:db8:1:2:3:4:5:6", 64),
            ("2001:db8::7", 128),
        ] {
            let key = SourceKey::for_addr(text.parse().unwrap(), 3, prefix);
            let place = place(&key, 8);
            assert_eq!(
                key_of(&place.slot(RateState::default())),
                key,
                "{text}/{prefix}"
            );
        }
    }
}
