//! Every map the program declares. Names equal the constants in `filter_common::maps`.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use filter_common::{
    COUNTER_SLOTS, Counter, Packet, Reason, Settings,
    bansummary::SUMMARY_WORDS,
    listindex::INDEX_WORDS,
    lists::{ListValue, TrustedV4Key, TrustedV6Key, V4Key, V6Key},
    maps::{
        AGGREGATE_SLOTS, CROWDSEC_ENTRIES, DEFAULT_ALLOW_ENTRIES, DEFAULT_DENY_ENTRIES,
        DEFAULT_MAX_BANS, MAX_TRUSTED_ENTRIES, POLICY_SLOTS, SAMPLES_BYTES,
    },
    ports::PORT_COUNT,
    rate::Buckets,
    source::{Ban, SourceKey},
    sources::{DEFAULT_SOURCE_SETS, SourceSet},
    synack::HeaderCopy,
    verified::{VERIFIED_ENTRIES, VerifiedBucket},
};

/// Packets and bytes per `(Verdict, Reason)`, per CPU.
#[map]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Which policy slot the program reads (see `filter_common::maps::ACTIVE`).
#[map]
pub static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// The settings of each policy slot, written by userspace.
#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(POLICY_SLOTS, 0);

/// Allowed IPv4 source prefixes. LPM tries must not preallocate.
#[map]
pub static ALLOW_V4: LpmTrie<V4Key, ListValue> =
    LpmTrie::with_max_entries(DEFAULT_ALLOW_ENTRIES, BPF_F_NO_PREALLOC);

/// Allowed IPv6 source prefixes.
#[map]
pub static ALLOW_V6: LpmTrie<V6Key, ListValue> =
    LpmTrie::with_max_entries(DEFAULT_ALLOW_ENTRIES, BPF_F_NO_PREALLOC);

/// Denied IPv4 source prefixes.
#[map]
pub static DENY_V4: LpmTrie<V4Key, ListValue> =
    LpmTrie::with_max_entries(DEFAULT_DENY_ENTRIES, BPF_F_NO_PREALLOC);

/// Denied IPv6 source prefixes.
#[map]
pub static DENY_V6: LpmTrie<V6Key, ListValue> =
    LpmTrie::with_max_entries(DEFAULT_DENY_ENTRIES, BPF_F_NO_PREALLOC);

/// IPv4 sources under a CrowdSec ban decision, written by the daemon's bouncer.
#[map]
pub static CROWDSEC_V4: LpmTrie<V4Key, ListValue> =
    LpmTrie::with_max_entries(CROWDSEC_ENTRIES, BPF_F_NO_PREALLOC);

/// IPv6 sources under a CrowdSec ban decision.
#[map]
pub static CROWDSEC_V6: LpmTrie<V6Key, ListValue> =
    LpmTrie::with_max_entries(CROWDSEC_ENTRIES, BPF_F_NO_PREALLOC);

/// Which sources might be on the allowlist or the denylist (see `filter_common::listindex`),
/// written by userspace through a memory mapping.
#[map]
pub static LIST_INDEX: Array<u64> = Array::with_max_entries(INDEX_WORDS, BPF_F_MMAPABLE);

/// Trusted upstream IPv4 prefixes, exempt from the reflection stage.
#[map]
pub static TRUSTED_V4: LpmTrie<TrustedV4Key, ListValue> =
    LpmTrie::with_max_entries(MAX_TRUSTED_ENTRIES, BPF_F_NO_PREALLOC);

/// Trusted upstream IPv6 prefixes.
#[map]
pub static TRUSTED_V6: LpmTrie<TrustedV6Key, ListValue> =
    LpmTrie::with_max_entries(MAX_TRUSTED_ENTRIES, BPF_F_NO_PREALLOC);

/// One flag byte per port and policy slot: open for TCP, open for UDP, reflector source port.
#[map]
pub static PORTS: Array<u8> = Array::with_max_entries(POLICY_SLOTS * PORT_COUNT, 0);

/// Banned sources (and recently expired bans, remembered for escalation). Not LRU: nothing is
/// evicted, so manual bans stay.
#[map]
pub static BANS: HashMap<SourceKey, Ban> = HashMap::with_max_entries(DEFAULT_MAX_BANS, 0);

/// The bans summary: one bit per slot of ban keys, set while no ban hashes there (see
/// `filter_common::bansummary`).
#[map]
pub static BANS_EMPTY: Array<u64> = Array::with_max_entries(SUMMARY_WORDS, BPF_F_MMAPABLE);

/// Per-source, per-class rate state: two-way sets (see `filter_common::sources`), as many as
/// `Settings::source_sets` says (userspace sizes the map to match). Mappable, so the daemon
/// counts the sources held by reading the ways' meta words, not a syscall per set.
#[map]
pub static SOURCES: Array<SourceSet> = Array::with_max_entries(DEFAULT_SOURCE_SETS, BPF_F_MMAPABLE);

/// Aggregate buckets per class, then fragments, shared by every CPU (updated by
/// compare-and-swap).
#[map]
pub static AGGREGATE: Array<Buckets> = Array::with_max_entries(AGGREGATE_SLOTS, 0);

/// The current packet's summary, per CPU (see `filter_common::maps::SCRATCH`).
#[map]
pub static SCRATCH: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);

/// Drops to go before the next sample, per CPU (see `filter_common::maps::SAMPLING`).
#[map]
pub static SAMPLING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Bans issued, per reason, per CPU.
#[map]
pub static BAN_EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Reason::COUNT as u32, 0);

/// Samples of dropped packets.
#[map]
pub static SAMPLES: RingBuf = RingBuf::with_byte_size(SAMPLES_BYTES, 0);

/// Records lost because `SAMPLES` was full, per CPU.
#[map]
pub static SAMPLES_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Sources that completed a TCP handshake recently: a two-way cache indexed by source, then
/// the buckets' summary bits (see `filter_common::verified`), written by this program and by
/// the daemon through a mapping.
#[map]
pub static VERIFIED: Array<VerifiedBucket> =
    Array::with_max_entries(VERIFIED_ENTRIES, BPF_F_MMAPABLE);

/// Room for the SYN-ACK's headers while `answer` builds them, per CPU.
#[map]
pub static HEADERS: PerCpuArray<HeaderCopy> = PerCpuArray::with_max_entries(1, 0);
