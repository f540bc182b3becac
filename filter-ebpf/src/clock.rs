//! The current time for one packet: read from the kernel at most once, and only when a stage
//! needs it (a ban found, a bucket to refill, a verification to check or record). A listed
//! source's packets never read it.

use aya_ebpf::helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns};
use filter_common::{Settings, clock::ClockBase};

/// The packet's clock: the settings' fixed clock in tests, else CLOCK_MONOTONIC at the last
/// tick (one jiffy of resolution is plenty for buckets of packets per second, ban lengths and
/// verification lifetimes).
pub struct Clock<'a> {
    settings: &'a Settings,
    /// The time once read, in ns.
    now_ns: Option<u64>,
}

impl<'a> Clock<'a> {
    /// A clock not yet read.
    #[inline(always)]
    pub const fn new(settings: &'a Settings) -> Clock<'a> {
        Clock {
            settings,
            now_ns: None,
        }
    }

    /// The current time in ns, read on first use.
    #[inline(always)]
    pub fn now_ns(&mut self) -> u64 {
        match self.now_ns {
            Some(now_ns) => now_ns,
            None => {
                // Read even under a fixed clock, so a test run times what a live packet costs.
                let now_ns = self.settings.now_ns(kernel_ns(&self.settings.clock));
                self.now_ns = Some(now_ns);
                now_ns
            }
        }
    }
}

/// CLOCK_MONOTONIC at the last tick: jiffies (one load, which the verifier inlines) through
/// the settings' clock base, userspace's calibration (see `filter_common::clock`), or, until
/// userspace has calibrated, the kernel's coarse clock (a helper call, about 20 ns more).
#[inline(always)]
fn kernel_ns(base: &ClockBase) -> u64 {
    if base.is_set() {
        // SAFETY: bpf_jiffies64 has no preconditions.
        base.now_ns(unsafe { bpf_jiffies64() })
    } else {
        // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
        unsafe { bpf_ktime_get_coarse_ns() }
    }
}
