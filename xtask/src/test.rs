//! `cargo xtask test`: every suite CI runs, in a fixed order, with a summary at the end.
//!
//! Suites run one after another and a failure does not stop the rest, so one run reports
//! every problem. The last line printed is `N passed, M failed` (counting suites) for CI to
//! read. What the suites test is up to the crates; this module only runs them.

use std::{fmt, process::Command};

use anyhow::{Context as _, Result};
use clap::Args;

use crate::{exec::exec, setup, toolchain, workspace};

/// Options of `cargo xtask test`.
#[derive(Debug, Args)]
pub struct Options {
    /// Arguments for the test binaries, after `--` (e.g. a test name filter).
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

/// The error `run` returns when a suite failed, after it printed the summary; `main` exits
/// non-zero without printing anything more, so the summary stays the last line.
#[derive(Debug)]
pub struct SuitesFailed {
    /// How many suites failed or could not run.
    pub failed: usize,
}

impl fmt::Display for SuitesFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} test suite(s) failed", self.failed)
    }
}

impl std::error::Error for SuitesFailed {}

/// Ensures setup, runs every suite and prints the summary; fails with [`SuitesFailed`] if
/// any suite failed.
pub fn run(opts: Options) -> Result<()> {
    if !setup::is_root() {
        anyhow::bail!("tests load XDP programs and create network namespaces; run as root");
    }
    setup::ensure_ready()?;

    let mut suites = Suites::default();
    suites.run("fmt", cargo(["fmt", "--all", "--check"]))?;
    suites.run(
        "clippy",
        cargo(["clippy", "--all-targets", "--", "-D", "warnings"]),
    )?;
    suites.run("clippy (filter-ebpf, shipped)", ebpf_clippy(&[]))?;
    suites.run(
        "clippy (filter-ebpf, debug-log)",
        ebpf_clippy(&["debug-log"]),
    )?;
    suites.run(
        "filter-common unit tests",
        cargo(["test", "--package", "filter-common"]),
    )?;
    // The root tests run the real binaries, which they find in the target directory.
    let built = suites.run(
        "binaries (build)",
        cargo([
            "build",
            "--package",
            "filter-user",
            "--package",
            "moat-lab",
            "--bins",
        ]),
    )? && suites.run(
        "tests (build)",
        cargo([
            "test",
            "--package",
            "filter-user",
            "--package",
            "moat-lab",
            "--package",
            "moat-bench",
            "--package",
            "moat-tests",
            "--no-run",
        ]),
    )?;
    let tests = "unit tests and root tests (tests/)";
    if built {
        // Every test binary runs even after one fails, so one run reports every failure.
        let mut run = cargo([
            "test",
            "--package",
            "filter-user",
            "--package",
            "moat-lab",
            "--package",
            "moat-bench",
            "--package",
            "moat-tests",
            "--no-fail-fast",
        ])?;
        if !opts.test_args.is_empty() {
            run.arg("--").args(&opts.test_args);
        }
        suites.run(tests, Ok(run))?;
    } else {
        suites.skip(tests, "their build failed");
    }
    suites.run("xtask unit tests", cargo(["test", "--package", "xtask"]))?;
    suites.run("dist", xtask("dist"))?;
    suites.report()
}

/// This xtask binary running `verb`, for a suite that is another verb (`dist` builds and
/// checks the package, including the shipped configuration).
fn xtask(verb: &str) -> Result<Command> {
    let xtask = std::env::current_exe().context("finding the running xtask binary")?;
    let mut command = Command::new(xtask);
    command.arg(verb);
    Ok(command)
}

/// Crates of the eBPF build that may use unstable features (aya-ebpf's inline assembly and
/// moat's own `BPF_CMPXCHG`), as `filter-user/build.rs` allows them.
const EBPF_UNSTABLE_CRATES: &str =
    "aya_ebpf,aya_ebpf_bindings,aya_ebpf_cty,aya_log_ebpf,filter_ebpf,moat_filter,moat_parse_count";

/// clippy with `-D warnings` on the XDP crate, checked for `bpfel-unknown-none` with Debian's
/// toolchain and `features`, the way `filter-user/build.rs` builds it (the workspace's own
/// clippy leaves the crate out: it is not a default member).
fn ebpf_clippy(features: &[&str]) -> Result<Command> {
    let root = workspace::root()?;
    let mut command = Command::new("rustup");
    command
        .current_dir(&root)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env("RUSTC_BOOTSTRAP", EBPF_UNSTABLE_CRATES)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        )
        .args(["run", toolchain::BPF_TOOLCHAIN, "cargo", "clippy"])
        .args(["--package", "filter-ebpf", "--bins", "--release"])
        .args(["--target", "bpfel-unknown-none", "--target-dir"])
        .arg(workspace::target_dir()?.join("clippy-ebpf"));
    if !features.is_empty() {
        command.args(["--features", &features.join(",")]);
    }
    command.args(["--", "-D", "warnings"]);
    Ok(command)
}

/// A workspace `cargo` command with `args`.
fn cargo<const N: usize>(args: [&str; N]) -> Result<Command> {
    let mut cargo = workspace::cargo()?;
    cargo.args(args);
    Ok(cargo)
}

/// How one suite ended.
enum Outcome {
    /// It ran and succeeded.
    Passed,
    /// It ran and failed.
    Failed,
    /// It was not run, for the given reason; counts as failed.
    NotRun(&'static str),
}

/// The suites run so far and how each ended.
#[derive(Default)]
struct Suites {
    /// Suite names and outcomes, in the order they ran.
    outcomes: Vec<(&'static str, Outcome)>,
}

impl Suites {
    /// Runs one suite, records its outcome and returns whether it passed. Fails only if the
    /// command could not even be put together.
    fn run(&mut self, name: &'static str, command: Result<Command>) -> Result<bool> {
        eprintln!("xtask: suite {name}");
        let outcome = match exec(&mut command?) {
            Ok(()) => Outcome::Passed,
            Err(err) => {
                eprintln!("xtask: suite {name} FAILED: {err:#}");
                Outcome::Failed
            }
        };
        let passed = matches!(outcome, Outcome::Passed);
        self.outcomes.push((name, outcome));
        Ok(passed)
    }

    /// Records a suite that could not run, and why.
    fn skip(&mut self, name: &'static str, why: &'static str) {
        eprintln!("xtask: suite {name} not run: {why}");
        self.outcomes.push((name, Outcome::NotRun(why)));
    }

    /// Prints one line per suite, then `N passed, M failed` as the last line; fails with
    /// [`SuitesFailed`] if any suite did not pass.
    fn report(self) -> Result<()> {
        println!();
        println!("test summary:");
        let mut passed = 0;
        let mut failed = 0;
        for (name, outcome) in &self.outcomes {
            match outcome {
                Outcome::Passed => {
                    passed += 1;
                    println!("  ok      {name}");
                }
                Outcome::Failed => {
                    failed += 1;
                    println!("  FAILED  {name}");
                }
                Outcome::NotRun(why) => {
                    failed += 1;
                    println!("  FAILED  {name} (not run: {why})");
                }
            }
        }
        println!("{passed} passed, {failed} failed");
        if failed > 0 {
            return Err(SuitesFailed { failed }.into());
        }
        Ok(())
    }
}
