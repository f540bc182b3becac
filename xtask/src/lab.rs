//! `cargo xtask lab`: builds `moat` and `moat-lab` (release) and runs `moat-lab` with the given
//! arguments, on that `moat`.
//!
//! What the lab does (namespaces, traffic) is `moat-lab`'s business (`lab/`); this module only gets
//! the machine ready, builds the binary and passes the arguments through untouched.

use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::{build, exec::exec, setup};

/// Options of `cargo xtask lab`.
#[derive(Debug, Args)]
pub struct Options {
    /// Arguments for `moat-lab`, passed through as given (use `--` before `--help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Ensures setup, builds `moat` in release mode and runs `moat-lab --moat MOAT <args>`; fails if it exits
/// non-zero.
pub fn run(opts: Options) -> Result<()> {
    setup::ensure_ready()?;
    let moat = build::build_with(true, &["moat-lab"])?;
    let lab = moat.with_file_name("moat-lab");
    exec(Command::new(lab).arg("--moat").arg(&moat).args(&opts.args))
}
