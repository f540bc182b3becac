//! Denylists of any size for the benchmark, the same on every run: distinct prefixes drawn by a
//! seeded xorshift generator, shaped like real blocklists (mostly single hosts, some networks).
//!
//! IPv4 prefixes are spread over unicast space (1.0.0.0–223.255.255.255) but never touch
//! 198.18.0.0/15, where the benchmark's sources live, so a listed prefix never catches a frame
//! by accident; IPv6 prefixes lie in 2001:db8:8000::/33. They are map keys only: no traffic is
//! ever sent to or from them.

use std::collections::HashSet;

use moat::cidr::Cidr;

/// A small, fast, seeded generator (xorshift64*): the same lists on every run.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (0 is replaced, xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `bound` (0 for a bound of 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }
}

/// Whether an IPv4 address lies in 198.18.0.0/15, the benchmark's own range.
fn is_bench_v4(addr: u32) -> bool {
    addr >> 17 == u32::from_be_bytes([198, 18, 0, 0]) >> 17
}

/// `count` distinct IPv4 prefixes: 70% /32, 20% /24, 10% /20, with host bits clear.
pub fn v4(count: usize, seed: u64) -> Vec<Cidr> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    // Bounded: collisions are rare, and the space holds hundreds of millions of prefixes.
    let mut attempts = count.saturating_mul(4).max(64);
    while out.len() < count && attempts > 0 {
        attempts -= 1;
        let prefix = match rng.below(10) {
            0 => 20,
            1 | 2 => 24,
            _ => 32,
        };
        // 1.0.0.0 up to 223.255.255.255.
        let addr = (0x0100_0000 + rng.below(0xe000_0000 - 0x0100_0000)) as u32;
        let addr = addr & (u32::MAX << (32 - prefix));
        if is_bench_v4(addr) || is_bench_v4(addr | !(u32::MAX << (32 - prefix))) {
            continue;
        }
        if seen.insert((addr, prefix)) {
            out.push(Cidr::V4 {
                addr: addr.to_be_bytes(),
                prefix,
            });
        }
    }
    out
}

/// `count` distinct IPv6 prefixes in 2001:db8:8000::/33: 60% /64, 30% /56, 10% /48.
pub fn v6(count: usize, seed: u64) -> Vec<Cidr> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    let mut attempts = count.saturating_mul(4).max(64);
    while out.len() < count && attempts > 0 {
        attempts -= 1;
        let prefix: u32 = match rng.below(10) {
            0 => 48,
            1..=3 => 56,
            _ => 64,
        };
        // The 32 bits after 2001:db8::/32, top bit set, then 32 more random bits.
        let network = (0x2001_0db8_u128 << 96)
            | (u128::from(rng.next_u64() as u32 | 0x8000_0000) << 64)
            | (u128::from(rng.next_u64() as u32) << 32);
        // Clear everything after the prefix (prefix is 48 to 64, so the shift is in range).
        let network = network & (u128::MAX << (128 - prefix));
        if seen.insert((network, prefix)) {
            out.push(Cidr::V6 {
                addr: network.to_be_bytes(),
                prefix,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_distinct_valid_and_repeatable() {
        let first = v4(10_000, 7);
        assert_eq!(first.len(), 10_000);
        assert_eq!(first, v4(10_000, 7));
        let unique: HashSet<_> = first.iter().collect();
        assert_eq!(unique.len(), first.len());
        for cidr in &first {
            // Display then parse: the strict parser rejects host bits.
            let text = cidr.to_string();
            assert_eq!(text.parse::<Cidr>().as_ref(), Ok(cidr), "{text}");
            let Cidr::V4 { addr, .. } = cidr else {
                panic!("v4 gave {cidr}");
            };
            assert!(!is_bench_v4(u32::from_be_bytes(*addr)), "{text}");
        }
        let six = v6(10_000, 7);
        assert_eq!(six.len(), 10_000);
        for cidr in &six {
            let text = cidr.to_string();
            assert_eq!(text.parse::<Cidr>().as_ref(), Ok(cidr), "{text}");
            assert!(text.starts_with("2001:db8:"), "{text}");
        }
    }
}
