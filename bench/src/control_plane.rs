//! The control plane against a running `moat run`: how long `moat deny add --file` takes to
//! load the large denylist, how long banning 100,000 sources takes, what `moat ban list` and
//! the daemon's housekeeping cost with them in place, and how much resident memory the daemon
//! holds (the maps' kernel memory is the scaling section's).
//!
//! The denylist goes through the `moat` binary as an operator would run it (parse, validate,
//! insert). `moat ban add` takes one address per run, so the 100,000 bans go through the same
//! library call it makes (`bans::PinnedBans::add`), and one run of the binary is timed for the
//! per-command cost. The daemon runs in a namespace of its own on a veth end; no traffic flows.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use super::{
    BenchError, Options, prefixes,
    throughput::Bed,
    tools::{TempFile, read_proc},
};
use moat::{bans::PinnedBans, config::Config, netns::run};

/// What the control-plane section measured.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlReport {
    /// Prefixes loaded with `moat deny add --file`.
    pub deny_prefixes: usize,
    /// Each round's load of them into a fresh `moat run` ([`DENY_ROUNDS`]), in the order run.
    pub deny_loads: Vec<DenyLoad>,
    /// Sources banned.
    pub bans: usize,
    /// How long banning them took, seconds.
    pub ban_seconds: f64,
    /// One `moat ban add` run, seconds.
    pub ban_command_seconds: f64,
    /// One `moat ban list` run with every ban in place (output discarded), seconds.
    pub ban_list_seconds: f64,
    /// The daemon's CPU time per housekeeping round (its walk of the tables every 10 s) with
    /// every ban in place and no traffic, seconds: its CPU time over [`HOUSEKEEPING_ROUNDS`]
    /// rounds, divided by them.
    pub housekeeping_cpu_seconds: f64,
    /// The daemon's resident memory after attaching, bytes (the least over a second).
    pub rss_idle_bytes: u64,
    /// Its resident memory after the denylist and the bans, bytes (the least over a second).
    pub rss_loaded_bytes: u64,
    /// Its peak resident memory, bytes.
    pub rss_peak_bytes: u64,
}

/// Housekeeping rounds the daemon's CPU time is measured over (one every 10 s).
pub const HOUSEKEEPING_ROUNDS: u32 = 3;

/// Loads of the denylist timed, each into a `moat run` of its own started for it: the report
/// gives their median and spread, since one load on a shared machine moves by a tenth or more.
pub const DENY_ROUNDS: usize = 3;

/// One timed `moat deny add --file` into a fresh `moat run`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DenyLoad {
    /// How long the command took, process start included, seconds.
    pub seconds: f64,
    /// CPU time it spent in userspace (reading, parsing, validating), seconds.
    pub user_seconds: f64,
    /// CPU time it spent in the kernel (the trie inserts, through their system calls), seconds.
    pub system_seconds: f64,
}

impl ControlReport {
    /// The median load by wall time (the later of the two middle ones for an even count), or
    /// all zeroes if none ran.
    pub fn deny_median(&self) -> DenyLoad {
        let mut loads = self.deny_loads.clone();
        loads.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        loads.get(loads.len() / 2).copied().unwrap_or(DenyLoad {
            seconds: 0.0,
            user_seconds: 0.0,
            system_seconds: 0.0,
        })
    }

    /// The fastest and slowest load, seconds.
    pub fn deny_spread(&self) -> (f64, f64) {
        let seconds = self.deny_loads.iter().map(|load| load.seconds);
        (
            seconds.clone().fold(f64::INFINITY, f64::min),
            seconds.fold(0.0, f64::max),
        )
    }
}

/// Times `moat deny add --iface IFACE --file FILE` in `bed`'s origin namespace.
fn time_deny_add(
    bed: &Bed,
    exe: &std::path::Path,
    file: &std::path::Path,
) -> Result<DenyLoad, BenchError> {
    let (user_before, system_before) = children_cpu_seconds();
    let started = Instant::now();
    run(bed
        .origin
        .command(exe)
        .args(["deny", "add", "--iface", &bed.origin_end.iface, "--file"])
        .arg(file))?;
    let seconds = started.elapsed().as_secs_f64();
    let (user_after, system_after) = children_cpu_seconds();
    Ok(DenyLoad {
        seconds,
        user_seconds: user_after - user_before,
        system_seconds: system_after - system_before,
    })
}

/// User plus system CPU time of process `pid` (all its threads, live and exited), seconds, to
/// the kernel's clock tick for user space (`_SC_CLK_TCK`, 10 ms here).
fn process_cpu_seconds(pid: u32) -> Result<f64, BenchError> {
    let (path, text) = read_proc(pid, "stat")?;
    // Fields after the command name (which may hold spaces) start at the state, field 3;
    // utime and stime are fields 14 and 15.
    let ticks: Option<Vec<u64>> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().skip(11).take(2))
        .map(|fields| {
            fields
                .map(|field| field.parse().ok())
                .collect::<Option<Vec<u64>>>()
        })
        .and_then(|ticks| ticks);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    match ticks.as_deref() {
        Some(&[user, system]) if per_second > 0 => Ok((user + system) as f64 / per_second as f64),
        _ => Err(super::tools::unparsable(
            &format!("cat {path}"),
            "utime and stime",
            &text,
        )),
    }
}

/// User and system CPU time, seconds, of every child this process has waited for so far (and
/// their waited-for descendants: `nsenter`'s `moat`).
fn children_cpu_seconds() -> (f64, f64) {
    // SAFETY: rusage is plain data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage to write; RUSAGE_CHILDREN cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

/// `VmRSS` and `VmHWM` of process `pid`, bytes.
pub(crate) fn resident(pid: u32) -> Result<(u64, u64), BenchError> {
    let (path, text) = read_proc(pid, "status")?;
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
    };
    match (field("VmRSS:"), field("VmHWM:")) {
        (Some(rss), Some(peak)) => Ok((rss, peak)),
        _ => Err(super::tools::unparsable(
            &format!("cat {path}"),
            "VmRSS and VmHWM",
            &text,
        )),
    }
}

/// Samples of `VmRSS` [`settled_resident`] takes, [`SETTLE_PAUSE`] apart.
const SETTLE_SAMPLES: u32 = 10;

/// The pause between those samples.
const SETTLE_PAUSE: Duration = Duration::from_millis(100);

/// The least `VmRSS` of process `pid` over a second, bytes: the daemon's resting memory. The
/// daemon maps the tables it walks (the sources table is 32 MiB at the shipped capacity) for
/// the few milliseconds a walk takes, and one reading in the middle of a walk counts them.
fn settled_resident(pid: u32) -> Result<u64, BenchError> {
    let mut least = u64::MAX;
    for sample in 0..SETTLE_SAMPLES {
        if sample > 0 {
            std::thread::sleep(SETTLE_PAUSE);
        }
        least = least.min(resident(pid)?.0);
    }
    Ok(least)
}

/// The pid of the `moat run` serving `iface`.
pub(crate) fn daemon_pid(iface: &str) -> Result<u32, BenchError> {
    let wanted = ["run", "--iface", iface];
    let entries = std::fs::read_dir("/proc").map_err(|source| BenchError::Io {
        action: "listing",
        target: "/proc".to_string(),
        source,
    })?;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args
            .windows(wanted.len())
            .any(|w| w.iter().zip(wanted).all(|(a, b)| *a == b.as_bytes()))
            && args
                .first()
                .is_some_and(|exe| exe.ends_with(b"moat") || exe.ends_with(b"/moat"))
        {
            return Ok(pid);
        }
    }
    Err(BenchError::Tool {
        tool: "moat run",
        problem: format!("no moat run process serves {iface}"),
    })
}

/// Measures the control plane against a fresh `moat run`.
pub fn measure(
    options: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<ControlReport, BenchError> {
    let shipped = Config::default();
    let config = Config {
        // Room for every ban, so none is evicted while they are timed.
        max_bans: u32::try_from(options.bans)
            .unwrap_or(u32::MAX)
            .max(shipped.max_bans)
            .saturating_add(1024),
        deny_capacity: u32::try_from(options.deny_prefixes)
            .unwrap_or(u32::MAX)
            .max(shipped.deny_capacity),
        ..shipped
    };
    let list: String = prefixes::v4(options.deny_prefixes, 0x6d6f_6174_0c0c)
        .iter()
        .map(|cidr| format!("{cidr}\n"))
        .collect();
    let file = TempFile::create("deny.txt", &list)?;
    drop(list);
    let mut deny_loads = Vec::with_capacity(DENY_ROUNDS);
    let mut timed = |bed: &Bed, progress: &mut dyn FnMut(&str)| -> Result<(), BenchError> {
        let load = time_deny_add(bed, &options.moat_exe, file.path())?;
        progress(&format!(
            "control: moat deny add --file with {} prefixes, round {} of {DENY_ROUNDS}: \
             {:.2} s ({:.2} s user, {:.2} s system)",
            options.deny_prefixes,
            deny_loads.len() + 1,
            load.seconds,
            load.user_seconds,
            load.system_seconds
        ));
        deny_loads.push(load);
        Ok(())
    };
    // Every round but the last loads into a `moat run` of its own, gone with its bed.
    for _ in 1..DENY_ROUNDS {
        let bed = Bed::create()?;
        let moat = bed.start_moat(&options.moat_exe, &config)?;
        timed(&bed, progress)?;
        moat.daemon.stop()?;
    }

    let bed = Bed::create()?;
    let iface = bed.origin_end.iface.clone();
    let moat = bed.start_moat(&options.moat_exe, &config)?;
    let pid = daemon_pid(&iface)?;
    let rss_idle_bytes = settled_resident(pid)?;
    timed(&bed, progress)?;
    drop(file);

    let started = Instant::now();
    run(bed.origin.command(&options.moat_exe).args([
        "ban",
        "add",
        "--iface",
        &iface,
        "--for",
        "1h",
        "198.19.255.254",
    ]))?;
    let ban_command_seconds = started.elapsed().as_secs_f64();

    let mut bans = PinnedBans::open(&iface)?;
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let count = options.bans.min(1 << 17);
    let started = Instant::now();
    for index in 0..count as u32 {
        bans.add(
            IpAddr::V4(Ipv4Addr::from(base + index)),
            Duration::from_secs(3_600),
        )?;
    }
    let ban_seconds = started.elapsed().as_secs_f64();
    progress(&format!(
        "control: {count} bans: {ban_seconds:.2} s (one moat ban add run: \
         {ban_command_seconds:.3} s)"
    ));
    let started = Instant::now();
    run(bed
        .origin
        .command(&options.moat_exe)
        .args(["ban", "list", "--iface", &iface])
        .stdout(std::process::Stdio::null()))?;
    let ban_list_seconds = started.elapsed().as_secs_f64();
    let cpu_before = process_cpu_seconds(pid)?;
    std::thread::sleep(Duration::from_secs(10 * u64::from(HOUSEKEEPING_ROUNDS)));
    let housekeeping_cpu_seconds =
        (process_cpu_seconds(pid)? - cpu_before) / f64::from(HOUSEKEEPING_ROUNDS);
    progress(&format!(
        "control: with {count} bans: moat ban list {ban_list_seconds:.3} s, daemon CPU \
         {:.1} ms per housekeeping round",
        housekeeping_cpu_seconds * 1e3
    ));
    let rss_loaded_bytes = settled_resident(pid)?;
    let (_, rss_peak_bytes) = resident(pid)?;
    progress(&format!(
        "control: moat run resident memory {:.1} MiB idle, {:.1} MiB loaded, {:.1} MiB peak",
        rss_idle_bytes as f64 / (1u64 << 20) as f64,
        rss_loaded_bytes as f64 / (1u64 << 20) as f64,
        rss_peak_bytes as f64 / (1u64 << 20) as f64
    ));
    moat.daemon.stop()?;
    Ok(ControlReport {
        deny_prefixes: options.deny_prefixes,
        deny_loads,
        bans: count,
        ban_seconds,
        ban_command_seconds,
        ban_list_seconds,
        housekeeping_cpu_seconds,
        rss_idle_bytes,
        rss_loaded_bytes,
        rss_peak_bytes,
    })
}
