//! The list index: which sources might be on the allowlist or the denylist, so the program walks
//! a trie only when it could match.
//!
//! Walking an LPM trie costs a cache miss per level; with a million prefixes loaded, a source on
//! neither list pays for the whole walk of both tries. The index is one byte per bucket of
//! source addresses, in an mmap-able array (`LIST_INDEX`) that userspace edits in place as it
//! edits the lists:
//! - IPv4: one byte per /24 ([`v4_index`]); an entry marks every /24 it touches (a /20 marks 16,
//!   a /32 one).
//! - IPv6: one byte per hashed /64, /48 and /32 bucket, plus one "wide" byte. An entry of /64 or
//!   longer (one host's network, what most IPv6 bans name) marks the bucket of its /64, one of
//!   /48 to /63 the bucket of its /48, one of /32 to /47 the bucket of its /32, a shorter one the
//!   wide byte. A source looks at its /64, /48 and /32 buckets and the wide byte ([`v6_lookup`]),
//!   so a source whose /48 holds a listed /64 but is not in it walks no trie. Buckets are hashed,
//!   so two networks may share one: that only costs a walk, never a miss. A level no entry
//!   marks is not looked at ([`LEVELS_WORD`]), so a list of /64s and /48s alone (most ban lists)
//!   sends no source to the tries through its /32 bucket or the wide byte.
//!
//! Each byte holds two counts: entries of the allowlist (low nibble) and of the denylist (high
//! nibble) that mark it ([`bumped`]). A count that reaches 15 stays there ("sticky"): removals no
//! longer lower it, so it can never reach zero while an entry remains. A zero count therefore
//! proves the source is not on that list, and any other count only sends the packet to the trie,
//! which gives the answer. The index changes speed, never a verdict.
//!
//! Userspace raises a count before it inserts the entry and lowers it after it deletes the entry,
//! so the program never sees an entry its index byte hides.
//!
//! After those bytes, the IPv4 cover bytes ([`V4_COVER`]): an exact count per /24 of the
//! denylist entries that cover all of it. A source in a covered /24 is dropped under
//! `denylist` with no trie walk at all; a count too large to keep exact sticks at
//! [`COVER_UNKNOWN`] and sends the source to the trie.

/// Bytes in the index: 2^24 IPv4 /24s, then 2^24 IPv6 bytes (the wide byte, then the buckets),
/// then 2^24 IPv4 cover bytes ([`V4_COVER`]).
pub const INDEX_BYTES: u32 = (1 << 25) + (1 << 24);

/// First byte of the IPv4 cover region: one byte per /24, counting the denylist entries of /24
/// or shorter that cover the whole /24 ([`cover_bumped`]). A source whose /24 is covered is on
/// the denylist, so the program drops it without walking the trie (a walk of a million-prefix
/// trie costs several cache misses). Only the operator's denylist counts here: the CrowdSec
/// decisions keep their own reason, found by their trie.
pub const V4_COVER: u32 = 1 << 25;
const _: () = assert!(V4_COVER + (1 << 24) <= INDEX_BYTES);

/// The cover count at which it sticks: from there on the count is unknown, and the source's
/// trie gives the answer.
pub const COVER_UNKNOWN: u8 = 0xff;

/// A cover byte raised (`add`) or lowered by one; [`COVER_UNKNOWN`] stays. Unlike the list
/// counts, a cover count is exact below [`COVER_UNKNOWN`]: a count above zero drops the source
/// without a walk, so it must reach zero the moment the last covering entry goes.
pub const fn cover_bumped(byte: u8, add: bool) -> u8 {
    sticky_step(byte as u64, COVER_UNKNOWN as u64, add) as u8
}

/// `count` raised (`add`) or lowered by one, where a count at `sticky` stays there and an
/// unpaired removal leaves zero: the one rule every count of the index follows.
const fn sticky_step(count: u64, sticky: u64, add: bool) -> u64 {
    if count == sticky {
        sticky
    } else if add {
        count + 1
    } else {
        count.saturating_sub(1)
    }
}

/// `word`'s eight cover bytes, each [`cover_bumped`].
pub const fn cover_bumped_word(word: u64, add: bool) -> u64 {
    let mut bytes = word.to_le_bytes();
    let mut i = 0;
    while i < 8 {
        bytes[i] = cover_bumped(bytes[i], add);
        i += 1;
    }
    u64::from_le_bytes(bytes)
}

/// Whether a cover byte proves its /24 is on the denylist.
#[inline(always)]
pub const fn covered(byte: u8) -> bool {
    byte != 0 && byte != COVER_UNKNOWN
}

/// The cover bytes an IPv4 denylist entry raises: `count` from `first`, or none for an entry
/// longer than /24 (it covers no whole /24).
pub const fn v4_cover_span(addr: &[u8; 4], prefix: u32) -> Option<(u32, u32)> {
    if prefix > 24 {
        None
    } else {
        let (first, count) = v4_span(addr, prefix);
        Some((V4_COVER + first, count))
    }
}

/// `u64` words in `LIST_INDEX` (the kernel stores array values in 8-byte slots, so the index is
/// an array of words; byte `i` is byte `i % 8` of word `i / 8`, little-endian), and four more:
/// [`ENTRIES_WORD`], [`LEVELS_WORD`], [`GENERATION_WORD`] and [`LAYOUT_WORD`].
pub const INDEX_WORDS: u32 = INDEX_BYTES / 8 + 4;

/// The last word, unused by the program: each new layout makes the index one word longer than
/// the one before (the IPv6 /64 level, the cover bytes, [`LEVELS_WORD`], then
/// [`GENERATION_WORD`]), so an index an earlier version pinned is never reused with the wrong
/// marks. The loader rebuilds a replaced index from the lists.
pub const LAYOUT_WORD: u32 = INDEX_BYTES / 8 + 3;

/// The lists' generation: every writer of the allow or deny tries (or CrowdSec's) advances it
/// once its edit is in the tries and the index, and the loader starts a rebuilt index at a
/// value no earlier index had. A verified source's way in the cache records the generation
/// under which the source was last found on no list (`crate::verified::unlisted_stamp`), so
/// its established segments skip the list check while no list has changed since: the index
/// bytes and tries are read once per source and edit, not once per packet. Read before the
/// check it stands for, so a stamp can only name a generation whose entries the check saw.
pub const GENERATION_WORD: u32 = INDEX_BYTES / 8 + 2;

/// The word after [`ENTRIES_WORD`], in the same cache line: how many IPv6 entries mark each
/// level of buckets, 16 bits per level ([`v6_level`]: the /64 buckets in bits 0–15, the /48
/// buckets in 16–31, the /32 buckets in 32–47, the wide byte in 48–63). An IPv6 source reads
/// only the bytes of the levels some entry marks: the buckets of all levels share one region,
/// so a level no entry uses would otherwise send a source to the tries whenever its bucket
/// there is marked by an entry of another level (with a million /48 to /64 entries, that is
/// one source in twenty-five). A count that reaches [`LEVEL_STICKY`] sticks there.
pub const LEVELS_WORD: u32 = INDEX_BYTES / 8 + 1;

/// The level count at which it sticks: from there on the level is always looked at.
pub const LEVEL_STICKY: u64 = 0xffff;

/// The IPv6 level an entry of `prefix` bits marks, and the index into [`v6_head_lookup`]'s
/// buckets a source looks at for it: 0 for [`V6_HOST_BITS`] and longer, 1 for
/// [`V6_LONG_BITS`] and longer, 2 for [`V6_SHORT_BITS`] and longer, 3 (the wide byte) for the
/// rest.
pub const fn v6_level(prefix: u32) -> u32 {
    if prefix >= V6_HOST_BITS {
        0
    } else if prefix >= V6_LONG_BITS {
        1
    } else if prefix >= V6_SHORT_BITS {
        2
    } else {
        3
    }
}

/// [`LEVELS_WORD`]'s value with `level`'s count raised (`add`) or lowered by one; a count at
/// [`LEVEL_STICKY`] stays, an unpaired removal leaves zero, and the other levels never change.
pub const fn levels_bumped(word: u64, level: u32, add: bool) -> u64 {
    let shift = level * 16;
    let count = sticky_step((word >> shift) & LEVEL_STICKY, LEVEL_STICKY, add);
    (word & !(LEVEL_STICKY << shift)) | (count << shift)
}

/// Whether [`LEVELS_WORD`]'s value says some IPv6 entry marks `level`'s buckets.
#[inline(always)]
pub const fn level_used(word: u64, level: u32) -> bool {
    (word >> (level * 16)) & LEVEL_STICKY != 0
}

/// The word after the bytes: how many allow and deny entries each family has, IPv4 in the low
/// half and IPv6 in the high half. A family with none skips its index bytes altogether, so a
/// flood from random sources costs no cache miss on them while that family's lists are empty.
pub const ENTRIES_WORD: u32 = INDEX_BYTES / 8;

/// Whether [`ENTRIES_WORD`]'s value says the family (`ipv6` or not) has list entries.
#[inline(always)]
pub const fn has_entries(entries: u64, ipv6: bool) -> bool {
    if ipv6 {
        entries >> 32 != 0
    } else {
        entries & 0xffff_ffff != 0
    }
}

/// First byte of the IPv6 region: the wide byte, marked by IPv6 entries shorter than
/// [`V6_SHORT_BITS`].
pub const V6_WIDE: u32 = 1 << 24;

/// Bits of an IPv6 bucket number: buckets are the 2^24 bytes from [`V6_WIDE`] (bucket 0 shares
/// its byte with the wide byte, which only costs the networks hashed there a walk).
pub const V6_BUCKET_BITS: u32 = 24;

/// IPv6 entries at least this long mark their /64's bucket.
pub const V6_HOST_BITS: u32 = 64;

/// IPv6 entries at least this long (and shorter than [`V6_HOST_BITS`]) mark their /48's bucket.
pub const V6_LONG_BITS: u32 = 48;

/// IPv6 entries at least this long (and shorter than [`V6_LONG_BITS`]) mark their /32's bucket;
/// shorter ones mark the wide byte.
pub const V6_SHORT_BITS: u32 = 32;

/// Which list a count belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The allowlist: the low nibble.
    Allow,
    /// The denylist: the high nibble.
    Deny,
}

impl Side {
    const fn shift(self) -> u32 {
        match self {
            Side::Allow => 0,
            Side::Deny => 4,
        }
    }
}

/// The count at which a nibble sticks.
pub const STICKY: u8 = 0x0f;

/// `byte` with `side`'s count raised (`add`) or lowered by one; a count at [`STICKY`] stays.
pub const fn bumped(byte: u8, side: Side, add: bool) -> u8 {
    let shift = side.shift();
    let count = sticky_step(((byte >> shift) & 0x0f) as u64, STICKY as u64, add) as u8;
    (byte & !(0x0f << shift)) | (count << shift)
}

/// `word`'s eight bytes, each [`bumped`]: one add or subtract for the whole word when no count
/// of `side` in it is at 0 or [`STICKY`] (the usual case), else byte by byte.
pub const fn bumped_word(word: u64, side: Side, add: bool) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const FOURS: u64 = 0x1010_1010_1010_1010;
    let shift = side.shift();
    // Each byte holds one count, 0 to 15.
    let counts = (word >> shift) & (ONES * 0x0f);
    // count + 1 reaches 16 only from 15; count + 15 reaches 16 from 1 up.
    let any_sticky = (counts + ONES) & FOURS != 0;
    let any_zero = (counts + ONES * 0x0f) & FOURS != FOURS;
    if add && !any_sticky {
        return word + (ONES << shift);
    }
    if !add && !any_sticky && !any_zero {
        return word - (ONES << shift);
    }
    let mut bytes = word.to_le_bytes();
    let mut i = 0;
    while i < 8 {
        bytes[i] = bumped(bytes[i], side, add);
        i += 1;
    }
    u64::from_le_bytes(bytes)
}

/// Whether an index byte says the source might be on `side`'s list.
#[inline(always)]
pub const fn may_match(byte: u8, side: Side) -> bool {
    (byte >> side.shift()) & 0x0f != 0
}

/// The index byte of an IPv4 source: its /24.
#[inline(always)]
pub const fn v4_index(addr: &[u8; 4]) -> u32 {
    v4_number_index(u32::from_be_bytes(*addr))
}

/// [`v4_index`] of the address `addr` as a number.
#[inline(always)]
pub const fn v4_number_index(addr: u32) -> u32 {
    addr >> 8
}

/// The index bytes an IPv4 entry marks: `count` /24s from `first`.
pub const fn v4_span(addr: &[u8; 4], prefix: u32) -> (u32, u32) {
    if prefix >= 24 {
        (v4_index(addr), 1)
    } else {
        let count = 1u32 << (24 - prefix);
        (v4_index(addr) & !(count - 1), count)
    }
}

/// The bucket byte of the network of `addr`'s first `bits` bits ([`V6_SHORT_BITS`],
/// [`V6_LONG_BITS`] or [`V6_HOST_BITS`]): a multiplicative hash of the network, different for
/// each length. One 8-byte load, a shift, a multiply and a shift: no loop and no division on the
/// packet path.
#[inline(always)]
pub const fn v6_bucket(addr: &[u8; 16], bits: u32) -> u32 {
    v6_head_bucket(v6_head(addr), bits)
}

/// The first 64 bits of `addr`, as a number: what the buckets hash.
#[inline(always)]
const fn v6_head(addr: &[u8; 16]) -> u64 {
    u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ])
}

/// [`v6_bucket`] of an address whose first 64 bits are `head`, as a number.
#[inline(always)]
pub const fn v6_head_bucket(head: u64, bits: u32) -> u32 {
    // `bits` is 32 to 64: the shift is 0 to 32. The length, rotated in, tells the levels apart.
    let network = (head >> (64 - bits)) ^ (bits as u64).rotate_right(8);
    let hash = network.wrapping_mul(crate::hash::MIX);
    V6_WIDE + (hash >> (64 - V6_BUCKET_BITS)) as u32
}

/// The index byte an IPv6 entry marks: its level's ([`v6_level`]) bucket of its network.
pub const fn v6_entry(addr: &[u8; 16], prefix: u32) -> u32 {
    v6_head_lookup(v6_head(addr))[v6_level(prefix) as usize]
}

/// The index bytes an IPv6 source looks at: its /64's, /48's and /32's buckets, the wide byte
/// (in [`v6_level`] order; each only if its level is used, [`level_used`]).
#[inline(always)]
pub const fn v6_lookup(addr: &[u8; 16]) -> [u32; 4] {
    v6_head_lookup(v6_head(addr))
}

/// [`v6_lookup`] of a source whose first 64 bits are `head`, as a number: what the program
/// computes from the one word it reads.
#[inline(always)]
pub const fn v6_head_lookup(head: u64) -> [u32; 4] {
    [
        v6_head_bucket(head, V6_HOST_BITS),
        v6_head_bucket(head, V6_LONG_BITS),
        v6_head_bucket(head, V6_SHORT_BITS),
        V6_WIDE,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_counts_are_exact_until_they_stick() {
        let mut byte = 0;
        assert!(!covered(byte));
        for _ in 0..254 {
            byte = cover_bumped(byte, true);
        }
        assert_eq!(byte, 254);
        assert!(covered(byte), "254 covering entries are still counted");
        for _ in 0..254 {
            byte = cover_bumped(byte, false);
        }
        assert_eq!(
            byte, 0,
            "every removal counted: the /24 is no longer covered"
        );
        assert_eq!(cover_bumped(0, false), 0, "an unpaired removal leaves zero");
        for _ in 0..300 {
            byte = cover_bumped(byte, true);
        }
        assert_eq!(byte, COVER_UNKNOWN);
        assert!(
            !covered(byte),
            "an unknown count sends the source to the trie"
        );
        assert_eq!(cover_bumped(byte, false), COVER_UNKNOWN, "and never falls");
        let word = u64::from_le_bytes([0, 1, 254, 255, 7, 0, 0, 3]);
        assert_eq!(
            cover_bumped_word(word, true).to_le_bytes(),
            [1, 2, 255, 255, 8, 1, 1, 4]
        );
        assert_eq!(
            cover_bumped_word(word, false).to_le_bytes(),
            [0, 0, 253, 255, 6, 0, 0, 2]
        );
        // Only entries of /24 or shorter cover whole /24s.
        assert_eq!(v4_cover_span(&[10, 1, 2, 3], 25), None);
        assert_eq!(
            v4_cover_span(&[10, 1, 2, 0], 24),
            Some((V4_COVER + v4_index(&[10, 1, 2, 0]), 1))
        );
        assert_eq!(
            v4_cover_span(&[10, 1, 0, 0], 16),
            Some((V4_COVER + v4_index(&[10, 1, 0, 0]), 256))
        );
        assert_eq!(v4_cover_span(&[0, 0, 0, 0], 0), Some((V4_COVER, 1 << 24)));
    }

    #[test]
    fn counts_rise_fall_and_stick_at_fifteen() {
        let mut byte = 0;
        byte = bumped(byte, Side::Deny, true);
        byte = bumped(byte, Side::Allow, true);
        assert_eq!(byte, 0x11);
        assert!(may_match(byte, Side::Allow) && may_match(byte, Side::Deny));
        byte = bumped(byte, Side::Allow, false);
        assert_eq!(byte, 0x10);
        assert!(!may_match(byte, Side::Allow));
        // Lowering a zero count leaves it (a removal userspace failed to pair is harmless).
        assert_eq!(bumped(byte, Side::Allow, false), 0x10);
        for _ in 0..20 {
            byte = bumped(byte, Side::Deny, true);
        }
        assert_eq!(byte, 0xf0, "the deny count sticks at 15");
        for _ in 0..20 {
            byte = bumped(byte, Side::Deny, false);
        }
        assert_eq!(byte, 0xf0, "a sticky count never falls");
        assert!(may_match(byte, Side::Deny));
    }

    #[test]
    fn a_word_bumps_as_its_eight_bytes_do() {
        // Every count of one side from 0 to 15, with the other side's nibble set too.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..20_000u32 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Some words with a 0 or a 15 in them, most without.
            let word = match round % 4 {
                0 => seed | 0xf0f0,
                1 => seed & !0x0f0f,
                _ => seed,
            };
            for side in [Side::Allow, Side::Deny] {
                for add in [true, false] {
                    let mut bytes = word.to_le_bytes();
                    for byte in &mut bytes {
                        *byte = bumped(*byte, side, add);
                    }
                    assert_eq!(
                        bumped_word(word, side, add),
                        u64::from_le_bytes(bytes),
                        "{word:#018x} {side:?} add={add}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_ipv4_entry_marks_every_slash_24_it_touches() {
        assert_eq!(v4_span(&[198, 51, 100, 7], 32), (0xc63364, 1));
        assert_eq!(v4_span(&[198, 51, 100, 0], 24), (0xc63364, 1));
        assert_eq!(v4_span(&[10, 16, 0, 0], 12), (0x0a1000, 1 << 12));
        assert_eq!(v4_span(&[0, 0, 0, 0], 0), (0, 1 << 24));
        // Every address of a /20 finds one of the bytes it marks.
        let (first, count) = v4_span(&[203, 0, 112, 0], 20);
        for third in 112..=127u8 {
            let index = v4_index(&[203, 0, third, 9]);
            assert!((first..first + count).contains(&index), "{third}");
        }
        assert!(!(first..first + count).contains(&v4_index(&[203, 0, 128, 9])));
    }

    #[test]
    fn an_ipv6_source_looks_at_the_byte_each_covering_entry_marks() {
        let source = [
            0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 0, 0, 0, 7,
        ];
        let looked = v6_lookup(&source);
        for prefix in [0, 8, 31, 32, 40, 47, 48, 56, 63, 64, 96, 128] {
            let mut network = source;
            for bit in prefix..128 {
                network[bit as usize / 8] &= !(0x80 >> (bit % 8));
            }
            let marked = v6_entry(&network, prefix);
            assert_eq!(
                looked[v6_level(prefix) as usize],
                marked,
                "/{prefix} marks the byte its level looks at"
            );
        }
        for index in looked {
            assert!((V6_WIDE..V4_COVER).contains(&index));
        }
        // The /64, /48 and /32 buckets of one network differ (they hash differently).
        assert!(looked[0] != looked[1] && looked[1] != looked[2] && looked[0] != looked[2]);
        // A listed /64 marks a byte that another /64 of its /48 does not look at.
        let mut neighbour = source;
        neighbour[7] ^= 1;
        let listed = v6_entry(&source, 64);
        assert!(!v6_lookup(&neighbour).contains(&listed));
    }

    #[test]
    fn level_counts_are_kept_apart_exact_and_sticky() {
        let mut word = 0;
        for level in 0..4 {
            assert!(!level_used(word, level));
        }
        word = levels_bumped(word, 2, true);
        assert_eq!(word, 1 << 32);
        assert!(level_used(word, 2) && !level_used(word, 0) && !level_used(word, 3));
        // An unpaired removal leaves zero and borrows from no other level.
        word = levels_bumped(word, 1, false);
        assert_eq!(word, 1 << 32);
        for _ in 0..70_000 {
            word = levels_bumped(word, 3, true);
        }
        assert_eq!(word >> 48, LEVEL_STICKY, "the wide count stuck");
        for _ in 0..70_000 {
            word = levels_bumped(word, 3, false);
        }
        assert!(level_used(word, 3), "a stuck count never reaches zero");
        word = levels_bumped(word, 2, false);
        assert!(!level_used(word, 2), "the last /32-level entry gone");
        assert_eq!(word, LEVEL_STICKY << 48);
        assert_eq!(
            [128, 64, 63, 48, 47, 32, 31, 0].map(v6_level),
            [0, 0, 1, 1, 2, 2, 3, 3]
        );
    }
}
