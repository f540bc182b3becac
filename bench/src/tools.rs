//! The other tools the benchmark measures moat against, and the plumbing of a live measurement:
//! xdp-filter (Debian's xdp-tools) loaded with a guard that unloads it, nftables rulesets and
//! their counters, a veth end's counters (`ethtool -S`, `ip -s link`), GRO, and CPU affinity.
//!
//! Every command runs inside a namespace the benchmark created; nothing here touches the host's
//! interfaces or rules. It does not decide what to measure: `cost` and `throughput` do.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::programs::{ProgramFd, ProgramInfo, loaded_programs};

use super::BenchError;
use moat::netns::{NetNs, run};

/// Where xdp-filter pins its maps (on the host's bpffs, shared by every interface it runs on).
const XDP_FILTER_PINS: &str = "/sys/fs/bpf/xdp-filter";
/// Where libxdp keeps its dispatcher pins; created on first use.
const LIBXDP_PINS: &str = "/sys/fs/bpf/xdp";

/// Fails unless xdp-filter, nft, ethtool, nsenter and ip are installed.
pub fn require_tools() -> Result<(), BenchError> {
    for (tool, package) in [
        ("xdp-filter", "xdp-tools"),
        ("nft", "nftables"),
        ("ethtool", "ethtool"),
        ("nsenter", "util-linux"),
        ("ip", "iproute2"),
    ] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|dir| Path::new(dir).join(tool).exists());
        if !found {
            return Err(BenchError::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// The policy an xdp-filter program applies to packets no rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Unmatched packets pass; rules drop (`xdpfilt_alw_all`).
    Allow,
    /// Unmatched packets drop; rules pass (`xdpfilt_dny_all`).
    Deny,
}

/// xdp-filter loaded on one interface; unloaded on drop (which also unpins its maps; a program
/// opened with [`XdpFilter::program`] keeps its maps while its descriptor is held). Its rules
/// live in maps shared by every interface it runs on.
pub struct XdpFilter<'a> {
    ns: &'a NetNs,
    iface: String,
    libxdp_dir_was_absent: bool,
}

impl<'a> XdpFilter<'a> {
    /// Loads xdp-filter on `iface` in `ns` in `mode` ("native" or "skb") with `policy`.
    pub fn load(
        ns: &'a NetNs,
        iface: &str,
        mode: &str,
        policy: Policy,
    ) -> Result<XdpFilter<'a>, BenchError> {
        let libxdp_dir_was_absent = !Path::new(LIBXDP_PINS).exists();
        let policy_name = match policy {
            Policy::Allow => "allow",
            Policy::Deny => "deny",
        };
        // Without libxdp's dispatcher, as moat runs: program against program. (Where the
        // kernel refuses the dispatcher, libxdp falls back to this anyway.)
        run(ns
            .command("xdp-filter")
            .env("LIBXDP_SKIP_DISPATCHER", "1")
            .args(["load", iface, "--mode", mode, "--policy", policy_name]))?;
        Ok(XdpFilter {
            ns,
            iface: iface.to_string(),
            libxdp_dir_was_absent,
        })
    }

    /// Adds a rule matching packets from `addr`.
    pub fn source_address(&self, addr: IpAddr) -> Result<(), BenchError> {
        run(self
            .ns
            .command("xdp-filter")
            .args(["ip", "--mode", "src", &addr.to_string()]))?;
        Ok(())
    }

    /// Adds a rule matching UDP from source port `port`.
    pub fn udp_source_port(&self, port: u16) -> Result<(), BenchError> {
        run(self.ns.command("xdp-filter").args([
            "port",
            "--mode",
            "src",
            "--proto",
            "udp",
            &port.to_string(),
        ]))?;
        Ok(())
    }

    /// Adds a rule matching TCP to destination port `port`.
    pub fn tcp_port(&self, port: u16) -> Result<(), BenchError> {
        run(self.ns.command("xdp-filter").args([
            "port",
            "--mode",
            "dst",
            "--proto",
            "tcp",
            &port.to_string(),
        ]))?;
        Ok(())
    }

    /// The program attached to the interface, opened for BPF_PROG_TEST_RUN; it stays loaded,
    /// with its maps, while the descriptor is held.
    pub fn program(&self) -> Result<ProgramFd, BenchError> {
        let id = attached_program_id(self.ns, &self.iface)?;
        find_program(id)?
            .fd()
            .map_err(BenchError::program("opening", "xdp-filter"))
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        if let Err(error) = run(self.ns.command("xdp-filter").args(["unload", &self.iface])) {
            log::warn!(
                "unloading xdp-filter failed iface={} error={error}",
                self.iface
            );
        }
        if self.libxdp_dir_was_absent {
            // Only removes it if empty: libxdp may still use it for something else.
            let _ = std::fs::remove_dir(LIBXDP_PINS);
        }
    }
}

/// Fails if xdp-filter already runs on this machine: its rules live in maps shared by every
/// interface, so the benchmark's rules would mix with someone else's.
pub fn check_xdp_filter_unused() -> Result<(), BenchError> {
    if Path::new(XDP_FILTER_PINS).exists() {
        return Err(BenchError::Tool {
            tool: "xdp-filter",
            problem: format!(
                "{XDP_FILTER_PINS} exists: xdp-filter already runs on this machine; unload it \
                 (xdp-filter unload --all) before benchmarking"
            ),
        });
    }
    Ok(())
}

/// The id of the XDP program attached to `iface` in `ns`.
pub fn attached_program_id(ns: &NetNs, iface: &str) -> Result<u32, BenchError> {
    let json = ns.ip(&["-j", "link", "show", "dev", iface])?;
    let value: serde_json::Value =
        serde_json::from_str(&json).map_err(|_| unparsable("ip -j link show", "JSON", &json))?;
    value[0]["xdp"]["prog"]["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| unparsable("ip -j link show", "xdp.prog.id", &json))
}

/// The loaded program with this id.
fn find_program(id: u32) -> Result<ProgramInfo, BenchError> {
    for info in loaded_programs() {
        let info = info.map_err(BenchError::program("listing", "loaded programs"))?;
        if info.id() == id {
            return Ok(info);
        }
    }
    Err(BenchError::Tool {
        tool: "xdp-filter",
        problem: format!("program id {id} is attached but not loaded"),
    })
}

/// An [`BenchError::Unparsable`] for `command`'s `output`.
pub fn unparsable(command: &str, wanted: &'static str, output: &str) -> BenchError {
    BenchError::Unparsable {
        command: command.to_string(),
        wanted,
        output: output.chars().take(300).collect(),
    }
}

/// A temporary file, removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    /// Writes `contents` to a new file named after `stem` and this process.
    pub fn create(stem: &str, contents: &str) -> Result<TempFile, BenchError> {
        let path = std::env::temp_dir().join(format!(
            "moat-bench-{}-{}-{stem}",
            std::process::id(),
            moat::netns::unique_suffix()
        ));
        std::fs::write(&path, contents).map_err(|source| BenchError::Io {
            action: "writing",
            target: path.display().to_string(),
            source,
        })?;
        Ok(TempFile(path))
    }

    /// Where it is.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Applies an nftables ruleset inside `ns`.
pub fn nft_apply(ns: &NetNs, ruleset: &str) -> Result<(), BenchError> {
    let file = TempFile::create("ruleset.nft", ruleset)?;
    run(ns.command("nft").arg("-f").arg(file.path()))?;
    Ok(())
}

/// Removes every nftables table inside `ns`.
pub fn nft_flush(ns: &NetNs) -> Result<(), BenchError> {
    run(ns.command("nft").args(["flush", "ruleset"]))?;
    Ok(())
}

/// The sum of packets over every `counter` of the ruleset inside `ns`.
pub fn nft_counted(ns: &NetNs) -> Result<u64, BenchError> {
    let json = run(ns.command("nft").args(["-j", "list", "ruleset"]))?;
    let value: serde_json::Value = serde_json::from_str(&json)
        .map_err(|_| unparsable("nft -j list ruleset", "JSON", &json))?;
    let mut total = 0;
    let rules = value["nftables"].as_array().cloned().unwrap_or_default();
    for item in rules {
        for expression in item["rule"]["expr"].as_array().cloned().unwrap_or_default() {
            if let Some(packets) = expression["counter"]["packets"].as_u64() {
                total += packets;
            }
        }
    }
    Ok(total)
}

/// One `ethtool -S` statistic of `iface` in `ns`, summed over queues: `name` matches
/// `rx_queue_N_<name>`.
pub fn queue_stat(ns: &NetNs, iface: &str, name: &str) -> Result<u64, BenchError> {
    let text = run(ns.command("ethtool").args(["-S", iface]))?;
    let suffix = format!("_{name}:");
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("rx_queue_")
            && let Some(at) = line.find(&suffix)
            && line[..at]
                .trim_start_matches("rx_queue_")
                .parse::<u32>()
                .is_ok()
        {
            let value: u64 = line[at + suffix.len()..]
                .trim()
                .parse()
                .map_err(|_| unparsable("ethtool -S", "a counter value", line))?;
            total = Some(total.unwrap_or(0) + value);
        }
    }
    total.ok_or_else(|| unparsable("ethtool -S", "rx_queue_N_ statistic", &text))
}

/// Packets `iface` in `ns` has received, from `ip -s -j link`.
pub fn rx_packets(ns: &NetNs, iface: &str) -> Result<u64, BenchError> {
    let json = ns.ip(&["-s", "-j", "link", "show", "dev", iface])?;
    let value: serde_json::Value =
        serde_json::from_str(&json).map_err(|_| unparsable("ip -s -j link", "JSON", &json))?;
    value[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .ok_or_else(|| unparsable("ip -s -j link", "stats64.rx.packets", &json))
}

/// Turns GRO of `iface` in `ns` on or off: a veth end with no XDP program accepts frames its
/// peer transmitted with XDP_TX only while GRO is on.
pub fn gro(ns: &NetNs, iface: &str, on: bool) -> Result<(), BenchError> {
    let state = if on { "on" } else { "off" };
    run(ns.command("ethtool").args(["-K", iface, "gro", state]))?;
    Ok(())
}

/// The pid of `ksoftirqd/CPU`, which runs the softirq work the CPU defers.
pub fn ksoftirqd(cpu: usize) -> Result<u32, BenchError> {
    let wanted = format!("ksoftirqd/{cpu}");
    let entries = std::fs::read_dir("/proc").map_err(|source| BenchError::Io {
        action: "listing",
        target: "/proc".to_string(),
        source,
    })?;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if std::fs::read_to_string(entry.path().join("comm"))
            .is_ok_and(|comm| comm.trim() == wanted)
        {
            return Ok(pid);
        }
    }
    Err(BenchError::Tool {
        tool: "moat-bench",
        problem: format!("no {wanted} kernel thread"),
    })
}

/// `/proc/PID/FILE` of task `pid`: its path and its text.
pub fn read_proc(pid: u32, file: &str) -> Result<(String, String), BenchError> {
    let path = format!("/proc/{pid}/{file}");
    let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        action: "reading",
        target: path.clone(),
        source,
    })?;
    Ok((path, text))
}

/// The CPU time task `pid` has run, in ns (the first field of `/proc/PID/schedstat`).
pub fn runtime_ns(pid: u32) -> Result<u64, BenchError> {
    let (path, text) = read_proc(pid, "schedstat")?;
    text.split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| unparsable(&format!("cat {path}"), "a run time", &text))
}

/// The calling thread pinned to one CPU; its former CPUs are restored on drop.
pub struct Pinned {
    former: libc::cpu_set_t,
}

impl Pinned {
    /// Pins the calling thread to `cpu`.
    pub fn to_cpu(cpu: usize) -> Result<Pinned, BenchError> {
        // SAFETY: all-zero is a valid, empty cpu_set_t.
        let mut former: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `former` is a valid, writable cpu_set_t of the size passed.
        let result = unsafe {
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut former)
        };
        if result != 0 {
            return Err(BenchError::Io {
                action: "reading the CPUs of",
                target: "this thread".to_string(),
                source: std::io::Error::last_os_error(),
            });
        }
        pin_to_cpu(cpu)?;
        Ok(Pinned { former })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: `former` is the valid cpu_set_t read in `to_cpu`.
        let result = unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.former)
        };
        if result != 0 {
            log::warn!(
                "restoring this thread's CPUs failed error={}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Restricts the calling thread to `cpu`. Threads it creates later inherit the restriction.
pub fn pin_to_cpu(cpu: usize) -> Result<(), BenchError> {
    moat_lab::cpus::pin(cpu).map_err(|source| BenchError::Io {
        action: "pinning this thread to",
        target: format!("cpu {cpu}"),
        source,
    })
}
