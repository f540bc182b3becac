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

/// Every map the program declares.
pub const ALL_MAPS: &[&str] = &[COUNTERS, SETTINGS];

/// Directory on bpffs under which each attached interface gets a directory of pins.
pub const PIN_ROOT: &str = "/sys/fs/bpf/moat";

/// File name of the pinned XDP link inside an interface's pin directory.
pub const LINK_PIN: &str = "link";

/// Where bpffs is expected to be mounted.
pub const BPFFS_PATH: &str = "/sys/fs/bpf";
