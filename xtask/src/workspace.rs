//! Paths inside the moat workspace, and the `cargo` command every verb runs.
//!
//! Everything xtask installs stays under the workspace's `target/` directory; this module
//! says where. It does not decide what to install (see `setup`).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

/// The workspace root: the parent of the xtask crate.
pub fn root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "xtask manifest directory {} has no parent",
                manifest_dir.display()
            )
        })
}

/// Cargo's target directory for the workspace.
pub fn target_dir() -> Result<PathBuf> {
    Ok(root()?.join("target"))
}

/// The `cargo install --root` for tools setup installs (bpf-linker).
pub fn tools_root() -> Result<PathBuf> {
    Ok(target_dir()?.join("tools"))
}

/// The directory holding the installed tools' binaries.
pub fn tools_bin() -> Result<PathBuf> {
    Ok(tools_root()?.join("bin"))
}

/// A `cargo` command run from the workspace root with [`tools_bin`] first on `PATH`, so
/// rustc finds the project's bpf-linker rather than any other copy.
pub fn cargo() -> Result<Command> {
    let tools_bin = tools_bin()?;
    let inherited = env::var_os("PATH").unwrap_or_default();
    let path =
        env::join_paths(std::iter::once(tools_bin.clone()).chain(env::split_paths(&inherited)))
            .with_context(|| format!("putting {} on PATH", tools_bin.display()))?;
    let mut cargo = Command::new("cargo");
    cargo.env("PATH", path).current_dir(root()?);
    Ok(cargo)
}
