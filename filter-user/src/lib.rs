//! moat's userspace: loads the XDP filter, attaches it to an interface, keeps its settings and
//! reports its counters. `main.rs` is a thin shell over these modules.

pub mod atomicfile;
pub mod bans;
pub mod bansummary;
pub mod batch;
pub mod cidr;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod crowdsec;
pub mod daemon;
pub mod filelock;
pub mod listindex;
pub mod lists;
pub mod loader;
pub mod lockout;
pub mod mapping;
pub mod metrics;
pub mod migrate;
pub mod namespace;
pub mod netns;
pub mod notify;
pub mod ntp;
pub mod oneline;
pub mod pins;
pub mod policy;
pub mod preflight;
pub mod sockdiag;
pub mod sources;
pub mod state;
pub mod stats;
pub mod top;
pub mod tuning;
pub mod upstreams;
pub mod verified;
pub mod verify;

/// The XDP object the daemon loads and the tests run, built by `build.rs` from `filter-ebpf`.
pub static FILTER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/moat-filter"));

/// The same program built with its `debug-log` feature: it logs every verdict through aya-log
/// (`moat run --debug-log`). Slower; for finding out why a packet got its verdict.
pub static FILTER_OBJECT_DEBUG_LOG: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/debug-log/moat-filter"));

/// The live-frames generator (`filter-ebpf/src/flood.rs`), built beside the filter. Only the lab,
/// the bench and the tests load it; the daemon never does, so the linker leaves it out of `moat`.
pub static FLOOD_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/moat-flood"));

/// The bench's XDP_DROP floor (`filter-ebpf/src/floor.rs`); not in `moat`, as above.
pub static FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/moat-floor"));

/// The bench's "parse + count" floor (`filter-ebpf/src/parse_count.rs`): moat's parser and
/// counter, no policy; not in `moat`, as above.
pub static PARSE_COUNT_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/moat-parse-count"));
