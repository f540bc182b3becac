//! Exclusive advisory locks on files, waited for: what serializes the writers of one
//! interface's policy or lists, across processes and across threads of one process (each lock
//! opens its own file description, and `flock` locks belong to the description).

use std::{fs::File, io, os::fd::AsRawFd, path::Path};

/// An exclusive `flock` on a file, released when dropped.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits for and takes the lock on `path`, creating the file (and its directory) if
    /// needed.
    pub fn acquire(path: &Path) -> io::Result<FileLock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: `file` owns a valid descriptor for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_file_waits_for_the_first() {
        let dir = std::env::temp_dir().join(format!("moat-filelock-{}", std::process::id()));
        let path = dir.join("x.lock");
        let first = FileLock::acquire(&path).expect("first lock");
        let (sender, receiver) = std::sync::mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let second = FileLock::acquire(&path).expect("second lock");
                sender.send(()).expect("send");
                drop(second);
            })
        };
        assert!(
            receiver
                .recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "the second lock was taken while the first was held"
        );
        drop(first);
        receiver
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the second lock once the first was dropped");
        waiter.join().expect("waiter");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
