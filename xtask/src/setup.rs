//! `cargo xtask setup`: makes this machine able to build and test moat.
//!
//! Each requirement is checked first and installed only if missing, so a second run takes
//! seconds and changes nothing. Installs stay inside the project (`target/tools`) or come
//! from the package registries (apt, crates.io); the one file written outside them is
//! CrowdSec's offline opt-out, which its package needs on a machine without internet.
//! Versions come from `toolchain`; this module does not build moat itself.

use std::{fmt, fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{
    exec::{exec, probe},
    toolchain, workspace,
};

/// Options of `cargo xtask setup` (it has none).
#[derive(Debug, Args)]
pub struct Options {}

/// Where the kernel's BPF filesystem must be mounted for pinning.
const BPFFS_MOUNT_POINT: &str = "/sys/fs/bpf";

/// The kernel's own BTF, needed for CO-RE relocations when loading the object.
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// CrowdSec's online API credentials. If this file is missing or empty when the package is
/// configured, crowdsec's postinst runs `cscli capi register`, which fails with no network
/// and leaves the package half-configured; any content opts out.
const CROWDSEC_ONLINE_CREDENTIALS: &str = "/etc/crowdsec/online_api_credentials.yaml";

/// What setup writes to [`CROWDSEC_ONLINE_CREDENTIALS`] to opt out of the online API.
const CROWDSEC_OFFLINE_OPT_OUT: &str = "# offline: no online API\n";

/// The programs the CrowdSec tests run: the Local API and its command line.
const CROWDSEC_BINARIES: [&str; 2] = ["/usr/bin/crowdsec", "/usr/bin/cscli"];

/// Checks every requirement, installs what is missing and prints one line per requirement.
pub fn run(_opts: Options) -> Result<()> {
    for requirement in Requirement::ALL {
        match requirement.check()? {
            Status::Ready => println!("{requirement}: ok"),
            Status::Missing(why) => {
                eprintln!("{requirement}: {why}");
                let done = requirement.install()?;
                if let Status::Missing(why) = requirement.check()? {
                    bail!("{requirement} is still not ready after setup: {why}");
                }
                println!("{requirement}: {done}");
            }
        }
    }
    Ok(())
}

/// Checks every requirement quickly (no network) and runs the full [`run`] only if one is
/// missing. `build`, `test` and `lab` call this first.
pub fn ensure_ready() -> Result<()> {
    let mut missing = Vec::new();
    for requirement in Requirement::ALL {
        if let Status::Missing(why) = requirement.check()? {
            if !requirement.is_installable() {
                // Say why at once: setup could not help, and without root the later checks
                // may not even be able to run.
                return requirement.install().map(drop);
            }
            missing.push(format!("{requirement} ({why})"));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: not ready: {}; running setup", missing.join(", "));
    run(Options {})
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The result of checking one requirement.
enum Status {
    /// Present and usable.
    Ready,
    /// Absent or unusable, and why.
    Missing(String),
}

/// One thing the build or the tests need from the machine.
#[derive(Clone, Copy, Debug)]
enum Requirement {
    /// Root: apt-get, mount and the tests need it. Checked first, so that a missing
    /// privilege is reported as such rather than as a failing apt-get.
    Root,
    /// The Debian package [`toolchain::CROWDSEC_PACKAGE`], configured offline (no online
    /// API), with [`CROWDSEC_BINARIES`] in place. Handled before [`Self::DebianPackages`]:
    /// a crowdsec left half-configured makes every later `apt-get install` try to configure
    /// it again, and fail the same way.
    CrowdSec,
    /// The Debian packages in [`toolchain::DEBIAN_PACKAGES`].
    DebianPackages,
    /// The rustup toolchain [`toolchain::BPF_TOOLCHAIN`] linked to Debian's rustc.
    BpfToolchain,
    /// bpf-linker [`toolchain::BPF_LINKER_VERSION`] under `target/tools/bin`.
    BpfLinker,
    /// The BPF filesystem mounted at [`BPFFS_MOUNT_POINT`].
    Bpffs,
    /// The kernel's BTF at [`KERNEL_BTF`].
    KernelBtf,
}

impl Requirement {
    /// Every requirement, in the order setup handles them.
    const ALL: [Self; 7] = [
        Self::Root,
        Self::CrowdSec,
        Self::DebianPackages,
        Self::BpfToolchain,
        Self::BpfLinker,
        Self::Bpffs,
        Self::KernelBtf,
    ];

    /// Checks the requirement without changing anything.
    fn check(self) -> Result<Status> {
        match self {
            Self::Root => Ok(status(is_root(), || {
                // SAFETY: geteuid has no preconditions and cannot fail.
                let euid = unsafe { libc::geteuid() };
                format!("running as uid {euid}")
            })),
            Self::DebianPackages => {
                let missing = missing_packages()?;
                Ok(status(missing.is_empty(), || {
                    format!("not installed: {}", missing.join(" "))
                }))
            }
            Self::CrowdSec => {
                let dpkg_status = crowdsec_dpkg_status()?;
                if package_state(&dpkg_status) != PackageState::Installed {
                    return Ok(Status::Missing(describe_dpkg_status(&dpkg_status)));
                }
                let absent: Vec<&str> = CROWDSEC_BINARIES
                    .into_iter()
                    .filter(|binary| !Path::new(binary).exists())
                    .collect();
                Ok(status(absent.is_empty(), || {
                    format!("installed, but {} not found", absent.join(" "))
                }))
            }
            Self::BpfToolchain => {
                let listed = probe(Command::new("rustup").args(["toolchain", "list"]))
                    .context("running rustup (install it from https://rustup.rs)")?
                    .context("`rustup toolchain list` failed")?;
                Ok(status(
                    lists_toolchain(&listed, toolchain::BPF_TOOLCHAIN),
                    || "not linked".to_owned(),
                ))
            }
            Self::BpfLinker => {
                let linker = bpf_linker()?;
                if !linker.exists() {
                    return Ok(Status::Missing(format!("{} not found", linker.display())));
                }
                // A binary that cannot even start (wrong architecture, broken) needs replacing too.
                let version = probe(Command::new(&linker).arg("--version")).ok().flatten();
                let version = version.as_deref().unwrap_or("").trim();
                Ok(status(
                    reports_version(version, toolchain::BPF_LINKER_VERSION),
                    || format!("{} reports {version:?}", linker.display()),
                ))
            }
            Self::Bpffs => {
                let mounts =
                    fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
                Ok(status(is_bpffs_mounted(&mounts), || {
                    "not mounted".to_owned()
                }))
            }
            Self::KernelBtf => Ok(status(Path::new(KERNEL_BTF).exists(), || {
                format!("{KERNEL_BTF} not found")
            })),
        }
    }

    /// Whether setup can install the requirement; [`Self::install`] of one it cannot only
    /// fails with a message saying what the operator must do.
    fn is_installable(self) -> bool {
        !matches!(self, Self::Root | Self::KernelBtf)
    }

    /// Installs the requirement and says what it did; fails for what cannot be installed.
    fn install(self) -> Result<String> {
        match self {
            Self::Root => bail!(
                "not running as root: setup installs packages and mounts bpffs, and the tests \
                 load XDP programs and create network namespaces; run cargo xtask as root"
            ),
            Self::DebianPackages => {
                let missing = missing_packages()?;
                exec(apt_get().arg("update"))?;
                exec(apt_get().args(["install", "-y"]).args(&missing))?;
                Ok(format!("installed {}", missing.join(" ")))
            }
            Self::CrowdSec => install_crowdsec(),
            Self::BpfToolchain => {
                exec(Command::new("rustup").args([
                    "toolchain",
                    "link",
                    toolchain::BPF_TOOLCHAIN,
                    toolchain::BPF_TOOLCHAIN_PREFIX,
                ]))?;
                Ok(format!(
                    "linked {} to {}",
                    toolchain::BPF_TOOLCHAIN,
                    toolchain::BPF_TOOLCHAIN_PREFIX
                ))
            }
            Self::BpfLinker => {
                // `--locked` builds with the lock file bpf-linker was released with; if those
                // versions no longer build here, let cargo resolve fresh ones.
                if let Err(err) = exec(&mut install_bpf_linker(true)?) {
                    eprintln!("xtask: {err:#}; retrying without --locked");
                    exec(&mut install_bpf_linker(false)?)?;
                }
                Ok(format!(
                    "installed bpf-linker {} to {}",
                    toolchain::BPF_LINKER_VERSION,
                    bpf_linker()?.display()
                ))
            }
            Self::Bpffs => {
                exec(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS_MOUNT_POINT]))?;
                Ok(format!("mounted bpffs at {BPFFS_MOUNT_POINT}"))
            }
            Self::KernelBtf => bail!(
                "{KERNEL_BTF} is missing and cannot be installed: boot a kernel built with \
                 CONFIG_DEBUG_INFO_BTF=y"
            ),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => f.write_str("root"),
            Self::CrowdSec => f.write_str(toolchain::CROWDSEC_PACKAGE),
            Self::DebianPackages => f.write_str("debian packages"),
            Self::BpfToolchain => write!(f, "rustup toolchain {}", toolchain::BPF_TOOLCHAIN),
            Self::BpfLinker => write!(f, "bpf-linker {}", toolchain::BPF_LINKER_VERSION),
            Self::Bpffs => write!(f, "bpffs at {BPFFS_MOUNT_POINT}"),
            Self::KernelBtf => f.write_str("kernel BTF"),
        }
    }
}

/// `Ready` if `ready`, otherwise `Missing` with the reason `why` builds.
fn status(ready: bool, why: impl FnOnce() -> String) -> Status {
    if ready {
        Status::Ready
    } else {
        Status::Missing(why())
    }
}

/// The packages of [`toolchain::DEBIAN_PACKAGES`] that dpkg does not report as installed.
fn missing_packages() -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for &package in toolchain::DEBIAN_PACKAGES {
        let state = probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
            .context("running dpkg-query (moat's setup needs a Debian-based system)")?;
        if !state.is_some_and(|state| state.contains("install ok installed")) {
            missing.push(package);
        }
    }
    Ok(missing)
}

/// Where a Debian package is, as far as setup cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PackageState {
    /// Unpacked and configured.
    Installed,
    /// Unpacked but its postinst has not (successfully) run: `dpkg --configure -a` finishes it.
    Unconfigured,
    /// Not there, removed, or half-unpacked: `apt-get install` (re)installs it.
    Absent,
}

/// The state in a dpkg `${Status}` line (`install ok half-configured`: want, error, state).
fn package_state(dpkg_status: &str) -> PackageState {
    match dpkg_status.split_whitespace().nth(2) {
        Some("installed") => PackageState::Installed,
        Some("unpacked" | "half-configured" | "triggers-awaited" | "triggers-pending") => {
            PackageState::Unconfigured
        }
        _ => PackageState::Absent,
    }
}

/// Why a package with this dpkg `${Status}` is not ready, for setup's report.
fn describe_dpkg_status(dpkg_status: &str) -> String {
    match package_state(dpkg_status) {
        PackageState::Absent => "not installed".to_owned(),
        _ => format!("dpkg reports it {:?}", dpkg_status.trim()),
    }
}

/// The dpkg `${Status}` of [`toolchain::CROWDSEC_PACKAGE`]; empty if dpkg has never heard
/// of it.
fn crowdsec_dpkg_status() -> Result<String> {
    let dpkg_status =
        probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", toolchain::CROWDSEC_PACKAGE]))
            .context("running dpkg-query (moat's setup needs a Debian-based system)")?;
    Ok(dpkg_status.unwrap_or_default())
}

/// Writes the offline opt-out to [`CROWDSEC_ONLINE_CREDENTIALS`] unless the file already has
/// content (an opt-out, or real credentials from an earlier online registration, which stay);
/// returns whether it wrote. An empty file is what a failed postinst leaves behind.
fn write_crowdsec_opt_out() -> Result<bool> {
    let path = Path::new(CROWDSEC_ONLINE_CREDENTIALS);
    let has_content = fs::metadata(path).is_ok_and(|metadata| metadata.len() > 0);
    if has_content {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, CROWDSEC_OFFLINE_OPT_OUT)
        .with_context(|| format!("writing {CROWDSEC_ONLINE_CREDENTIALS}"))?;
    Ok(true)
}

/// Installs crowdsec with the offline opt-out in place first, or finishes configuring one a
/// failed install left half-configured.
fn install_crowdsec() -> Result<String> {
    let package = toolchain::CROWDSEC_PACKAGE;
    let wrote_opt_out = write_crowdsec_opt_out()?;
    let opt_out_note = if wrote_opt_out {
        format!(" (offline: wrote {CROWDSEC_ONLINE_CREDENTIALS})")
    } else {
        String::new()
    };
    let state = package_state(&crowdsec_dpkg_status()?);
    if state == PackageState::Unconfigured {
        exec(Command::new("dpkg").args(["--configure", "-a"]))?;
        return Ok(format!("finished configuring {package}{opt_out_note}"));
    }
    exec(apt_get().arg("update"))?;
    let mut install = apt_get();
    install.args(["install", "-y"]);
    if state == PackageState::Installed {
        // dpkg has it, yet one of its binaries is gone: put the files back.
        install.arg("--reinstall");
    }
    if let Err(err) = exec(install.arg(package)) {
        // A postinst that failed anyway (an opt-out file emptied meanwhile, say) leaves the
        // package unpacked: write the opt-out again and finish it, else give up.
        if package_state(&crowdsec_dpkg_status()?) != PackageState::Unconfigured {
            return Err(err);
        }
        eprintln!("xtask: {err:#}; configuring {package} again with the offline opt-out");
        write_crowdsec_opt_out()?;
        exec(Command::new("dpkg").args(["--configure", "-a"]))?;
    }
    Ok(format!("installed {package}{opt_out_note}"))
}

/// An `apt-get` command that never asks questions.
fn apt_get() -> Command {
    let mut apt_get = Command::new("apt-get");
    apt_get.env("DEBIAN_FRONTEND", "noninteractive");
    apt_get
}

/// Where setup installs bpf-linker.
fn bpf_linker() -> Result<std::path::PathBuf> {
    Ok(workspace::tools_bin()?.join("bpf-linker"))
}

/// The `cargo install` command for bpf-linker, built against Debian's LLVM.
fn install_bpf_linker(locked: bool) -> Result<Command> {
    let mut cargo = workspace::cargo()?;
    cargo
        .env("LLVM_PREFIX", toolchain::LLVM_PREFIX)
        .args([
            "install",
            "bpf-linker",
            "--version",
            toolchain::BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            toolchain::BPF_LINKER_LLVM_FEATURE,
            // The check found it missing or of the wrong version: replace whatever is there.
            "--force",
            "--root",
        ])
        .arg(workspace::tools_root()?);
    if locked {
        cargo.arg("--locked");
    }
    Ok(cargo)
}

/// Whether `rustup toolchain list` output names `toolchain` (possibly followed by markers
/// such as `(default)` or, with `-v`, its path).
fn lists_toolchain(listed: &str, toolchain: &str) -> bool {
    listed
        .lines()
        .any(|line| line.split_whitespace().next() == Some(toolchain))
}

/// Whether a `--version` line such as `bpf-linker 0.13.0` names exactly `version`.
fn reports_version(output: &str, version: &str) -> bool {
    output.split_whitespace().any(|word| word == version)
}

/// Whether `/proc/self/mounts` content has a bpf filesystem at [`BPFFS_MOUNT_POINT`].
fn is_bpffs_mounted(mounts: &str) -> bool {
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(BPFFS_MOUNT_POINT) && fields.next() == Some("bpf")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpffs_needs_the_mount_point_and_the_bpf_type() {
        let mounted = "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw,relatime,mode=700 0 0\n";
        assert!(is_bpffs_mounted(mounted));
        let tmpfs = "tmpfs /sys/fs/bpf tmpfs rw 0 0\n";
        assert!(
            !is_bpffs_mounted(tmpfs),
            "a tmpfs at /sys/fs/bpf is not bpffs"
        );
        let elsewhere = "bpf /mnt/bpf bpf rw 0 0\n";
        assert!(!is_bpffs_mounted(elsewhere), "bpffs mounted elsewhere");
    }

    #[test]
    fn version_must_match_a_whole_word() {
        assert!(reports_version("bpf-linker 0.13.0", "0.13.0"));
        assert!(!reports_version("bpf-linker 0.13.01", "0.13.0"));
        assert!(!reports_version("bpf-linker 0.9.13", "0.13.0"));
        assert!(!reports_version("", "0.13.0"));
    }

    #[test]
    fn dpkg_status_is_read_by_its_state_word() {
        assert_eq!(
            package_state("install ok installed"),
            PackageState::Installed
        );
        assert_eq!(
            package_state("install ok half-configured"),
            PackageState::Unconfigured,
            "what a failed online registration in the postinst leaves"
        );
        assert_eq!(
            package_state("install ok unpacked"),
            PackageState::Unconfigured
        );
        assert_eq!(
            package_state("install reinstreq half-installed"),
            PackageState::Absent
        );
        assert_eq!(
            package_state("deinstall ok config-files"),
            PackageState::Absent
        );
        assert_eq!(
            package_state("unknown ok not-installed"),
            PackageState::Absent
        );
        assert_eq!(package_state(""), PackageState::Absent, "never heard of");
    }

    #[test]
    fn unready_package_is_described_by_its_status() {
        assert_eq!(describe_dpkg_status(""), "not installed");
        assert_eq!(
            describe_dpkg_status("install ok half-configured"),
            r#"dpkg reports it "install ok half-configured""#
        );
    }

    #[test]
    fn toolchain_list_is_matched_by_name() {
        let listed = "stable-x86_64-unknown-linux-gnu (active, default)\nmoat-bpf\n";
        assert!(lists_toolchain(listed, "moat-bpf"));
        assert!(lists_toolchain("moat-bpf /usr\n", "moat-bpf"));
        assert!(!lists_toolchain("moat-bpf-old\n", "moat-bpf"));
    }
}
