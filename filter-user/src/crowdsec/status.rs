//! What the bouncer and the pusher report: the figures the metrics serve, and a small JSON
//! file the daemon publishes beside `moat top`'s rankings so `moat stats` and `moat top` can
//! show them.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};

use super::decisions::Scope;

/// The bouncer's and the pusher's figures, shared with the metrics server.
#[derive(Debug, Default)]
pub struct Status {
    /// Whether `[crowdsec]` is configured.
    pub enabled: AtomicBool,
    /// Whether the last pull reached the LAPI and was applied.
    pub reachable: AtomicBool,
    /// When the last pull succeeded, in ms since the Unix epoch (0: never).
    pub last_pull_unix_ms: AtomicU64,
    /// Pulls that succeeded.
    pub pulls: AtomicU64,
    /// Pulls that failed (LAPI unreachable, refused, a reply that did not parse, a map write
    /// that failed).
    pub pull_errors: AtomicU64,
    /// Decisions taken on.
    pub applied: AtomicU64,
    /// Decisions ended: deleted in the LAPI, expired, or absent from a full pull.
    pub removed: AtomicU64,
    /// Alerts the LAPI accepted.
    pub alerts_pushed: AtomicU64,
    /// Alerts lost: refused, unreachable LAPI after retries, or a full queue.
    pub alerts_failed: AtomicU64,
    /// The program's bans not pushed: each rests on traffic anyone can send with the source's
    /// address (see `Ban::covers_tcp`).
    pub alerts_withheld: AtomicU64,
    /// Pushed manual bans lifted early whose decisions were deleted from the LAPI.
    pub alerts_retracted: AtomicU64,
    /// Decisions in force by origin and scope.
    pub active: Mutex<BTreeMap<(String, Scope), u64>>,
    /// Decisions not enforced, by `type/scope`.
    pub ignored: Mutex<BTreeMap<String, u64>>,
}

/// The figures as `moat stats` and `moat top` read them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When written, in ms since the Unix epoch.
    pub written_unix_ms: u64,
    /// See [`Status::reachable`].
    pub reachable: bool,
    /// See [`Status::last_pull_unix_ms`].
    pub last_pull_unix_ms: u64,
    /// See [`Status::pulls`].
    pub pulls: u64,
    /// See [`Status::pull_errors`].
    pub pull_errors: u64,
    /// See [`Status::applied`].
    pub applied: u64,
    /// See [`Status::removed`].
    pub removed: u64,
    /// See [`Status::alerts_pushed`].
    pub alerts_pushed: u64,
    /// See [`Status::alerts_failed`].
    pub alerts_failed: u64,
    /// See [`Status::alerts_withheld`] (absent from an older daemon's figures: 0).
    #[serde(default)]
    pub alerts_withheld: u64,
    /// See [`Status::alerts_retracted`] (absent from an older daemon's figures: 0).
    #[serde(default)]
    pub alerts_retracted: u64,
    /// Decisions in force, as `origin/scope` → count.
    pub active: BTreeMap<String, u64>,
    /// Decisions ignored, as `type/scope` → count.
    pub ignored: BTreeMap<String, u64>,
}

impl Snapshot {
    /// Decisions in force in all.
    pub fn active_total(&self) -> u64 {
        self.active.values().sum()
    }
}

impl Status {
    /// The figures now.
    pub fn snapshot(&self) -> Snapshot {
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        Snapshot {
            written_unix_ms: crate::state::unix_ms_now(),
            reachable: self.reachable.load(Ordering::Relaxed),
            last_pull_unix_ms: load(&self.last_pull_unix_ms),
            pulls: load(&self.pulls),
            pull_errors: load(&self.pull_errors),
            applied: load(&self.applied),
            removed: load(&self.removed),
            alerts_pushed: load(&self.alerts_pushed),
            alerts_failed: load(&self.alerts_failed),
            alerts_withheld: load(&self.alerts_withheld),
            alerts_retracted: load(&self.alerts_retracted),
            active: self
                .active
                .lock()
                .map(|active| {
                    active
                        .iter()
                        .map(|((origin, scope), count)| {
                            (format!("{origin}/{}", scope.label()), *count)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            ignored: self
                .ignored
                .lock()
                .map(|ignored| ignored.clone())
                .unwrap_or_default(),
        }
    }

    /// Writes the figures for `moat stats` and `moat top` (when enabled).
    pub fn publish(&self, iface: &str) -> std::io::Result<()> {
        if !self.enabled.load(Ordering::Relaxed) {
            return Ok(());
        }
        crate::atomicfile::replace(&path(iface), &serde_json::to_vec(&self.snapshot())?)
    }
}

/// Where the daemon publishes the CrowdSec figures of `iface`.
pub fn path(iface: &str) -> PathBuf {
    std::path::Path::new(crate::pins::LOCK_DIR).join(format!("{iface}.crowdsec.json"))
}

/// The figures the daemon on `iface` published, if it runs a bouncer and wrote them lately.
pub fn read(iface: &str) -> Option<Snapshot> {
    let snapshot: Snapshot = serde_json::from_slice(&std::fs::read(path(iface)).ok()?).ok()?;
    let age = crate::state::unix_ms_now().saturating_sub(snapshot.written_unix_ms);
    (age <= 10_000).then_some(snapshot)
}
