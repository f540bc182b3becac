//! `cargo xtask dist`: builds the Debian package `target/dist/moat_VERSION_ARCH.deb`, then
//! checks it.
//!
//! The package holds the release `moat` (the XDP object is embedded in it), the files of
//! `packaging/` (unit, default configuration, control template, copyright, maintainer
//! scripts), and the man page and shell completions the packaged binary prints from its own
//! clap model. The tree is staged where debhelper would stage it, `target/dist/build/debian/
//! moat`, because `dpkg-shlibdeps` computes the library dependencies from there; `dpkg-deb`
//! builds the archive. The checks then read the archive back: its fields, file list, modes
//! and conffiles, and the extracted binary, configuration, man page, completions and unit.
//! Nothing here installs the package or changes the running system.

use std::{
    fs::{self, File},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use clap::Args;

use crate::{
    build,
    exec::{display, exec, probe},
    setup, workspace,
};

/// Options of `cargo xtask dist` (it has none).
#[derive(Debug, Args)]
pub struct Options {}

/// The package name, which is also the binary's.
const PACKAGE: &str = "moat";

/// The binary's installed path (without the leading `/`, like every path in [`FILES`]);
/// the unit's `ExecStart=` and `ExecReload=` name it.
const BINARY: &str = "usr/bin/moat";

/// The default configuration, the path `moat run` reads without `--config`.
const CONFIG: &str = "etc/moat/moat.toml";

/// The systemd unit.
const UNIT: &str = "lib/systemd/system/moat@.service";

/// The man page.
const MAN_PAGE: &str = "usr/share/man/man1/moat.1.gz";

/// The bash completion script.
const BASH_COMPLETION: &str = "usr/share/bash-completion/completions/moat";

/// Maintainer scripts, copied from `packaging/` into `DEBIAN/` with mode 0755.
const MAINTAINER_SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

/// Where one file's bytes come from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// The release `moat`, stripped of symbols (the embedded XDP object is data and stays).
    Binary,
    /// A file of `packaging/`, copied as is.
    Packaging(&'static str),
    /// What the packaged `moat` prints with these arguments; gzipped with `gzip -9n` when
    /// the installed name ends in `.gz`, as Debian policy wants for man pages.
    Printed(&'static [&'static str]),
}

/// One file of the package.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The installed path, without the leading `/`.
    path: &'static str,
    /// Where its bytes come from.
    source: Source,
    /// Its mode.
    mode: u32,
}

/// Every file the package installs: the check compares the archive's list with exactly
/// this. Everything under `etc/` is a conffile.
const FILES: &[Entry] = &[
    Entry {
        path: BINARY,
        source: Source::Binary,
        mode: 0o755,
    },
    Entry {
        path: UNIT,
        source: Source::Packaging("moat@.service"),
        mode: 0o644,
    },
    Entry {
        path: CONFIG,
        source: Source::Packaging("moat.toml"),
        mode: 0o644,
    },
    Entry {
        path: MAN_PAGE,
        source: Source::Printed(&["man"]),
        mode: 0o644,
    },
    Entry {
        path: BASH_COMPLETION,
        source: Source::Printed(&["completions", "bash"]),
        mode: 0o644,
    },
    Entry {
        path: "usr/share/zsh/vendor-completions/_moat",
        source: Source::Printed(&["completions", "zsh"]),
        mode: 0o644,
    },
    Entry {
        path: "usr/share/fish/vendor_completions.d/moat.fish",
        source: Source::Printed(&["completions", "fish"]),
        mode: 0o644,
    },
    Entry {
        path: "usr/share/doc/moat/copyright",
        source: Source::Packaging("copyright"),
        mode: 0o644,
    },
];

/// A built package and what it claims to be.
#[derive(Debug)]
struct Package {
    /// The `.deb` file.
    deb: PathBuf,
    /// Its `Version:`, the version `moat --version` reports.
    version: String,
    /// Its `Architecture:`, from `dpkg --print-architecture`.
    arch: String,
}

/// Ensures setup, builds `moat` in release mode, builds the package and checks it; prints
/// the package's path on stdout.
pub fn run(_opts: Options) -> Result<()> {
    setup::ensure_ready()?;
    let moat = build::build_moat(true)?;
    let package = build_package(&moat)?;
    check_package(&package)?;
    eprintln!("xtask: built and checked {}", package.deb.display());
    println!("{}", package.deb.display());
    Ok(())
}

/// `target/dist`, where the staging tree, the package and the check's scratch files go.
fn dist_dir() -> Result<PathBuf> {
    Ok(workspace::target_dir()?.join("dist"))
}

/// The `packaging/` directory of the workspace.
fn packaging_dir() -> Result<PathBuf> {
    Ok(workspace::root()?.join("packaging"))
}

/// Stages the package tree around `moat` and builds the `.deb` with `dpkg-deb`.
fn build_package(moat: &Path) -> Result<Package> {
    let dist = dist_dir()?;
    let build_dir = dist.join("build");
    let stage = build_dir.join("debian").join(PACKAGE);
    remove_dir_if_present(&build_dir)?;
    create_dir(&stage)?;

    let binary = stage.join(BINARY);
    create_dir(parent_of(&binary)?)?;
    copy(moat, &binary)?;
    exec(
        Command::new("strip")
            .args(["--remove-section=.comment", "--remove-section=.note"])
            .arg(&binary),
    )?;
    let version = binary_version(&binary)?;
    let arch = stdout_of(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();
    ensure!(
        !arch.is_empty(),
        "`dpkg --print-architecture` printed nothing"
    );

    let packaging = packaging_dir()?;
    for entry in FILES {
        let target = stage.join(entry.path);
        create_dir(parent_of(&target)?)?;
        match entry.source {
            Source::Binary => {}
            Source::Packaging(name) => copy(&packaging.join(name), &target)?,
            Source::Printed(args) => print_to(&binary, args, &target)?,
        }
        set_mode(&target, entry.mode)?;
    }

    let control_dir = stage.join("DEBIAN");
    create_dir(&control_dir)?;
    for script in MAINTAINER_SCRIPTS {
        let target = control_dir.join(script);
        copy(&packaging.join(script), &target)?;
        set_mode(&target, 0o755)?;
    }
    write(&control_dir.join("conffiles"), &conffiles())?;
    let control = fill_control(
        &read(&packaging.join("control"))?,
        &[
            ("version", version.clone()),
            ("arch", arch.clone()),
            ("installed-size", installed_size_kib(&stage)?.to_string()),
            ("shlibs:Depends", shlibs_depends(&build_dir, &binary)?),
        ],
    )?;
    write(&control_dir.join("control"), &control)?;
    set_modes(&stage)?;

    let deb = dist.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    remove_file_if_present(&deb)?;
    exec(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    Ok(Package { deb, version, arch })
}

/// The version `binary --version` reports (`moat 0.1.0` gives `0.1.0`).
fn binary_version(binary: &Path) -> Result<String> {
    let output = stdout_of(Command::new(binary).arg("--version"))?;
    let version = output
        .trim()
        .strip_prefix(&format!("{PACKAGE} "))
        .with_context(|| format!("`{} --version` printed {output:?}", binary.display()))?;
    ensure!(
        !version.is_empty() && !version.contains(char::is_whitespace),
        "`{} --version` printed {output:?}, not `{PACKAGE} VERSION`",
        binary.display()
    );
    Ok(version.to_owned())
}

/// Runs `binary args` with its stdout in `target`, then gzips `target` in place if the
/// installed name ends in `.gz`.
fn print_to(binary: &Path, args: &[&str], target: &Path) -> Result<()> {
    let plain = match target.to_str().and_then(|path| path.strip_suffix(".gz")) {
        Some(plain) => PathBuf::from(plain),
        None => target.to_path_buf(),
    };
    let file = File::create(&plain).with_context(|| format!("creating {}", plain.display()))?;
    exec(Command::new(binary).args(args).stdout(file))?;
    if plain != target {
        // -n leaves the name and time out of the header, so the bytes depend only on the
        // page (Debian policy 12.1).
        exec(Command::new("gzip").args(["-9n", "--"]).arg(&plain))?;
    }
    Ok(())
}

/// `DEBIAN/conffiles`: every file installed under `/etc`, so that dpkg keeps the
/// operator's edits on upgrade.
fn conffiles() -> String {
    FILES
        .iter()
        .filter(|entry| entry.path.starts_with("etc/"))
        .map(|entry| format!("/{}\n", entry.path))
        .collect()
}

/// Replaces every `${name}` of `template` with its value; fails if any other `${...}` is
/// left, so a new field in `packaging/control` cannot ship unfilled.
fn fill_control(template: &str, values: &[(&str, String)]) -> Result<String> {
    let mut control = template.to_owned();
    for (name, value) in values {
        let placeholder = format!("${{{name}}}");
        ensure!(
            control.contains(&placeholder),
            "packaging/control has no {placeholder}"
        );
        control = control.replace(&placeholder, value);
    }
    if let Some(start) = control.find("${") {
        let rest = &control[start..];
        let unknown = rest.split('}').next().unwrap_or(rest);
        bail!("packaging/control has {unknown}}}, which dist does not fill in");
    }
    Ok(control)
}

/// The libraries `binary` needs, as `dpkg-shlibdeps` words them (`libc6 (>= 2.34), ...`).
/// It must run where `debian/control` exists and the binary sits under `debian/PACKAGE/`;
/// `build_dir` is that place, and the control file written here is only for it.
fn shlibs_depends(build_dir: &Path, binary: &Path) -> Result<String> {
    write(
        &build_dir.join("debian").join("control"),
        &format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )?;
    let output = stdout_of(
        Command::new("dpkg-shlibdeps")
            .args(["-O", "-e"])
            .arg(binary)
            .current_dir(build_dir),
    )?;
    output
        .lines()
        .find_map(|line| line.strip_prefix("shlibs:Depends="))
        .map(|depends| depends.trim().to_owned())
        .filter(|depends| !depends.is_empty())
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {output:?}"))
}

/// `Installed-Size:` in KiB, counted as dpkg-gencontrol does: each file rounded up to a
/// KiB, plus one per directory; `DEBIAN/` is not installed and not counted.
fn installed_size_kib(stage: &Path) -> Result<u64> {
    let mut kib = 0;
    for entry in read_dir(stage)? {
        let path = entry.path();
        if path.file_name().is_some_and(|name| name == "DEBIAN") {
            continue;
        }
        let metadata = fs::symlink_metadata(&path)
            .with_context(|| format!("reading the metadata of {}", path.display()))?;
        if metadata.is_dir() {
            kib += 1 + installed_size_kib(&path)?;
        } else {
            kib += metadata.len().div_ceil(1024);
        }
    }
    Ok(kib)
}

/// Gives `root` and every directory under it mode 0755, whatever the build's umask: dpkg-deb
/// wants it for `DEBIAN/`, and installed directories should have it.
fn set_modes(root: &Path) -> Result<()> {
    set_mode(root, 0o755)?;
    for entry in read_dir(root)? {
        let path = entry.path();
        if path.is_dir() {
            set_modes(&path)?;
        }
    }
    Ok(())
}

/// Reads the package back and checks everything it claims and holds; see the module doc.
fn check_package(package: &Package) -> Result<()> {
    let deb = &package.deb;
    eprintln!("xtask: checking {}", deb.display());
    check_fields(package)?;
    check_contents(deb)?;
    let conffiles = stdout_of(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(deb)
            .arg("conffiles"),
    )?;
    ensure!(
        conffiles == self::conffiles(),
        "the package's conffiles are {conffiles:?}, expected {:?}",
        self::conffiles()
    );

    let check_dir = dist_dir()?.join("check");
    remove_dir_if_present(&check_dir)?;
    let root = check_dir.join("root");
    create_dir(&root)?;
    exec(
        Command::new("dpkg-deb")
            .arg("--extract")
            .arg(deb)
            .arg(&root),
    )?;
    let binary = root.join(BINARY);
    let version = binary_version(&binary)?;
    ensure!(
        version == package.version,
        "the packaged binary reports version {version}, the package {}",
        package.version
    );
    check_config(&binary, &root.join(CONFIG), &check_dir)?;
    check_daemon_only(&binary)?;
    check_man_page(&root.join(MAN_PAGE))?;
    exec(
        Command::new("bash")
            .arg("-n")
            .arg(root.join(BASH_COMPLETION)),
    )?;
    check_unit(&root.join(UNIT), &binary, &check_dir)
}

/// Checks `Package:`, `Version:` and `Architecture:`, and that `Depends:` names libc and
/// iproute2.
fn check_fields(package: &Package) -> Result<()> {
    let fields = stdout_of(
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(&package.deb)
            .args(["Package", "Version", "Architecture", "Depends"]),
    )?;
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
            .with_context(|| format!("the package has no {name} field: {fields:?}"))
    };
    ensure!(field("Package")? == PACKAGE, "Package is not {PACKAGE}");
    ensure!(
        field("Version")? == package.version,
        "Version is not {}",
        package.version
    );
    ensure!(
        field("Architecture")? == package.arch,
        "Architecture is not {}",
        package.arch
    );
    let depends = field("Depends")?;
    for needed in ["libc6", "iproute2"] {
        ensure!(
            depends.split(',').any(|dependency| dependency
                .split_whitespace()
                .next()
                .is_some_and(|name| name == needed)),
            "Depends does not name {needed}: {depends}"
        );
    }
    Ok(())
}

/// Checks that the archive holds exactly [`FILES`], owned by root, with their modes.
fn check_contents(deb: &Path) -> Result<()> {
    let listing = stdout_of(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let mut found = Vec::new();
    for line in listing.lines() {
        // `-rw-r--r-- root/root      1234 2026-01-01 00:00 ./etc/moat/moat.toml`
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(mode), Some(owner), Some(path)) = (words.first(), words.get(1), words.last())
        else {
            bail!("unexpected line in `dpkg-deb --contents`: {line:?}");
        };
        ensure!(
            *owner == "root/root",
            "{path} is owned by {owner}, not root/root"
        );
        if mode.starts_with('d') {
            continue;
        }
        let path = path.strip_prefix("./").unwrap_or(path);
        let entry = FILES
            .iter()
            .find(|entry| entry.path == path)
            .with_context(|| format!("the package holds {path}, which dist does not ship"))?;
        let expected = mode_string(entry.mode);
        ensure!(
            *mode == expected,
            "{path} has mode {mode}, expected {expected}"
        );
        found.push(path);
    }
    for entry in FILES {
        ensure!(
            found.contains(&entry.path),
            "the package does not hold {}",
            entry.path
        );
    }
    Ok(())
}

/// `ls -l`'s mode column for a regular file with permission bits `mode`.
fn mode_string(mode: u32) -> String {
    let mut text = String::from("-");
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 0o7;
        text.push(if bits & 0o4 != 0 { 'r' } else { '-' });
        text.push(if bits & 0o2 != 0 { 'w' } else { '-' });
        text.push(if bits & 0o1 != 0 { 'x' } else { '-' });
    }
    text
}

/// Checks that the shipped configuration passes `moat config check` and states exactly the
/// built-in defaults: `moat config show` prints the same for it as for an empty file.
/// (Not `moat config show` without `--config`: that reads `/etc/moat/moat.toml` when moat
/// is installed, which may be an edited copy.)
fn check_config(binary: &Path, config: &Path, scratch: &Path) -> Result<()> {
    exec(Command::new(binary).args(["config", "check"]).arg(config))
        .context("packaging/moat.toml, as packaged, fails `moat config check`")?;
    let empty = scratch.join("empty.toml");
    write(&empty, "")?;
    let show = |file: &Path| {
        stdout_of(
            Command::new(binary)
                .args(["config", "show", "--config"])
                .arg(file),
        )
    };
    let shipped = show(config)?;
    let defaults = show(&empty)?;
    if shipped != defaults {
        let difference = shipped
            .lines()
            .zip(defaults.lines())
            .find(|(shipped, default)| shipped != default)
            .map_or_else(
                || "one has more lines than the other".to_owned(),
                |(shipped, default)| {
                    format!("it gives `{shipped}` where the default is `{default}`")
                },
            );
        bail!(
            "packaging/moat.toml does not state the built-in defaults: {difference}; \
             compare `moat config show --config packaging/moat.toml` with `moat config show --config \
             /dev/null`"
        );
    }
    Ok(())
}

/// Programs only the lab and the bench load; the shipped binary must carry none of them.
const NOT_SHIPPED: &[&str] = &["moat_flood", "moat_floor", "moat_parse_count"];

/// Checks that the packaged binary holds only the daemon: none of the lab's or the bench's XDP
/// objects (their program names would appear in it), and no `lab` command.
fn check_daemon_only(binary: &Path) -> Result<()> {
    let bytes = std::fs::read(binary)
        .with_context(|| format!("reading the packaged binary {}", binary.display()))?;
    for name in NOT_SHIPPED {
        ensure!(
            !bytes
                .windows(name.len())
                .any(|window| window == name.as_bytes()),
            "the packaged moat contains {name}, a program of the lab or the bench; it must hold              only the daemon"
        );
    }
    let help = stdout_of(Command::new(binary).arg("--help"))?;
    ensure!(
        !help
            .lines()
            .any(|line| line.trim_start().starts_with("lab ")),
        "the packaged moat still has a `lab` command: {help}"
    );
    Ok(())
}

/// Checks that the man page decompresses and is section 1 of moat.
fn check_man_page(page: &Path) -> Result<()> {
    let roff = stdout_of(Command::new("gzip").arg("-dc").arg(page))?;
    ensure!(
        roff.lines().any(|line| line.starts_with(".TH moat 1")),
        "{} has no `.TH moat 1` header",
        page.display()
    );
    Ok(())
}

/// Runs `systemd-analyze verify` on the packaged unit and fails on any complaint, unknown
/// keys included (which it only warns about). The unit names `/usr/bin/moat`, and verify
/// checks that it is executable, so the copy verified names the extracted `binary` instead.
fn check_unit(unit: &Path, binary: &Path, scratch: &Path) -> Result<()> {
    let installed = format!("/{BINARY}");
    let text = read(unit)?;
    ensure!(
        text.contains(&installed),
        "{} does not run {installed}",
        unit.display()
    );
    let binary = binary
        .to_str()
        .with_context(|| format!("{} is not UTF-8", binary.display()))?;
    let file_name = unit
        .file_name()
        .with_context(|| format!("{} has no file name", unit.display()))?;
    let copy = scratch.join(file_name);
    write(&copy, &text.replace(&installed, binary))?;
    let log_path = scratch.join("systemd-analyze.log");
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    // --man=no: whether `man moat` works depends on this machine's man-db, not on the
    // package; check_man_page checks the page itself.
    let mut verify = Command::new("systemd-analyze");
    verify
        .args(["verify", "--man=no"])
        .arg(&copy)
        .stdout(
            log.try_clone()
                .with_context(|| format!("opening {} again", log_path.display()))?,
        )
        .stderr(log);
    let result = exec(&mut verify);
    let complaints = read(&log_path)?;
    if result.is_err() || !complaints.trim().is_empty() {
        bail!(
            "`{}` complained about the unit:\n{}",
            display(&verify),
            complaints.trim_end()
        );
    }
    Ok(())
}

/// Runs `command` quietly and returns its stdout; fails, naming the command, if it exits
/// unsuccessfully.
fn stdout_of(command: &mut Command) -> Result<String> {
    let line = display(command);
    probe(command)?.with_context(|| format!("`{line}` failed"))
}

/// The parent directory of `path`.
fn parent_of(path: &Path) -> Result<&Path> {
    path.parent()
        .with_context(|| format!("{} has no parent directory", path.display()))
}

/// Creates `dir` and its parents.
fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Removes `dir` and everything in it, if it exists.
fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Removes the file `path`, if it exists.
fn remove_file_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Copies the file `from` to `to`.
fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

/// Reads the text file `path`.
fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes `text` to `path`.
fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The entries of the directory `dir`.
fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    fs::read_dir(dir)
        .and_then(Iterator::collect)
        .with_context(|| format!("listing {}", dir.display()))
}

/// Sets the permission bits of `path` to `mode`.
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {} to {mode:o}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_control_replaces_every_placeholder() {
        let filled = fill_control(
            "Version: ${version}\nDepends: ${shlibs:Depends}, iproute2\n",
            &[
                ("version", "0.1.0".to_owned()),
                ("shlibs:Depends", "libc6 (>= 2.34)".to_owned()),
            ],
        )
        .ok();
        assert_eq!(
            filled.as_deref(),
            Some("Version: 0.1.0\nDepends: libc6 (>= 2.34), iproute2\n")
        );
    }

    #[test]
    fn fill_control_names_a_placeholder_left_unfilled() {
        let err = fill_control(
            "Version: ${version}\nHomepage: ${homepage}\n",
            &[("version", "0.1.0".to_owned())],
        )
        .err()
        .map(|err| err.to_string());
        assert_eq!(
            err.as_deref(),
            Some("packaging/control has ${homepage}, which dist does not fill in")
        );
    }

    #[test]
    fn conffiles_are_the_files_under_etc() {
        assert_eq!(conffiles(), "/etc/moat/moat.toml\n");
    }

    #[test]
    fn mode_string_matches_ls() {
        assert_eq!(mode_string(0o755), "-rwxr-xr-x");
        assert_eq!(mode_string(0o644), "-rw-r--r--");
    }

    #[test]
    fn every_packaging_file_exists() {
        let packaging = packaging_dir().expect("the xtask manifest has a parent directory");
        let names = FILES
            .iter()
            .filter_map(|entry| match entry.source {
                Source::Packaging(name) => Some(name),
                _ => None,
            })
            .chain(MAINTAINER_SCRIPTS.iter().copied())
            .chain(["control"]);
        for name in names {
            assert!(
                packaging.join(name).is_file(),
                "packaging/{name} is missing"
            );
        }
    }
}
