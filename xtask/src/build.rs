//! `cargo xtask build`: builds the `moat` binary with the XDP object embedded.
//!
//! The eBPF object itself is built by `filter-user/build.rs`; this module only makes sure the
//! machine is ready and runs cargo with the project's tools on `PATH`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::{exec::exec, setup, workspace};

/// Options of `cargo xtask build`.
#[derive(Debug, Args)]
pub struct Options {
    /// Build the debug profile instead of release (the XDP object is optimised either way).
    #[arg(long)]
    pub debug: bool,
}

/// Ensures setup, then builds `moat`.
pub fn run(opts: Options) -> Result<()> {
    setup::ensure_ready()?;
    let binary = build_moat(!opts.debug)?;
    eprintln!("xtask: built {}", binary.display());
    Ok(())
}

/// Builds `filter-user` (release if `release`) and returns the path of the `moat` binary.
/// Callers run [`setup::ensure_ready`] first.
pub fn build_moat(release: bool) -> Result<PathBuf> {
    build_with(release, &[])
}

/// Builds `moat` and the binaries of `packages` (the lab, the bench) in one cargo run
/// (release if `release`); returns the path of `moat`, beside which the others lie.
pub fn build_with(release: bool, packages: &[&str]) -> Result<PathBuf> {
    let mut cargo = workspace::cargo()?;
    cargo.args(["build", "--package", "filter-user"]);
    for package in packages {
        cargo.args(["--package", package]);
    }
    if release {
        cargo.arg("--release");
    }
    exec(&mut cargo)?;
    let profile = if release { "release" } else { "debug" };
    Ok(workspace::target_dir()?.join(profile).join("moat"))
}
