//! `cargo xtask bench`: builds `moat` and `moat-bench` (release) and runs the benchmark, which
//! prints its markdown report and writes it, with the machine's description, to
//! `BENCHMARKS.md` at the workspace root.
//!
//! What is measured, and how, is `moat-bench`'s business (`bench/`); this
//! module only gets the machine ready, builds the binaries and runs them as root.

use std::{path::PathBuf, process::Command};

use anyhow::{Result, bail};
use clap::Args;

use crate::{build, exec::exec, setup, workspace};

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct Options {
    /// Where to write the report [default: BENCHMARKS.md at the workspace root].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Arguments for `moat-bench`, passed through as given (e.g. `-- --only cost`; use `--`
    /// before `--help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Ensures setup, builds both binaries in release mode and runs `moat-bench --out FILE`;
/// fails if it exits non-zero.
pub fn run(opts: Options) -> Result<()> {
    if !setup::is_root() {
        bail!(
            "the benchmark loads XDP programs and creates network namespaces: run `cargo xtask \
             bench` as root"
        );
    }
    setup::ensure_ready()?;
    let moat = build::build_with(true, &["moat-bench"])?;
    let bench = moat.with_file_name("moat-bench");
    let out = match opts.out {
        Some(out) => out,
        None => workspace::root()?.join("BENCHMARKS.md"),
    };
    exec(
        Command::new(bench)
            .arg("--moat")
            .arg(&moat)
            .arg("--out")
            .arg(&out)
            .args(&opts.args),
    )
}
