//! The verified-source cache (`VERIFIED`): sources that completed a TCP handshake with the
//! origin recently, which a spoofed source cannot. Every established segment and every SYN
//! asks it, so it is built for the lookup: an array of [`VerifiedBucket`]s, two ways each,
//! indexed by a multiplicative hash of the source's [`tag`]. An array lookup is a bounds check
//! and an address the verifier inlines, where a hash map costs a hash function call over a long
//! key, a bucket walk and (LRU) a list update.
//!
//! It is a cache, never the only record of anything: a source that loses its slot to another
//! verified source (two that hash to the same bucket, once both ways are taken) only pays a
//! socket lookup for its established segments, which still pass, and gets a SYN cookie for its
//! next SYN, which it answers. The daemon marks the peers of the origin's connections again
//! every second. Only verified sources write, so spoofed floods never displace anyone.
//!
//! After the buckets comes their summary ([`SUMMARY_ENTRIES`]): one bit per bucket, set before
//! a way of the bucket is written and cleared by the daemon once none of its ways is in force.
//! A source whose bucket's bit is clear is not verified, and its bucket is never read: under a
//! spoofed flood, whose random sources hit random buckets of the 6 MiB array, each packet reads
//! one word of the 8 KiB summary (which stays in the CPU's cache) instead of missing the cache
//! on a bucket. A bit left set only costs that read; a bit cleared too early (the daemon's
//! sweep racing a new mark) only makes a verified source answer a SYN cookie or pay a socket
//! lookup until it is marked again, as for a source that lost its way.
//!
//! A way also holds its source's own SYN buckets ([`VerifiedSlot::syn`]): only a verified
//! source has a per-source SYN limit, so its SYN finds its credit in the way it was just found
//! verified in, a word or two further on, instead of in a set of the per-source rate table
//! (`SOURCES`, a random access into a table of up to 128 MiB). The credit starts full when a
//! source takes a way and is kept while the way holds the source (the daemon's marks every
//! second only move its end on); a source that loses its way loses its verification with it.
//!
//! Each family has its own half of the array, so an IPv6 tag can never match an IPv4 one. A
//! source is tagged by its whole key: an IPv4 address, or an IPv6 address masked to the tracked
//! prefix (a /64 by default), exactly the unit the ban and rate stages count.

use crate::{Packet, hash::MIX, rate::Buckets, source::SourceKey};

/// Buckets in `VERIFIED`: the first half for IPv4, the second for IPv6. A power of two.
pub const VERIFIED_BUCKETS: u32 = 1 << 16;

/// Sources one bucket holds.
pub const VERIFIED_WAYS: usize = 2;

/// Sources the cache holds at most: [`VERIFIED_BUCKETS`] × [`VERIFIED_WAYS`].
pub const VERIFIED_CAPACITY: u32 = VERIFIED_BUCKETS * VERIFIED_WAYS as u32;

/// Buckets one summary entry covers: one bit each, in the first four of its twelve words (the
/// summary shares the array, and so the value type, with the buckets).
pub const SUMMARY_BUCKETS_PER_ENTRY: u32 = 256;

/// Words of a summary entry that hold bits: [`SUMMARY_BUCKETS_PER_ENTRY`] / 64.
pub const SUMMARY_WORDS_PER_ENTRY: u32 = SUMMARY_BUCKETS_PER_ENTRY / 64;

/// Entries after the buckets that hold their summary.
pub const SUMMARY_ENTRIES: u32 = VERIFIED_BUCKETS / SUMMARY_BUCKETS_PER_ENTRY;

/// Entries in `VERIFIED`: the buckets, then their summary.
pub const VERIFIED_ENTRIES: u32 = VERIFIED_BUCKETS + SUMMARY_ENTRIES;

/// Where bucket `bucket`'s summary bit lives: the entry, the word in it, and the bit's mask.
#[inline(always)]
pub const fn summary_of(bucket: u32) -> (u32, u32, u64) {
    (
        VERIFIED_BUCKETS + bucket / SUMMARY_BUCKETS_PER_ENTRY,
        (bucket / 64) % SUMMARY_WORDS_PER_ENTRY,
        1 << (bucket % 64),
    )
}

/// A source's tag: its key's address as two words (IPv4 in `hi`, `lo` zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tag {
    /// The first 64 bits of the address (IPv4: the address as a number).
    pub hi: u64,
    /// The last 64 bits (zero for IPv4, and for IPv6 keys masked to a /64 or shorter).
    pub lo: u64,
}

/// One cached source. Writers giving the way to a source clear `until_ns` first, then write
/// the tag and empty (full) SYN buckets, then the end, a word at a time; a reader that catches
/// a rewrite halfway sees an empty slot or, for the few nanoseconds between the two tag words,
/// a tag joined from two verified sources.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifiedSlot {
    /// [`Tag::hi`] of the source.
    pub hi: u64,
    /// [`Tag::lo`] of the source.
    pub lo: u64,
    /// Verified until this time on the program's clock, in ns; 0 for an empty slot.
    pub until_ns: u64,
    /// The source's own SYN buckets (`limits.source.syn`), updated by compare-and-swap; all
    /// zero, full, when the source takes the way.
    pub syn: Buckets,
    /// [`unlisted_stamp`] of the list generation under which the source was last found on no
    /// list; 0 (never a stamp) when the source takes the way. Written by the program after a
    /// list check an established segment of the source passed.
    pub unlisted: u64,
}

impl VerifiedSlot {
    /// Whether this slot holds `tag` (in force or not).
    #[inline(always)]
    pub const fn holds(&self, tag: Tag) -> bool {
        self.hi == tag.hi && self.lo == tag.lo
    }
}

/// The value of each `VERIFIED` entry: the sources whose tags hash to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifiedBucket {
    /// The ways, in no particular order.
    pub slots: [VerifiedSlot; VERIFIED_WAYS],
}
const _: () = assert!(core::mem::size_of::<VerifiedBucket>() == 96);
#[cfg(feature = "user")]
unsafe impl aya::Pod for VerifiedBucket {}

/// What a way records once its source's segment was found on no list under the lists'
/// generation `generation` (`crate::listindex::GENERATION_WORD`): the generation bound to the
/// source's tag, so a stamp written as the way changes hands never speaks for the new source,
/// and never 0, the stamp of a way that has none.
#[inline(always)]
pub const fn unlisted_stamp(generation: u64, tag: Tag) -> u64 {
    (generation.wrapping_mul(MIX) ^ tag.folded()) | 1
}

/// The cache tag of a source key: its address, already masked to the tracked IPv6 prefix.
#[inline(always)]
pub fn tag(source: &SourceKey) -> Tag {
    // The key's bytes as words, each turned to a number: four loads and swaps, where reading
    // sixteen bytes one at a time costs four times as many instructions on every packet.
    let [a, b, c, d] = source.words().map(u32::from_be);
    if source.ip_version == 4 {
        Tag {
            hi: u64::from(a),
            lo: 0,
        }
    } else {
        Tag {
            hi: (u64::from(a) << 32) | u64::from(b),
            lo: (u64::from(c) << 32) | u64::from(d),
        }
    }
}

/// The tag of `packet`'s source, its IPv6 address masked by `v6_mask` (see
/// [`SourceKey::new`]): [`tag`] of its ban key, taken straight from the packet's address words,
/// so the established segments of a verified source never build the key.
#[inline(always)]
pub fn tag_of_packet(packet: &Packet, v6_mask: [u64; 2]) -> Tag {
    if packet.ip_version == 4 {
        Tag {
            hi: u64::from(u32::from_be(packet.src_v4_word())),
            lo: 0,
        }
    } else {
        let [hi, lo] = packet.src_words();
        Tag {
            hi: u64::from_be(hi & v6_mask[0]),
            lo: u64::from_be(lo & v6_mask[1]),
        }
    }
}

/// `source`'s tag and the index of the bucket it hashes to: what every reader and writer of
/// the cache computes first.
#[inline(always)]
pub fn locate(source: &SourceKey) -> (Tag, u32) {
    let tag = tag(source);
    (tag, bucket(tag, source.ip_version != 4))
}

impl Tag {
    /// The tag's two words folded into one, the low word's bits spread over the whole word
    /// first, so addresses differing only in their last 64 bits still differ here: what the
    /// verified-source cache and the per-source rate table hash.
    #[inline(always)]
    pub const fn folded(self) -> u64 {
        self.hi ^ self.lo.wrapping_mul(MIX).rotate_left(32)
    }
}

/// The bucket of `tag` in its family's half of the array: the top bits of the tag's words
/// mixed and multiplied by a large odd constant (Fibonacci hashing), which spreads neighbouring
/// addresses and prefixes over the whole half.
#[inline(always)]
pub const fn bucket(tag: Tag, ipv6: bool) -> u32 {
    const HALF_BITS: u32 = VERIFIED_BUCKETS.trailing_zeros() - 1;
    let spread = tag.folded().wrapping_mul(MIX) >> (64 - HALF_BITS);
    let half = if ipv6 { VERIFIED_BUCKETS / 2 } else { 0 };
    spread as u32 + half
}

impl VerifiedBucket {
    /// Whether the source tagged `tag` is verified at `now_ns`: the rule the program applies,
    /// way by way and word by word (it reads a way's end, and the clock, only once the way's tag
    /// matches).
    #[inline(always)]
    pub const fn verified(&self, tag: Tag, now_ns: u64) -> bool {
        let [first, second] = self.slots;
        (first.holds(tag) && now_ns < first.until_ns)
            || (second.holds(tag) && now_ns < second.until_ns)
    }

    /// Whether either way holds a verification still in force at `now_ns`: what keeps the
    /// bucket's summary bit set.
    #[inline(always)]
    pub const fn in_force(&self, now_ns: u64) -> bool {
        now_ns < self.slots[0].until_ns || now_ns < self.slots[1].until_ns
    }

    /// Whether either way holds `tag` (in force or not): the test before the clock is read.
    #[inline(always)]
    pub const fn holds(&self, tag: Tag) -> bool {
        self.slots[0].holds(tag) || self.slots[1].holds(tag)
    }

    /// The way a verification of `tag` goes into: the one already holding it, else the one
    /// whose verification ends first (an empty or expired one before any in force).
    #[inline(always)]
    pub const fn way_for(&self, tag: Tag) -> usize {
        let [first, second] = self.slots;
        if first.holds(tag) {
            0
        } else if second.holds(tag) || second.until_ns < first.until_ns {
            1
        } else {
            0
        }
    }

    /// This bucket with `tag` verified until `until_ns` (an earlier end than one already
    /// recorded for it never shortens it).
    #[inline(always)]
    pub const fn with(mut self, tag: Tag, until_ns: u64) -> VerifiedBucket {
        let way = self.way_for(tag);
        let slot = &mut self.slots[way];
        if !slot.holds(tag) || slot.until_ns < until_ns {
            // A source keeps its SYN credit and its list stamp while it keeps its way.
            let (syn, unlisted) = if slot.holds(tag) {
                (slot.syn, slot.unlisted)
            } else {
                (
                    Buckets {
                        packets: 0,
                        bytes: 0,
                    },
                    0,
                )
            };
            *slot = VerifiedSlot {
                hi: tag.hi,
                lo: tag.lo,
                until_ns,
                syn,
                unlisted,
            };
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(addr: core::net::IpAddr, v6_prefix: u32) -> SourceKey {
        SourceKey::for_addr(addr, 0, v6_prefix)
    }

    const fn tag_of(hi: u64) -> Tag {
        Tag { hi, lo: 0 }
    }

    #[test]
    fn a_list_stamp_speaks_for_one_source_under_one_generation() {
        let a = tag_of(0xc000_0201);
        let b = tag_of(0xc000_0203);
        let stamp = unlisted_stamp(7, a);
        assert_ne!(stamp, 0, "0 is the stamp of a way that has none");
        assert_ne!(stamp, unlisted_stamp(8, a), "another generation");
        assert_ne!(stamp, unlisted_stamp(7, b), "another source");
        // Nor does a neighbour's stamp match a later generation: the generation is mixed, not
        // added or xored in, so a small step cannot cancel a small difference of addresses.
        for generation in 0..1024 {
            assert_ne!(
                unlisted_stamp(generation, b),
                stamp,
                "generation {generation}"
            );
        }
    }

    #[test]
    fn a_way_keeps_its_list_stamp_only_while_it_keeps_its_source() {
        let a = tag_of(0xc000_0201);
        let mut bucket = VerifiedBucket::default().with(a, 10);
        bucket.slots[0].unlisted = unlisted_stamp(3, a);
        let extended = bucket.with(a, 20);
        assert_eq!(extended.slots[0].until_ns, 20);
        assert_eq!(extended.slots[0].unlisted, unlisted_stamp(3, a));
        // Both ways taken, the one ending first goes to a new source, with no stamp.
        let b = tag_of(0xc000_0203);
        let c = tag_of(0xc000_0205);
        let full = extended.with(b, 30);
        let taken = full.with(c, 40);
        assert_eq!(taken.way_for(c), 0);
        assert!(taken.slots[0].holds(c));
        assert_eq!(taken.slots[0].unlisted, 0);
    }

    #[test]
    fn tags_a_whole_key() {
        let v4 = key("198.51.100.7".parse().expect("literal"), 64);
        assert_eq!(tag(&v4), tag_of(0xC633_6407));
        let v6 = key("2001:db8:1:2:3:4:5:6".parse().expect("literal"), 128);
        assert_eq!(
            tag(&v6),
            Tag {
                hi: 0x2001_0db8_0001_0002,
                lo: 0x0003_0004_0005_0006
            }
        );
        let v6_64 = key("2001:db8:1:2:3:4:5:6".parse().expect("literal"), 64);
        assert_eq!(tag(&v6_64), tag_of(0x2001_0db8_0001_0002));
        let v6_48 = key("2001:db8:1:2:3:4:5:6".parse().expect("literal"), 48);
        assert_eq!(tag(&v6_48), tag_of(0x2001_0db8_0001_0000));
    }

    #[test]
    fn a_packet_is_tagged_as_its_ban_key() {
        for (addr, prefix) in [
            ("198.51.100.7", 64),
            ("2001:db8:1:2:3:4:5:6", 128),
            ("2001:db8:1:2:3:4:5:6", 64),
            ("2001:db8:1:2:3:4:5:6", 48),
            ("2001:db8:1:2:3:4:5:6", 100),
        ] {
            let addr: core::net::IpAddr = addr.parse().expect("literal");
            let mut packet = Packet::new(if addr.is_ipv4() { 4 } else { 6 }, 64);
            let ban_key = SourceKey::for_addr(addr, crate::source::BAN_CLASS, prefix);
            packet.src_addr_be = SourceKey::for_addr(addr, 0, 128).addr_be;
            let mask = crate::source::v6_mask(prefix);
            assert_eq!(
                SourceKey::for_ban(&packet, mask),
                ban_key,
                "{addr}/{prefix}"
            );
            assert_eq!(
                tag_of_packet(&packet, mask),
                tag(&ban_key),
                "{addr}/{prefix}"
            );
        }
    }

    #[test]
    fn families_hash_into_their_own_halves() {
        let half = VERIFIED_BUCKETS / 2;
        for hi in [0, 1, 0xC633_6407, u64::MAX, 0x2001_0db8_0001_0002] {
            for lo in [0, 7, u64::MAX] {
                let tag = Tag { hi, lo };
                assert!(bucket(tag, false) < half, "{tag:?}");
                assert!(
                    (half..VERIFIED_BUCKETS).contains(&bucket(tag, true)),
                    "{tag:?}"
                );
            }
        }
        // Neighbouring addresses land in different buckets.
        assert_ne!(
            bucket(tag_of(0xC633_6407), false),
            bucket(tag_of(0xC633_6408), false)
        );
        let host = |lo| Tag {
            hi: 0x2001_0db8,
            lo,
        };
        assert_ne!(bucket(host(1), true), bucket(host(2), true));
    }

    #[test]
    fn a_bucket_holds_two_sources_and_replaces_the_one_ending_first() {
        let (one, two, three) = (tag_of(1), tag_of(2), tag_of(3));
        let bucket = VerifiedBucket::default().with(one, 100).with(two, 200);
        assert!(bucket.verified(one, 99) && bucket.verified(two, 199));
        assert!(!bucket.verified(one, 100), "the end is exclusive");
        assert!(!bucket.verified(three, 0), "an unknown tag");
        // A third source takes the way of the one whose verification ends first.
        let bucket = bucket.with(three, 300);
        assert!(!bucket.verified(one, 0) && bucket.verified(two, 150));
        assert!(bucket.verified(three, 150) && bucket.holds(three) && !bucket.holds(one));
        // Renewing keeps the way and never shortens.
        let renewed = bucket.with(two, 500).with(two, 400);
        assert!(renewed.verified(two, 450) && renewed.verified(three, 250));
    }

    #[test]
    fn tags_differ_in_either_word() {
        let bucket = VerifiedBucket::default().with(Tag { hi: 1, lo: 2 }, 100);
        assert!(bucket.verified(Tag { hi: 1, lo: 2 }, 0));
        assert!(!bucket.verified(Tag { hi: 1, lo: 3 }, 0));
        assert!(!bucket.verified(Tag { hi: 0, lo: 2 }, 0));
    }

    #[test]
    fn an_empty_slot_verifies_nobody_not_even_tag_zero() {
        assert!(!VerifiedBucket::default().verified(Tag::default(), 0));
    }

    #[test]
    fn every_bucket_has_its_own_summary_bit_after_the_buckets() {
        let mut seen = std::collections::HashSet::new();
        for bucket in 0..VERIFIED_BUCKETS {
            let (entry, word, mask) = summary_of(bucket);
            assert!((VERIFIED_BUCKETS..VERIFIED_ENTRIES).contains(&entry));
            assert!(word < SUMMARY_WORDS_PER_ENTRY && mask.count_ones() == 1);
            assert!(
                seen.insert((entry, word, mask)),
                "bucket {bucket} shares a bit"
            );
        }
        assert_eq!(summary_of(0), (VERIFIED_BUCKETS, 0, 1));
        assert_eq!(summary_of(321), (VERIFIED_BUCKETS + 1, 1, 1 << 1));
        // The summary's words fit the value type.
        assert!(SUMMARY_WORDS_PER_ENTRY as usize * 8 <= core::mem::size_of::<VerifiedBucket>());
    }

    #[test]
    fn a_bucket_is_in_force_while_either_way_is() {
        let bucket = VerifiedBucket::default()
            .with(tag_of(1), 100)
            .with(tag_of(2), 200);
        assert!(bucket.in_force(150) && !bucket.in_force(200));
        assert!(!VerifiedBucket::default().in_force(0));
    }
}
