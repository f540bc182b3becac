//! The multiplier every table's hash shares.

/// The multiplier of Fibonacci hashing (2^64 divided by the golden ratio, made odd):
/// multiplying by it spreads a key's bits into the high bits, which each hash then takes
/// (the list index's IPv6 buckets, the verified-source cache, the sources table).
pub const MIX: u64 = 0x9E37_79B9_7F4A_7C15;
