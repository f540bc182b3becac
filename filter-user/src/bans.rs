//! Bans: `moat ban add|del|list` on a running filter's pinned `BANS` map, and the daemon's
//! sweep that forgets bans long expired.
//!
//! Every ban written here clears its source's mark in the verified-source cache, since the
//! program skips the bans lookup for verified sources.
//!
//! Ban times are on the kernel's monotonic clock (what `bpf_ktime_get_ns` reads), so a manual
//! ban and an automatic one compare alike.

use std::{
    borrow::Borrow,
    net::IpAddr,
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray, PerCpuValues},
    sys::SyscallError,
};
use filter_common::{
    Reason, Settings,
    maps::{BAN_EVENTS, BANS, VERIFIED},
    sample::Sample,
    source::{BAN_CLASS, BAN_DRY_RUN, BAN_MANUAL, Ban, SourceKey},
};

use crate::{
    bansummary::{BanSummary, SummaryError},
    batch,
    config::{duration_ns, format_duration},
    pins::{NotRunning, PinDir},
    policy::{self, ControlError},
    verified::{CacheError, VerifiedCache},
};

/// A ban command that failed; the bans are as they were.
#[derive(Debug, thiserror::Error)]
pub enum BanError {
    /// The address is not an address.
    #[error("invalid address {input:?}: {reason}")]
    InvalidAddress {
        /// The text given.
        input: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// The filter is not running on the interface.
    #[error(transparent)]
    NotRunning(#[from] NotRunning),
    /// The address is not banned.
    #[error("{source_name} is not banned on {iface}")]
    NotBanned {
        /// The address (or IPv6 prefix) as tracked.
        source_name: String,
        /// The interface.
        iface: String,
    },
    /// A ban must last a while.
    #[error("invalid ban length {input:?}: {reason}")]
    InvalidLength {
        /// The text given.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// The ban table is full of manual bans (or kept refilling faster than room was made).
    #[error(
        "the ban table of {iface} is full of manual bans ({capacity}); nothing was added. Delete \
         some with `moat ban del`, or raise max_bans in the config and restart moat"
    )]
    Full {
        /// The interface.
        iface: String,
        /// Its capacity.
        capacity: u32,
    },
    /// The running settings could not be read.
    #[error("reading the settings of {iface}: {source}")]
    Settings {
        /// The interface.
        iface: String,
        /// What failed.
        source: ControlError,
    },
    /// The bans summary, where every ban clears its slot's bit, could not be opened.
    #[error("opening the bans summary of {iface}: {source}")]
    Summary {
        /// The interface.
        iface: String,
        /// What failed.
        source: SummaryError,
    },
    /// The verified-source cache, which every ban clears for its source, could not be mapped.
    #[error("mapping the verified sources of {iface}: {source}")]
    Verified {
        /// The interface.
        iface: String,
        /// What failed.
        source: CacheError,
    },
    /// The kernel refused.
    #[error("{action} the bans of {iface}: {source}")]
    Map {
        /// What was being done.
        action: &'static str,
        /// The interface.
        iface: String,
        /// What aya reported (boxed: `MapError` is large).
        source: Box<MapError>,
    },
}

/// One ban as `moat ban list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanView {
    /// The banned address, or IPv6 prefix.
    pub source: String,
    /// Time left.
    pub remaining: Duration,
    /// Why: a rate reason for automatic bans, `banned` for manual ones.
    pub reason: String,
    /// Automatic bans earned so far.
    pub offences: u32,
    /// What it drops: everything, all but TCP (a ban for UDP, ICMP or other traffic) or all but
    /// the segments of connections the host has open (a ban for SYNs).
    pub drops: &'static str,
}

/// Now, on the kernel's monotonic clock, in ns.
pub fn monotonic_ns() -> u64 {
    // SAFETY: all-zero is a valid timespec, and clock_gettime only writes it.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `now` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// How many automatic bans `moat ban add` removes, at most, to make room on a full table.
const MAKE_ROOM_TRIES: usize = 8;

/// The pinned `BANS`, `BANS_EMPTY` (the bans summary), `VERIFIED` and `SETTINGS` of a running
/// filter.
pub struct PinnedBans {
    iface: String,
    bans: HashMap<MapData, SourceKey, Ban>,
    summary: BanSummary,
    verified: VerifiedCache,
    settings: Settings,
}

impl PinnedBans {
    /// Opens the bans of the filter running on `iface`.
    pub fn open(iface: &str) -> Result<PinnedBans, BanError> {
        let pins = PinDir::for_iface(iface);
        let map_error = |action| {
            move |source| BanError::Map {
                action,
                iface: iface.to_string(),
                source: Box::new(source),
            }
        };
        let open = |name: &str| -> Result<MapData, BanError> {
            let path = pins.running_map(iface, name)?;
            MapData::from_pin(&path).map_err(map_error("opening"))
        };
        let bans = open(BANS)?;
        let summary = BanSummary::open(&pins).map_err(|source| BanError::Summary {
            iface: iface.to_string(),
            source,
        })?;
        let verified =
            VerifiedCache::of(&open(VERIFIED)?).map_err(|source| BanError::Verified {
                iface: iface.to_string(),
                source,
            })?;
        let settings = policy::pinned_settings(&pins).map_err(|source| BanError::Settings {
            iface: iface.to_string(),
            source,
        })?;
        Ok(PinnedBans {
            iface: iface.to_string(),
            bans: HashMap::try_from(Map::HashMap(bans)).map_err(map_error("opening"))?,
            summary,
            verified,
            settings,
        })
    }

    fn map_error(&self, action: &'static str) -> impl Fn(MapError) -> BanError + '_ {
        move |source| BanError::Map {
            action,
            iface: self.iface.clone(),
            source: Box::new(source),
        }
    }

    fn now_ns(&self) -> u64 {
        self.settings.now_ns(monotonic_ns())
    }

    /// The sources a ban of `addr` covers: the IPv4 address, or the IPv6 prefix the running
    /// filter bans (`bans.ipv6_prefix`).
    pub fn covered(&self, addr: IpAddr) -> crate::cidr::Cidr {
        crate::cidr::Cidr::of(addr, self.settings.v6_source_prefix)
    }

    /// Bans `addr` (its /64, or the configured IPv6 prefix) for `length`. A repeat offender's
    /// offence count is kept. The ban is manual, so no automatic ban ever evicts it; when the
    /// table is full, the automatic ban closest to its end makes room.
    pub fn add(&mut self, addr: IpAddr, length: Duration) -> Result<String, BanError> {
        let key = key_for(addr, self.settings.v6_source_prefix);
        let dry_run = self.settings.dry_run();
        let offences = match self.bans.get(&key, 0) {
            // Offences earned in a dry run do not count once enforcing.
            Ok(old) if old.flags & BAN_DRY_RUN != 0 && !dry_run => 0,
            Ok(old) => old.offences,
            Err(MapError::KeyNotFound) => 0,
            Err(error) => return Err(self.map_error("reading")(error)),
        };
        let ban = Ban {
            until_ns: self.now_ns().saturating_add(duration_ns(length)),
            offences,
            reason: Reason::Banned as u16,
            flags: BAN_MANUAL,
        };
        self.insert_making_room(key, ban)?;
        self.count_manual_ban();
        Ok(describe(&key, self.settings.v6_source_prefix))
    }

    /// Inserts `ban`, then clears the source's verification: no verified source is banned
    /// (its segments skip the bans lookup). While the table is full, removes the automatic
    /// entry that ends first and tries again (a few times: under a flood the program may take
    /// a freed slot first).
    fn insert_making_room(&mut self, key: SourceKey, ban: Ban) -> Result<(), BanError> {
        for _ in 0..MAKE_ROOM_TRIES {
            match self.bans.insert(key, ban, 0) {
                Ok(()) => {
                    self.summary
                        .note_ban(&key)
                        .map_err(self.map_error("writing"))?;
                    self.verified.forget(&key);
                    return Ok(());
                }
                Err(error) if !is_full(&error) => return Err(self.map_error("writing")(error)),
                Err(_) => {}
            }
            let victim = read_all(&self.bans)
                .map_err(self.map_error("reading"))?
                .into_iter()
                .filter(|(_, old)| old.flags & BAN_MANUAL == 0)
                .min_by_key(|(_, old)| old.until_ns)
                .map(|(key, _)| key);
            let Some(victim) = victim else {
                break;
            };
            // Gone already (swept, or expired and removed) is as good.
            let _ = self.bans.remove(&victim);
        }
        Err(BanError::Full {
            iface: self.iface.clone(),
            capacity: self.bans.map().info().map_or(0, |info| info.max_entries()),
        })
    }

    /// Adds one to the `banned` slot of `BAN_EVENTS` (manual bans), best effort: a failure
    /// only leaves the metric short.
    fn count_manual_ban(&self) {
        let path = PinDir::for_iface(&self.iface).map(BAN_EVENTS);
        let Ok(data) = MapData::from_pin(&path) else {
            return;
        };
        let Ok(mut events) = PerCpuArray::<MapData, u64>::try_from(Map::PerCpuArray(data)) else {
            return;
        };
        let index = Reason::Banned as u32;
        let Ok(values) = events.get(&index, 0) else {
            return;
        };
        let mut updated: Vec<u64> = values.iter().copied().collect();
        if let Some(first) = updated.first_mut() {
            *first = first.saturating_add(1);
        }
        if let Ok(values) = PerCpuValues::try_from(updated) {
            let _ = events.set(index, values, 0);
        }
    }

    /// Lifts the ban on `addr`.
    pub fn delete(&mut self, addr: IpAddr) -> Result<String, BanError> {
        let key = key_for(addr, self.settings.v6_source_prefix);
        let name = describe(&key, self.settings.v6_source_prefix);
        let active = match self.bans.get(&key, 0) {
            Ok(ban) => ban.active(self.now_ns()),
            Err(MapError::KeyNotFound) => false,
            Err(error) => return Err(self.map_error("reading")(error)),
        };
        if !active {
            return Err(BanError::NotBanned {
                source_name: name,
                iface: self.iface.clone(),
            });
        }
        self.bans.remove(&key).map_err(self.map_error("deleting"))?;
        Ok(name)
    }

    /// Every entry of the ban table, expired ones (kept for repeat offences) included, with
    /// the program's clock now.
    pub fn entries(&self) -> Result<(Vec<(SourceKey, Ban)>, u64), BanError> {
        let entries = read_all(&self.bans).map_err(self.map_error("reading"))?;
        Ok((entries, self.now_ns()))
    }

    /// Writes one entry as given (restoring saved state), on the program's clock now; a
    /// manual one makes room if the table is full.
    pub fn restore(&mut self, key: SourceKey, ban: Ban) -> Result<(), BanError> {
        if ban.flags & BAN_MANUAL != 0 {
            return self.insert_making_room(key, ban);
        }
        self.bans
            .insert(key, ban, 0)
            .map_err(self.map_error("writing"))?;
        self.summary
            .note_ban(&key)
            .map_err(self.map_error("writing"))?;
        if ban.covers_tcp() {
            self.verified.forget(&key);
        }
        Ok(())
    }

    /// The `BANS` key of `addr` under the running filter's IPv6 prefix.
    pub fn key_of(&self, addr: IpAddr) -> SourceKey {
        key_for(addr, self.settings.v6_source_prefix)
    }

    /// Re-keys the IPv6 bans after `bans.ipv6_prefix` changed from `from` to the running
    /// filter's prefix, so each still matches the sources it banned: under a shorter prefix a
    /// ban moves to the network that holds it (bans that meet there merge: the later end, the
    /// higher offence count, manual if either was); under a longer one its key stays, and it
    /// covers the first network of the new length within the old one. Returns how many bans
    /// moved; what it counts is the whole table, so a ban the program adds meanwhile under the
    /// new prefix merges like any other.
    pub fn follow_v6_prefix(&mut self, from: u32) -> Result<usize, BanError> {
        let to = self.settings.v6_source_prefix;
        if to >= from {
            return Ok(0);
        }
        let mut moved = 0;
        for (key, ban) in read_all(&self.bans).map_err(self.map_error("reading"))? {
            if key.ip_version != 6 || key.class != BAN_CLASS {
                continue;
            }
            let target = self.key_of(IpAddr::from(key.addr_be));
            if target == key {
                continue;
            }
            let merged = match self.bans.get(&target, 0) {
                Ok(there) => merge(there, ban),
                Err(MapError::KeyNotFound) => ban,
                Err(error) => return Err(self.map_error("reading")(error)),
            };
            // Removed first, so the move needs no room (a packet in between meets no ban).
            match self.bans.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(error) => return Err(self.map_error("removing")(error)),
            }
            self.insert_making_room(target, merged)?;
            moved += 1;
        }
        Ok(moved)
    }

    /// The program's clock now.
    pub fn clock_ns(&self) -> u64 {
        self.now_ns()
    }

    /// Every ban in force (one recorded during a dry run only while dry run is on), longest
    /// remaining first.
    pub fn active(&self) -> Result<Vec<BanView>, BanError> {
        let now = self.now_ns();
        let dry_run = self.settings.dry_run();
        let mut views = Vec::new();
        for (key, ban) in read_all(&self.bans).map_err(self.map_error("reading"))? {
            if !ban.enforced(now, dry_run) {
                continue;
            }
            views.push(BanView {
                source: describe(&key, self.settings.v6_source_prefix),
                remaining: Duration::from_nanos(ban.until_ns - now),
                reason: Reason::from_u32(u32::from(ban.reason))
                    .map_or("unknown", Reason::label)
                    .to_string(),
                offences: ban.offences,
                drops: if !ban.covers_tcp() {
                    "all but TCP"
                } else if ban.spares_connections() {
                    "all but open connections"
                } else {
                    "everything"
                },
            });
        }
        views.sort_by_key(|view| std::cmp::Reverse(view.remaining));
        Ok(views)
    }
}

/// Parses a ban length like `10m`; it must be at least a second.
pub fn parse_length(text: &str) -> Result<Duration, BanError> {
    let length = crate::config::parse_duration(text).map_err(|reason| BanError::InvalidLength {
        input: text.to_string(),
        reason,
    })?;
    if length < Duration::from_secs(1) {
        return Err(BanError::InvalidLength {
            input: text.to_string(),
            reason: "a ban lasts at least 1s".to_string(),
        });
    }
    Ok(length)
}

/// Parses an address to ban: a plain IPv4 or IPv6 address, no zone, no prefix, not an
/// IPv4-mapped IPv6 address (the error gives its IPv4 form).
pub fn parse_address(text: &str) -> Result<IpAddr, BanError> {
    let invalid = |reason| BanError::InvalidAddress {
        input: text.to_string(),
        reason,
    };
    if text.contains('%') {
        return Err(invalid(
            "IPv6 zone ids (like %eth0) name a link; remove the zone".into(),
        ));
    }
    if text.contains('/') {
        return Err(invalid(
            "bans take one address (IPv6 bans cover its configured prefix); use `moat deny add` for prefixes".into(),
        ));
    }
    let addr: IpAddr = text.parse().map_err(|_| {
        invalid("expected an IPv4 or IPv6 address, e.g. 192.0.2.7 or 2001:db8::7".into())
    })?;
    if let IpAddr::V6(v6) = addr
        && let Some(v4) = v6.to_ipv4_mapped()
    {
        return Err(invalid(format!("{}; write {v4}", crate::cidr::MAPPED)));
    }
    Ok(addr)
}

/// The `BANS` key of `addr`.
pub fn key_for(addr: IpAddr, v6_prefix: u32) -> SourceKey {
    SourceKey::for_addr(addr, BAN_CLASS, v6_prefix)
}

/// The address, or `prefix/len` for IPv6, that a ban key stands for.
pub fn describe(key: &SourceKey, v6_prefix: u32) -> String {
    if key.ip_version == 4 {
        let mut octets = [0u8; 4];
        octets.copy_from_slice(&key.addr_be[..4]);
        std::net::Ipv4Addr::from(octets).to_string()
    } else if v6_prefix >= 128 {
        std::net::Ipv6Addr::from(key.addr_be).to_string()
    } else {
        format!("{}/{v6_prefix}", std::net::Ipv6Addr::from(key.addr_be))
    }
}

/// Share of the ban table in use above which expired bans are forgotten at once, whatever
/// `bans.forget_after` says: the table is not LRU, so remembered repeat offenders must not keep
/// new offenders from being banned.
pub const CROWDED_PERCENT: usize = 90;

/// Why a sweep of the ban table failed.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The table could not be read or written.
    #[error(transparent)]
    Map(#[from] MapError),
    /// The bans summary could not be opened.
    #[error(transparent)]
    Summary(#[from] SummaryError),
}

/// What a sweep of the ban table did and left.
#[derive(Debug)]
pub struct Sweep {
    /// Entries deleted.
    pub forgotten: usize,
    /// The entries it read and kept, so the round's count needs no second walk.
    pub kept: Vec<(SourceKey, Ban)>,
}

/// Deletes bans that expired more than `forget_after_ns` ago from the `BANS` pinned at `pins`
/// (every expired ban when the table is over [`CROWDED_PERCENT`] full), reading the table once.
/// Then sets the bits of the bans summary's slots no ban hashes to any more
/// ([`BanSummary::rebuild`]), so the program skips the lookup for their sources.
pub fn sweep_pinned(pins: &PinDir, forget_after_ns: u64) -> Result<Sweep, SweepError> {
    let now = policy::pinned_settings(pins)
        .map_err(|_| MapError::InvalidName {
            name: filter_common::maps::SETTINGS.to_string(),
        })?
        .now_ns(monotonic_ns());
    let data = MapData::from_pin(pins.map(BANS))?;
    let mut bans: HashMap<MapData, SourceKey, Ban> = HashMap::try_from(Map::HashMap(data))?;
    let capacity = bans.map().info()?.max_entries() as usize;
    let entries = read_all(&bans)?;
    let crowded = entries.len() * 100 > capacity * CROWDED_PERCENT;
    let keep_for = if crowded { 0 } else { forget_after_ns };
    let (stale, kept): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|(_, ban)| ban.until_ns.saturating_add(keep_for) < now);
    for (key, _) in &stale {
        // Already gone (re-banned and then deleted) is fine.
        let _ = bans.remove(key);
    }
    let kept_keys: Vec<SourceKey> = kept.iter().map(|(key, _)| *key).collect();
    BanSummary::open(pins)?.rebuild(&kept_keys, || {
        read_all(&bans).map(|entries| entries.into_iter().map(|(key, _)| key).collect())
    })?;
    Ok(Sweep {
        forgotten: stale.len(),
        kept,
    })
}

/// Every entry of `bans`, a few thousand per system call (entry by entry, two calls each, on a
/// kernel without batch lookups): the daemon reads the whole table every housekeeping round.
pub fn read_all<T: Borrow<MapData>>(
    bans: &HashMap<T, SourceKey, Ban>,
) -> Result<Vec<(SourceKey, Ban)>, MapError> {
    match batch::entries(bans.map().fd().as_fd()) {
        Ok(entries) => Ok(entries),
        Err(error) if batch::unsupported(&error) => bans.iter().collect(),
        Err(io_error) => Err(MapError::SyscallError(SyscallError {
            call: "bpf_map_lookup_batch",
            io_error,
        })),
    }
}

/// `moat ban list` output: one line per ban.
pub fn render(views: &[BanView]) -> String {
    let mut out = format!(
        "{:<24} {:>10} {:<12} {:>8}  {}\n",
        "SOURCE", "REMAINING", "REASON", "OFFENCES", "DROPS"
    );
    for view in views {
        out.push_str(&format!(
            "{:<24} {:>10} {:<12} {:>8}  {}\n",
            view.source,
            format_duration(Duration::from_secs(view.remaining.as_secs().max(1))),
            view.reason,
            view.offences,
            view.drops
        ));
    }
    out
}

/// Bans issued (or lifted) within one flush above which they are logged as one line with a
/// count rather than one line each.
pub const BURST_LINES: usize = 10;

/// The daemon's log of bans, fed by the program's ban records in the samples ring (never by
/// walking the table: each record costs one lookup of its own entry): each flush (once a
/// second) logs one line per ban issued since, or one summary line when more than
/// [`BURST_LINES`] arrived; and likewise for bans whose time is up.
pub struct BanLog {
    iface: String,
    v6_prefix: u32,
    bans: Option<HashMap<MapData, SourceKey, Ban>>,
    issued: Vec<(SourceKey, Ban)>,
    issued_count: usize,
    /// Each ban the log knows: its end on the program's clock, and when the log learnt of it.
    ends: std::collections::HashMap<SourceKey, (u64, Instant)>,
    /// Which of those are manual (`moat ban add`): the ones shared with the fleet.
    manual: std::collections::HashSet<SourceKey>,
    capacity: usize,
}

/// What a count of the ban table told the log that the fleet should hear of.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Manual bans the log had not seen (`moat ban add` since the last count), or whose end
    /// the operator moved since (`moat ban add` again): for the fleet, each one more decision.
    pub added: Vec<(SourceKey, Ban)>,
    /// Manual bans it knew that are gone before their end (`moat ban del`).
    pub lifted: Vec<SourceKey>,
}

impl BanLog {
    /// A log for the filter pinned for `iface`, remembering at most `capacity` bans' ends (the
    /// table's size).
    pub fn new(iface: &str, capacity: u32, v6_prefix: u32) -> BanLog {
        let bans = MapData::from_pin(PinDir::for_iface(iface).map(BANS))
            .ok()
            .and_then(|data| HashMap::try_from(Map::HashMap(data)).ok());
        BanLog {
            iface: iface.to_string(),
            v6_prefix,
            bans,
            issued: Vec::new(),
            issued_count: 0,
            ends: std::collections::HashMap::new(),
            manual: std::collections::HashSet::new(),
            capacity: capacity as usize,
        }
    }

    /// Takes one ban record (a [`Sample`] of kind `SAMPLE_BAN`) from the ring; returns the
    /// ban it found in the table (for the CrowdSec pusher), if any.
    pub fn record(&mut self, sample: &Sample) -> Option<(SourceKey, Ban)> {
        let addr = match sample.ip_version {
            4 => {
                let mut octets = [0u8; 4];
                octets.copy_from_slice(&sample.src_addr_be[..4]);
                IpAddr::from(octets)
            }
            6 => IpAddr::from(sample.src_addr_be),
            _ => return None,
        };
        let key = key_for(addr, self.v6_prefix);
        let ban = self.bans.as_ref().and_then(|bans| bans.get(&key, 0).ok())?;
        if self.ends.len() < self.capacity || self.ends.contains_key(&key) {
            self.ends.insert(key, (ban.until_ns, Instant::now()));
        }
        self.issued_count += 1;
        if self.issued.len() <= BURST_LINES {
            self.issued.push((key, ban));
        }
        Some((key, ban))
    }

    /// Describes and finds bans under `v6_prefix` from now on (`bans.ipv6_prefix` changed):
    /// the IPv6 bans it knows move to their keys under it, as the table's did
    /// ([`PinnedBans::follow_v6_prefix`]), two that meet keeping the later end.
    pub fn follow_v6_prefix(&mut self, v6_prefix: u32) {
        if v6_prefix == self.v6_prefix {
            return;
        }
        self.v6_prefix = v6_prefix;
        let remap = |key: SourceKey| {
            if key.ip_version == 6 {
                key_for(IpAddr::from(key.addr_be), v6_prefix)
            } else {
                key
            }
        };
        self.manual = std::mem::take(&mut self.manual)
            .into_iter()
            .map(remap)
            .collect();
        let known = std::mem::take(&mut self.ends);
        for (key, (until_ns, noted)) in known {
            let key = if key.ip_version == 6 {
                key_for(IpAddr::from(key.addr_be), v6_prefix)
            } else {
                key
            };
            let end = self.ends.entry(key).or_insert((until_ns, noted));
            if until_ns > end.0 {
                *end = (until_ns, noted);
            }
        }
    }

    /// Learns the bans in force when the daemon starts (restored, or carried over by a take
    /// over) without logging them: they were logged when issued, and the restore says how many
    /// came back. Their ends are logged as any other.
    pub fn know(&mut self, in_force: &[(SourceKey, Ban)]) {
        let now = Instant::now();
        for (key, ban) in in_force.iter().take(self.capacity) {
            self.ends.insert(*key, (ban.until_ns, now));
            if ban.flags & BAN_MANUAL != 0 {
                self.manual.insert(*key);
            }
        }
    }

    /// Compares what the log knows with the bans in force in a count of the table begun at
    /// `taken` (the daemon's periodic count): manual bans it has not seen are logged as issued
    /// (they come from `moat ban add`, not from the program), and bans it knew before the count
    /// began that are gone early (`moat ban del`) as lifted. A ban learnt after the count began
    /// may be missing from it without having been lifted. Returns the manual bans added and
    /// lifted, for the fleet.
    pub fn reconcile(&mut self, taken: Instant, in_force: &[(SourceKey, Ban)]) -> Reconciled {
        let mut reconciled = Reconciled::default();
        let current: std::collections::HashMap<SourceKey, &Ban> =
            in_force.iter().map(|(key, ban)| (*key, ban)).collect();
        let lifted: Vec<SourceKey> = self
            .ends
            .iter()
            .filter(|(key, (_, noted))| *noted < taken && !current.contains_key(key))
            .map(|(key, _)| *key)
            .collect();
        for key in lifted {
            self.ends.remove(&key);
            if self.manual.remove(&key) {
                reconciled.lifted.push(key);
            }
            log::info!(
                "unbanned iface={} source={}",
                self.iface,
                describe(&key, self.v6_prefix)
            );
        }
        for (key, ban) in in_force {
            if ban.flags & BAN_MANUAL == 0 {
                continue;
            }
            // New to the log as a manual ban (a program's ban the operator made manual
            // included), or one the operator lengthened or shortened since.
            let known = self.manual.contains(key);
            let moved = known
                && self
                    .ends
                    .get(key)
                    .is_some_and(|(until_ns, _)| *until_ns != ban.until_ns);
            if known && !moved {
                continue;
            }
            if self.ends.len() < self.capacity || self.ends.contains_key(key) {
                self.ends.insert(*key, (ban.until_ns, Instant::now()));
                self.manual.insert(*key);
            }
            reconciled.added.push((*key, *ban));
            self.issued_count += 1;
            if self.issued.len() <= BURST_LINES {
                self.issued.push((*key, *ban));
            }
        }
        reconciled
    }

    /// Logs what arrived since the last flush and the bans that ended by `now_ns` (the
    /// program's clock).
    pub fn flush(&mut self, now_ns: u64) {
        let iface = &self.iface;
        if self.issued_count > BURST_LINES {
            // A botnet earns bans by the thousand: one line a second instead of one a ban
            // (every ban still reaches the metrics, from the kernel's own count).
            let sample: Vec<String> = self
                .issued
                .iter()
                .take(3)
                .map(|(key, _)| describe(key, self.v6_prefix))
                .collect();
            log::info!(
                "banned iface={iface} count={} sources={}...",
                self.issued_count,
                sample.join(",")
            );
        } else {
            for (key, ban) in &self.issued {
                log::info!(
                    "banned iface={iface} source={} reason={} offences={} for={}{}",
                    describe(key, self.v6_prefix),
                    Reason::from_u32(u32::from(ban.reason)).map_or("unknown", Reason::label),
                    ban.offences,
                    format_duration(Duration::from_secs(
                        (ban.until_ns.saturating_sub(now_ns) / 1_000_000_000).max(1)
                    )),
                    if ban.flags & BAN_DRY_RUN != 0 {
                        " dry_run=true"
                    } else {
                        ""
                    }
                );
            }
        }
        self.issued.clear();
        self.issued_count = 0;
        let ended: Vec<SourceKey> = self
            .ends
            .iter()
            .filter(|(_, (until, _))| *until <= now_ns)
            .map(|(key, _)| *key)
            .collect();
        for key in &ended {
            self.ends.remove(key);
            self.manual.remove(key);
        }
        if ended.len() > BURST_LINES {
            log::info!("unbanned iface={iface} count={}", ended.len());
        } else {
            for key in ended {
                log::info!(
                    "unbanned iface={iface} source={}",
                    describe(&key, self.v6_prefix)
                );
            }
        }
    }
}

/// Two bans of one source (met under a shorter IPv6 prefix) as one: the later end and its
/// reason, the higher offence count, manual if either was, recorded in a dry run only if both
/// were.
fn merge(a: Ban, b: Ban) -> Ban {
    let (later, earlier) = if a.until_ns >= b.until_ns {
        (a, b)
    } else {
        (b, a)
    };
    Ban {
        until_ns: later.until_ns,
        offences: later.offences.max(earlier.offences),
        reason: later.reason,
        flags: ((later.flags | earlier.flags) & BAN_MANUAL)
            | (later.flags & earlier.flags & BAN_DRY_RUN),
    }
}

/// Whether a hash-map insert failed because the table is full (`E2BIG`).
fn is_full(error: &MapError) -> bool {
    matches!(error, MapError::SyscallError(syscall)
        if matches!(syscall.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ban_log_lifts_only_bans_it_knew_before_a_count_began() {
        let key = |last: u8| key_for(IpAddr::from([192, 0, 2, last]), 64);
        let ban = Ban {
            until_ns: u64::MAX,
            offences: 1,
            reason: Reason::RateUdp as u16,
            flags: 0,
        };
        let mut log = BanLog::new("moatnone0", 16, 64);
        let before_any = Instant::now();
        log.know(&[(key(1), ban), (key(2), ban)]);
        // A count begun before the log learnt of them does not lift them when it misses them.
        log.reconcile(before_any, &[]);
        assert_eq!(log.ends.len(), 2);
        // A later one that holds only the first lifts the second.
        log.reconcile(Instant::now(), &[(key(1), ban)]);
        assert!(log.ends.contains_key(&key(1)) && !log.ends.contains_key(&key(2)));
        // A manual ban the count finds is learnt (to be logged as issued).
        let manual = Ban {
            flags: BAN_MANUAL,
            ..ban
        };
        let reconciled = log.reconcile(Instant::now(), &[(key(1), ban), (key(3), manual)]);
        assert!(log.ends.contains_key(&key(3)) && log.issued.len() == 1);
        assert_eq!(
            reconciled,
            Reconciled {
                added: vec![(key(3), manual)],
                ..Reconciled::default()
            },
            "the manual ban is for the fleet"
        );
        // Known and unchanged: nothing new. Its end changed by the operator: shared again.
        let reconciled = log.reconcile(Instant::now(), &[(key(3), manual)]);
        assert_eq!(reconciled, Reconciled::default());
        let changed = Ban {
            until_ns: manual.until_ns - 1,
            ..manual
        };
        let reconciled = log.reconcile(Instant::now(), &[(key(3), changed)]);
        assert_eq!(
            reconciled,
            Reconciled {
                added: vec![(key(3), changed)],
                ..Reconciled::default()
            }
        );
        // A program's ban the operator made manual is shared too.
        let made_manual = Ban {
            flags: BAN_MANUAL,
            ..ban
        };
        let reconciled = log.reconcile(Instant::now(), &[(key(1), made_manual), (key(3), changed)]);
        assert_eq!(reconciled.added, vec![(key(1), made_manual)]);
        // Lifted early: the manual one is for the fleet to take back, the other is not.
        let reconciled = log.reconcile(Instant::now(), &[(key(1), ban)]);
        assert_eq!(
            reconciled,
            Reconciled {
                lifted: vec![key(3)],
                ..Reconciled::default()
            }
        );
        // One known from the start (restored) is not logged again.
        let mut restarted = BanLog::new("moatnone0", 16, 64);
        restarted.know(&[(key(4), manual)]);
        restarted.reconcile(Instant::now(), &[(key(4), manual)]);
        assert!(restarted.issued.is_empty());
    }

    #[test]
    fn addresses_and_lengths_are_validated() {
        assert!(parse_address("192.0.2.7").is_ok());
        assert!(parse_address("2001:db8::7").is_ok());
        for bad in ["192.0.2.0/24", "fe80::1%eth0", "host.example", ""] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_length("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_length("500ms").is_err());
        assert!(parse_length("ten").is_err());
    }

    #[test]
    fn v6_keys_cover_the_prefix() {
        let a = key_for("2001:db8:1:2:3::1".parse().unwrap(), 64);
        let b = key_for("2001:db8:1:2:ffff::9".parse().unwrap(), 64);
        let c = key_for("2001:db8:1:3::1".parse().unwrap(), 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(describe(&a, 64), "2001:db8:1:2::/64");
        assert_eq!(
            describe(&key_for("192.0.2.7".parse().unwrap(), 64), 64),
            "192.0.2.7"
        );
    }
}
