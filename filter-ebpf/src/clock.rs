//! The current time for one packet: read from the kernel at most once, and only when a stage
//! needs it (a ban found, a bucket to refill, a verification to record). Most packets — an
//! established connection's, a listed source's — never read it.

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use filter_common::Settings;

/// The packet's clock: the settings' fixed clock in tests, else the kernel's coarse monotonic
/// clock (one tick of jiffy resolution is plenty for buckets of packets per second, ban lengths
/// and verification lifetimes, and it costs a memory read instead of a clock-source read).
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
                // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
                let now_ns = self.settings.now_ns(unsafe { bpf_ktime_get_coarse_ns() });
                self.now_ns = Some(now_ns);
                now_ns
            }
        }
    }
}
