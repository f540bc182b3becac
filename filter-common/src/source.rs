//! How sources are keyed in the per-source rate and ban maps, and what a ban holds.

use crate::{Packet, Reason};

/// Key of the `SOURCES` (rate state per source and class) and `BANS` maps. IPv6 sources are
/// masked to the configured prefix (a /64 by default) so one attacker's whole prefix shares one
/// entry. Aligned to 4 bytes (still 20 long) so the program copies and compares it a word at a
/// time.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// Source address in network order, masked; IPv4 in the first four bytes.
    pub addr_be: [u8; 16],
    /// 4 or 6.
    pub ip_version: u8,
    /// The [`crate::Class`] discriminant in `SOURCES`; always [`BAN_CLASS`] in `BANS`.
    pub class: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<SourceKey>() == 20);
#[cfg(feature = "user")]
unsafe impl aya::Pod for SourceKey {}

/// The `class` of every key in `BANS`: a ban covers all classes.
pub const BAN_CLASS: u8 = 0xFF;

/// The `class` of keys that name a verified source (the `VERIFIED` cache tags their address
/// alone, see [`crate::verified::tag`]).
pub const VERIFIED_CLASS: u8 = 0xFE;

impl SourceKey {
    /// The key of `packet`'s source in `class` (or [`BAN_CLASS`]), with IPv6 masked by
    /// `v6_mask`, the [`v6_mask`] of the tracked prefix (`Settings::v6_source_mask`): two
    /// ANDs per packet, where deriving the masks from the prefix length costs the program
    /// a score of instructions on every IPv6 packet.
    #[inline(always)]
    pub fn new(packet: &Packet, class: u8, v6_mask: [u64; 2]) -> SourceKey {
        let [mut hi, mut lo] = packet.src_words();
        if packet.ip_version == 6 {
            hi &= v6_mask[0];
            lo &= v6_mask[1];
        }
        SourceKey::from_words([hi, lo], packet.ip_version, class)
    }

    /// The key whose address bytes are `words` in memory order, written a word at a time.
    #[inline(always)]
    const fn from_words(words: [u64; 2], ip_version: u8, class: u8) -> SourceKey {
        // The same bytes in the same order, as the 4-byte words the key's alignment allows.
        // SAFETY: both are sixteen bytes of plain integers.
        let addr: [u32; 4] = unsafe { core::mem::transmute::<[u64; 2], [u32; 4]>(words) };
        let mut key = SourceKey {
            addr_be: [0; 16],
            ip_version,
            class,
            _pad: [0; 2],
        };
        // SAFETY: `SourceKey` is 4-byte aligned and `addr_be` is its first field.
        unsafe { core::ptr::write((&raw mut key.addr_be).cast::<[u32; 4]>(), addr) };
        key
    }

    /// The address bytes as four words in memory order (network order, read natively).
    #[inline(always)]
    pub const fn words(&self) -> [u32; 4] {
        // SAFETY: `SourceKey` is 4-byte aligned and `addr_be` is its first field.
        unsafe { core::ptr::read((&raw const self.addr_be).cast::<[u32; 4]>()) }
    }

    /// This key under `class` (the same source, masked as it was).
    #[inline(always)]
    pub const fn with_class(&self, class: u8) -> SourceKey {
        SourceKey { class, ..*self }
    }

    /// The ban key, IPv6 masked by `v6_mask` (see [`SourceKey::new`]).
    #[inline(always)]
    pub fn for_ban(packet: &Packet, v6_mask: [u64; 2]) -> SourceKey {
        SourceKey::new(packet, BAN_CLASS, v6_mask)
    }

    /// The key of address `addr` in `class` (e.g. [`BAN_CLASS`]), with IPv6 masked to
    /// `v6_prefix` bits: what userspace writes for a source it names.
    pub fn for_addr(addr: core::net::IpAddr, class: u8, v6_prefix: u32) -> SourceKey {
        let mut key = SourceKey {
            class,
            ..SourceKey::default()
        };
        match addr {
            core::net::IpAddr::V4(v4) => {
                key.ip_version = 4;
                key.addr_be[..4].copy_from_slice(&v4.octets());
            }
            core::net::IpAddr::V6(v6) => {
                key.ip_version = 6;
                key.addr_be = v6.octets();
                mask_v6(&mut key.addr_be, v6_prefix);
            }
        }
        key
    }
}

/// Clears every bit after the first `prefix` bits of an IPv6 address.
pub fn mask_v6(addr: &mut [u8; 16], prefix: u32) {
    let mut hi = [0; 8];
    let mut lo = [0; 8];
    hi.copy_from_slice(&addr[..8]);
    lo.copy_from_slice(&addr[8..]);
    let mask = v6_mask(prefix);
    addr[..8].copy_from_slice(&(u64::from_ne_bytes(hi) & mask[0]).to_ne_bytes());
    addr[8..].copy_from_slice(&(u64::from_ne_bytes(lo) & mask[1]).to_ne_bytes());
}

/// The two masks that keep the first `prefix` bits (at most 128) of an IPv6 address held as
/// two words in memory order ([`Packet::src_words`]): what [`Settings::compiled`] stores as
/// `v6_source_mask` for the program to AND with.
///
/// [`Settings::compiled`]: crate::Settings::compiled
pub const fn v6_mask(prefix: u32) -> [u64; 2] {
    let prefix = if prefix > 128 { 128 } else { prefix };
    let low_bits = prefix.saturating_sub(64);
    let high_bits = prefix - low_bits;
    [word_mask(high_bits), word_mask(low_bits)]
}

/// The mask keeping the first `bits` (0 to 64) bits, in network order, of a word read natively
/// from eight network-order bytes.
#[inline(always)]
const fn word_mask(bits: u32) -> u64 {
    if bits == 0 {
        0
    } else {
        (u64::MAX << (64 - bits)).to_be()
    }
}

/// A ban: the source is dropped until `until_ns`. Expired entries stay for a while so repeat
/// offences get longer bans; userspace sweeps them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ban {
    /// End of the ban on the program's clock, in ns.
    pub until_ns: u64,
    /// Automatic bans this source has earned so far (0 for a manual ban).
    pub offences: u32,
    /// The [`crate::Reason`] that earned the last ban (a rate reason, or `Banned` for manual).
    pub reason: u16,
    /// `BAN_*` bits.
    pub flags: u16,
}

/// Bit in [`Ban::flags`]: set by an operator (`moat ban add`), never by the program.
pub const BAN_MANUAL: u16 = 1;

/// Bit in [`Ban::flags`]: recorded while dry run was on. Only a dry run honours it (as a
/// would-drop); once enforcing, the program ignores it and a repeat offence starts afresh.
pub const BAN_DRY_RUN: u16 = 2;
const _: () = assert!(core::mem::size_of::<Ban>() == 16);
#[cfg(feature = "user")]
unsafe impl aya::Pod for Ban {}

impl Ban {
    /// Whether the ban is in force at `now_ns`.
    pub const fn active(&self, now_ns: u64) -> bool {
        now_ns < self.until_ns
    }

    /// Whether the ban drops (or, in a dry run, would drop) a packet at `now_ns`: it is in
    /// force and, unless `dry_run`, was not recorded during a dry run.
    pub const fn enforced(&self, now_ns: u64, dry_run: bool) -> bool {
        self.active(now_ns) && (dry_run || self.flags & BAN_DRY_RUN == 0)
    }

    /// Whether the ban covers TCP: every ban but one the program issued for UDP, ICMP or other
    /// traffic over its per-source limit. Anyone can send those with a visitor's address, and
    /// a visitor's TCP proves its address by its handshake, so such a ban drops the source's
    /// UDP, ICMP and other traffic only: a spoofed flood in a first-time visitor's name cannot
    /// cut the visitor off from the site. A SYN ban (the program no longer issues one, since
    /// anyone can send SYNs in a verified source's name too, but a state file saved by an
    /// earlier version may bring one back; it spares the source's open connections, see
    /// [`Ban::spares_connections`]), a manual ban and one of unknown reason cover TCP.
    pub const fn covers_tcp(&self) -> bool {
        let spoofable = matches!(
            Reason::from_u32(self.reason as u32),
            Some(Reason::RateUdp | Reason::RateIcmp | Reason::RateOther)
        );
        self.flags & BAN_MANUAL != 0 || !spoofable
    }

    /// Whether the ban spares the segments of connections the host already has: a SYN ban,
    /// which earlier versions issued for SYNs over a verified source's limit. It stops the source's new
    /// connections and its other traffic, but cuts none it has open: behind one address may be
    /// a busy NAT's other users, or the operator's own SSH session on a host running a load
    /// test. A manual ban (the operator's word) and any other ban cut everything.
    pub const fn spares_connections(&self) -> bool {
        self.flags & BAN_MANUAL == 0
            && matches!(Reason::from_u32(self.reason as u32), Some(Reason::RateSyn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bans_for_spoofable_traffic_spare_tcp() {
        let ban = |reason: Reason, flags: u16| Ban {
            until_ns: 1,
            offences: 1,
            reason: reason as u16,
            flags,
        };
        for reason in [Reason::RateUdp, Reason::RateIcmp, Reason::RateOther] {
            assert!(!ban(reason, 0).covers_tcp(), "{reason:?}");
            assert!(ban(reason, BAN_MANUAL).covers_tcp(), "manual {reason:?}");
        }
        assert!(ban(Reason::RateSyn, 0).covers_tcp());
        assert!(ban(Reason::RateSyn, 0).spares_connections());
        assert!(!ban(Reason::RateSyn, BAN_MANUAL).spares_connections());
        assert!(!ban(Reason::Banned, BAN_MANUAL).spares_connections());
        assert!(!ban(Reason::RateUdp, 0).spares_connections());
        assert!(ban(Reason::Banned, BAN_MANUAL).covers_tcp());
        let unknown = Ban {
            reason: 999,
            ..ban(Reason::RateSyn, 0)
        };
        assert!(unknown.covers_tcp());
    }

    #[test]
    fn masks_v6_to_the_prefix() {
        let mut addr = [0xFF; 16];
        mask_v6(&mut addr, 64);
        assert_eq!(
            addr,
            [
                0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        let mut addr = [0xFF; 16];
        mask_v6(&mut addr, 60);
        assert_eq!(addr[7], 0xF0);
        assert_eq!(addr[8], 0);
        let mut addr = [0xFF; 16];
        mask_v6(&mut addr, 128);
        assert_eq!(addr, [0xFF; 16]);
        let mut addr = [0xFF; 16];
        mask_v6(&mut addr, 0);
        assert_eq!(addr, [0; 16]);
        for prefix in 0..=128u32 {
            let mut addr = [0xFF; 16];
            mask_v6(&mut addr, prefix);
            let expected = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            assert_eq!(u128::from_be_bytes(addr), expected, "/{prefix}");
        }
    }

    #[test]
    fn compiled_settings_carry_the_mask_of_their_prefix() {
        for prefix in [0, 48, 60, 64, 100, 128] {
            let settings = crate::Settings {
                v6_source_prefix: prefix,
                ..crate::Settings::default()
            }
            .compiled();
            assert_eq!(settings.v6_source_mask, v6_mask(prefix), "/{prefix}");
            let mut addr = [0xFF; 16];
            mask_v6(&mut addr, prefix);
            let packet = Packet {
                src_addr_be: [0xFF; 16],
                ..Packet::new(6, 0)
            };
            let key = SourceKey::for_ban(&packet, settings.v6_source_mask);
            assert_eq!(key.addr_be, addr, "/{prefix}");
        }
    }
}
