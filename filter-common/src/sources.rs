//! The per-source rate table (`SOURCES`): a set-associative array, two ways per set, indexed by
//! a multiplicative hash of the source's tag and class. The program finds a source's state
//! with an inlined array access and two compares, where an LRU hash costs a kernel call (a
//! hash over the 20-byte key, a bucket walk and a memcmp) and two random memory accesses.
//!
//! A new source takes an empty way of its set, else the way whose buckets are furthest in the
//! past (the one that has been quiet longest); so a source can lose its state to set conflicts
//! before the table is full, and starts again with a full burst, as one evicted from an LRU
//! table does. A source over its limit has buckets in the future and is the last to go.
//! Writers clear a way's meta word first, then write the tag and the state, then the meta word,
//! so a reader that catches a rewrite half-way sees an empty way.

use crate::{
    rate::RateState,
    source::SourceKey,
    verified::{Tag, tag},
};

/// Ways per set.
pub const SOURCE_WAYS: usize = 2;

/// Sets when the settings name none (tests that write settings by hand): the shipped
/// capacity's.
pub const DEFAULT_SOURCE_SETS: u32 = sets_for(crate::maps::DEFAULT_MAX_SOURCES);

/// The sets a table of `capacity` sources gets: half as many, rounded up to a power of two.
pub const fn sets_for(capacity: u32) -> u32 {
    let half = capacity.div_ceil(SOURCE_WAYS as u32);
    if half <= 1 {
        1
    } else {
        half.next_power_of_two()
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

/// Where a source's state lives: its tag, meta word and set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourcePlace {
    /// The tag its way holds.
    pub tag: Tag,
    /// The meta word its way holds.
    pub meta: u64,
    /// Its set, below the table's set count.
    pub set: u32,
}

/// The place of `key` (a `SOURCES` key: address, family and class) in a table of `sets` sets
/// (a power of two).
#[inline(always)]
pub fn place(key: &SourceKey, sets: u32) -> SourcePlace {
    const MIX: u64 = 0x9E37_79B9_7F4A_7C15;
    let tag = tag(key);
    let meta = META_PRESENT | (u64::from(key.ip_version) << 8) | u64::from(key.class);
    let mixed = tag.hi ^ tag.lo.wrapping_mul(MIX).rotate_left(32) ^ meta;
    let set = (mixed.wrapping_mul(MIX) >> 32) as u32 & sets.wrapping_sub(1);
    SourcePlace { tag, meta, set }
}

impl SourceSlot {
    /// Whether this way holds the source at `place`.
    #[inline(always)]
    pub const fn holds(&self, place: &SourcePlace) -> bool {
        self.meta == place.meta && self.hi == place.tag.hi && self.lo == place.tag.lo
    }

    /// How recently the source was active: the later of its buckets' times.
    #[inline(always)]
    pub const fn last_active(&self) -> u64 {
        let buckets = self.state.buckets;
        if buckets.packets > buckets.bytes {
            buckets.packets
        } else {
            buckets.bytes
        }
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

    /// The way a new source goes into: an empty one, else the one quiet longest.
    #[inline(always)]
    pub const fn way_for_new(&self) -> usize {
        if self.slots[0].meta == 0 {
            0
        } else if self.slots[1].meta == 0
            || self.slots[1].last_active() < self.slots[0].last_active()
        {
            1
        } else {
            0
        }
    }

    /// This set with the source at `place` in the way [`Self::way_for_new`] picks.
    pub const fn with(mut self, place: &SourcePlace, state: RateState) -> SourceSet {
        let way = match self.way_of(place) {
            Some(way) => way,
            None => self.way_for_new(),
        };
        self.slots[way] = SourceSlot {
            hi: place.tag.hi,
            lo: place.tag.lo,
            meta: place.meta,
            _pad: 0,
            state,
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::Buckets;

    fn key(last: u8, class: u8) -> SourceKey {
        SourceKey::for_addr(
            core::net::IpAddr::V4(core::net::Ipv4Addr::new(192, 0, 2, last)),
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

    #[test]
    fn sets_are_half_the_capacity_rounded_up_to_a_power_of_two() {
        assert_eq!(sets_for(262_144), 131_072);
        assert_eq!(sets_for(1_000_000), 524_288);
        assert_eq!(sets_for(3), 2);
        assert_eq!(sets_for(1), 1);
        assert_eq!(sets_for(0), 1);
    }

    #[test]
    fn a_place_is_within_the_table_and_tells_classes_and_families_apart() {
        let a = place(&key(1, 1), 1024);
        let b = place(&key(1, 2), 1024);
        assert!(a.set < 1024 && b.set < 1024);
        assert_eq!(a.tag, b.tag);
        assert_ne!(a.meta, b.meta, "one source, two classes");
        let v6 = SourceKey::for_addr("::c000:201".parse().unwrap(), 1, 128);
        assert_ne!(place(&v6, 1024).meta, a.meta, "same bits, other family");
        assert_eq!(place(&key(1, 1), 1).set, 0);
    }

    #[test]
    fn a_new_source_takes_an_empty_way_then_the_quietest() {
        let (a, b, c) = (
            place(&key(1, 1), 1),
            place(&key(2, 1), 1),
            place(&key(3, 1), 1),
        );
        let set = SourceSet::default().with(&a, state(50));
        assert_eq!(set.way_of(&a), Some(0));
        let set = set.with(&b, state(10));
        assert_eq!(set.way_of(&b), Some(1));
        // Full: the third source replaces the one quiet longest (b, at 10).
        let set = set.with(&c, state(30));
        assert_eq!(
            (set.way_of(&a), set.way_of(&b), set.way_of(&c)),
            (Some(0), None, Some(1))
        );
        // A source already held keeps its way.
        let set = set.with(&a, state(99));
        assert_eq!(set.slots[0].state, state(99));
        assert_eq!(set.way_of(&c), Some(1));
    }
}
