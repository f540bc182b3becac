//! `cargo xtask`: the project's tasks (setup, build, test, lab, bench, dist) as one clap command.
//!
//! This file only parses the command line and dispatches to one module per verb; the work,
//! and the knowledge of which tools and versions moat needs, lives in those modules. It
//! does not build anything itself.

mod bench;
mod build;
mod dist;
mod exec;
mod lab;
mod layers;
mod setup;
mod test;
mod toolchain;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Project tasks for moat, run as `cargo xtask <verb>`.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    /// The task to run.
    #[command(subcommand)]
    verb: Verb,
}

/// One subcommand per project task.
#[derive(Debug, Subcommand)]
enum Verb {
    /// Check every build and test requirement and install only what is missing.
    Setup(setup::Options),
    /// Build the `moat` binary, with the XDP object embedded.
    Build(build::Options),
    /// Run every suite (fmt, clippy, unit tests, root tests) and summarise them.
    Test(test::Options),
    /// Build `moat` and `moat-lab` (release) and run the lab with the given arguments.
    Lab(lab::Options),
    /// Benchmark the filter.
    Bench(bench::Options),
    /// Build the Debian package target/dist/moat_VERSION_ARCH.deb and check its contents.
    Dist(dist::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.verb {
        Verb::Setup(opts) => setup::run(opts),
        Verb::Build(opts) => build::run(opts),
        Verb::Test(opts) => test::run(opts),
        Verb::Lab(opts) => lab::run(opts),
        Verb::Bench(opts) => bench::run(opts),
        Verb::Dist(opts) => dist::run(opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `test` has already printed its summary, whose last line CI reads; print nothing more.
        Err(err) if err.is::<test::SuitesFailed>() => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
