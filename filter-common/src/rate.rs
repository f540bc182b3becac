//! Token buckets, per-source rate state, strikes and ban lengths: the arithmetic the XDP
//! program and the userspace reference model share. Integers only, saturating everywhere, no
//! panics, so the same code passes the verifier and host tests.
//!
//! A bucket is kept as a *theoretical arrival time* (the generic cell rate algorithm, GCRA):
//! one word per bucket, the time at which the bucket will be full again. A packet conforms
//! when, after its cost is added, that time lies no further ahead than the burst allows. This
//! is exactly a token bucket of `burst` units refilled at the rate, but its state is one word
//! that compare-and-swap can update, so every CPU shares one bucket with no lock and no lost
//! update, and a refused packet writes nothing (a flood over the limit only reads the word,
//! which its cache line can keep shared between CPUs).

use core::cell::Cell;

/// One nanosecond, in ticks: bucket times are kept in ns << `TICK_SHIFT`, so that a rate's
/// cost per unit (ns per packet or byte) keeps 6 bits of fraction (exact to 1/64 ns) while the
/// kernel clock fits for 2^58 ns, over nine years of uptime.
pub const TICK_SHIFT: u32 = 6;

/// Ticks per second.
pub const TICKS_PER_SECOND: u64 = 1_000_000_000 << TICK_SHIFT;

/// Attempts at a compare-and-swap before a packet is refused: other CPUs took from the same
/// bucket at the same instant each time, so it is as good as empty for this one. Bound needed
/// by the verifier, too.
pub const MAX_SWAP_ATTEMPTS: u32 = 4;

/// A 64-bit word that other CPUs may update at the same time: a field of a map value every
/// CPU shares. The XDP program implements it with the BPF atomic instructions (Rust's BPF target
/// has no compare-and-swap of its own); host code uses `AtomicU64`, or `Cell` where it owns the
/// value alone.
pub trait SharedWord {
    /// The word's current value.
    fn load(&self) -> u64;
    /// Stores `new` if the word still holds `old`; returns the value it held either way, `Ok`
    /// when the store happened.
    fn compare_exchange(&self, old: u64, new: u64) -> Result<u64, u64>;
}

impl SharedWord for Cell<u64> {
    #[inline(always)]
    fn load(&self) -> u64 {
        self.get()
    }

    #[inline(always)]
    fn compare_exchange(&self, old: u64, new: u64) -> Result<u64, u64> {
        let current = self.get();
        if current == old {
            self.set(new);
            Ok(current)
        } else {
            Err(current)
        }
    }
}

#[cfg(not(target_arch = "bpf"))]
impl SharedWord for core::sync::atomic::AtomicU64 {
    fn load(&self) -> u64 {
        self.load(core::sync::atomic::Ordering::Relaxed)
    }

    fn compare_exchange(&self, old: u64, new: u64) -> Result<u64, u64> {
        use core::sync::atomic::Ordering::Relaxed;
        self.compare_exchange(old, new, Relaxed, Relaxed)
    }
}

/// `now_ns` in ticks.
#[inline(always)]
pub const fn ticks(now_ns: u64) -> u64 {
    now_ns.wrapping_shl(TICK_SHIFT)
}

/// `a * b`, or `u64::MAX` when the product might not fit in 63 bits. `u64::saturating_mul`
/// (and any `a > MAX / b` check, which LLVM rewrites into one) lowers to a 128-bit multiply,
/// `__multi3`, that the BPF backend cannot call. Saturating a little early is harmless here:
/// every product is compared with a bucket capacity far below 2^63.
#[inline(always)]
pub const fn mul_saturating(a: u64, b: u64) -> u64 {
    // Bits needed by the product are at most bits(a) + bits(b).
    if a == 0 || b == 0 {
        0
    } else if a.leading_zeros() + b.leading_zeros() >= 65 {
        a.wrapping_mul(b)
    } else {
        u64::MAX
    }
}

/// A rate and a burst. A `rate` of 0 means unlimited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    /// Packets per second.
    pub pps: u64,
    /// Packets allowed at once.
    pub burst_packets: u64,
    /// Bytes per second.
    pub bps: u64,
    /// Bytes allowed at once.
    pub burst_bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Limit>() == 32);
#[cfg(feature = "user")]
unsafe impl aya::Pod for Limit {}

/// A [`Limit`] compiled for the program (userspace does the divisions): the cost of one unit
/// and the furthest ahead a bucket's time may run, in ticks. A cost of 0 means unlimited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pace {
    /// Ticks one packet costs (1 s / pps, rounded up so the rate is never exceeded).
    pub packet_ticks: u64,
    /// `burst_packets` packets' worth of ticks.
    pub packet_tolerance: u64,
    /// Ticks one byte costs (1 s / bps, rounded up).
    pub byte_ticks: u64,
    /// `burst_bytes` bytes' worth of ticks.
    pub byte_tolerance: u64,
}
const _: () = assert!(core::mem::size_of::<Pace>() == 32);
#[cfg(feature = "user")]
unsafe impl aya::Pod for Pace {}

impl Pace {
    /// The pace of `limit` (userspace only: it divides).
    pub const fn of(limit: &Limit) -> Pace {
        let packet_ticks = cost_ticks(limit.pps);
        let byte_ticks = cost_ticks(limit.bps);
        Pace {
            packet_ticks,
            packet_tolerance: mul_saturating(limit.burst_packets, packet_ticks),
            byte_ticks,
            byte_tolerance: mul_saturating(limit.burst_bytes, byte_ticks),
        }
    }

    /// Whether this pace limits anything.
    #[inline(always)]
    pub const fn is_limited(&self) -> bool {
        self.packet_ticks != 0 || self.byte_ticks != 0
    }
}

/// Ticks per unit at `rate` units per second, at least 1; 0 for a rate of 0 (unlimited).
const fn cost_ticks(rate: u64) -> u64 {
    if rate == 0 {
        0
    } else {
        let ticks = TICKS_PER_SECOND.div_ceil(rate);
        if ticks == 0 { 1 } else { ticks }
    }
}

/// The bucket time after a packet of `cost` ticks arrives at `now` (ticks) on a bucket whose
/// time is `time`, or `None` if that would run more than `tolerance` ahead of `now` (the
/// bucket holds less than `cost`).
#[inline(always)]
pub const fn conform(time: u64, now: u64, cost: u64, tolerance: u64) -> Option<u64> {
    let start = if time > now { time } else { now };
    let next = start.saturating_add(cost);
    if next - now <= tolerance {
        Some(next)
    } else {
        None
    }
}

/// Buckets for packets and bytes, with the same semantics for per-source and aggregate use:
/// each holds its bucket time in ticks. All-zero buckets are full.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    /// The packet bucket's time.
    pub packets: u64,
    /// The byte bucket's time.
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Buckets>() == 16);
#[cfg(feature = "user")]
unsafe impl aya::Pod for Buckets {}

impl Buckets {
    /// The later of the two buckets' times: how recently their owner was active.
    #[inline(always)]
    pub const fn latest(&self) -> u64 {
        if self.packets > self.bytes {
            self.packets
        } else {
            self.bytes
        }
    }

    /// Full buckets at `now_ns`.
    pub const fn full(now_ns: u64) -> Buckets {
        Buckets {
            packets: ticks(now_ns),
            bytes: ticks(now_ns),
        }
    }

    /// Takes one packet of `len` bytes at `now_ns` if both buckets hold enough; returns
    /// whether the packet is within `pace`. Refusal takes nothing. A cost of 0 leaves that
    /// bucket out of the decision.
    #[inline(always)]
    pub fn admit(&mut self, pace: &Pace, now_ns: u64, len: u64) -> bool {
        admit_shared(
            Cell::from_mut(&mut self.packets),
            Cell::from_mut(&mut self.bytes),
            pace,
            now_ns,
            len,
        )
    }
}

/// [`Buckets::admit`] on buckets other CPUs may update at the same time (a map value shared
/// by every CPU): each bucket is claimed by compare-and-swap, so no update is lost and the
/// limit holds across CPUs. If the byte bucket refuses after the packet bucket was taken,
/// that one packet's token is lost; the limit is never exceeded.
#[inline(always)]
pub fn admit_shared<W: SharedWord>(
    packets: &W,
    bytes: &W,
    pace: &Pace,
    now_ns: u64,
    len: u64,
) -> bool {
    let now = ticks(now_ns);
    let byte_cost = mul_saturating(len, pace.byte_ticks);
    // Check both before taking from either, so a packet the byte bucket refuses costs no
    // packet token (unless another CPU changed it between the two).
    if pace.packet_ticks != 0
        && conform(
            settle(packets, now, pace.packet_tolerance),
            now,
            pace.packet_ticks,
            pace.packet_tolerance,
        )
        .is_none()
    {
        return false;
    }
    if pace.byte_ticks != 0
        && conform(
            settle(bytes, now, pace.byte_tolerance),
            now,
            byte_cost,
            pace.byte_tolerance,
        )
        .is_none()
    {
        return false;
    }
    (pace.packet_ticks == 0 || take(packets, now, pace.packet_ticks, pace.packet_tolerance))
        && (pace.byte_ticks == 0 || take(bytes, now, byte_cost, pace.byte_tolerance))
}

/// `bucket`'s time, brought back to at most a whole burst ahead of `now` under the current
/// pace (an empty bucket). Only a time set under another pace can lie further ahead: a slower
/// rate makes each packet cost more, so a burst taken at 10 pps leaves the time minutes ahead,
/// and after the limit is raised again the bucket would refuse everything until then. Such a
/// time is stored back once, by compare-and-swap (a CPU that loses the race finds it settled),
/// so the bucket refills at the new rate from empty; a bucket kept under one pace never needs
/// it, and a flood's refused packets still write nothing.
#[inline(always)]
fn settle<W: SharedWord>(bucket: &W, now: u64, tolerance: u64) -> u64 {
    let time = bucket.load();
    let ceiling = now.saturating_add(tolerance);
    if time <= ceiling {
        return time;
    }
    match bucket.compare_exchange(time, ceiling) {
        Ok(_) => ceiling,
        Err(found) => found,
    }
}

/// Moves `bucket`'s time on by `cost` if it conforms, by compare-and-swap; false if it does
/// not conform or other CPUs won every attempt.
#[inline(always)]
fn take<W: SharedWord>(bucket: &W, now: u64, cost: u64, tolerance: u64) -> bool {
    update(bucket, |time| conform(time, now, cost, tolerance)).is_some()
}

/// Replaces `word`'s value with `next(value)` by compare-and-swap, retrying with the value
/// another CPU stored meanwhile, at most [`MAX_SWAP_ATTEMPTS`] times; returns the value
/// stored, or `None` if `next` refused the current value or other CPUs won every attempt.
#[inline(always)]
fn update<W: SharedWord>(word: &W, next: impl Fn(u64) -> Option<u64>) -> Option<u64> {
    let mut current = word.load();
    for _ in 0..MAX_SWAP_ATTEMPTS {
        let new = next(current)?;
        match word.compare_exchange(current, new) {
            Ok(_) => return Some(new),
            Err(found) => current = found,
        }
    }
    None
}

/// Per-source state for one traffic class: its buckets and its strike count. Updated by
/// atomics only, since every CPU may see the same source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    /// The source's buckets.
    pub buckets: Buckets,
    /// Over-limit packets in the current strike window (a whole word, so compare-and-swap
    /// can update it).
    pub strikes: u64,
    /// When the current strike window started, in ns.
    pub window_start_ns: u64,
}
const _: () = assert!(core::mem::size_of::<RateState>() == 32);
#[cfg(feature = "user")]
unsafe impl aya::Pod for RateState {}

impl RateState {
    /// A new source, seen first at `now_ns`: full buckets, no strikes.
    pub const fn new(now_ns: u64) -> RateState {
        RateState {
            buckets: Buckets::full(now_ns),
            strikes: 0,
            window_start_ns: now_ns,
        }
    }

    /// Records one over-limit packet at `now_ns`; returns whether the source has now earned a
    /// ban (`ban_after` strikes within one `window_ns`), and if so starts counting afresh.
    pub fn strike(&mut self, now_ns: u64, window_ns: u64, ban_after: u32) -> bool {
        strike_shared(
            Cell::from_mut(&mut self.strikes),
            Cell::from_mut(&mut self.window_start_ns),
            now_ns,
            window_ns,
            ban_after,
        )
    }
}

/// [`RateState::strike`] on a source's `strikes` and `window_start_ns` words, which other
/// CPUs may update at the same time. Exactly one CPU sees the strike that earns the ban; a
/// strike whose count loses every compare-and-swap to other CPUs' goes uncounted.
#[inline(always)]
pub fn strike_shared<W: SharedWord>(
    strikes: &W,
    window_start: &W,
    now_ns: u64,
    window_ns: u64,
    ban_after: u32,
) -> bool {
    let start = window_start.load();
    // The CPU that moves the window on restarts the count (unless other CPUs keep changing
    // it; then they restart it themselves).
    if now_ns.saturating_sub(start) > window_ns
        && window_start.compare_exchange(start, now_ns).is_ok()
    {
        let _ = update(strikes, |_| Some(0));
    }
    let Some(count) = update(strikes, |count| Some(count.saturating_add(1))) else {
        return false;
    };
    // Only the CPU whose reset succeeds bans; the others' strikes restart.
    if ban_after != 0 && count >= u64::from(ban_after) && strikes.compare_exchange(count, 0).is_ok()
    {
        let _ = window_start.compare_exchange(window_start.load(), now_ns);
        return true;
    }
    false
}

/// The length of a source's ban for its `offences`-th offence (0-based): `base` doubled per
/// earlier offence, capped at `max`.
pub const fn ban_length_ns(base_ns: u64, max_ns: u64, offences: u32) -> u64 {
    let shift = if offences < 32 { offences } else { 32 };
    let length = mul_saturating(base_ns, 1u64 << shift);
    if length < max_ns { length } else { max_ns }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    const LIMIT: Limit = Limit {
        pps: 10,
        burst_packets: 5,
        bps: 0,
        burst_bytes: 0,
    };

    #[test]
    fn burst_then_rate() {
        let pace = Pace::of(&LIMIT);
        let mut buckets = Buckets::full(0);
        for _ in 0..5 {
            assert!(buckets.admit(&pace, 0, 100));
        }
        assert!(!buckets.admit(&pace, 0, 100), "burst spent");
        // 10 pps: one token every 100 ms.
        assert!(!buckets.admit(&pace, 99_999_999, 100));
        assert!(buckets.admit(&pace, 100_000_000, 100));
        assert!(!buckets.admit(&pace, 100_000_000, 100));
        // A long quiet period refills only up to the burst.
        for _ in 0..5 {
            assert!(buckets.admit(&pace, 60 * SECOND, 100));
        }
        assert!(!buckets.admit(&pace, 60 * SECOND, 100));
    }

    #[test]
    fn a_raised_limit_applies_at_once_after_a_lowered_one_was_spent() {
        let slow = Pace::of(&Limit {
            pps: 10,
            burst_packets: 2_000,
            bps: 0,
            burst_bytes: 0,
        });
        let fast = Pace::of(&Limit {
            pps: 1_000,
            burst_packets: 2_000,
            bps: 0,
            burst_bytes: 0,
        });
        let mut buckets = Buckets::default();
        for _ in 0..2_000 {
            assert!(buckets.admit(&slow, 0, 100));
        }
        // At 10 pps the burst left the bucket's time 200 s ahead; at 1,000 pps a whole burst
        // is 2 s, so the bucket is empty under the new pace and refills from there.
        assert!(!buckets.admit(&fast, 0, 100), "empty");
        assert!(
            !buckets.admit(&fast, 999_999, 100),
            "a packet's worth not yet refilled"
        );
        assert!(
            buckets.admit(&fast, 1_000_000, 100),
            "refilled at the new rate"
        );
        assert!(!buckets.admit(&fast, 1_000_000, 100));
        assert!(
            buckets.admit(&fast, 3 * SECOND, 100),
            "a new burst two seconds on"
        );
    }

    #[test]
    fn all_zero_buckets_are_full() {
        let pace = Pace::of(&LIMIT);
        let mut buckets = Buckets::default();
        let now = 3_600 * SECOND;
        for _ in 0..5 {
            assert!(buckets.admit(&pace, now, 100));
        }
        assert!(!buckets.admit(&pace, now, 100));
    }

    #[test]
    fn byte_bucket_limits_large_packets() {
        let limit = Limit {
            pps: 0,
            burst_packets: 0,
            bps: 1000,
            burst_bytes: 1500,
        };
        let pace = Pace::of(&limit);
        let mut buckets = Buckets::full(0);
        assert!(buckets.admit(&pace, 0, 1000));
        assert!(!buckets.admit(&pace, 0, 1000), "only 500 bytes left");
        assert!(buckets.admit(&pace, 0, 500));
        assert!(
            buckets.admit(&pace, SECOND, 1000),
            "one second refills 1000"
        );
    }

    #[test]
    fn rates_that_do_not_divide_a_second_hold_over_a_long_run() {
        // A packet costs 1 s / rate rounded up to 1/64 ns, so the bucket never admits more
        // than the rate, and less by at most that rounding (a few parts per million at
        // 1 Mpps). Offered four times the rate, it admits rate * seconds plus its burst of 2
        // (the burst absorbs the offered packets' grid).
        for (pps, seconds) in [(3, 1_000), (7, 1_000), (1_000_003, 2)] {
            let pace = Pace::of(&Limit {
                pps,
                burst_packets: 2,
                bps: 0,
                burst_bytes: 0,
            });
            let mut buckets = Buckets::full(0);
            let mut admitted = 0u64;
            let step = (SECOND / pps / 4).max(1);
            let mut now = 0;
            while now <= seconds * SECOND {
                if buckets.admit(&pace, now, 64) {
                    admitted += 1;
                }
                now += step;
            }
            let expected = pps * seconds + 2;
            let slack = (expected / 100_000).max(1);
            assert!(
                admitted <= expected && admitted + slack >= expected,
                "{pps} pps: {admitted} admitted in {seconds} s, expected {expected} (less {slack} at most)"
            );
        }
    }

    #[test]
    fn unlimited_admits_everything() {
        let mut buckets = Buckets::default();
        for now in 0..1000 {
            assert!(buckets.admit(&Pace::default(), now, 9000));
        }
        assert_eq!(buckets, Buckets::default(), "nothing written");
    }

    #[test]
    fn refused_packets_take_nothing() {
        let pace = Pace::of(&Limit {
            pps: 1,
            burst_packets: 1,
            bps: 1,
            burst_bytes: 100,
        });
        let mut buckets = Buckets::full(0);
        assert!(!buckets.admit(&pace, 0, 101), "too many bytes");
        assert_eq!(buckets, Buckets::full(0), "packet token kept");
        assert!(buckets.admit(&pace, 0, 100));
    }

    #[test]
    fn strikes_ban_within_a_window_only() {
        let mut state = RateState::new(0);
        assert!(!state.strike(0, 10, 3));
        assert!(!state.strike(5, 10, 3));
        assert!(state.strike(10, 10, 3), "third strike in the window");
        assert_eq!(state.strikes, 0);
        assert!(!state.strike(11, 10, 3));
        assert!(!state.strike(30, 10, 3), "window expired: count restarts");
        assert_eq!(state.strikes, 1);
        assert!(!RateState::new(0).strike(0, 10, 0), "0 disables bans");
    }

    #[test]
    fn a_shared_bucket_loses_no_update_across_threads() {
        // Four threads take from one bucket of 1,000 packets at a frozen clock: exactly
        // 1,000 get through, however the threads interleave.
        let pace = Pace::of(&Limit {
            pps: 1,
            burst_packets: 1_000,
            bps: 0,
            burst_bytes: 0,
        });
        let cell = std::sync::atomic::AtomicU64::new(0);
        let admitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        let now = ticks(SECOND);
                        if take(&cell, now, pace.packet_ticks, pace.packet_tolerance) {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(std::sync::atomic::Ordering::Relaxed), 1_000);
    }

    #[test]
    fn multiplication_saturates() {
        assert_eq!(mul_saturating(0, u64::MAX), 0);
        assert_eq!(mul_saturating(3, 7), 21);
        assert_eq!(mul_saturating(1 << 31, 1 << 30), 1 << 61);
        assert_eq!(
            mul_saturating(1 << 31, 1 << 31),
            u64::MAX,
            "might need 64 bits"
        );
        assert_eq!(mul_saturating(u64::MAX, 1), u64::MAX);
        assert_eq!(mul_saturating(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn ban_lengths_double_up_to_the_cap() {
        assert_eq!(ban_length_ns(60, 1000, 0), 60);
        assert_eq!(ban_length_ns(60, 1000, 1), 120);
        assert_eq!(ban_length_ns(60, 1000, 4), 960);
        assert_eq!(ban_length_ns(60, 1000, 5), 1000);
        assert_eq!(ban_length_ns(60, 1000, u32::MAX), 1000);
        assert_eq!(ban_length_ns(u64::MAX, u64::MAX, 3), u64::MAX);
    }
}
