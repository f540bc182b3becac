//! Everything moat's XDP program and its userspace agree on: map names and sizes, the layout of
//! every map key and value, the reasons a packet is passed or dropped, and the pure decision
//! logic both sides run.
//!
//! This crate is `#![no_std]` and allocates nothing, so the same code compiles into the eBPF
//! object and into host tests. It holds no parsing of packet bytes (that is kernel-only work in
//! `filter-ebpf`) and no aya imports outside the `user` feature.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod bansummary;
pub mod classify;
pub mod clock;
pub mod counter;
pub mod flood;
pub mod hash;
pub mod listindex;
pub mod lists;
pub mod maps;
pub mod packet;
pub mod ports;
pub mod rate;
pub mod reason;
pub mod sample;
pub mod settings;
pub mod source;
pub mod sources;
pub mod synack;
pub mod verified;

pub use classify::{CLASS_COUNT, Class};
pub use counter::{COUNTER_SLOTS, Counter, counter_index};
pub use packet::{Fragment, Packet};
pub use reason::{Reason, Verdict, decide};
pub use settings::Settings;
