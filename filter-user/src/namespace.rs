//! Which network namespace a filter was attached from, so the commands that change it run
//! there. Pins and locks are named after the interface alone, so from another namespace (a
//! container with an interface of the same name, or the host, where the interface does not
//! exist) `moat deny add` or `moat ban add` would edit a filter that is not the one the
//! operator meant. The daemon records its namespace's inode in `/run/moat/IFACE.netns` when it
//! attaches; the commands that edit a filter compare it with their own first. Commands that
//! only read (`stats`, `top`, `list`) do not ask.

use std::{os::unix::fs::MetadataExt as _, path::PathBuf};

use crate::pins::LOCK_DIR;

/// The namespace file of the process's network namespace.
const OWN_NETNS: &str = "/proc/self/ns/net";

/// A command that would change a filter attached from another network namespace.
#[derive(Debug, thiserror::Error)]
#[error(
    "the filter on {iface} was attached from another network namespace (net:[{theirs}]; this \
     command runs in net:[{ours}]); run it in that namespace, e.g. with nsenter --net=PATH"
)]
pub struct Elsewhere {
    /// The interface.
    pub iface: String,
    /// The inode of the namespace the filter was attached from.
    pub theirs: u64,
    /// The inode of this process's namespace.
    pub ours: u64,
}

/// The record of `iface`'s namespace.
fn record_path(iface: &str) -> PathBuf {
    PathBuf::from(LOCK_DIR).join(format!("{iface}.netns"))
}

/// The inode of this process's network namespace.
fn own() -> std::io::Result<u64> {
    Ok(std::fs::metadata(OWN_NETNS)?.ino())
}

/// Records this process's namespace as the one `iface`'s filter was attached from.
pub fn record(iface: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(LOCK_DIR)?;
    std::fs::write(record_path(iface), format!("{}\n", own()?))
}

/// Forgets the record, once the filter is detached.
pub fn forget(iface: &str) {
    let _ = std::fs::remove_file(record_path(iface));
}

/// Refuses to change `iface`'s filter from a namespace other than the one it was attached
/// from. A filter with no record (attached by an older moat) is not refused.
pub fn check(iface: &str) -> Result<(), Elsewhere> {
    let Some(theirs) = std::fs::read_to_string(record_path(iface))
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
    else {
        return Ok(());
    };
    match own() {
        Ok(ours) if ours != theirs => Err(Elsewhere {
            iface: iface.to_string(),
            theirs,
            ours,
        }),
        _ => Ok(()),
    }
}
