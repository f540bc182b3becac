//! The program's clock, read from jiffies.
//!
//! The program needs the time for buckets, bans and verifications, and it used to read it
//! with `bpf_ktime_get_coarse_ns`, a helper call that took about 20 ns per packet on these
//! machines (the call and its return thunk, then the timekeeper's sequence count). The
//! verifier inlines `bpf_jiffies64` into one load, and jiffies advance exactly once per
//! `TICK_NSEC` of CLOCK_MONOTONIC (the kernel derives them from it), so `jiffies × jiffy_ns +
//! base_ns` is CLOCK_MONOTONIC at the last tick: the coarse clock's own resolution and lag,
//! for a load and a multiply. Userspace measures the two numbers once ([`calibrate`], from
//! samples the `moat_clock` program takes) and writes them to `CLOCK`; until it has, the
//! program reads the coarse clock as before.

/// What turns jiffies into ns on CLOCK_MONOTONIC: the value of the `CLOCK` map's one entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockBase {
    /// Nanoseconds per jiffy (the kernel's `TICK_NSEC`); 0 until userspace calibrates.
    pub jiffy_ns: u64,
    /// CLOCK_MONOTONIC when jiffies were zero, modulo 2^64 (jiffies start near 2^32).
    pub base_ns: u64,
}
const _: () = assert!(core::mem::size_of::<ClockBase>() == 16);
#[cfg(feature = "user")]
unsafe impl aya::Pod for ClockBase {}

impl ClockBase {
    /// Whether userspace has calibrated this clock.
    #[inline(always)]
    pub const fn is_set(&self) -> bool {
        self.jiffy_ns != 0
    }

    /// CLOCK_MONOTONIC at the start of jiffy `jiffies`, in ns.
    #[inline(always)]
    pub const fn now_ns(&self, jiffies: u64) -> u64 {
        jiffies
            .wrapping_mul(self.jiffy_ns)
            .wrapping_add(self.base_ns)
    }
}

/// Tick rates (`CONFIG_HZ`) the kernel can be built with on the architectures moat runs on.
pub const TICK_RATES: [u64; 4] = [100, 250, 300, 1000];

/// The kernel's `TICK_NSEC` at `hz` ticks per second.
pub const fn tick_ns(hz: u64) -> u64 {
    (1_000_000_000 + hz / 2) / hz
}

/// One sample from the `moat_clock` program: jiffies and CLOCK_MONOTONIC (ns) read together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockSample {
    /// `bpf_jiffies64()`.
    pub jiffies: u64,
    /// `bpf_ktime_get_ns()`, right after.
    pub mono_ns: u64,
}

/// Why samples could not calibrate the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalibrateError {
    /// Jiffies did not advance at least twice over the samples.
    TooFewTicks,
    /// The measured tick length matches none of [`TICK_RATES`] within 10%.
    UnknownTick {
        /// The measured length, in ns.
        measured_ns: u64,
    },
}

/// The clock base from samples in time order: the tick length from the first and last time
/// jiffies were seen to advance (each found to within one sample's spacing), rounded to a
/// known tick rate's, then the base that puts every sample at or after the start of its jiffy
/// (the smallest `mono_ns - jiffies × jiffy_ns` of them).
pub fn calibrate(samples: &[ClockSample]) -> Result<ClockBase, CalibrateError> {
    let mut first_tick: Option<ClockSample> = None;
    let mut last_tick: Option<ClockSample> = None;
    let mut previous: Option<ClockSample> = None;
    for &sample in samples {
        if previous.is_some_and(|previous| sample.jiffies > previous.jiffies) {
            if first_tick.is_none() {
                first_tick = Some(sample);
            }
            last_tick = Some(sample);
        }
        previous = Some(sample);
    }
    let (Some(first), Some(last)) = (first_tick, last_tick) else {
        return Err(CalibrateError::TooFewTicks);
    };
    let ticks = last.jiffies - first.jiffies;
    if ticks == 0 {
        return Err(CalibrateError::TooFewTicks);
    }
    let measured_ns = last.mono_ns.saturating_sub(first.mono_ns) / ticks;
    let mut jiffy_ns = 0;
    for hz in TICK_RATES {
        let tick = tick_ns(hz);
        if measured_ns.abs_diff(tick) <= tick / 10 {
            jiffy_ns = tick;
        }
    }
    if jiffy_ns == 0 {
        return Err(CalibrateError::UnknownTick { measured_ns });
    }
    let offset = |sample: &ClockSample| {
        sample
            .mono_ns
            .wrapping_sub(sample.jiffies.wrapping_mul(jiffy_ns))
    };
    // Every offset lies within a jiffy or so of the first, so their differences from it,
    // taken as signed numbers, order them despite the wrap.
    let reference = offset(&first);
    let lowest = samples
        .iter()
        .map(|sample| offset(sample).wrapping_sub(reference) as i64)
        .min()
        .unwrap_or(0);
    Ok(ClockBase {
        jiffy_ns,
        base_ns: reference.wrapping_add(lowest as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples every `step_ns` from `start_ns` on a kernel ticking every `tick` ns, whose
    /// jiffies were `jiffies0` at CLOCK_MONOTONIC `tick0_ns`.
    fn sampled(
        tick: u64,
        jiffies0: u64,
        tick0_ns: u64,
        start_ns: u64,
        step_ns: u64,
        n: u64,
    ) -> std::vec::Vec<ClockSample> {
        (0..n)
            .map(|i| {
                let mono_ns = start_ns + i * step_ns;
                ClockSample {
                    jiffies: jiffies0 + (mono_ns - tick0_ns) / tick,
                    mono_ns,
                }
            })
            .collect()
    }

    #[test]
    fn finds_each_tick_rate_and_the_start_of_each_jiffy() {
        for hz in TICK_RATES {
            let tick = tick_ns(hz);
            // Jiffies near 2^32 (where the kernel starts them) at 12 s of uptime.
            let jiffies0 = (1u64 << 32) - 300 * hz + 12 * hz;
            let tick0_ns = 12_000_000_000;
            let samples = sampled(
                tick,
                jiffies0,
                tick0_ns,
                tick0_ns + 1_234_567,
                7_000,
                30_000,
            );
            let clock = calibrate(&samples).expect("calibrates");
            assert_eq!(clock.jiffy_ns, tick, "HZ={hz}");
            for sample in &samples {
                let now = clock.now_ns(sample.jiffies);
                assert!(
                    now <= sample.mono_ns,
                    "HZ={hz}: {now} after {}",
                    sample.mono_ns
                );
                assert!(
                    sample.mono_ns - now < tick,
                    "HZ={hz}: more than a jiffy behind"
                );
            }
            // The start of a jiffy, to within the samples' spacing.
            let start = clock.now_ns(jiffies0 + 10);
            assert!(
                start.abs_diff(tick0_ns + 10 * tick) <= 7_000,
                "HZ={hz}: {start}"
            );
        }
    }

    #[test]
    fn refuses_too_few_ticks_and_unknown_rates() {
        let still = sampled(tick_ns(100), 5_000, 0, 1_000, 1_000, 100);
        assert_eq!(calibrate(&still), Err(CalibrateError::TooFewTicks));
        assert_eq!(calibrate(&[]), Err(CalibrateError::TooFewTicks));
        let odd = sampled(2_000_000, 5_000, 0, 1_000, 10_000, 10_000);
        assert_eq!(
            calibrate(&odd),
            Err(CalibrateError::UnknownTick {
                measured_ns: 2_000_000
            })
        );
    }

    #[test]
    fn an_uncalibrated_clock_says_so() {
        assert!(!ClockBase::default().is_set());
        let clock = ClockBase {
            jiffy_ns: tick_ns(250),
            base_ns: 0u64.wrapping_sub(4_000_000 * (1 << 32)),
        };
        assert!(clock.is_set());
        assert_eq!(clock.now_ns((1 << 32) + 3), 12_000_000);
    }
}
