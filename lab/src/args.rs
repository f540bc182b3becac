//! The command line of `moat-lab`.

use std::path::PathBuf;

use clap::Parser;

/// Shows, on one machine, what a self-hosted origin faces without protection and with moat:
/// attacks from network namespaces it creates and removes, visitors measured in every phase.
/// Needs root; `cargo xtask lab` builds and runs it.
#[derive(Debug, Parser)]
#[command(name = "moat-lab", version, about)]
pub struct LabArgs {
    /// Which attacks: all, or a comma-separated list of spoofed-syn, botnet-syn, udp-flood,
    /// reflection, icmp-flood, fragment-flood, ipv6-syn, ack-flood, carpet-bomb, mixed.
    #[arg(long, default_value = "all", value_name = "NAME|all")]
    pub scenario: String,
    /// Seconds each phase (baseline, unprotected, protected) lasts.
    #[arg(long, default_value_t = 8, value_name = "S", value_parser = clap::value_parser!(u64).range(2..=600))]
    pub duration: u64,
    /// Attack packets per second to offer (the report says what the generator reached).
    #[arg(long, default_value_t = 1_000_000, value_name = "PPS", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub rate: u64,
    /// Where to write lab-report.json and lab-report.svg.
    #[arg(long, default_value = "moat-lab", value_name = "DIR")]
    pub out: PathBuf,
    /// The moat binary to run as `moat run` in the protected phases [default: `moat` next to
    /// this binary].
    #[arg(long, value_name = "FILE")]
    pub moat: Option<PathBuf>,
}

impl LabArgs {
    /// The moat binary to run: `--moat`, else `moat` beside this binary.
    pub fn moat_binary(&self) -> std::io::Result<PathBuf> {
        match &self.moat {
            Some(path) => Ok(path.clone()),
            None => Ok(std::env::current_exe()?.with_file_name("moat")),
        }
    }
}
