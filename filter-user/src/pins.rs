//! Where an interface's pins live on bpffs, and removing them.

use std::path::{Path, PathBuf};

use filter_common::maps::{ALL_MAPS, LINK_PIN, PIN_ROOT};

/// The pin directory of one interface: `/sys/fs/bpf/moat/IFACE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    dir: PathBuf,
}

impl PinDir {
    /// The pin directory for `iface` (whose name [`crate::preflight::check_iface_name`] has
    /// validated, so it holds no path separators).
    pub fn for_iface(iface: &str) -> PinDir {
        PinDir {
            dir: Path::new(PIN_ROOT).join(iface),
        }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The pin of the map named `name`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The pin of the XDP link.
    pub fn link(&self) -> PathBuf {
        self.dir.join(LINK_PIN)
    }

    /// Whether anything is pinned for this interface.
    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    /// Removes the map pins and the directory (the link pin is removed by its owner, which
    /// detaches it). Missing entries are fine: removal is idempotent.
    pub fn remove_maps(&self) -> std::io::Result<()> {
        for name in ALL_MAPS {
            remove_if_present(&self.map(name))?;
        }
        match std::fs::remove_dir(&self.dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

/// Removes a file, treating "not found" as done.
pub fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}
