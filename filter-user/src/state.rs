//! What the operator told the filter, kept on disk so a clean stop and start, or a reboot, does
//! not forget it: the allow and deny lists and the bans, manual and automatic, with their
//! offence counts. The daemon saves them to `STATE_DIR/IFACE.json` every minute and when it
//! stops, whole or not at all (`crate::atomicfile`: a temporary file of each save's own,
//! flushed to the disk, then renamed over the old one), so neither a crash, a power loss nor a
//! stop during the periodic save leaves half a file; after attaching a fresh filter it restores
//! them. A filter taken over from a killed
//! daemon still has them in its maps and restores nothing.
//!
//! A restore puts back every part it can: each family of the allowlist and of the denylist, and
//! each ban, is restored independently; a family that no longer fits (a smaller capacity in the
//! configuration) gets as many of its prefixes as fit, and costs the others nothing. A file that
//! could not be restored in full is kept beside the new one (`IFACE.json.unrestored-UNIXSECONDS`,
//! `-N` added if that name is taken) before anything saves over it, so nothing the operator said
//! is lost: the error names the copy.
//!
//! Bans are stored with a wall-clock expiry: the monotonic clock the program uses starts again
//! at boot, so its values mean nothing after a reboot.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use filter_common::source::{BAN_MANUAL, Ban};
use serde::{Deserialize, Serialize};

use crate::{
    bans::{BanError, PinnedBans, describe},
    cidr::{Cidr, CidrError},
    control::{ListEditError, ListKind, PinnedList},
};

/// Where the daemon keeps each interface's state by default (systemd's `StateDirectory=moat`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/moat";

/// Why state could not be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The state file is not what moat writes.
    #[error("{path} is not a moat state file: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: serde_json::Error,
    },
    /// A list could not be read or written.
    #[error(transparent)]
    List(#[from] ListEditError),
    /// The bans could not be read or written.
    #[error(transparent)]
    Bans(#[from] BanError),
    /// A saved list entry is not a prefix.
    #[error("a saved {list} entry: {source}")]
    Entry {
        /// Which list.
        list: &'static str,
        /// What is wrong with it.
        source: CidrError,
    },
    /// A list family got only part of its saved prefixes back: its capacity is smaller now.
    #[error(
        "the {list} of {iface} holds {capacity} prefixes per address family ({key}): {restored} of \
         its {saved} saved {family} prefixes restored, {} left out (the kept file holds them all)",
        saved - restored
    )]
    Partial {
        /// Which list.
        list: &'static str,
        /// The interface.
        iface: String,
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// Prefixes restored.
        restored: usize,
        /// Prefixes saved.
        saved: usize,
        /// The list's capacity per family.
        capacity: u32,
        /// The configuration key that sets it.
        key: &'static str,
    },
    /// The state directory cannot hold the state file.
    #[error(
        "--state-dir {path}: cannot save the lists and bans there ({source}); name a writable \
         directory"
    )]
    Unwritable {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A restore left something out; the saved file was kept aside.
    #[error(
        "restored only allow={} deny={} bans={} from {path}: {problems}; the saved file is kept \
         as {kept}",
        restored.allow,
        restored.deny,
        restored.bans
    )]
    Incomplete {
        /// What was put back.
        restored: Restored,
        /// The file restored from.
        path: PathBuf,
        /// What could not be restored, and why.
        problems: String,
        /// Where the saved file now is.
        kept: PathBuf,
    },
    /// A restore left something out, and the saved file could not be kept aside either.
    #[error("could not restore {path} in full ({problems}) nor rename it aside: {source}")]
    NotKept {
        /// The file restored from.
        path: PathBuf,
        /// What could not be restored, and why.
        problems: String,
        /// What the OS said about the rename.
        source: std::io::Error,
    },
}

/// One saved ban.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBan {
    /// The banned address (an IPv6 ban's network address).
    pub source: IpAddr,
    /// When the ban ends, in ms since the Unix epoch (in the past for an expired ban that is
    /// remembered for repeat offences).
    pub until_unix_ms: u64,
    /// Automatic bans earned so far.
    pub offences: u32,
    /// The reason code that earned the last ban.
    pub reason: u32,
    /// The ban's `BAN_*` flags (manual, recorded in a dry run); absent in older files.
    #[serde(default)]
    pub flags: u16,
}

/// The saved state of one interface's filter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Allowlist prefixes.
    pub allow: Vec<String>,
    /// Denylist prefixes.
    pub deny: Vec<String>,
    /// Bans, expired ones still remembered included.
    pub bans: Vec<SavedBan>,
}

/// What a restore put back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Allowlist prefixes.
    pub allow: usize,
    /// Denylist prefixes.
    pub deny: usize,
    /// Bans (in force or remembered).
    pub bans: usize,
}

/// The state file of `iface` under `dir`.
pub fn path(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("{iface}.json"))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Reads the lists and bans of the filter running on `iface`.
pub fn read(iface: &str) -> Result<Saved, StateError> {
    let list = |kind| -> Result<Vec<String>, StateError> {
        Ok(PinnedList::open(iface, kind)?
            .entries()?
            .iter()
            .map(ToString::to_string)
            .collect())
    };
    let bans = PinnedBans::open(iface)?;
    let (entries, now_ns) = bans.entries()?;
    let now_ms = unix_ms_now();
    let saved_bans = entries
        .into_iter()
        .filter_map(|(key, ban)| {
            let source = describe(&key, 128)
                .split('/')
                .next()
                .and_then(|addr| addr.parse().ok())?;
            let left_ms = ban.until_ns.saturating_sub(now_ns) / 1_000_000;
            let until_unix_ms = if ban.until_ns > now_ns {
                now_ms.saturating_add(left_ms)
            } else {
                now_ms.saturating_sub(1)
            };
            Some(SavedBan {
                source,
                until_unix_ms,
                offences: ban.offences,
                reason: u32::from(ban.reason),
                flags: ban.flags,
            })
        })
        .collect();
    Ok(Saved {
        allow: list(ListKind::Allow)?,
        deny: list(ListKind::Deny)?,
        bans: saved_bans,
    })
}

/// Checks, before anything is attached, that `dir` can hold `iface`'s state file: it is
/// created if missing, and a file is written in it and removed.
pub fn check_dir(iface: &str, dir: &Path) -> Result<(), StateError> {
    let unwritable = |source| StateError::Unwritable {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(unwritable)?;
    let probe = path(dir, iface).with_extension("json.tmp");
    std::fs::write(&probe, b"").map_err(unwritable)?;
    std::fs::remove_file(&probe).map_err(unwritable)
}

/// Saves the lists and bans of the filter on `iface` to its file under `dir`, atomically.
pub fn save(iface: &str, dir: &Path) -> Result<(), StateError> {
    let saved = read(iface)?;
    let file = path(dir, iface);
    let io = |action| {
        let file = file.clone();
        move |source| StateError::Io {
            action,
            path: file,
            source,
        }
    };
    let text = serde_json::to_vec_pretty(&saved).map_err(|source| StateError::Parse {
        path: file.clone(),
        source,
    })?;
    crate::atomicfile::replace(&file, &text).map_err(io("writing"))
}

/// Restores the file of `iface` under `dir`, if there is one, into the filter running on
/// `iface`: list entries it lacks, and every ban with its remaining wall-clock time and
/// offence count. Each list and each ban is restored on its own; if any could not be (or the
/// file could not be read), the file is renamed aside and [`StateError::Incomplete`] says what
/// was put back, what was not, and where the file is.
pub fn restore(iface: &str, dir: &Path) -> Result<Restored, StateError> {
    let file = path(dir, iface);
    let text = match std::fs::read(&file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Restored::default());
        }
        Err(source) => {
            let problem = StateError::Io {
                action: "reading",
                path: file.clone(),
                source,
            };
            return Err(keep_aside(&file, Restored::default(), vec![problem]));
        }
    };
    let saved: Saved = match serde_json::from_slice(&text) {
        Ok(saved) => saved,
        Err(source) => {
            let problem = StateError::Parse {
                path: file.clone(),
                source,
            };
            return Err(keep_aside(&file, Restored::default(), vec![problem]));
        }
    };
    let mut restored = Restored::default();
    let mut problems = Vec::new();
    for (kind, entries, count) in [
        (ListKind::Allow, &saved.allow, &mut restored.allow),
        (ListKind::Deny, &saved.deny, &mut restored.deny),
    ] {
        // An entry that does not parse (a file edited by hand) is reported, so the file is
        // kept; the others are restored.
        let mut families: [Vec<Cidr>; 2] = [Vec::new(), Vec::new()];
        for entry in entries {
            match entry.parse::<Cidr>() {
                Ok(cidr) => families[usize::from(matches!(cidr, Cidr::V6 { .. }))].push(cidr),
                Err(source) => problems.push(StateError::Entry {
                    list: kind.name(),
                    source,
                }),
            }
        }
        for family in families.iter().filter(|family| !family.is_empty()) {
            let (added, problem) = restore_family(iface, kind, family);
            *count += added;
            problems.extend(problem);
        }
    }
    match restore_bans(iface, &saved.bans) {
        Ok((count, failed)) => {
            restored.bans = count;
            problems.extend(failed);
        }
        Err(error) => problems.push(error),
    }
    if problems.is_empty() {
        Ok(restored)
    } else {
        Err(keep_aside(&file, restored, problems))
    }
}

/// Restores `cidrs`, all of one family, into the list `kind` of the filter on `iface`: all of
/// them if they fit, else as many as the list has room for (a smaller capacity than when they
/// were saved), in the saved order. Returns how many went in, and why not all did.
fn restore_family(iface: &str, kind: ListKind, cidrs: &[Cidr]) -> (usize, Option<StateError>) {
    let mut list = match PinnedList::open(iface, kind) {
        Ok(list) => list,
        Err(error) => return (0, Some(error.into())),
    };
    let (capacity, key) = match list.add(cidrs) {
        Ok(outcome) => return (outcome.added, None),
        Err(ListEditError::Full { capacity, key, .. }) => (capacity, key),
        Err(error) => return (0, Some(error.into())),
    };
    let ipv6 = matches!(cidrs.first(), Some(Cidr::V6 { .. }));
    let room = match list.room(ipv6) {
        Ok(room) => room.min(cidrs.len()),
        Err(error) => return (0, Some(error.into())),
    };
    match list.add(&cidrs[..room]) {
        Ok(outcome) => (
            outcome.added,
            Some(StateError::Partial {
                list: kind.name(),
                iface: iface.to_string(),
                family: if ipv6 { "IPv6" } else { "IPv4" },
                restored: outcome.added + outcome.present,
                saved: cidrs.len(),
                capacity,
                key,
            }),
        ),
        Err(error) => (0, Some(error.into())),
    }
}

/// Restores `saved` bans into the filter on `iface`, manual ones first: they make room if the
/// table is full. Returns how many went in and why each manual one that did not failed; an
/// automatic one that no longer fits (a smaller `max_bans`) is skipped with a warning.
fn restore_bans(iface: &str, saved: &[SavedBan]) -> Result<(usize, Vec<StateError>), StateError> {
    if saved.is_empty() {
        return Ok((0, Vec::new()));
    }
    let mut bans = PinnedBans::open(iface)?;
    let now_ns = bans.clock_ns();
    let now_ms = unix_ms_now();
    let mut saved: Vec<&SavedBan> = saved.iter().collect();
    saved.sort_by_key(|ban| ban.flags & BAN_MANUAL == 0);
    let mut restored = 0;
    let mut failed = Vec::new();
    for ban in saved {
        let left = Duration::from_millis(ban.until_unix_ms.saturating_sub(now_ms));
        // Under the running prefix: a ban saved under another covers its network now.
        let key = bans.key_of(ban.source);
        let restoring = bans.restore(
            key,
            Ban {
                // A ban saved for ever (u64::MAX ns) stays for ever: no cast may wrap it short.
                until_ns: now_ns.saturating_add(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX)),
                offences: ban.offences,
                reason: ban.reason as u16,
                flags: ban.flags,
            },
        );
        match restoring {
            Ok(()) => restored += 1,
            Err(error) if ban.flags & BAN_MANUAL == 0 => {
                log::warn!(
                    "an automatic ban did not fit, skipped iface={iface} source={} error=\"{error}\"",
                    ban.source
                );
            }
            Err(error) => failed.push(error.into()),
        }
    }
    Ok((restored, failed))
}

/// Renames `file`, which a restore could not put back in full, out of the way of the next save
/// (`FILE.unrestored-UNIXSECONDS`), and describes the restore as [`StateError::Incomplete`]; if
/// the rename fails too, that failure is what is returned (a directory where it fails is one
/// where saving fails as well, so the file is not written over either).
fn keep_aside(file: &Path, restored: Restored, problems: Vec<StateError>) -> StateError {
    // A name no earlier copy has (two restores can fail within a second).
    let seconds = unix_ms_now() / 1000;
    let mut copies = 0;
    let kept = loop {
        let mut kept = file.as_os_str().to_owned();
        kept.push(format!(".unrestored-{seconds}"));
        if copies > 0 {
            kept.push(format!("-{copies}"));
        }
        let kept = PathBuf::from(kept);
        if !kept.exists() {
            break kept;
        }
        copies += 1;
    };
    let problems = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if let Err(source) = std::fs::rename(file, &kept) {
        return StateError::NotKept {
            path: file.to_path_buf(),
            problems,
            source,
        };
    }
    StateError::Incomplete {
        restored,
        path: file.to_path_buf(),
        problems,
        kept,
    }
}
