//! Files written whole or not at all: the state file, the saved CrowdSec decisions and the
//! figures the daemon publishes for `moat stats` and `moat top`.
//!
//! Each write goes to a temporary file of its own beside the target (named for the process and
//! a counter, so two writers of one target, such as the periodic save and the save at stop,
//! never write into each other's file), is flushed to the disk, then renamed over the target,
//! and the directory is flushed too. A reader therefore finds the old contents or the new,
//! after a crash of the process and after a power loss alike. What the module does not do is
//! order two writers: the last rename wins.

use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// Writes told apart within this process.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `contents`, creating its directory if missing. On an error the
/// target is as it was and the temporary file is removed.
pub fn replace(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let temporary = temporary_for(path);
    let written = write_synced(&temporary, contents)
        .and_then(|()| std::fs::rename(&temporary, path))
        .and_then(|()| File::open(dir)?.sync_all());
    if written.is_err() {
        // Best effort: a temporary file that never went in is of no use to anyone.
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// A temporary name beside `path` that no other write, in this process or another, uses.
fn temporary_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |name| name.to_string_lossy());
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{write}.tmp", std::process::id()))
}

/// Writes `contents` to a new file at `path` and flushes it to the disk.
fn write_synced(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("moat-atomicfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_replace_creates_the_directory_and_leaves_only_the_target() {
        let dir = scratch("create");
        let target = dir.join("eth0.json");
        replace(&target, b"first").unwrap();
        replace(&target, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"second, longer");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("eth0.json")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_writes_of_one_target_never_share_a_temporary_file() {
        let target = Path::new("/var/lib/moat/eth0.json");
        let first = temporary_for(target);
        let second = temporary_for(target);
        assert_ne!(first, second);
        assert_eq!(first.parent(), target.parent());
    }

    #[test]
    fn concurrent_writers_of_one_target_leave_one_of_their_contents_whole() {
        let dir = scratch("race");
        let target = dir.join("eth0.json");
        let long = vec![b'l'; 1 << 20];
        let short = vec![b's'; 1 << 10];
        std::thread::scope(|scope| {
            for round in 0..20 {
                let contents = if round % 2 == 0 { &long } else { &short };
                let target = &target;
                scope.spawn(move || replace(target, contents).unwrap());
            }
        });
        let read = std::fs::read(&target).unwrap();
        assert!(
            read == long || read == short,
            "the target mixes two writes: {} bytes",
            read.len()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_target_as_it_was() {
        let dir = scratch("fail");
        let target = dir.join("eth0.json");
        replace(&target, b"kept").unwrap();
        // A directory where the target's parent should be: the rename cannot succeed.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("eth0.json")).unwrap();
        assert!(replace(&blocked.join("eth0.json"), b"new").is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"kept");
        let leftovers = std::fs::read_dir(&blocked).unwrap().count();
        assert_eq!(leftovers, 1, "the temporary file was left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
