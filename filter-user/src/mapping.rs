//! A map's values mapped into this process's memory: the shared mapping of an array created with
//! `BPF_F_MMAPABLE` (the list index, the verified-source cache, the sources table), unmapped when
//! dropped. Unit tests map anonymous memory of the same size instead of a kernel map.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::maps::MapData;

/// `len` bytes of a map's values, mapped read-write.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory that stays valid until `drop` unmaps it; its owners access
// it only through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of the values of `data`, shared with the kernel and every other
    /// process mapping it. The kernel refuses a map not created with `BPF_F_MMAPABLE`.
    pub fn of(data: &MapData, len: usize) -> std::io::Result<Mapping> {
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of the map; nothing else in this process aliases it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        Self::checked(base, len)
    }

    /// `len` bytes of private anonymous memory: a stand-in for a map in unit tests, and the
    /// bench's buffer for timing memory accesses.
    pub fn anonymous(len: usize) -> std::io::Result<Mapping> {
        // SAFETY: a fresh private anonymous mapping; nothing else aliases it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        Self::checked(base, len)
    }

    fn checked(base: *mut libc::c_void, len: usize) -> std::io::Result<Mapping> {
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        NonNull::new(base.cast::<u8>())
            .map(|base| Mapping { base, len })
            .ok_or_else(|| std::io::Error::other("mmap returned a null mapping"))
    }

    /// The first byte of the mapping, valid for `len` bytes while `self` lives.
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `of` or `anonymous` made; no reference into it
        // outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
