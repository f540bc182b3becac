//! Every map the program declares. Names equal the constants in `filter_common::maps`.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use filter_common::{COUNTER_SLOTS, Counter, Settings};

/// Packets and bytes per `(Verdict, Reason)`, per CPU.
#[map]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// The running settings, written by userspace.
#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
