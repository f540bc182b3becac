//! Token buckets, per-source rate state, strikes and ban lengths: the arithmetic the XDP
//! program and the userspace reference model share. Integers only, saturating everywhere, no
//! panics, so the same code passes the verifier and host tests.

/// Tokens are kept in nano-units (one packet or byte = 1e9), so a rate in units per second
/// times elapsed nanoseconds adds tokens exactly, with no division on the hot path.
pub const NANO_UNITS: u64 = 1_000_000_000;

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

/// One token bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens in nano-units.
    pub tokens: u64,
    /// When the bucket was last refilled, in ns.
    pub last_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Bucket>() == 16);
#[cfg(feature = "user")]
unsafe impl aya::Pod for Bucket {}

impl Bucket {
    /// A full bucket of `burst` units at `now_ns`.
    pub const fn full(burst: u64, now_ns: u64) -> Bucket {
        Bucket {
            tokens: mul_saturating(burst, NANO_UNITS),
            last_ns: now_ns,
        }
    }

    /// The tokens after refilling at `rate` per second up to `burst`, without taking any.
    pub const fn refilled(&self, now_ns: u64, rate: u64, burst: u64) -> u64 {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        let cap = mul_saturating(burst, NANO_UNITS);
        let tokens = self.tokens.saturating_add(mul_saturating(elapsed, rate));
        if tokens < cap { tokens } else { cap }
    }
}

/// Buckets for packets and bytes, with the same semantics for per-source and aggregate use.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    /// The packet bucket.
    pub packets: Bucket,
    /// The byte bucket.
    pub bytes: Bucket,
}
const _: () = assert!(core::mem::size_of::<Buckets>() == 32);
#[cfg(feature = "user")]
unsafe impl aya::Pod for Buckets {}

impl Buckets {
    /// Full buckets for `limit` at `now_ns`.
    pub const fn full(limit: &Limit, now_ns: u64) -> Buckets {
        Buckets {
            packets: Bucket::full(limit.burst_packets, now_ns),
            bytes: Bucket::full(limit.burst_bytes, now_ns),
        }
    }

    /// Refills both buckets to `now_ns` and takes one packet of `len` bytes if both hold
    /// enough; returns whether the packet is within `limit`. Refusal takes nothing. A rate of 0
    /// leaves that bucket out of the decision.
    pub fn admit(&mut self, limit: &Limit, now_ns: u64, len: u64) -> bool {
        let packets = self
            .packets
            .refilled(now_ns, limit.pps, limit.burst_packets);
        let bytes = self.bytes.refilled(now_ns, limit.bps, limit.burst_bytes);
        let packet_cost = NANO_UNITS;
        let byte_cost = mul_saturating(len, NANO_UNITS);
        let packets_ok = limit.pps == 0 || packets >= packet_cost;
        let bytes_ok = limit.bps == 0 || bytes >= byte_cost;
        let admitted = packets_ok && bytes_ok;
        self.packets.tokens = if admitted && limit.pps != 0 {
            packets - packet_cost
        } else {
            packets
        };
        self.bytes.tokens = if admitted && limit.bps != 0 {
            bytes - byte_cost
        } else {
            bytes
        };
        // Time never runs backwards for a bucket (CPUs' clocks may differ by a few ns).
        if now_ns > self.packets.last_ns {
            self.packets.last_ns = now_ns;
        }
        if now_ns > self.bytes.last_ns {
            self.bytes.last_ns = now_ns;
        }
        admitted
    }
}

/// Whether `limit` limits anything.
pub const fn is_limited(limit: &Limit) -> bool {
    limit.pps != 0 || limit.bps != 0
}

/// Per-source state for one traffic class: its buckets and its strike count.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    /// The source's buckets.
    pub buckets: Buckets,
    /// Over-limit packets in the current strike window.
    pub strikes: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// When the current strike window started, in ns.
    pub window_start_ns: u64,
}
const _: () = assert!(core::mem::size_of::<RateState>() == 48);
#[cfg(feature = "user")]
unsafe impl aya::Pod for RateState {}

impl RateState {
    /// A new source, seen first at `now_ns`: full buckets, no strikes.
    pub const fn new(limit: &Limit, now_ns: u64) -> RateState {
        RateState {
            buckets: Buckets::full(limit, now_ns),
            strikes: 0,
            _pad: 0,
            window_start_ns: now_ns,
        }
    }

    /// Records one over-limit packet at `now_ns`; returns whether the source has now earned a
    /// ban (`ban_after` strikes within one `window_ns`), and if so starts counting afresh.
    pub fn strike(&mut self, now_ns: u64, window_ns: u64, ban_after: u32) -> bool {
        if now_ns.saturating_sub(self.window_start_ns) > window_ns {
            self.strikes = 0;
            self.window_start_ns = now_ns;
        }
        self.strikes = self.strikes.saturating_add(1);
        if ban_after != 0 && self.strikes >= ban_after {
            self.strikes = 0;
            self.window_start_ns = now_ns;
            true
        } else {
            false
        }
    }
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

    const LIMIT: Limit = Limit {
        pps: 10,
        burst_packets: 5,
        bps: 0,
        burst_bytes: 0,
    };

    #[test]
    fn burst_then_rate() {
        let mut buckets = Buckets::full(&LIMIT, 0);
        for _ in 0..5 {
            assert!(buckets.admit(&LIMIT, 0, 100));
        }
        assert!(!buckets.admit(&LIMIT, 0, 100), "burst spent");
        // 10 pps: one token every 100 ms.
        assert!(!buckets.admit(&LIMIT, 99_999_999, 100));
        assert!(buckets.admit(&LIMIT, 100_000_000, 100));
        assert!(!buckets.admit(&LIMIT, 100_000_000, 100));
        // A long quiet period refills only up to the burst.
        for _ in 0..5 {
            assert!(buckets.admit(&LIMIT, 60 * NANO_UNITS, 100));
        }
        assert!(!buckets.admit(&LIMIT, 60 * NANO_UNITS, 100));
    }

    #[test]
    fn byte_bucket_limits_large_packets() {
        let limit = Limit {
            pps: 0,
            burst_packets: 0,
            bps: 1000,
            burst_bytes: 1500,
        };
        let mut buckets = Buckets::full(&limit, 0);
        assert!(buckets.admit(&limit, 0, 1000));
        assert!(!buckets.admit(&limit, 0, 1000), "only 500 bytes left");
        assert!(buckets.admit(&limit, 0, 500));
        assert!(
            buckets.admit(&limit, NANO_UNITS, 1000),
            "one second refills 1000"
        );
    }

    #[test]
    fn unlimited_admits_everything() {
        let mut buckets = Buckets::default();
        for now in 0..1000 {
            assert!(buckets.admit(&Limit::default(), now, 9000));
        }
    }

    #[test]
    fn refused_packets_take_nothing() {
        let limit = Limit {
            pps: 1,
            burst_packets: 1,
            bps: 1,
            burst_bytes: 100,
        };
        let mut buckets = Buckets::full(&limit, 0);
        assert!(!buckets.admit(&limit, 0, 101), "too many bytes");
        assert_eq!(buckets.packets.tokens, NANO_UNITS, "packet token kept");
        assert!(buckets.admit(&limit, 0, 100));
    }

    #[test]
    fn strikes_ban_within_a_window_only() {
        let mut state = RateState::new(&LIMIT, 0);
        assert!(!state.strike(0, 10, 3));
        assert!(!state.strike(5, 10, 3));
        assert!(state.strike(10, 10, 3), "third strike in the window");
        assert_eq!(state.strikes, 0);
        assert!(!state.strike(11, 10, 3));
        assert!(!state.strike(30, 10, 3), "window expired: count restarts");
        assert_eq!(state.strikes, 1);
        assert!(
            !RateState::new(&LIMIT, 0).strike(0, 10, 0),
            "0 disables bans"
        );
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
