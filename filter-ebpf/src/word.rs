//! Words of map values that every CPU shares (per-source state, aggregate buckets), read and
//! updated with the BPF atomic instructions. Rust's BPF target offers no compare-and-swap, so
//! the one instruction it needs is written out here; the kernel has verified `BPF_CMPXCHG` on
//! map values since Linux 5.12 (commit 5ffa25502b5a, "bpf: Add instructions for atomic
//! [cmp]xchg").

use core::arch::asm;

use filter_common::rate::{Buckets, Pace, RateState, SharedWord, admit_shared, strike_shared};

/// One 64-bit word inside a map value.
pub struct MapWord(*mut u64);

impl MapWord {
    /// The word at `ptr`.
    ///
    /// # Safety
    /// `ptr` must point into a map value (valid for the program run) and be 8-byte aligned.
    #[inline(always)]
    pub const unsafe fn new(ptr: *mut u64) -> MapWord {
        MapWord(ptr)
    }
}

impl SharedWord for MapWord {
    #[inline(always)]
    fn load(&self) -> u64 {
        // SAFETY: `new`'s contract; an aligned 64-bit load is atomic on every BPF JIT.
        unsafe { core::ptr::read_volatile(self.0) }
    }

    #[inline(always)]
    fn compare_exchange(&self, old: u64, new: u64) -> Result<u64, u64> {
        let mut found = old;
        // SAFETY: `new`'s contract. BPF_CMPXCHG compares the word with r0, stores `new` if
        // equal, and leaves the word's previous value in r0 either way.
        unsafe {
            asm!(
                "r0 = cmpxchg_64({ptr} + 0, r0, {new})",
                ptr = in(reg) self.0,
                new = in(reg) new,
                inout("r0") found,
                options(nostack),
            );
        }
        if found == old { Ok(found) } else { Err(found) }
    }
}

/// Sets the bits of `mask` in the word at `ptr`, atomically (BPF_ATOMIC | BPF_OR, verified
/// on map values since Linux 5.12 like `BPF_CMPXCHG`).
///
/// # Safety
/// `ptr` must point into a map value (valid for the program run) and be 8-byte aligned.
#[inline(always)]
pub unsafe fn or(ptr: *mut u64, mask: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        asm!(
            "lock *(u64 *)({ptr} + 0) |= {mask}",
            ptr = in(reg) ptr,
            mask = in(reg) mask,
            options(nostack),
        );
    }
}

/// Clears the bits of the word at `ptr` that `mask` leaves out, atomically (BPF_ATOMIC |
/// BPF_AND, verified on map values since Linux 5.12 like `BPF_CMPXCHG`).
///
/// # Safety
/// `ptr` must point into a map value (valid for the program run) and be 8-byte aligned.
#[inline(always)]
pub unsafe fn and(ptr: *mut u64, mask: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        asm!(
            "lock *(u64 *)({ptr} + 0) &= {mask}",
            ptr = in(reg) ptr,
            mask = in(reg) mask,
            options(nostack),
        );
    }
}

/// [`admit_shared`] on a pair of buckets in a map value every CPU shares.
#[inline(always)]
pub fn admit(buckets: *mut Buckets, pace: &Pace, now_ns: u64, len: u64) -> bool {
    // SAFETY: `buckets` comes from a successful map lookup (the callers' contract), so both
    // fields are valid and 8-byte aligned for this program run.
    let (packets, bytes) = unsafe {
        (
            MapWord::new(&raw mut (*buckets).packets),
            MapWord::new(&raw mut (*buckets).bytes),
        )
    };
    admit_shared(&packets, &bytes, pace, now_ns, len)
}

/// [`strike_shared`] on the strike count of a per-source state every CPU shares.
#[inline(always)]
pub fn strike(state: *mut RateState, now_ns: u64, window_ns: u64, ban_after: u32) -> bool {
    // SAFETY: `state` comes from a successful map lookup (the callers' contract), so both
    // fields are valid and 8-byte aligned for this program run.
    let (strikes, window_start) = unsafe {
        (
            MapWord::new(&raw mut (*state).strikes),
            MapWord::new(&raw mut (*state).window_start_ns),
        )
    };
    strike_shared(&strikes, &window_start, now_ns, window_ns, ban_after)
}
