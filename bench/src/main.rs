//! `moat-bench`: runs the benchmark (the `moat_bench` library) as root, prints its markdown report and
//! writes it to a file. `cargo xtask bench` builds it and runs it; it can also run alone.

use std::{io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use moat_bench::{self as bench, Options, Section};

/// Benchmarks moat against the XDP_DROP floor, xdp-filter and nftables, in namespaces it
/// creates and removes; needs root. Prints a markdown report and writes it to --out.
#[derive(Debug, Parser)]
#[command(name = "moat-bench", version, about)]
struct Args {
    /// Where to write the report (with the machine's description).
    #[arg(long, value_name = "FILE", default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// The moat binary to run as `moat run` [default: `moat` next to this binary].
    #[arg(long, value_name = "FILE")]
    moat: Option<PathBuf>,
    /// Run only these sections (repeatable) [default: all].
    #[arg(long, value_enum, value_name = "SECTION")]
    only: Vec<SectionArg>,
    /// BPF_PROG_TEST_RUN repetitions per timed run.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Timed runs per cost case; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds each flood of the throughput section lasts.
    #[arg(long, default_value_t = 2.0)]
    flood_seconds: f64,
    /// Floods per receiver; the median is reported.
    #[arg(long, default_value_t = 3)]
    flood_rounds: usize,
    /// Prefixes in the large denylist.
    #[arg(long, default_value_t = 1_000_000)]
    deny_prefixes: usize,
    /// Sources banned in the control-plane section.
    #[arg(long, default_value_t = 100_000)]
    bans: usize,
    /// Decisions imported into the CrowdSec section's LAPI (90% IPv4 and 5% IPv6 addresses,
    /// 4% IPv4 /24s, 1% IPv6 /48s).
    #[arg(long, default_value_t = 100_000)]
    crowdsec_decisions: usize,
    /// Daemons started in the CrowdSec section, each pulling every decision; the median is
    /// reported.
    #[arg(long, default_value_t = 3)]
    crowdsec_rounds: usize,
    /// Largest number of tracked sources in the scaling section.
    #[arg(long, default_value_t = 1_000_000)]
    max_sources: u32,
}

/// A section of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SectionArg {
    /// Cost per packet of every path (BPF_PROG_TEST_RUN).
    Cost,
    /// Cost and memory as tracked sources and deny prefixes grow.
    Scaling,
    /// Throughput of spoofed SYN and ACK floods over veth (drops and SYN-cookie answers).
    Throughput,
    /// Loading a denylist, banning sources, the daemon's memory.
    Control,
    /// A CrowdSec bouncer pulling 100,000 decisions from a real Local API.
    #[value(name = "crowdsec")]
    CrowdSec,
}

impl From<SectionArg> for Section {
    fn from(arg: SectionArg) -> Section {
        match arg {
            SectionArg::Cost => Section::Cost,
            SectionArg::Scaling => Section::Scaling,
            SectionArg::Throughput => Section::Throughput,
            SectionArg::Control => Section::Control,
            SectionArg::CrowdSec => Section::CrowdSec,
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("moat-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let moat_exe = match args.moat {
        Some(path) => path,
        None => std::env::current_exe()
            .context("finding this binary")?
            .with_file_name("moat"),
    };
    anyhow::ensure!(
        moat_exe.exists(),
        "the moat binary is not at {}: build it (cargo xtask bench does) or pass --moat",
        moat_exe.display()
    );
    let mut options = Options::standard(moat_exe);
    options.repeat = args.repeat;
    options.rounds = args.rounds.max(1);
    options.flood = Duration::from_secs_f64(args.flood_seconds.clamp(0.1, 60.0));
    options.flood_rounds = args.flood_rounds.max(1);
    options.deny_prefixes = args.deny_prefixes;
    options.bans = args.bans;
    options.crowdsec_decisions = args.crowdsec_decisions.max(1);
    options.crowdsec_rounds = args.crowdsec_rounds.max(1);
    options.max_sources = args.max_sources.max(1_000);
    if !args.only.is_empty() {
        options.sections = args.only.into_iter().map(Section::from).collect();
    }
    let report = bench::run(&options, &mut |line| {
        eprintln!("{line}");
    })
    .context("benchmarking")?;
    let markdown = report.to_markdown();
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(markdown.as_bytes())
        .context("printing the report")?;
    std::fs::write(&args.out, &markdown)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("moat-bench: wrote {}", args.out.display());
    Ok(())
}
