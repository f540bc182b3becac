//! The running settings the XDP program reads on every packet from the single-entry `SETTINGS`
//! array. Userspace writes it before attaching and whenever the configuration changes, so
//! thresholds change without reloading the program.

/// Bit in [`Settings::flags`]: count drops as would-drop and pass the packet.
pub const FLAG_DRY_RUN: u32 = 1;

/// The value of the `SETTINGS` map. An all-zero value (what the kernel holds before userspace
/// writes anything) means: enforce.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Bit set of `FLAG_*` constants.
    pub flags: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 8);
#[cfg(feature = "user")]
unsafe impl aya::Pod for Settings {}

impl Settings {
    /// Whether `--dry-run` is on.
    pub const fn dry_run(&self) -> bool {
        self.flags & FLAG_DRY_RUN != 0
    }
}
