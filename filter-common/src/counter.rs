//! The per-CPU packet and byte counters, one slot per `(Verdict, Reason)` pair.

use crate::reason::{Reason, Verdict};

/// Packets and bytes counted in one slot on one CPU. Bytes are whole frame lengths as the XDP
/// program saw them (Ethernet header included, FCS excluded).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Frames counted.
    pub packets: u64,
    /// Sum of their lengths in bytes.
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
#[cfg(feature = "user")]
unsafe impl aya::Pod for Counter {}

impl Counter {
    /// Adds another counter into this one (used to sum per-CPU values).
    pub const fn add(self, other: Counter) -> Counter {
        Counter {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

/// Number of slots in the counter array: one per `(Verdict, Reason)` pair.
pub const COUNTER_SLOTS: u32 = (Verdict::COUNT * Reason::COUNT) as u32;

/// The slot of `(verdict, reason)` in the counter array.
pub const fn counter_index(verdict: Verdict, reason: Reason) -> u32 {
    verdict as u32 * Reason::COUNT as u32 + reason as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_has_its_own_slot() {
        let mut seen = [false; COUNTER_SLOTS as usize];
        for verdict in Verdict::ALL {
            for reason in Reason::ALL {
                let index = counter_index(verdict, reason) as usize;
                assert!(index < seen.len());
                assert!(!seen[index], "{verdict:?}/{reason:?}");
                seen[index] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }
}
