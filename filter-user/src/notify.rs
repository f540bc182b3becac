//! systemd's readiness protocol (`sd_notify(3)`): with `Type=notify`, the service manager
//! learns that moat protects the interface only once the filter is attached, and sees reloads
//! begin and end. Messages are datagrams to the socket named by `NOTIFY_SOCKET`; without that
//! variable (moat not started by systemd) every call does nothing.

use std::{os::unix::net::UnixDatagram, path::PathBuf};

/// The environment variable systemd names its notification socket in.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where to send notifications, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<PathBuf>,
    watchdog: bool,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for. Abstract sockets (`@name`) are not supported and
    /// are ignored with a warning; systemd names a path.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os(NOTIFY_SOCKET).map(PathBuf::from);
        if let Some(path) = &target
            && path.as_os_str().as_encoded_bytes().first() == Some(&b'@')
        {
            log::warn!("abstract NOTIFY_SOCKET is not supported, not notifying systemd");
            return Notifier {
                target: None,
                watchdog: false,
            };
        }
        // `WatchdogSec=` sets WATCHDOG_USEC (and WATCHDOG_PID, which must be ours).
        let watchdog = std::env::var_os("WATCHDOG_USEC").is_some()
            && std::env::var("WATCHDOG_PID")
                .map_or(true, |pid| pid.trim() == std::process::id().to_string());
        Notifier { target, watchdog }
    }

    /// The daemon's loop is alive: `WATCHDOG=1`, if systemd watches it. If the loop ever
    /// stalls, systemd kills the daemon and starts it again, and the new one takes the
    /// filter over (which stayed attached throughout).
    pub fn alive(&self) {
        if self.watchdog {
            self.send("WATCHDOG=1\n");
        }
    }

    /// The filter is attached: `READY=1`, with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}\n"));
    }

    /// A reload begins: `RELOADING=1` with the monotonic time systemd requires.
    pub fn reloading(&self) {
        let usec = crate::bans::monotonic_ns() / 1_000;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}\n"));
    }

    /// Shutting down: `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\n");
    }

    /// Sends one message; a failure is logged (systemd then times the start out, which says
    /// more than moat could).
    fn send(&self, message: &str) {
        let Some(path) = &self.target else {
            return;
        };
        let sent =
            UnixDatagram::unbound().and_then(|socket| socket.send_to(message.as_bytes(), path));
        if let Err(error) = sent {
            log::warn!(
                "notifying systemd failed socket={} error={error}",
                path.display()
            );
        }
    }
}
