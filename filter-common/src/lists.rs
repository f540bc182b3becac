//! Keys and values of the allow and deny LPM tries.
//!
//! The kernel's LPM key is a `u32` prefix length followed by the address bytes in network
//! order; aya's `Key<K>` on each side has exactly that layout, with `K` one of the arrays below.

/// Address bytes of an IPv4 key.
pub type V4Key = [u8; 4];

/// Address bytes of an IPv6 key.
pub type V6Key = [u8; 16];

/// Key bytes of a trusted-upstream IPv4 entry: the policy slot, then the address. Its LPM
/// prefix length is [`SLOT_PREFIX`] plus the address prefix.
pub type TrustedV4Key = [u8; 5];

/// Key bytes of a trusted-upstream IPv6 entry: the policy slot, then the address.
pub type TrustedV6Key = [u8; 17];

/// Bits of a trusted key's LPM prefix taken by the slot byte.
pub const SLOT_PREFIX: u32 = 8;

/// The trusted key of `addr` in `slot` (a full-length lookup key, or an entry with `prefix`).
pub fn trusted_v4_key(slot: u8, addr: &V4Key) -> TrustedV4Key {
    [slot, addr[0], addr[1], addr[2], addr[3]]
}

/// The trusted key of `addr` in `slot`.
pub fn trusted_v6_key(slot: u8, addr: &V6Key) -> TrustedV6Key {
    let mut key = [0u8; 17];
    key[0] = slot;
    let mut i = 0;
    while i < 16 {
        key[i + 1] = addr[i];
        i += 1;
    }
    key
}

/// The value stored for every list entry (the key is what matters).
pub type ListValue = u32;

/// The value written for every entry.
pub const LIST_PRESENT: ListValue = 1;

/// Longest IPv4 prefix.
pub const V4_MAX_PREFIX: u32 = 32;

/// Longest IPv6 prefix.
pub const V6_MAX_PREFIX: u32 = 128;
