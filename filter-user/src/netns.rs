//! Network namespaces and veth pairs that the lab and the tests create and always remove.
//!
//! A [`NetNs`] is a guard: dropping it deletes the namespace, which destroys every interface in
//! it. Names carry the process id and a counter, so concurrent tests and labs never collide.
//! Nothing here sends traffic; callers do, and only between namespaces they created.

use std::{
    ffi::OsStr,
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

/// Distinguishes the names one process creates.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Where `ip netns` keeps its namespace handles.
const NETNS_RUN_DIR: &str = "/run/netns";

/// A namespace operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    /// A command could not be started.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A command exited with failure.
    #[error("{command} failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// Entering the namespace failed.
    #[error("entering network namespace {name}: {source}")]
    Enter {
        /// The namespace.
        name: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A process-unique suffix: `<pid % 100000><counter>`, short enough for interface names.
pub fn unique_suffix() -> String {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("{}{id}", std::process::id() % 100_000)
}

/// An interface name `prefix` + unique suffix, cut to the kernel's 15 bytes.
pub fn unique_iface(prefix: &str) -> String {
    let mut name = format!("{prefix}{}", unique_suffix());
    name.truncate(15);
    name
}

/// Runs `command`, failing with its stderr if it exits non-zero.
pub fn run(command: &mut Command) -> Result<String, NetNsError> {
    let line = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetNsError::Spawn {
            command: line.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(NetNsError::Failed {
            command: line,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `<prefix>-<unique>` with its loopback up.
    pub fn create(prefix: &str) -> Result<NetNs, NetNsError> {
        let ns = NetNs {
            name: format!("{prefix}-{}", unique_suffix()),
        };
        run(Command::new("ip").args(["netns", "add", &ns.name]))?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (for `ip -n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's handle, for `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_RUN_DIR).join(&self.name)
    }

    /// A command that runs `program` in this namespace. Uses `nsenter --net` rather than
    /// `ip netns exec`, which would remount /sys and hide the host's bpffs pins.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        command
    }

    /// Runs `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetNsError> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Sets a sysctl inside the namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetNsError> {
        run(self
            .command("sysctl")
            .args(["-qw", &format!("{key}={value}")]))
        .map(drop)
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result.
    /// Sockets `f` opens live in the namespace.
    pub fn enter<T, F>(&self, f: F) -> Result<T, NetNsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = File::open(self.path()).map_err(|source| NetNsError::Enter {
            name: self.name.clone(),
            source,
        })?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: `file` is an open namespace handle; setns changes only this thread.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(NetNsError::Enter {
                            name: self.name.clone(),
                            source: std::io::Error::last_os_error(),
                        });
                    }
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(error) = run(Command::new("ip").args(["netns", "delete", &self.name])) {
            log::warn!("removing netns failed name={} error={error}", self.name);
        }
    }
}

/// One end of a veth pair, configured inside its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Interface name.
    pub iface: String,
    /// MAC address.
    pub mac: [u8; 6],
    /// IPv4 address.
    pub ipv4: std::net::Ipv4Addr,
}

impl Endpoint {
    /// The MAC address as `aa:bb:cc:dd:ee:ff`.
    pub fn mac_string(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Joins `a` and `b` with a veth pair whose ends get the given endpoints' names, MACs and
/// addresses (a /24 between them), IPv6 off and static neighbour entries, so the only frames on
/// the wire are the ones a caller sends. Brings both ends up.
pub fn quiet_veth(
    a: &NetNs,
    a_end: &Endpoint,
    b: &NetNs,
    b_end: &Endpoint,
) -> Result<(), NetNsError> {
    run(Command::new("ip").args([
        "link",
        "add",
        &a_end.iface,
        "address",
        &a_end.mac_string(),
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        &b_end.iface,
        "address",
        &b_end.mac_string(),
        "netns",
        b.name(),
    ]))?;
    for (ns, end, peer) in [(a, a_end, b_end), (b, b_end, a_end)] {
        ns.sysctl(&format!("net.ipv6.conf.{}.disable_ipv6", end.iface), "1")?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", end.ipv4),
            "dev",
            &end.iface,
        ])?;
        ns.ip(&[
            "neigh",
            "replace",
            &peer.ipv4.to_string(),
            "lladdr",
            &peer.mac_string(),
            "dev",
            &end.iface,
            "nud",
            "permanent",
        ])?;
        ns.ip(&["link", "set", &end.iface, "up"])?;
    }
    Ok(())
}

/// Packets and bytes an interface has transmitted, read with `ip -s -j link` in its namespace.
pub fn tx_counters(ns: &NetNs, iface: &str) -> Result<(u64, u64), NetNsError> {
    let json = ns.ip(&["-s", "-j", "link", "show", "dev", iface])?;
    let value: serde_json::Value =
        serde_json::from_str(&json).map_err(|error| NetNsError::Failed {
            command: format!("ip -n {} -s -j link show dev {iface}", ns.name()),
            stderr: format!("unparsable output: {error}"),
        })?;
    let tx = &value[0]["stats64"]["tx"];
    match (tx["packets"].as_u64(), tx["bytes"].as_u64()) {
        (Some(packets), Some(bytes)) => Ok((packets, bytes)),
        _ => Err(NetNsError::Failed {
            command: format!("ip -n {} -s -j link show dev {iface}", ns.name()),
            stderr: "no stats64.tx in its output".to_string(),
        }),
    }
}
