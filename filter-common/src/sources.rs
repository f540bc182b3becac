//! The per-source rate table (`SOURCES`): an array of sets of two ways. Each source has two
//! candidate sets, picked by two multiplicative hashes of its tag and class, and lives in one
//! of their four ways. The program finds a source's state with inlined array accesses and at
//! most four compares, where an LRU hash costs a kernel call (a hash over the 20-byte key, a
//! bucket walk and a memcmp) and two random memory accesses.
//!
//! A new source takes the first empty way of its four, its first candidate set's before its
//! second's: readers look in the first set first, so the fewer sources live in their second
//! set, the fewer lookups read a second random page (at capacity, about one source in nine
//! instead of one in four when new sources went to the roomier set). When all four ways are
//! taken, one of their sources whose other candidate set has an empty way moves there (one
//! step of cuckoo hashing) and the new source takes its way; only when none can move does the
//! new source replace the one quiet longest (whose buckets are furthest in the past; a source
//! over its limit has buckets in the future and goes last), which then starts again from a
//! full burst, as one evicted from a full LRU table did.
//! [`sets_for`] gives a table twice as many ways as its capacity, so at capacity it is half
//! full, where two choices and one move leave few sources without a way of their own (157 of
//! the bench's 1,000,000 in 2^20 sets).
//!
//! Writers clear a way's meta word first, then write the tag and the state, then the meta
//! word, so a reader that catches a rewrite half-way sees an empty way. A source being moved
//! is briefly in both sets; an update to the copy being left is lost (at most a packet more
//! admitted). Two CPUs racing to insert the same new source may each take a way; readers look
//! in the first set first, so one copy is found and the other is the next to be replaced.

use crate::{
    hash::MIX,
    rate::RateState,
    source::SourceKey,
    verified::{Tag, tag},
};

/// Ways per set.
pub const SOURCE_WAYS: usize = 2;

/// Sets when the settings name none (tests that write settings by hand): the shipped
/// capacity's.
pub const DEFAULT_SOURCE_SETS: u32 = sets_for(crate::maps::DEFAULT_MAX_SOURCES);

/// The sets a table of `capacity` sources gets: as many, rounded up to a power of two, so
/// the table has at least twice as many ways as sources to hold.
pub const fn sets_for(capacity: u32) -> u32 {
    match capacity.checked_next_power_of_two() {
        Some(sets) => sets,
        None => 1 << 31,
    }
}

/// Bit of [`SourceSlot::meta`] set while the way holds a source.
pub const META_PRESENT: u64 = 1 << 16;

/// One tracked source in one class.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSlot {
    /// [`Tag::hi`] of the source.
    pub hi: u64,
    /// [`Tag::lo`] of the source.
    pub lo: u64,
    /// [`META_PRESENT`] | IP version << 8 | class; 0 for an empty way.
    pub meta: u64,
    /// Explicit padding; always zero.
    pub _pad: u64,
    /// The source's buckets and strikes.
    pub state: RateState,
}
const _: () = assert!(core::mem::size_of::<SourceSlot>() == 64);

/// The value of each `SOURCES` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSet {
    /// The ways, in no particular order.
    pub slots: [SourceSlot; SOURCE_WAYS],
}
const _: () = assert!(core::mem::size_of::<SourceSet>() == 128);
#[cfg(feature = "user")]
unsafe impl aya::Pod for SourceSet {}

/// Where a source's state lives: its tag, meta word and candidate sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourcePlace {
    /// The tag its way holds.
    pub tag: Tag,
    /// The meta word its way holds.
    pub meta: u64,
    /// Its two candidate sets, below the table's set count; distinct when it has two sets.
    pub sets: [u32; 2],
}

/// The place of `key` (a `SOURCES` key: address, family and class) in a table of `sets` sets
/// (a power of two).
#[inline(always)]
pub fn place(key: &SourceKey, sets: u32) -> SourcePlace {
    let meta = META_PRESENT | (u64::from(key.ip_version) << 8) | u64::from(key.class);
    place_of(tag(key), meta, sets)
}

/// The place of the source with `tag` and `meta` in a table of `sets` sets (a power of two).
#[inline(always)]
pub const fn place_of(tag: Tag, meta: u64, sets: u32) -> SourcePlace {
    const MIX2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    let mask = sets.wrapping_sub(1);
    let mixed = tag.folded() ^ meta;
    let first = (mixed.wrapping_mul(MIX) >> 32) as u32 & mask;
    let mut second = ((mixed ^ (mixed >> 29)).wrapping_mul(MIX2) >> 32) as u32 & mask;
    if second == first {
        second = (first ^ 1) & mask;
    }
    SourcePlace {
        tag,
        meta,
        sets: [first, second],
    }
}

impl SourceSlot {
    /// Whether this way holds the source at `place`.
    #[inline(always)]
    pub const fn holds(&self, place: &SourcePlace) -> bool {
        self.meta == place.meta && self.hi == place.tag.hi && self.lo == place.tag.lo
    }

    /// The place of the source this way holds, in a table of `sets` sets.
    #[inline(always)]
    pub const fn place(&self, sets: u32) -> SourcePlace {
        place_of(
            Tag {
                hi: self.hi,
                lo: self.lo,
            },
            self.meta,
            sets,
        )
    }

    /// How recently the source was active: the later of its buckets' times.
    #[inline(always)]
    pub const fn last_active(&self) -> u64 {
        self.state.buckets.latest()
    }
}

/// The other candidate set of a source at `place` that is now in set `current`.
#[inline(always)]
pub const fn other_set(place: &SourcePlace, current: u32) -> u32 {
    if place.sets[0] == current {
        place.sets[1]
    } else {
        place.sets[0]
    }
}

/// The way, of the four candidate ways (the first set's two, then the second's), a new source
/// takes when one is empty, given their meta words: the first empty one, so the first set
/// fills before the second.
#[inline(always)]
pub const fn empty_way(metas: [u64; 4]) -> Option<usize> {
    let mut way = 0;
    while way < 4 {
        if metas[way] == 0 {
            return Some(way);
        }
        way += 1;
    }
    None
}

/// The way, of four full candidate ways, whose source has been quiet longest, given each
/// one's [`SourceSlot::last_active`]; the earliest way on a tie.
#[inline(always)]
pub const fn quietest_way(last_active: [u64; 4]) -> usize {
    let mut way = 0;
    let mut index = 1;
    while index < 4 {
        if last_active[index] < last_active[way] {
            way = index;
        }
        index += 1;
    }
    way
}

/// The empty way of a set, given its ways' meta words.
#[inline(always)]
pub const fn empty_in(metas: [u64; 2]) -> Option<usize> {
    if metas[0] == 0 {
        Some(0)
    } else if metas[1] == 0 {
        Some(1)
    } else {
        None
    }
}

impl SourceSet {
    /// The way holding the source at `place`, if any.
    #[inline(always)]
    pub const fn way_of(&self, place: &SourcePlace) -> Option<usize> {
        if self.slots[0].holds(place) {
            Some(0)
        } else if self.slots[1].holds(place) {
            Some(1)
        } else {
            None
        }
    }

    /// The ways' meta words.
    #[inline(always)]
    pub const fn metas(&self) -> [u64; 2] {
        [self.slots[0].meta, self.slots[1].meta]
    }
}

impl SourcePlace {
    /// The way that holds this source: its tag, meta word and `state`.
    #[inline(always)]
    pub const fn slot(&self, state: RateState) -> SourceSlot {
        SourceSlot {
            hi: self.tag.hi,
            lo: self.tag.lo,
            meta: self.meta,
            _pad: 0,
            state,
        }
    }
}

/// How [`insert`] placed a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// It was tracked already; its state was replaced.
    Updated,
    /// It took an empty way.
    Empty,
    /// Another source moved to its other candidate set to make room.
    Moved,
    /// It replaced the source quiet longest in its four ways.
    Replaced,
}

/// The sets of a table, read and written whole: what [`insert`] works on outside the program
/// (userspace's view of the map, unit tests' vectors).
pub trait Sets {
    /// What a read or write can fail with.
    type Error;
    /// How many sets the table has (a power of two).
    fn count(&self) -> u32;
    /// Set `index`.
    fn read(&self, index: u32) -> Result<SourceSet, Self::Error>;
    /// Replaces set `index`.
    fn write(&mut self, index: u32, set: SourceSet) -> Result<(), Self::Error>;
}

/// Places the source at `place` with `state` as the program places a new one (its own way if
/// tracked, else an empty way, else a move, else the quietest way).
pub fn insert<S: Sets>(
    table: &mut S,
    place: &SourcePlace,
    state: RateState,
) -> Result<Placed, S::Error> {
    let count = table.count();
    let mut sets = [table.read(place.sets[0])?, table.read(place.sets[1])?];
    for (index, set) in sets.iter_mut().enumerate() {
        if let Some(way) = set.way_of(place) {
            set.slots[way].state = state;
            table.write(place.sets[index], *set)?;
            return Ok(Placed::Updated);
        }
    }
    let metas = [
        sets[0].slots[0].meta,
        sets[0].slots[1].meta,
        sets[1].slots[0].meta,
        sets[1].slots[1].meta,
    ];
    let (way, placed) = match empty_way(metas) {
        Some(way) => (way, Placed::Empty),
        None => match move_one(table, place, &sets, count)? {
            Some(way) => (way, Placed::Moved),
            None => {
                let last = [
                    sets[0].slots[0].last_active(),
                    sets[0].slots[1].last_active(),
                    sets[1].slots[0].last_active(),
                    sets[1].slots[1].last_active(),
                ];
                (quietest_way(last), Placed::Replaced)
            }
        },
    };
    let set = &mut sets[way / SOURCE_WAYS];
    set.slots[way % SOURCE_WAYS] = place.slot(state);
    table.write(place.sets[way / SOURCE_WAYS], *set)?;
    Ok(placed)
}

/// Moves the first of the four full candidate ways' sources whose other candidate set has an
/// empty way there; returns the way it left.
fn move_one<S: Sets>(
    table: &mut S,
    place: &SourcePlace,
    sets: &[SourceSet; 2],
    count: u32,
) -> Result<Option<usize>, S::Error> {
    for way in 0..2 * SOURCE_WAYS {
        let current = place.sets[way / SOURCE_WAYS];
        let resident = sets[way / SOURCE_WAYS].slots[way % SOURCE_WAYS];
        let other = other_set(&resident.place(count), current);
        if other == current {
            continue;
        }
        let mut target = table.read(other)?;
        if let Some(empty) = empty_in(target.metas()) {
            target.slots[empty] = resident;
            table.write(other, target)?;
            return Ok(Some(way));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::Buckets;

    extern crate std;
    use std::{vec, vec::Vec};

    fn key(last: u32, class: u8) -> SourceKey {
        let [a, b, c, d] = last.to_be_bytes();
        SourceKey::for_addr(
            core::net::IpAddr::V4(core::net::Ipv4Addr::new(10 + a, b, c, d)),
            class,
            64,
        )
    }

    fn state(time: u64) -> RateState {
        RateState {
            buckets: Buckets {
                packets: time,
                bytes: 0,
            },
            ..RateState::default()
        }
    }

    /// A table in memory.
    struct Table(Vec<SourceSet>);

    impl Sets for Table {
        type Error = core::convert::Infallible;
        fn count(&self) -> u32 {
            self.0.len() as u32
        }
        fn read(&self, index: u32) -> Result<SourceSet, Self::Error> {
            Ok(self.0[index as usize])
        }
        fn write(&mut self, index: u32, set: SourceSet) -> Result<(), Self::Error> {
            self.0[index as usize] = set;
            Ok(())
        }
    }

    impl Table {
        fn find(&self, place: &SourcePlace) -> Option<RateState> {
            place.sets.iter().find_map(|&index| {
                let set = self.0[index as usize];
                set.way_of(place).map(|way| set.slots[way].state)
            })
        }
    }

    #[test]
    fn sets_are_the_capacity_rounded_up_to_a_power_of_two() {
        assert_eq!(sets_for(262_144), 262_144);
        assert_eq!(sets_for(1_000_000), 1_048_576);
        assert_eq!(sets_for(3), 4);
        assert_eq!(sets_for(1), 1);
        assert_eq!(sets_for(0), 1);
        assert_eq!(sets_for(u32::MAX), 1 << 31);
    }

    #[test]
    fn a_place_has_two_sets_within_the_table_and_tells_classes_and_families_apart() {
        let a = place(&key(1, 1), 1024);
        let b = place(&key(1, 2), 1024);
        assert!(a.sets.iter().chain(&b.sets).all(|&set| set < 1024));
        assert_ne!(a.sets[0], a.sets[1]);
        assert_eq!(a.tag, b.tag);
        assert_ne!(a.meta, b.meta, "one source, two classes");
        let v6 = SourceKey::for_addr("::a00:1".parse().unwrap(), 1, 128);
        assert_ne!(place(&v6, 1024).meta, a.meta, "same bits, other family");
        assert_eq!(place(&key(1, 1), 1).sets, [0, 0]);
        let mut two = place(&key(1, 1), 2).sets;
        two.sort_unstable();
        assert_eq!(two, [0, 1]);
        // A way knows its source's place, so a move finds the source's other set.
        let slot = a.slot(state(5));
        assert_eq!(slot.place(1024), a);
        assert_eq!(other_set(&a, a.sets[0]), a.sets[1]);
        assert_eq!(other_set(&a, a.sets[1]), a.sets[0]);
    }

    #[test]
    fn a_new_source_takes_the_first_empty_way_of_its_first_set_before_its_second() {
        const FULL: u64 = META_PRESENT;
        assert_eq!(empty_way([0, 0, 0, 0]), Some(0));
        assert_eq!(
            empty_way([FULL, 0, 0, 0]),
            Some(1),
            "the first set before the roomier second"
        );
        assert_eq!(empty_way([FULL, 0, FULL, 0]), Some(1));
        assert_eq!(empty_way([FULL, FULL, 0, 0]), Some(2));
        assert_eq!(empty_way([FULL, FULL, FULL, 0]), Some(3));
        assert_eq!(empty_way([FULL; 4]), None);
        assert_eq!(quietest_way([5, 3, 9, 3]), 1);
        assert_eq!(quietest_way([5, 6, 9, 4]), 3);
        assert_eq!(empty_in([FULL, 0]), Some(1));
        assert_eq!(empty_in([FULL, FULL]), None);
    }

    #[test]
    fn a_full_pair_of_sets_moves_a_source_before_it_replaces_the_quietest() {
        // Four sets; fill both of one source's candidate sets with sources that share them.
        let mut table = Table(vec![SourceSet::default(); 4]);
        let new = place(&key(0, 1), 4);
        let mut residents = Vec::new();
        let mut index = 1;
        while residents.len() < 4 {
            let candidate = place(&key(index, 1), 4);
            index += 1;
            let mut sets = candidate.sets;
            sets.sort_unstable();
            let mut wanted = new.sets;
            wanted.sort_unstable();
            if sets == wanted {
                assert_eq!(
                    insert(&mut table, &candidate, state(10 + index as u64)),
                    Ok(Placed::Empty)
                );
                residents.push(candidate);
            }
        }
        // Every resident's other set is also a candidate of the new source: none can move.
        assert_eq!(insert(&mut table, &new, state(1)), Ok(Placed::Replaced));
        assert_eq!(table.find(&new), Some(state(1)));
        // The first resident, the quietest (its buckets the earliest), made room.
        assert_eq!(table.find(&residents[0]), None);
        assert!(residents[1..].iter().all(|p| table.find(p).is_some()));
        // A source already tracked keeps its way.
        assert_eq!(insert(&mut table, &new, state(7)), Ok(Placed::Updated));
        assert_eq!(table.find(&new), Some(state(7)));
    }

    #[test]
    fn a_table_at_capacity_holds_nearly_every_source() {
        // 2^14 sources in 2^14 sets (the load at capacity): two choices and one move leave
        // a few without a way of their own (157 of the bench's 1,000,000 at 2^20).
        let sets = 1 << 14;
        let mut table = Table(vec![SourceSet::default(); sets]);
        let places: Vec<SourcePlace> = (0..sets as u32)
            .map(|index| {
                let addr = core::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(index));
                place(&SourceKey::for_addr(addr.into(), 3, 128), sets as u32)
            })
            .collect();
        let (mut moved, mut replaced) = (0, 0);
        for (index, place) in places.iter().enumerate() {
            match insert(&mut table, place, state(index as u64 + 1)) {
                Ok(Placed::Moved) => moved += 1,
                Ok(Placed::Replaced) => replaced += 1,
                Ok(Placed::Empty) => {}
                other => panic!("source {index}: {other:?}"),
            }
        }
        assert!(moved > 0, "no source ever had to move");
        let lost = places.iter().filter(|p| table.find(p).is_none()).count();
        // Two of 16,384 replaced the quietest of their four ways and are the two lost.
        assert_eq!((replaced, lost), (2, 2));
    }
}
