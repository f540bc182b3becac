//! `cargo xtask bench`: will benchmark the filter; a placeholder until issue #6.

use anyhow::{Result, bail};
use clap::Args;

/// Options of `cargo xtask bench` (none yet).
#[derive(Debug, Args)]
pub struct Options {}

/// Fails: benchmarking is not implemented yet.
pub fn run(_opts: Options) -> Result<()> {
    // TODO(#6): drive traffic through the lab and report packets per second per stage.
    bail!("cargo xtask bench lands with issue #6 (not implemented yet)")
}
