//! The per-source rate table (`SOURCES`, see `filter_common::sources`) from userspace: find a
//! source's state, place one (the bench's pre-tracking), list and count what it holds.

use std::borrow::{Borrow, BorrowMut};

use aya::maps::{Array, MapData, MapError};
use filter_common::{
    rate::RateState,
    source::SourceKey,
    sources::{SourceSet, SourceSlot, place},
};

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
        let set = self.sets.get(&place.set, 0)?;
        Ok(set.way_of(&place).map(|way| set.slots[way].state))
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

    /// How many ways hold a source.
    pub fn tracked(&self) -> Result<u64, MapError> {
        let mut tracked = 0;
        for set in self.sets.iter() {
            tracked += set?.slots.iter().filter(|way| way.meta != 0).count() as u64;
        }
        Ok(tracked)
    }
}

impl<T: BorrowMut<MapData>> SourceTable<T> {
    /// Places `key` with `state` as the program would (its own way, else an empty one, else
    /// the one quiet longest); returns whether the set had room without replacing another.
    pub fn insert(&mut self, key: &SourceKey, state: RateState) -> Result<bool, MapError> {
        let place = place(key, self.count);
        let set = self.sets.get(&place.set, 0)?;
        let room = set.way_of(&place).is_some() || set.slots.iter().any(|way| way.meta == 0);
        self.sets.set(place.set, set.with(&place, state), 0)?;
        Ok(room)
    }

    /// Empties every set.
    pub fn clear(&mut self) -> Result<(), MapError> {
        for index in 0..self.count {
            self.sets.set(index, SourceSet::default(), 0)?;
        }
        Ok(())
    }
}

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
            let set = SourceSet::default().with(&place, RateState::default());
            let way = set.way_of(&place).expect("placed");
            assert_eq!(key_of(&set.slots[way]), key, "{text}/{prefix}");
        }
    }
}
