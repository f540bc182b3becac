//! Checks that run before anything touches the kernel, so that a missing prerequisite gives one
//! clear line instead of a raw syscall error halfway through loading.

use std::{ffi::CString, path::Path};

use filter_common::maps::BPFFS_PATH;

/// Where the kernel exposes its own BTF.
pub const KERNEL_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// `statfs` magic number of bpffs.
const BPF_FS_MAGIC: i64 = 0xCAFE_4A11;

/// Capability numbers from `linux/capability.h`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// A prerequisite that is not met.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The interface name cannot name an interface.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidIfaceName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No interface has that name.
    #[error("no interface named {name:?} in this network namespace (see `ip link`)")]
    UnknownIface {
        /// The name given.
        name: String,
    },
    /// The process lacks capabilities.
    #[error(
        "missing capability {missing}: moat loads eBPF programs and attaches them, so run it as \
         root or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"
    )]
    NotPrivileged {
        /// The missing capabilities, comma-separated.
        missing: String,
    },
    /// bpffs is not mounted where moat pins its maps.
    #[error(
        "bpffs is not mounted at {path}; mount it with `mount -t bpf bpf {path}` (moat pins its \
         maps there)"
    )]
    NoBpffs {
        /// Where it was expected.
        path: &'static str,
    },
    /// The kernel exposes no BTF.
    #[error(
        "the kernel has no BTF ({path} is missing); moat needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf {
        /// Where it was expected.
        path: &'static str,
    },
}

/// Checks that `name` is a possible Linux interface name (1 to 15 bytes, no `/`, whitespace or
/// `:`), which also makes it safe as a pin directory name.
pub fn check_iface_name(name: &str) -> Result<(), PreflightError> {
    let invalid = |reason| {
        Err(PreflightError::InvalidIfaceName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > 15 {
        return invalid("interface names are at most 15 bytes");
    }
    if name == "." || name == ".." {
        return invalid("it is not an interface name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return invalid("it contains '/', ':' or whitespace");
    }
    Ok(())
}

/// The MTU of interface `name` in the current network namespace (`SIOCGIFMTU`, so a daemon
/// entered into a namespace reads that namespace's interface, not sysfs's), if it can be read.
pub fn iface_mtu(name: &str) -> Option<u32> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: an all-zero ifreq is valid: a name of NULs and a union of plain integers.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: socket(2) has no preconditions; a failure returns -1, checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a socket just opened and owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCGIFMTU reads the NUL-terminated name and writes the MTU into `request`,
    // which outlives the call.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU, &mut request) };
    if result != 0 {
        return None;
    }
    // SAFETY: on success the kernel wrote the union's MTU member.
    Some(unsafe { request.ifr_ifru.ifru_mtu } as u32)
}

/// The index of interface `name` in the current network namespace.
pub fn iface_index(name: &str) -> Result<u32, PreflightError> {
    check_iface_name(name)?;
    let c_name = CString::new(name).map_err(|_| PreflightError::InvalidIfaceName {
        name: name.to_string(),
        reason: "it contains a NUL byte",
    })?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        Err(PreflightError::UnknownIface {
            name: name.to_string(),
        })
    } else {
        Ok(index)
    }
}

/// Checks that the effective capability set allows loading and attaching XDP programs:
/// CAP_BPF, CAP_PERFMON (the verifier refuses the program's pointer arithmetic without it) and
/// CAP_NET_ADMIN, or the older CAP_SYS_ADMIN in place of the first two.
pub fn check_privileges() -> Result<(), PreflightError> {
    let effective = effective_capabilities().unwrap_or(0);
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::NotPrivileged {
            missing: missing.join(", "),
        })
    }
}

/// The `CapEff` mask of this process, from `/proc/self/status`.
fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Checks that bpffs is mounted at `/sys/fs/bpf`.
pub fn check_bpffs() -> Result<(), PreflightError> {
    if is_bpffs(Path::new(BPFFS_PATH)) {
        Ok(())
    } else {
        Err(PreflightError::NoBpffs { path: BPFFS_PATH })
    }
}

/// Whether `path` is the root of a mounted bpffs.
fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `statfs` is plain old data; all-zero is a valid value to overwrite.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stat` is a valid, writable `statfs`.
    let result = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    result == 0 && stat.f_type as i64 == BPF_FS_MAGIC
}

/// Checks that the kernel exposes BTF.
pub fn check_btf() -> Result<(), PreflightError> {
    if Path::new(KERNEL_BTF_PATH).exists() {
        Ok(())
    } else {
        Err(PreflightError::NoBtf {
            path: KERNEL_BTF_PATH,
        })
    }
}

/// Every check `moat run` needs before loading, in the order a user would fix them.
pub fn check_all(iface: &str) -> Result<u32, PreflightError> {
    let index = iface_index(iface)?;
    check_privileges()?;
    check_bpffs()?;
    check_btf()?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iface_names_are_validated() {
        assert!(check_iface_name("eth0").is_ok());
        assert!(check_iface_name("enp3s0f1.100").is_ok());
        for bad in ["", "..", "a/b", "a b", "sixteen-chars-xx", "eth0:1"] {
            assert!(check_iface_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_iface_is_named() {
        let error = iface_index("moat-nope0").unwrap_err().to_string();
        assert!(error.contains("moat-nope0"), "{error}");
    }
}
