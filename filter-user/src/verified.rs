//! The verified-source cache (`VERIFIED`, see [`filter_common::verified`]) mapped into this
//! process: the daemon marks the origin's connected peers through it, and every writer of a ban
//! clears the banned source's mark through it. Every word is read and written whole, in the
//! program's order, so the program, the daemon and a command running beside them never see a
//! torn tag.

use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::{Map, MapData};
use filter_common::{
    maps::VERIFIED,
    rate::Buckets,
    source::SourceKey,
    verified::{
        self, VERIFIED_BUCKETS, VERIFIED_ENTRIES, VERIFIED_WAYS, VerifiedBucket, VerifiedSlot,
    },
};

use crate::mapping::Mapping;

/// Why the cache could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The object or pin has no cache map of the expected kind.
    #[error("{VERIFIED} is missing or not an array")]
    Missing,
    /// The kernel refused the mapping.
    #[error("mapping {VERIFIED} into memory: {0}")]
    Mmap(std::io::Error),
}

/// The verified-source cache (`VERIFIED`, see [`filter_common::verified`]), mapped read-write.
/// Every word is read and written whole, so the program, the daemon and a test reading beside
/// them never see a torn tag.
#[derive(Debug)]
pub struct VerifiedCache {
    mapping: Mapping,
}

/// Bytes of the mapping: every bucket, then the summary.
const CACHE_BYTES: usize = VERIFIED_ENTRIES as usize * size_of::<VerifiedBucket>();

/// 64-bit words per bucket.
const BUCKET_WORDS: usize = size_of::<VerifiedBucket>() / 8;

/// 64-bit words per way: the tag's two, the end, the SYN buckets' two, then the list stamp.
const SLOT_WORDS: usize = size_of::<VerifiedSlot>() / 8;

/// The end's word in a way.
const UNTIL_WORD: usize = 2;

/// The SYN packet bucket's word in a way; the byte bucket's follows.
const SYN_WORD: usize = 3;

/// The list stamp's word in a way ([`VerifiedSlot::unlisted`]).
const UNLISTED_WORD: usize = 5;
const _: () = assert!(UNLISTED_WORD < SLOT_WORDS);

impl VerifiedCache {
    /// Maps the cache `data` holds (the `VERIFIED` map of an object or a pin).
    pub fn of(data: &MapData) -> Result<VerifiedCache, CacheError> {
        let mapping = Mapping::of(data, CACHE_BYTES).map_err(CacheError::Mmap)?;
        Ok(VerifiedCache { mapping })
    }

    /// Maps the cache of a loaded object's `map`.
    pub fn of_map(map: &Map) -> Result<VerifiedCache, CacheError> {
        match map {
            Map::Array(data) => VerifiedCache::of(data),
            _ => Err(CacheError::Missing),
        }
    }

    /// Word `word` of bucket `bucket`.
    fn word(&self, bucket: u32, word: usize) -> &AtomicU64 {
        let index = (bucket % VERIFIED_BUCKETS) as usize * BUCKET_WORDS + word % BUCKET_WORDS;
        // SAFETY: the index is inside the mapping, which holds 8-byte aligned words and lives
        // as long as `self`; all access is atomic.
        unsafe { &*self.mapping.base().cast::<AtomicU64>().add(index) }
    }

    /// The summary word holding bucket `bucket`'s bit, and the bit.
    fn summary(&self, bucket: u32) -> (&AtomicU64, u64) {
        let (entry, word, mask) = verified::summary_of(bucket % VERIFIED_BUCKETS);
        let index = entry as usize * BUCKET_WORDS + word as usize;
        // SAFETY: the entry is below VERIFIED_ENTRIES and the word below its value's words, so
        // the index is inside the mapping; all access is atomic.
        let word = unsafe { &*self.mapping.base().cast::<AtomicU64>().add(index) };
        (word, mask)
    }

    /// Whether bucket `bucket`'s summary bit is set: the program reads the bucket only then.
    pub fn summarised(&self, bucket: u32) -> bool {
        let (word, mask) = self.summary(bucket);
        word.load(Ordering::Acquire) & mask != 0
    }

    /// Bucket `bucket` as it is now, word by word.
    fn bucket(&self, bucket: u32) -> VerifiedBucket {
        let slot = |way: usize| VerifiedSlot {
            hi: self.word(bucket, way * SLOT_WORDS).load(Ordering::Acquire),
            lo: self
                .word(bucket, way * SLOT_WORDS + 1)
                .load(Ordering::Acquire),
            until_ns: self
                .word(bucket, way * SLOT_WORDS + UNTIL_WORD)
                .load(Ordering::Acquire),
            syn: Buckets {
                packets: self
                    .word(bucket, way * SLOT_WORDS + SYN_WORD)
                    .load(Ordering::Acquire),
                bytes: self
                    .word(bucket, way * SLOT_WORDS + SYN_WORD + 1)
                    .load(Ordering::Acquire),
            },
            unlisted: self
                .word(bucket, way * SLOT_WORDS + UNLISTED_WORD)
                .load(Ordering::Acquire),
        };
        VerifiedBucket {
            slots: [slot(0), slot(1)],
        }
    }

    /// Marks `key`'s source verified until `until_ns` on the program's clock (never shorter
    /// than it already is), in the way the program would choose, written word by word in the
    /// program's order: the end cleared, the tag, full SYN buckets and no list stamp, the new
    /// end. A source the way already holds keeps its SYN credit and list stamp: only its end
    /// moves.
    pub fn mark(&self, key: &SourceKey, until_ns: u64) {
        let (tag, index) = verified::locate(key);
        // The summary bit first, so the program never skips a way written below.
        let (summary, mask) = self.summary(index);
        summary.fetch_or(mask, Ordering::SeqCst);
        let current = self.bucket(index);
        let way = current.way_for(tag) % VERIFIED_WAYS;
        let old = current.slots[way];
        let base = way * SLOT_WORDS;
        if old.holds(tag) {
            if old.until_ns < until_ns {
                self.word(index, base + UNTIL_WORD)
                    .store(until_ns, Ordering::Release);
            }
            return;
        }
        self.word(index, base + UNTIL_WORD)
            .store(0, Ordering::Release);
        self.word(index, base).store(tag.hi, Ordering::Release);
        self.word(index, base + 1).store(tag.lo, Ordering::Release);
        self.word(index, base + SYN_WORD)
            .store(0, Ordering::Release);
        self.word(index, base + SYN_WORD + 1)
            .store(0, Ordering::Release);
        self.word(index, base + UNLISTED_WORD)
            .store(0, Ordering::Release);
        self.word(index, base + UNTIL_WORD)
            .store(until_ns, Ordering::Release);
    }

    /// Clears `key`'s source's verification, if the cache holds it: the source was banned, and
    /// no verified source is (see the program's `verified` module).
    pub fn forget(&self, key: &SourceKey) {
        let (tag, index) = verified::locate(key);
        for (way, slot) in self.bucket(index).slots.iter().enumerate() {
            if slot.holds(tag) {
                self.word(index, way * SLOT_WORDS + UNTIL_WORD)
                    .store(0, Ordering::SeqCst);
            }
        }
    }

    /// When `key`'s source stops being verified, if the cache holds it.
    pub fn until(&self, key: &SourceKey) -> Option<u64> {
        let (tag, index) = verified::locate(key);
        let bucket = self.bucket(index);
        bucket
            .slots
            .iter()
            .find(|slot| slot.holds(tag) && slot.until_ns != 0)
            .map(|slot| slot.until_ns)
    }

    /// Empties every way and clears the summary (tests start sequences from an empty cache).
    pub fn clear(&self) {
        for bucket in 0..VERIFIED_BUCKETS {
            for word in 0..BUCKET_WORDS {
                self.word(bucket, word).store(0, Ordering::Release);
            }
            let (summary, mask) = self.summary(bucket);
            summary.fetch_and(!mask, Ordering::SeqCst);
        }
    }

    /// Clears the summary bit of every bucket none of whose ways is in force at `now_ns` (the
    /// program's clock), so the program stops reading it; returns how many bits it cleared.
    /// A way written while a word is swept keeps its bit: after clearing, the word's buckets
    /// are read again and any now in force is set back. Only a mark that has set its bit but
    /// not yet written its way in that instant loses the bit, and its source is then looked
    /// up as unverified (a socket lookup, a SYN cookie) until it is marked again.
    pub fn sweep(&self, now_ns: u64) -> u32 {
        let mut cleared = 0;
        for first in (0..VERIFIED_BUCKETS).step_by(64) {
            let (summary, _) = self.summary(first);
            let set = summary.load(Ordering::Acquire);
            if set == 0 {
                continue;
            }
            let live = |word_bits: u64| -> u64 {
                (0..64)
                    .filter(|bit| word_bits & (1 << bit) != 0)
                    .filter(|&bit| self.bucket(first + bit).in_force(now_ns))
                    .fold(0, |bits, bit| bits | (1 << bit))
            };
            let stale = set & !live(set);
            if stale == 0 {
                continue;
            }
            summary.fetch_and(!stale, Ordering::SeqCst);
            let revived = live(stale);
            if revived != 0 {
                summary.fetch_or(revived, Ordering::SeqCst);
            }
            cleared += (stale & !revived).count_ones();
        }
        cleared
    }

    /// Every cached source's tag and end, bucket by bucket (empty ways left out).
    pub fn entries(&self) -> Vec<(u32, VerifiedSlot)> {
        (0..VERIFIED_BUCKETS)
            .flat_map(|index| {
                self.bucket(index)
                    .slots
                    .into_iter()
                    .filter(|slot| slot.until_ns != 0)
                    .map(move |slot| (index, slot))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_for(addr: std::net::IpAddr, v6_prefix: u32) -> SourceKey {
        SourceKey::for_addr(addr, 0, v6_prefix)
    }

    /// An anonymous mapping the size of the cache, standing in for the kernel's.
    fn scratch_cache() -> VerifiedCache {
        VerifiedCache {
            mapping: Mapping::anonymous(CACHE_BYTES).expect("an anonymous mapping"),
        }
    }

    #[test]
    fn marks_renews_and_clears_in_the_programs_layout() {
        let cache = scratch_cache();
        let v4 = key_for("198.51.100.7".parse().expect("literal"), 64);
        let v6 = key_for("2001:db8::1".parse().expect("literal"), 128);
        cache.mark(&v4, 100);
        cache.mark(&v6, 200);
        assert_eq!((cache.until(&v4), cache.until(&v6)), (Some(100), Some(200)));
        // Never shortened, always lengthened.
        cache.mark(&v4, 50);
        cache.mark(&v6, 300);
        assert_eq!((cache.until(&v4), cache.until(&v6)), (Some(100), Some(300)));
        // The words sit where the program reads them: bucket, way, then hi, lo, end.
        let tag = verified::tag(&v6);
        let bucket = cache.bucket(verified::bucket(tag, true));
        assert!(bucket.verified(tag, 299) && !bucket.verified(tag, 300));
        let other = key_for("2001:db8::2".parse().expect("literal"), 128);
        assert_eq!(cache.until(&other), None, "the /128s of one /64 are apart");
        assert_eq!(cache.entries().len(), 2);
        cache.clear();
        assert!(cache.entries().is_empty());
    }

    #[test]
    fn a_source_keeps_its_syn_credit_while_it_keeps_its_way() {
        let cache = scratch_cache();
        let key = key_for("198.51.100.7".parse().expect("literal"), 64);
        let (tag, index) = verified::locate(&key);
        cache.mark(&key, 100);
        let way = cache.bucket(index).way_for(tag);
        // The program spends the source's SYN credit in its way.
        let (packets, bytes) = (way * SLOT_WORDS + SYN_WORD, way * SLOT_WORDS + SYN_WORD + 1);
        cache.word(index, packets).store(7, Ordering::Release);
        cache.word(index, bytes).store(9, Ordering::Release);
        cache.mark(&key, 200);
        let slot = cache.bucket(index).slots[way];
        assert_eq!(
            (slot.until_ns, slot.syn),
            (
                200,
                Buckets {
                    packets: 7,
                    bytes: 9
                }
            ),
            "a renewed mark moves the end only"
        );
        assert_eq!(
            cache.bucket(index).with(tag, 300).slots[way].syn,
            slot.syn,
            "as the shared rule says"
        );
        // A source that takes the way starts with full (all-zero) buckets.
        let rival = (1..1u32 << 22)
            .map(|n| key_for(std::net::Ipv4Addr::from(0xC612_0000 + n).into(), 64))
            .find(|rival| verified::locate(rival).1 == index)
            .expect("a rival for the bucket among 4 million addresses");
        let other = verified::tag(&rival);
        cache.forget(&key);
        cache.mark(&rival, 400);
        let bucket = cache.bucket(index);
        let taken = bucket.way_for(other);
        assert_eq!(taken, way, "the rival takes the forgotten source's way");
        assert_eq!(bucket.slots[taken].syn, Buckets::default());
    }

    #[test]
    fn a_mark_sets_its_buckets_summary_bit_and_a_sweep_clears_only_ended_ones() {
        let cache = scratch_cache();
        let short = key_for("198.51.100.7".parse().expect("literal"), 64);
        let long = key_for("2001:db8::1".parse().expect("literal"), 64);
        let (short_bucket, long_bucket) = (verified::locate(&short).1, verified::locate(&long).1);
        assert!(!cache.summarised(short_bucket));
        cache.mark(&short, 100);
        cache.mark(&long, 300);
        assert!(cache.summarised(short_bucket) && cache.summarised(long_bucket));
        // The summary sits after the buckets: no bucket's words moved.
        assert_eq!(cache.until(&short), Some(100));
        assert_eq!(cache.entries().len(), 2);
        assert_eq!(cache.sweep(99), 0, "both in force");
        assert_eq!(cache.sweep(100), 1, "the short one ended");
        assert!(!cache.summarised(short_bucket) && cache.summarised(long_bucket));
        // A forgotten source's bit goes at the next sweep; a new mark sets it again.
        cache.forget(&long);
        assert_eq!(cache.sweep(0), 1);
        cache.mark(&long, 400);
        assert!(cache.summarised(long_bucket));
        cache.clear();
        assert!(!cache.summarised(long_bucket));
    }
}
