//! The program's clock, read from jiffies.
//!
//! The program needs the time for buckets, bans and verifications, and it used to read it
//! with `bpf_ktime_get_coarse_ns`, a helper call that took about 20 ns per packet on these
//! machines (the call and its return thunk, then the timekeeper's sequence count). The
//! verifier inlines `bpf_jiffies64` into one load, and jiffies advance exactly once per
//! `TICK_NSEC` of CLOCK_MONOTONIC (the kernel derives them from it), so `jiffies × jiffy_ns +
//! base_ns` is CLOCK_MONOTONIC at the last tick: the coarse clock's own resolution and lag,
//! for a load and a multiply. Userspace measures the two numbers once ([`calibrate`], from
//! samples the `moat_clock` program takes) and writes them into the settings
//! ([`crate::Settings::clock`]); until it has, the program reads the coarse clock as before.

/// What turns jiffies into ns on CLOCK_MONOTONIC: [`crate::Settings::clock`].
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

/// The longest gap between the two samples around an advance of jiffies that times a tick.
/// The tick itself takes the sampler's CPU away: on these VMs the samples around an advance
/// lie 20–150 µs apart against 1 µs elsewhere, and more while softirq work follows each tick
/// (RCU freeing a large trie, network receive), so the limit is well above that and well
/// below a stolen or preempted stretch of several ms. A long gap only widens the bounds.
pub const ADVANCE_GAP_NS: u64 = 2_000_000;

/// How late after its tick the kernel may be seen to advance jiffies (the tick interrupt's
/// latency), allowed for when bounding the tick length.
pub const UPDATE_SLACK_NS: u64 = 100_000;

/// Why samples could not calibrate the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalibrateError {
    /// Jiffies did not advance at least twice over the samples.
    TooFewTicks,
    /// The samples bound the tick length too loosely to tell the known rates apart: more than
    /// one of [`TICK_RATES`] fits (sampling was too sparse, e.g. preempted; sample longer).
    Ambiguous {
        /// The shortest tick length the samples allow, in ns.
        low_ns: u64,
        /// The longest, in ns.
        high_ns: u64,
    },
    /// No tick length of [`TICK_RATES`] fits the samples.
    UnknownTick {
        /// The shortest tick length the samples allow, in ns.
        low_ns: u64,
        /// The longest, in ns.
        high_ns: u64,
    },
}

/// Where jiffies were seen to advance: the last sample before and the first after.
#[derive(Clone, Copy)]
struct Advance {
    before: ClockSample,
    after: ClockSample,
}

/// The clock base from samples in time order. The tick length is bounded by the first and last
/// time jiffies were seen to advance by one between samples at most [`ADVANCE_GAP_NS`] apart
/// (each such tick lies between the samples around it, or up to [`UPDATE_SLACK_NS`] before),
/// and must single out one of [`TICK_RATES`]; the base then puts every sample at or after the
/// start of its jiffy (the smallest `mono_ns - jiffies × jiffy_ns` of them). Sparse samples widen the bounds until they are refused, never rounded
/// to a wrong rate.
pub fn calibrate(samples: &[ClockSample]) -> Result<ClockBase, CalibrateError> {
    let mut first: Option<Advance> = None;
    let mut last: Option<Advance> = None;
    for pair in samples.windows(2) {
        let [before, after] = [pair[0], pair[1]];
        // Only an advance by one jiffy seen between two close samples says when a tick came: a
        // jump of several (jiffies caught up after the tick stopped) or a long gap (the sampler
        // or the machine was preempted) does not.
        if after.jiffies == before.jiffies.wrapping_add(1)
            && after.mono_ns.saturating_sub(before.mono_ns) <= ADVANCE_GAP_NS
        {
            let advance = Advance { before, after };
            first.get_or_insert(advance);
            last = Some(advance);
        }
    }
    let (Some(first), Some(last)) = (first, last) else {
        return Err(CalibrateError::TooFewTicks);
    };
    // Jiffy `first.after.jiffies` began between `first.before` (less the slack) and
    // `first.after`; likewise the last one.
    let ticks = last.after.jiffies - first.after.jiffies;
    if ticks == 0 {
        return Err(CalibrateError::TooFewTicks);
    }
    let low_ns = last
        .before
        .mono_ns
        .saturating_sub(UPDATE_SLACK_NS)
        .saturating_sub(first.after.mono_ns)
        / ticks;
    let high_ns = last
        .after
        .mono_ns
        .saturating_sub(first.before.mono_ns.saturating_sub(UPDATE_SLACK_NS))
        / ticks;
    let mut fitting = TICK_RATES
        .iter()
        .map(|&hz| tick_ns(hz))
        .filter(|&tick| (low_ns..=high_ns).contains(&tick));
    let jiffy_ns = match (fitting.next(), fitting.next()) {
        (Some(tick), None) => tick,
        (None, _) => return Err(CalibrateError::UnknownTick { low_ns, high_ns }),
        (Some(_), Some(_)) => return Err(CalibrateError::Ambiguous { low_ns, high_ns }),
    };
    let offset = |sample: &ClockSample| {
        sample
            .mono_ns
            .wrapping_sub(sample.jiffies.wrapping_mul(jiffy_ns))
    };
    // Every offset lies within a jiffy or so of the first, so their differences from it,
    // taken as signed numbers, order them despite the wrap.
    let reference = offset(&first.after);
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
        assert!(
            matches!(calibrate(&odd), Err(CalibrateError::UnknownTick { low_ns, high_ns })
                if low_ns <= 2_000_000 && 2_000_000 <= high_ns),
            "{:?}",
            calibrate(&odd)
        );
    }

    #[test]
    fn sparse_samples_are_refused_never_rounded_to_a_wrong_rate() {
        // A 300 Hz kernel sampled every 1.1 ms over two ticks: too sparse to time a tick
        // (and the bounds would allow both 300 and 250 Hz), so nothing is chosen.
        let tick = tick_ns(300);
        let sparse = sampled(tick, 9_000, 0, 500_000, 1_100_000, 7);
        assert!(calibrate(&sparse).is_err(), "{:?}", calibrate(&sparse));
        // Preempted for 30 ms between dense stretches, over enough ticks to tell: exact.
        let mut gappy = sampled(tick, 9_000, 0, 100_000, 5_000, 2_000);
        gappy.extend(sampled(tick, 9_000, 0, 40_000_000, 5_000, 2_000));
        assert_eq!(calibrate(&gappy).map(|clock| clock.jiffy_ns), Ok(tick));
    }

    #[test]
    fn ticks_followed_by_softirq_work_still_time_the_tick() {
        // Dense samples, except that each tick's handling and the softirq work after it keep
        // the sampler away for 400 µs (seen after a 1,000,000-prefix trie was freed).
        let tick = tick_ns(250);
        let samples: std::vec::Vec<ClockSample> = sampled(tick, 100, 0, 1_000, 5_000, 3_000)
            .into_iter()
            .filter(|sample| (sample.mono_ns % tick) >= 400_000)
            .collect();
        assert_eq!(calibrate(&samples).map(|clock| clock.jiffy_ns), Ok(tick));
    }

    #[test]
    fn jumps_and_long_gaps_time_no_tick() {
        let tick = tick_ns(250);
        // Jiffies stood still for 20 ms (the tick stopped) and then caught up by five at once,
        // just after the last close sample: only the close advances by one count.
        let mut samples = sampled(tick, 100, 0, 1_000, 5_000, 2_000);
        let stale = ClockSample {
            jiffies: samples[samples.len() - 1].jiffies,
            mono_ns: samples[samples.len() - 1].mono_ns + 20_000_000,
        };
        let caught_up = ClockSample {
            jiffies: stale.jiffies + 5,
            mono_ns: stale.mono_ns + 1_000,
        };
        samples.extend([stale, caught_up]);
        assert_eq!(calibrate(&samples).map(|clock| clock.jiffy_ns), Ok(tick));
        // Advances seen only across long gaps time nothing.
        let sparse = sampled(tick, 100, 0, 1_000, 3_000_000, 20);
        assert_eq!(calibrate(&sparse), Err(CalibrateError::TooFewTicks));
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
