//! Names, sizes and pin locations of every map the XDP program declares.
//!
//! The `#[map]` macro takes only a literal, so each kernel static is named exactly as the
//! constant here; the program tests load every name in [`ALL_MAPS`] from the object, which
//! catches a mismatch. Userspace never spells a map name itself.

/// Name of the XDP program (its function name in `filter-ebpf`).
pub const PROGRAM_NAME: &str = "moat";

/// Name of the object's second XDP program, which only userspace runs (by BPF_PROG_TEST_RUN):
/// it writes jiffies and CLOCK_MONOTONIC into the frame, the samples [`crate::clock::calibrate`]
/// turns into the settings' clock base ([`crate::Settings::clock`]). Never attached.
pub const CLOCK_PROGRAM_NAME: &str = "moat_clock";

/// Per-CPU array of [`crate::Counter`], indexed by [`crate::counter_index`].
pub const COUNTERS: &str = "COUNTERS";

/// Single-entry array holding the index (below [`POLICY_SLOTS`]) of the policy slot the
/// program reads: which `SETTINGS` entry, which half of `PORTS` and which trusted prefixes.
/// Userspace fills the other slot and then flips this one `u32`, so settings, ports and trusted
/// upstreams change in one step as packets see them, and a write that fails half-way changes
/// nothing the program reads. All-zero (before userspace writes) selects slot 0.
pub const ACTIVE: &str = "ACTIVE";

/// Policy slots: the one packets read and the one the next change is written into.
pub const POLICY_SLOTS: u32 = 2;

/// Array of [`POLICY_SLOTS`] [`crate::Settings`]; the program reads the entry `ACTIVE` names.
pub const SETTINGS: &str = "SETTINGS";

/// LPM trie of allowed IPv4 source prefixes ([`crate::lists::V4Key`]).
pub const ALLOW_V4: &str = "ALLOW_V4";

/// LPM trie of allowed IPv6 source prefixes ([`crate::lists::V6Key`]).
pub const ALLOW_V6: &str = "ALLOW_V6";

/// LPM trie of denied IPv4 source prefixes.
pub const DENY_V4: &str = "DENY_V4";

/// LPM trie of denied IPv6 source prefixes.
pub const DENY_V6: &str = "DENY_V6";

/// LPM trie of IPv4 sources under a CrowdSec ban decision: `Range` decisions as their prefix,
/// `Ip` decisions as a /32 ([`crate::lists::V4Key`]). Only the daemon's CrowdSec bouncer writes
/// it; it counts on the denylist's side of the list index, and the allowlist wins over it.
pub const CROWDSEC_V4: &str = "CROWDSEC_V4";

/// LPM trie of IPv6 sources under a CrowdSec ban decision (`Ip` decisions as a /128).
pub const CROWDSEC_V6: &str = "CROWDSEC_V6";

/// Capacity of each CrowdSec trie: decisions per address family. Tries allocate entries as
/// they are used, so an empty one costs nothing.
pub const CROWDSEC_ENTRIES: u32 = 1_048_576;

/// The list index ([`crate::listindex`]): an mmap-able array of [`crate::listindex::INDEX_WORDS`]
/// `u64`s saying which sources might be on the allowlist or the denylist, edited in place by
/// userspace beside the tries.
pub const LIST_INDEX: &str = "LIST_INDEX";

/// LPM trie of trusted upstream IPv4 prefixes (resolvers, NTP servers), exempt from the
/// reflection stage, keyed by policy slot then address ([`crate::lists::TrustedV4Key`]).
pub const TRUSTED_V4: &str = "TRUSTED_V4";

/// LPM trie of trusted upstream IPv6 prefixes ([`crate::lists::TrustedV6Key`]).
pub const TRUSTED_V6: &str = "TRUSTED_V6";

/// Array of one flag byte per port ([`crate::ports`]) per policy slot: slot `s`, port `p` at
/// `s * PORT_COUNT + p`.
pub const PORTS: &str = "PORTS";

/// Hash (not LRU) of [`crate::source::SourceKey`] to [`crate::source::Ban`]. Nothing is ever
/// evicted, so a manual ban stays until it expires or is deleted: when the table is full the
/// program records no new automatic ban (the rate limits still hold), and `moat ban add`
/// makes room by removing an automatic one.
pub const BANS: &str = "BANS";

/// mmap-able array of [`crate::bansummary::SUMMARY_WORDS`] `u64`s: the bans summary
/// ([`crate::bansummary`]), one bit per slot of a hash of ban keys, set while no ban hashes
/// there, so the program skips the `BANS` lookup for a source whose bit is set. A new map (all
/// zero) looks every ban up; the daemon's sweep sets the bits of empty slots, and every writer
/// of a ban clears its key's bit after writing it.
pub const BANS_EMPTY: &str = "BANS_EMPTY";

/// LRU hash of [`crate::source::SourceKey`] to [`crate::rate::RateState`]: per-source, per-class
/// buckets. LRU, so a flood of spoofed sources evicts old entries instead of filling it.
pub const SOURCES: &str = "SOURCES";

/// Array of [`crate::rate::Buckets`] shared by every CPU: one slot per class, then one for
/// fragments. Updated by compare-and-swap, so the limits are the host's, not per CPU.
pub const AGGREGATE: &str = "AGGREGATE";

/// Per-CPU, single-entry scratch space holding the current packet's [`crate::Packet`]. Values
/// the parser stores there are not tracked by the verifier, so every parse path reaches the
/// policy stages in the same state and is verified once, and the summary stays off the 512-byte
/// stack.
pub const SCRATCH: &str = "SCRATCH";

/// Per-CPU, single-entry `u32`: dropped packets still to go before the next one is sampled
/// into [`SAMPLES`] (a countdown from `Settings::sample_every`, instead of a random draw and a
/// division on every drop).
pub const SAMPLING: &str = "SAMPLING";

/// Per-CPU array of `u64`, indexed by [`crate::Reason`]: automatic bans issued for that reason
/// (and manual bans under `Banned`).
pub const BAN_EVENTS: &str = "BAN_EVENTS";

/// Ring buffer of [`crate::sample::Sample`]s: dropped packets for `moat top`, and one record per
/// automatic ban for the daemon's ban log.
pub const SAMPLES: &str = "SAMPLES";

/// Per-CPU, single-entry array of `u64`: records the program could not write to `SAMPLES`
/// because the ring was full (samples and ban events lost).
pub const SAMPLES_LOST: &str = "SAMPLES_LOST";

/// Size of `SAMPLES` in bytes (a power of two, a multiple of the page size).
pub const SAMPLES_BYTES: u32 = 256 * 1024;

/// The program wakes the daemon only once `SAMPLES` holds this many bytes (it drains the ring
/// every second anyway): a wakeup per record would cost a context switch per sample during a
/// flood, on the CPU the flood needs.
pub const SAMPLES_WAKE_BYTES: u64 = SAMPLES_BYTES as u64 / 8;

/// Array of [`crate::verified::VerifiedBucket`]s, the verified-source cache (see
/// [`crate::verified`]): sources that completed a TCP handshake with the origin recently, which
/// a spoofed source cannot, with the time (ns) until which each counts as verified. Their SYNs
/// go to the kernel and to their own per-source limit instead of being answered with cookies,
/// and their segments pass without a socket lookup. The program marks a source whose ACK
/// carried a valid SYN cookie; the daemon marks the peers of the origin's TCP connections.
pub const VERIFIED: &str = "VERIFIED";

/// Per-CPU, single-entry scratch space holding copies of the current packet's IP and TCP
/// headers ([`crate::synack::HeaderCopy`]) for the SYN-cookie helpers.
pub const HEADERS: &str = "HEADERS";

/// Every map the program declares.
pub const ALL_MAPS: &[&str] = &[
    COUNTERS,
    ACTIVE,
    SETTINGS,
    ALLOW_V4,
    ALLOW_V6,
    DENY_V4,
    DENY_V6,
    CROWDSEC_V4,
    CROWDSEC_V6,
    LIST_INDEX,
    TRUSTED_V4,
    TRUSTED_V6,
    PORTS,
    BANS,
    BANS_EMPTY,
    SOURCES,
    AGGREGATE,
    SCRATCH,
    SAMPLING,
    BAN_EVENTS,
    SAMPLES,
    SAMPLES_LOST,
    VERIFIED,
    HEADERS,
];

/// Maps that outlive a daemon: pinned under [`COUNTER_PIN_ROOT`], reused by the next `moat run`
/// on the interface, so counters never go backwards across a restart.
pub const PERSISTENT_MAPS: &[&str] = &[COUNTERS, BAN_EVENTS];

/// Directory on bpffs under which each interface's persistent maps are pinned.
pub const COUNTER_PIN_ROOT: &str = "/sys/fs/bpf/moat-counters";

/// Trusted-upstream prefixes one policy slot holds at most (per address family).
pub const MAX_TRUSTED_PER_SLOT: u32 = 1024;

/// Capacity of each trusted-upstream trie: both policy slots' prefixes.
pub const MAX_TRUSTED_ENTRIES: u32 = POLICY_SLOTS * MAX_TRUSTED_PER_SLOT;

/// Capacity of `BANS` in the object; the loader may change it (`max_bans`).
pub const DEFAULT_MAX_BANS: u32 = 65_536;

/// Capacity of `SOURCES` in the object; the loader may change it (`max_tracked_sources`).
pub const DEFAULT_MAX_SOURCES: u32 = 262_144;

/// Slot of the fragment bucket in `AGGREGATE` (after the classes).
pub const AGGREGATE_FRAGMENT_SLOT: u32 = crate::CLASS_COUNT as u32;

/// Slot of the refusal bucket in `AGGREGATE` (after the fragment bucket): the host-wide budget
/// of packets for no socket handed to the kernel to refuse.
pub const AGGREGATE_REFUSAL_SLOT: u32 = crate::CLASS_COUNT as u32 + 1;

/// Number of slots in `AGGREGATE`.
pub const AGGREGATE_SLOTS: u32 = crate::CLASS_COUNT as u32 + 2;

/// Capacity of each allowlist trie in the object; the loader may change it.
pub const DEFAULT_ALLOW_ENTRIES: u32 = 65_536;

/// Capacity of each denylist trie in the object; the loader may change it (`deny_capacity`).
pub const DEFAULT_DENY_ENTRIES: u32 = 1_048_576;

/// Directory on bpffs under which each attached interface gets a directory of pins.
pub const PIN_ROOT: &str = "/sys/fs/bpf/moat";

/// File name of the pinned XDP link inside an interface's pin directory.
pub const LINK_PIN: &str = "link";

/// Where bpffs is expected to be mounted.
pub const BPFFS_PATH: &str = "/sys/fs/bpf";
