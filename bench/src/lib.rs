//! `moat-bench`: what the filter costs per packet, how fast it drops or answers a flood, how its
//! cost and memory grow with its tables, and how long the control plane takes — each figure next
//! to a baseline measured in the same run (the trivial XDP_DROP floor, the parse + count floor
//! that runs moat's parser and counter with no policy, xdp-filter, nftables, the kernel's own
//! SYN cookies), because these machines are noisy and only ratios carry from one run to the
//! next.
//!
//! The sections are [`cost`] (BPF_PROG_TEST_RUN per path), [`throughput`] (live-frames SYN and
//! ACK floods over veth between namespaces, answered or dropped), [`scaling`] (tracked sources
//! and deny prefixes), [`control_plane`] (loading a denylist, banning, the daemon's memory)
//! and [`crowdsec`] (a CrowdSec bouncer's startup pull of 100,000 decisions from a real LAPI);
//! [`targets`] judges issue #13's targets on them and [`report`] renders it all as markdown.
//! Targets are reported as PASS or MISS, never asserted: this is a measurement, not a test.
//! Building the binaries is `cargo xtask bench`'s job, not this module's. Everything it creates
//! (namespaces, attachments, pins, temporary files) is removed when it ends, also on failure.

pub mod control_plane;
pub mod cost;
pub mod crowdsec;
pub mod frames;
pub mod machine;
pub mod measure;
pub mod memory;
pub mod origin;
pub mod prefixes;
pub mod report;
pub mod scaling;
pub mod targets;
pub mod throughput;
pub mod tools;

use std::{
    path::PathBuf,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::{EbpfError, maps::MapError, programs::ProgramError};

use moat::{
    bans::BanError, control::ListEditError, netns::NetNsError, preflight::PreflightError,
    stats::StatsError,
};
use moat_lab::{flood::FloodError, process::ProcessError};

use self::report::Report;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// BPF_PROG_TEST_RUN repetitions per timed run.
    pub repeat: u32,
    /// Timed runs per case, interleaved across cases; the median is reported.
    pub rounds: usize,
    /// How long each flood of the throughput section lasts.
    pub flood: Duration,
    /// Flood rounds per receiver, interleaved across receivers; the median is reported.
    pub flood_rounds: usize,
    /// Prefixes in the large denylist (the cost section's and the control plane's).
    pub deny_prefixes: usize,
    /// Sources banned in the control-plane section.
    pub bans: usize,
    /// Decisions imported into the LAPI of the CrowdSec section.
    pub crowdsec_decisions: usize,
    /// Daemons started in the CrowdSec section, each pulling every decision; the median is
    /// reported.
    pub crowdsec_rounds: usize,
    /// Largest number of tracked sources (scaling section and the live series).
    pub max_sources: u32,
    /// The `moat` binary, run as `moat run` for the live sections.
    pub moat_exe: PathBuf,
    /// The sections to run (all by default).
    pub sections: Vec<Section>,
}

/// A part of the benchmark that can run alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Cost per packet of every path, by BPF_PROG_TEST_RUN.
    Cost,
    /// Cost and memory as tracked sources and deny prefixes grow.
    Scaling,
    /// Throughput of spoofed SYN and ACK floods over veth (drops and SYN-cookie answers).
    Throughput,
    /// Loading a denylist, banning sources, the daemon's memory.
    Control,
    /// A CrowdSec bouncer's startup pull of the decisions of a real LAPI.
    CrowdSec,
}

impl Section {
    /// Every section, in the order they run.
    pub const ALL: [Section; 5] = [
        Section::Cost,
        Section::Scaling,
        Section::Throughput,
        Section::Control,
        Section::CrowdSec,
    ];
}

impl Options {
    /// The figures the issue asks for: 1,000,000 repetitions, 1,000,000 prefixes, 100,000
    /// bans, 2-second floods, 100,000 CrowdSec decisions pulled in 3 rounds.
    pub fn standard(moat_exe: PathBuf) -> Options {
        Options {
            repeat: 1_000_000,
            rounds: 5,
            flood: Duration::from_secs(2),
            flood_rounds: 3,
            deny_prefixes: 1_000_000,
            bans: 100_000,
            crowdsec_decisions: 100_000,
            crowdsec_rounds: 3,
            max_sources: 1_000_000,
            moat_exe,
            sections: Section::ALL.to_vec(),
        }
    }
}

/// A benchmark that could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A preflight check failed (root, bpffs).
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// A tool the comparison needs is missing.
    #[error("{tool} is not installed: install Debian's {package} (cargo xtask setup does)")]
    MissingTool {
        /// The executable.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// An object could not be loaded (its maps created).
    #[error("loading {object}: {source}")]
    Load {
        /// Which object.
        object: &'static str,
        /// What aya reported (boxed: `EbpfError` is large).
        source: Box<EbpfError>,
    },
    /// A program could not be found, loaded, attached or run.
    #[error("{action} program {program}: {source}")]
    Program {
        /// What was being done.
        action: &'static str,
        /// Which program.
        program: String,
        /// What aya reported.
        source: ProgramError,
    },
    /// A map could not be found, read or written.
    #[error("{action} map {map}: {source}")]
    Map {
        /// What was being done.
        action: &'static str,
        /// Which map.
        map: String,
        /// What aya reported (boxed: `MapError` is large).
        source: Box<MapError>,
    },
    /// A measured case did not take the path it is named for, so its figure would be wrong.
    #[error("case {case:?} took the wrong path: expected {expected}, got {got}")]
    WrongPath {
        /// The case.
        case: String,
        /// What it should have done.
        expected: String,
        /// What it did.
        got: String,
    },
    /// A tool's output could not be read.
    #[error("reading the output of {command}: no {wanted} in {output:?}")]
    Unparsable {
        /// The command line.
        command: String,
        /// What was looked for.
        wanted: &'static str,
        /// What it printed (shortened).
        output: String,
    },
    /// Something outside the program failed: a file, a clock, a thread's CPU affinity.
    #[error("{action} {target}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// What it was done to.
        target: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// SIGINT or SIGTERM arrived; everything created so far is being removed.
    #[error("interrupted; removing the namespaces and programs created so far")]
    Interrupted,
    /// xdp-filter or nftables refused a setup the comparison needs.
    #[error("{tool}: {problem}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// What is wrong and what would fix it.
        problem: String,
    },
    /// A namespace command failed.
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    /// The flood generator failed.
    #[error(transparent)]
    Flood(#[from] FloodError),
    /// `moat run` could not be started or stopped.
    #[error(transparent)]
    Daemon(#[from] ProcessError),
    /// A denylist edit failed.
    #[error(transparent)]
    List(#[from] ListEditError),
    /// A ban failed.
    #[error(transparent)]
    Ban(#[from] BanError),
    /// A running filter's counters could not be read.
    #[error(transparent)]
    Stats(#[from] StatsError),
    /// The verified-source cache could not be mapped.
    #[error(transparent)]
    Verified(#[from] moat::verified::CacheError),
    /// The bans summary could not be mapped.
    #[error(transparent)]
    BanSummary(#[from] moat::bansummary::SummaryError),
    /// The CrowdSec Local API could not be started or driven.
    #[error(transparent)]
    Lapi(#[from] moat_lab::crowdsec::LapiError),
}

impl BenchError {
    /// A map error while `action` on `map`.
    pub fn map<'a>(action: &'static str, map: &'a str) -> impl FnOnce(MapError) -> BenchError + 'a {
        move |source| BenchError::Map {
            action,
            map: map.to_string(),
            source: Box::new(source),
        }
    }

    /// A program error while `action` on `program`.
    pub fn program<'a>(
        action: &'static str,
        program: &'a str,
    ) -> impl FnOnce(ProgramError) -> BenchError + 'a {
        move |source| BenchError::Program {
            action,
            program: program.to_string(),
            source,
        }
    }
}

/// Set by SIGINT or SIGTERM once [`run`] has installed its handlers: steps stop at their next
/// check, and the guards clean up.
static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Fails with [`BenchError::Interrupted`] once SIGINT or SIGTERM has arrived. Every round of
/// every section checks it, so a run stops within a few seconds and still cleans up.
pub fn check_interrupted() -> Result<(), BenchError> {
    if INTERRUPTED
        .get()
        .is_some_and(|flag| flag.load(Ordering::Relaxed))
    {
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}

/// Runs every section and returns the report; `progress` hears one line per step.
pub fn run(options: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    moat::preflight::check_privileges()?;
    moat::preflight::check_bpffs()?;
    tools::require_tools()?;
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(flag)).map_err(|source| BenchError::Io {
            action: "installing a handler for",
            target: format!("signal {signal}"),
            source,
        })?;
    }
    let started = Instant::now();
    let machine = machine::Machine::describe();
    progress(&format!("machine: {}", machine.summary()));

    let wants = |section| options.sections.contains(&section);
    let mut cost = None;
    let mut scaling = None;
    if wants(Section::Cost) || wants(Section::Scaling) {
        // The denylist grows, timed at each size, in the object the cost table then measures.
        // Every test run happens inside the namespace with the sockets the cases need.
        let origin = cost::origin()?;
        let mut subject = measure::Subject::load(measure::Sizes::default())?;
        cost::prepare_subject(&mut subject, progress)?;
        let deny = scaling::grow_denylist(&mut subject, &origin, options, progress)?;
        cost::fill_v6_denylist(&mut subject, options.deny_prefixes)?;
        progress(&format!(
            "cost: {} IPv6 deny prefixes loaded",
            options.deny_prefixes
        ));
        let maps = scaling::map_memory(&subject)?;
        if wants(Section::Cost) {
            cost = Some(cost::measure(
                &mut subject,
                &origin,
                options.deny_prefixes,
                options,
                progress,
            )?);
        }
        drop(subject);
        if wants(Section::Scaling) {
            scaling = Some(scaling::ScalingReport {
                deny,
                sources: scaling::grow_sources(&origin, options, progress)?,
                maps,
            });
        }
    }
    let throughput = if wants(Section::Throughput) {
        Some(throughput::measure(options, progress)?)
    } else {
        None
    };
    let control = if wants(Section::Control) {
        Some(control_plane::measure(options, progress)?)
    } else {
        None
    };
    let crowdsec = if wants(Section::CrowdSec) {
        Some(crowdsec::measure(options, progress)?)
    } else {
        None
    };
    Ok(Report {
        machine,
        options: options.clone(),
        cost,
        scaling,
        throughput,
        control,
        crowdsec,
        elapsed: started.elapsed(),
    })
}

/// The median of `values` (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
