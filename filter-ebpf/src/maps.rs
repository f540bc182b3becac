//! Every map the program declares. Names equal the constants in `filter_common::maps`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, LpmTrie, PerCpuArray},
};
use filter_common::{
    COUNTER_SLOTS, Counter, Settings,
    lists::{ListValue, V4Key, V6Key},
    maps::{DEFAULT_ALLOW_ENTRIES, DEFAULT_DENY_ENTRIES},
};

/// Packets and bytes per `(Verdict, Reason)`, per CPU.
#[map]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// The running settings, written by userspace.
#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

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
