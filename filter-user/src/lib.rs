//! moat's userspace: loads the XDP filter, attaches it, tunes it and reports its counters.

/// The XDP object the daemon loads and the tests run, built by `build.rs` from `filter-ebpf`.
pub static FILTER_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/moat-filter"));
