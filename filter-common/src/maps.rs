//! Names, sizes and pin locations of every map the XDP program declares.
//!
//! The `#[map]` macro takes only a literal, so each kernel static is named exactly as the
//! constant here; the program tests load every name in [`ALL_MAPS`] from the object, which
//! catches a mismatch. Userspace never spells a map name itself.

/// Name of the XDP program (its function name in `filter-ebpf`).
pub const PROGRAM_NAME: &str = "moat";

/// Per-CPU array of [`crate::Counter`], indexed by [`crate::counter_index`].
pub const COUNTERS: &str = "COUNTERS";

/// Single-entry array holding the running [`crate::Settings`].
pub const SETTINGS: &str = "SETTINGS";

/// LPM trie of allowed IPv4 source prefixes ([`crate::lists::V4Key`]).
pub const ALLOW_V4: &str = "ALLOW_V4";

/// LPM trie of allowed IPv6 source prefixes ([`crate::lists::V6Key`]).
pub const ALLOW_V6: &str = "ALLOW_V6";

/// LPM trie of denied IPv4 source prefixes.
pub const DENY_V4: &str = "DENY_V4";

/// LPM trie of denied IPv6 source prefixes.
pub const DENY_V6: &str = "DENY_V6";

/// Every map the program declares.
pub const ALL_MAPS: &[&str] = &[COUNTERS, SETTINGS, ALLOW_V4, ALLOW_V6, DENY_V4, DENY_V6];

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
