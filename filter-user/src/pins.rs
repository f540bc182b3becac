//! Where an interface's pins live on bpffs, and removing them.

use std::path::{Path, PathBuf};

use filter_common::maps::{COUNTER_PIN_ROOT, LINK_PIN, PERSISTENT_MAPS, PIN_ROOT};

/// Directory of the per-interface instance locks (and `moat top`'s saved view).
pub const LOCK_DIR: &str = "/run/moat";

/// Nothing is pinned where a running filter's map would be: moat is not running on the
/// interface (every command that edits or reads a running filter reports this one way).
#[derive(Debug, thiserror::Error)]
#[error(
    "moat is not running on {iface} (nothing pinned at {path}); start it with `moat run --iface {iface}`"
)]
pub struct NotRunning {
    /// The interface.
    pub iface: String,
    /// The pin looked for.
    pub path: String,
}

/// The pins of one interface: `/sys/fs/bpf/moat/IFACE` for what lives as long as `moat run`,
/// and `/sys/fs/bpf/moat-counters/IFACE` for the maps that outlive it ([`PERSISTENT_MAPS`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    dir: PathBuf,
    persistent: PathBuf,
}

impl PinDir {
    /// The pin directories for `iface` (whose name [`crate::preflight::check_iface_name`] has
    /// validated, so it holds no path separators).
    pub fn for_iface(iface: &str) -> PinDir {
        PinDir {
            dir: Path::new(PIN_ROOT).join(iface),
            persistent: Path::new(COUNTER_PIN_ROOT).join(iface),
        }
    }

    /// The directory of the daemon's pins.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The directory of the persistent maps.
    pub fn persistent_path(&self) -> &Path {
        &self.persistent
    }

    /// The pin of the map named `name` of the filter running on `iface`, or [`NotRunning`] if
    /// nothing is pinned there.
    pub fn running_map(&self, iface: &str, name: &str) -> Result<PathBuf, NotRunning> {
        let path = self.map(name);
        if path.exists() {
            Ok(path)
        } else {
            Err(NotRunning {
                iface: iface.to_string(),
                path: path.display().to_string(),
            })
        }
    }

    /// The pin of the map named `name`.
    pub fn map(&self, name: &str) -> PathBuf {
        if PERSISTENT_MAPS.contains(&name) {
            self.persistent.join(name)
        } else {
            self.dir.join(name)
        }
    }

    /// Removes the persistent maps (their counters start again from zero at the next run).
    pub fn remove_persistent(&self) -> std::io::Result<()> {
        for name in PERSISTENT_MAPS {
            remove_if_present(&self.map(name))?;
        }
        match std::fs::remove_dir(&self.persistent) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// The pin of the XDP link.
    pub fn link(&self) -> PathBuf {
        self.dir.join(LINK_PIN)
    }

    /// Whether anything is pinned for this interface.
    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    /// Removes the daemon's map pins and their directory, keeping the persistent maps (the link
    /// pin is removed by its owner, which detaches it). Every other pin in the directory goes:
    /// a map an earlier version declared and this one does not (its pin stays beside the link
    /// when this version takes the filter over) would otherwise keep the directory, and a
    /// later `moat run` would find a filter that is not there. Idempotent.
    pub fn remove_maps(&self) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            entries => entries?,
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_name() != LINK_PIN {
                remove_if_present(&entry.path())?;
            }
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
