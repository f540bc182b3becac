//! A `moat run` child process inside a namespace: started, waited on until its pins appear, and
//! stopped with SIGTERM. Dropping it kills the child if it is still running.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use moat::{netns::NetNs, pins::PinDir};

/// How long a daemon may take to attach or to exit.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(15);

/// A daemon that could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The child could not be spawned.
    #[error("starting {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The child exited before attaching.
    #[error("moat run exited with {status} before attaching: {log}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Its log.
        log: String,
    },
    /// The child neither attached nor exited in time.
    #[error("moat run did not {what} within {DAEMON_TIMEOUT:?}: {log}")]
    Timeout {
        /// "attach" or "exit".
        what: &'static str,
        /// Its log.
        log: String,
    },
    /// Waiting on or signalling the child failed.
    #[error("controlling moat run: {0}")]
    Io(#[from] std::io::Error),
}

/// A running `moat run --iface IFACE ...` in a namespace.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    log_path: PathBuf,
    /// The state directory made for this daemon (removed on drop), unless the caller named one.
    state_dir: Option<PathBuf>,
}

impl Daemon {
    /// Starts `exe run --iface iface extra...` in `ns` and waits until its link is pinned.
    pub fn start(
        ns: &NetNs,
        exe: &Path,
        iface: &str,
        extra: &[&str],
    ) -> Result<Daemon, ProcessError> {
        Daemon::start_with_env(ns, exe, iface, extra, &[])
    }

    /// [`Daemon::start`] with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_with_env(
        ns: &NetNs,
        exe: &Path,
        iface: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon, ProcessError> {
        let log_path = std::env::temp_dir().join(format!(
            "moat-run-{iface}-{}.log",
            moat::netns::unique_suffix()
        ));
        let log = std::fs::File::create(&log_path)?;
        // The lab and the tests keep the host's /var/lib/moat untouched: each daemon saves its
        // lists and bans in a directory of its own, unless the caller chose one.
        let state_dir = (!extra.contains(&"--state-dir")).then(|| {
            std::env::temp_dir().join(format!("moat-state-{}", moat::netns::unique_suffix()))
        });
        let mut command: Command = ns.command(exe);
        command
            .args(["run", "--iface", iface])
            .args(extra)
            .args(
                state_dir
                    .iter()
                    .flat_map(|dir| [std::ffi::OsStr::new("--state-dir"), dir.as_os_str()]),
            )
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command.spawn().map_err(|source| ProcessError::Spawn {
            command: format!("{command:?}"),
            source,
        })?;
        let mut daemon = Daemon {
            child: Some(child),
            log_path,
            state_dir,
        };
        daemon.wait_attached(iface)?;
        Ok(daemon)
    }

    /// The daemon's process id (nsenter execs moat in place), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn wait_attached(&mut self, iface: &str) -> Result<(), ProcessError> {
        let link = PinDir::for_iface(iface).link();
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        while Instant::now() < deadline {
            // The daemon's own lifecycle line, not a warning that merely mentions attaching.
            if link.exists() && self.log().contains("] attached iface=") {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(ProcessError::Exited {
                    status,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(ProcessError::Timeout {
            what: "attach",
            log: self.log(),
        })
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) -> Result<(), ProcessError> {
        if let Some(child) = &self.child {
            // The child is nsenter, which execs moat in place, so its pid is moat's.
            // SAFETY: plain kill(2) on our own child's pid.
            if unsafe { libc::kill(child.id() as i32, signal) } != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
        Ok(())
    }

    /// Kills the daemon with SIGKILL, as a crash or the OOM killer would, and waits for it to
    /// be gone: it cleans nothing up, so its filter stays attached and pinned.
    pub fn kill(mut self) -> Result<ExitStatus, ProcessError> {
        match self.child.take() {
            Some(mut child) => {
                child.kill()?;
                Ok(child.wait()?)
            }
            None => Err(std::io::Error::other("the daemon had already exited").into()),
        }
    }

    /// Sends SIGTERM and waits for the daemon to exit; returns its status and log.
    pub fn stop(mut self) -> Result<(ExitStatus, String), ProcessError> {
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Ok((status, self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(ProcessError::Timeout {
            what: "exit",
            log: self.log(),
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Try a clean stop first so pins are removed; kill only if it hangs.
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + DAEMON_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_file(&self.log_path);
        if let Some(dir) = &self.state_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
