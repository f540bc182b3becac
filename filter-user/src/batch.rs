//! `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_LOOKUP_BATCH`, which aya 0.14 does not wrap: thousands
//! of map entries in one system call instead of one call each (two for a walk: the next key,
//! then its value). The kernel accepts no per-entry flag for a batch but `BPF_F_LOCK`, so a
//! batch inserts or replaces (`BPF_ANY`); a caller that must not replace works out first which
//! keys are new.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::Pod;

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `BPF_MAP_UPDATE_BATCH` in `enum bpf_cmd`.
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Entries [`entries`] asks for per call: far more than one hash bucket ever holds (a batch
/// returns whole buckets, and fails with `ENOSPC` on one larger than it).
const LOOKUP_CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`; the kernel zero-fills the rest of the union.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// How a batch ended.
#[derive(Debug)]
pub struct Outcome {
    /// Entries written, from the first; the rest were not.
    pub written: usize,
    /// Why entry `written` was not, if the batch stopped early.
    pub error: Option<io::Error>,
}

/// Writes `keys[i]` → `values[i]` into the map `fd`, in order, stopping at the first entry the
/// kernel refuses. `K` and `V` must be the map's key and value types exactly (their sizes are
/// the map's, so the slices are laid out as the kernel reads them).
pub fn update<K: Pod, V: Pod>(fd: BorrowedFd<'_>, keys: &[K], values: &[V]) -> Outcome {
    let count = keys.len().min(values.len());
    let Ok(count_u32) = u32::try_from(count) else {
        return Outcome {
            written: 0,
            error: Some(io::Error::from_raw_os_error(libc::E2BIG)),
        };
    };
    if count == 0 {
        return Outcome {
            written: 0,
            error: None,
        };
    }
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: count_u32,
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `keys` and `values` hold `count` entries each, of the map's key and value sizes,
    // and outlive the call. The kernel only reads them, and writes `attr.count` back.
    let error = unsafe { call(BPF_MAP_UPDATE_BATCH, &mut attr) };
    Outcome {
        written: (attr.count as usize).min(count),
        error,
    }
}

/// Every entry of the map `fd` (a hash map: the kernel's batch cursor for it is a bucket
/// number), read [`LOOKUP_CHUNK`] at a time. Entries written or deleted during the walk may or
/// may not be in it, as in a walk key by key. `K` and `V` must be the map's key and value types
/// exactly, and plain data that any bytes are a valid value of (as `Pod` promises).
pub fn entries<K: Pod, V: Pod>(fd: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    // SAFETY: Pod types are plain data, for which all zeroes is a valid value.
    let (key, value) = unsafe { (std::mem::zeroed::<K>(), std::mem::zeroed::<V>()) };
    let mut keys = vec![key; LOOKUP_CHUNK];
    let mut values = vec![value; LOOKUP_CHUNK];
    // The cursor between calls: 8-byte words, room for a bucket number or a key.
    let cursor_words = std::mem::size_of::<K>().div_ceil(8).max(1);
    let mut cursor = vec![0u64; cursor_words];
    let mut next = vec![0u64; cursor_words];
    let mut found = Vec::new();
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { cursor.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: LOOKUP_CHUNK as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `keys` and `values` have room for `count` entries of the map's key and value
        // sizes, `cursor` and `next` for the cursor, and all outlive the call. The kernel writes
        // at most `count` entries, the cursor and `attr.count`.
        let error = unsafe { call(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let read = (attr.count as usize).min(LOOKUP_CHUNK);
        found.extend(
            keys[..read]
                .iter()
                .copied()
                .zip(values[..read].iter().copied()),
        );
        match error {
            None => {}
            // The walk has passed the last bucket.
            Some(error) if error.raw_os_error() == Some(libc::ENOENT) => return Ok(found),
            Some(error) => return Err(error),
        }
        std::mem::swap(&mut cursor, &mut next);
        first = false;
    }
}

/// Runs the batch `command` on `attr`; the kernel's error, if it failed.
///
/// # Safety
/// Every buffer `attr` points to must be valid for what `command` reads or writes there, for
/// the call.
unsafe fn call(command: libc::c_long, attr: &mut BatchAttr) -> Option<io::Error> {
    // SAFETY: `attr` is a valid `batch` attribute of the size passed; its buffers are the
    // caller's contract.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    (result < 0).then(io::Error::last_os_error)
}

/// Whether `error` says the kernel has no batch update or lookup for this map (older kernels),
/// so the caller should go entry by entry instead.
pub fn unsupported(error: &io::Error) -> bool {
    // 524 is the kernel's internal ENOTSUPP, which leaks to user space from map operations.
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | 524)
    )
}
