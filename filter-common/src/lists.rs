//! Keys and values of the allow and deny LPM tries.
//!
//! The kernel's LPM key is a `u32` prefix length followed by the address bytes in network
//! order; aya's `Key<K>` on each side has exactly that layout, with `K` one of the arrays below.

/// Address bytes of an IPv4 key.
pub type V4Key = [u8; 4];

/// Address bytes of an IPv6 key.
pub type V6Key = [u8; 16];

/// The value stored for every list entry (the key is what matters).
pub type ListValue = u32;

/// The value written for every entry.
pub const LIST_PRESENT: ListValue = 1;

/// Longest IPv4 prefix.
pub const V4_MAX_PREFIX: u32 = 32;

/// Longest IPv6 prefix.
pub const V6_MAX_PREFIX: u32 = 128;
