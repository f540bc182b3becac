//! Edits the allow and deny lists (and the CrowdSec bouncer's tries) of a running filter
//! through their pins.

use std::{
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::{
    maps::{
        IterableMap, Map, MapData, MapError,
        lpm_trie::{Key, LpmTrie},
    },
    sys::SyscallError,
};
use filter_common::{
    lists::{LIST_PRESENT, ListValue, V4Key, V6Key},
    maps::{ALLOW_V4, ALLOW_V6, CROWDSEC_V4, CROWDSEC_V6, DENY_V4, DENY_V6, LIST_INDEX},
};

use crate::{
    batch,
    cidr::Cidr,
    filelock::FileLock,
    listindex::{Counted, IndexError, ListIndex},
    pins::{LOCK_DIR, NotRunning, PinDir},
};

/// `BPF_NOEXIST` from `linux/bpf.h`: fail with EEXIST instead of replacing an entry.
const BPF_NOEXIST: u64 = 1;

/// Which list a command edits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// Sources passed before every other stage.
    Allow,
    /// Sources dropped.
    Deny,
    /// Sources under a CrowdSec ban decision, dropped; written only by the daemon's bouncer
    /// (never by `moat allow` or `moat deny`), counted on the denylist's side of the index.
    CrowdSec,
}

impl ListKind {
    /// "allowlist" or "denylist".
    pub const fn name(self) -> &'static str {
        match self {
            ListKind::Allow => "allowlist",
            ListKind::Deny => "denylist",
            ListKind::CrowdSec => "CrowdSec decisions",
        }
    }

    /// How this list's entries count in the list index.
    pub const fn counted(self) -> Counted {
        match self {
            ListKind::Allow => Counted::Allow,
            ListKind::Deny => Counted::Deny,
            ListKind::CrowdSec => Counted::Decisions,
        }
    }

    const fn maps(self) -> (&'static str, &'static str) {
        match self {
            ListKind::Allow => (ALLOW_V4, ALLOW_V6),
            ListKind::Deny => (DENY_V4, DENY_V6),
            ListKind::CrowdSec => (CROWDSEC_V4, CROWDSEC_V6),
        }
    }
}

/// A list edit that failed; the list is as it was before the command.
#[derive(Debug, thiserror::Error)]
pub enum ListEditError {
    /// The filter is not running on the interface.
    #[error(transparent)]
    NotRunning(#[from] NotRunning),
    /// The list is full.
    #[error(
        "the {list} of {iface} is full ({capacity} prefixes per address family); nothing was \
         added. Raise {key} in the config and restart moat"
    )]
    Full {
        /// Which list.
        list: &'static str,
        /// The interface.
        iface: String,
        /// Its capacity.
        capacity: u32,
        /// The config key that sets it.
        key: &'static str,
    },
    /// A prefix to delete is not on the list.
    #[error("{cidr} is not on the {list} of {iface}; nothing was deleted")]
    Absent {
        /// The prefix.
        cidr: Cidr,
        /// Which list.
        list: &'static str,
        /// The interface.
        iface: String,
    },
    /// The lock that serializes the list writers of the interface could not be taken.
    #[error("locking {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The list index could not be mapped.
    #[error("opening the list index of {iface}: {source}")]
    Index {
        /// The interface.
        iface: String,
        /// What failed.
        source: IndexError,
    },
    /// The kernel refused an operation.
    #[error("{action} the {list} of {iface}: {source}")]
    Map {
        /// What was being done.
        action: &'static str,
        /// Which list.
        list: &'static str,
        /// The interface.
        iface: String,
        /// What aya reported (boxed: `MapError` is large).
        source: Box<MapError>,
    },
}

/// The two tries (IPv4 and IPv6) of one list, opened from their pins.
pub struct PinnedList {
    kind: ListKind,
    iface: String,
    v4: LpmTrie<MapData, V4Key, ListValue>,
    v6: LpmTrie<MapData, V6Key, ListValue>,
    index: ListIndex,
    capacity: u32,
}

/// What [`PinnedList::add`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddOutcome {
    /// Prefixes inserted.
    pub added: usize,
    /// Prefixes that were already on the list.
    pub present: usize,
}

impl PinnedList {
    /// Opens the list `kind` of the filter running on `iface`.
    pub fn open(iface: &str, kind: ListKind) -> Result<PinnedList, ListEditError> {
        let pins = PinDir::for_iface(iface);
        let (v4_name, v6_name) = kind.maps();
        let open = |name: &str| -> Result<MapData, ListEditError> {
            let path = pins.running_map(iface, name)?;
            MapData::from_pin(&path).map_err(|source| ListEditError::Map {
                action: "opening",
                list: kind.name(),
                iface: iface.to_string(),
                source: Box::new(source),
            })
        };
        let map_error = |source| ListEditError::Map {
            action: "opening",
            list: kind.name(),
            iface: iface.to_string(),
            source: Box::new(source),
        };
        let v4 = open(v4_name)?;
        let capacity = v4.info().map_err(map_error)?.max_entries();
        let index = ListIndex::of(&open(LIST_INDEX)?).map_err(|source| ListEditError::Index {
            iface: iface.to_string(),
            source,
        })?;
        Ok(PinnedList {
            kind,
            iface: iface.to_string(),
            v4: LpmTrie::try_from(Map::LpmTrie(v4)).map_err(map_error)?,
            v6: LpmTrie::try_from(Map::LpmTrie(open(v6_name)?)).map_err(map_error)?,
            index,
            capacity,
        })
    }

    /// [`lists_lock`] of this list's interface.
    fn lock(&self) -> Result<FileLock, ListEditError> {
        lists_lock(&self.iface)
    }

    fn map_error(&self, action: &'static str) -> impl Fn(MapError) -> ListEditError + '_ {
        move |source| ListEditError::Map {
            action,
            list: self.kind.name(),
            iface: self.iface.clone(),
            source: Box::new(source),
        }
    }

    /// Inserts every prefix not already present. If the list fills up, the prefixes this call
    /// inserted are removed again and the list is left as it was.
    ///
    /// Prefixes go in in address order, whatever order they were given in: each insert then
    /// walks the trie path (and touches the index bytes) the one before it just walked, still
    /// in the cache, instead of a random one. With a million random prefixes that halves the
    /// kernel's time. A large load into a family that holds few entries goes in batches of
    /// [`BATCH`] per system call: the entries already there are read first, since a batch
    /// cannot refuse to replace one. A load of [`PARALLEL_AT_LEAST`] or more goes in from two
    /// threads, each a half of the address range: a trie insert allocates its node before it
    /// takes the trie's lock, so one thread's allocation overlaps the other's walk.
    pub fn add(&mut self, cidrs: &[Cidr]) -> Result<AddOutcome, ListEditError> {
        let _lock = self.lock()?;
        let outcome = self.add_locked(cidrs);
        // Whatever went in (even if rolled back since), before the lock goes.
        self.index.advance_generation();
        outcome
    }

    /// [`PinnedList::add`] under the lists lock.
    fn add_locked(&mut self, cidrs: &[Cidr]) -> Result<AddOutcome, ListEditError> {
        let mut inserted = Vec::with_capacity(cidrs.len());
        let mut present = 0;
        let sorted = in_address_order(cidrs);
        let split = sorted.partition_point(|cidr| matches!(cidr, Cidr::V4 { .. }));
        let (v4, v6) = sorted.split_at(split);
        for family in [v4, v6] {
            let ipv6 = family
                .first()
                .is_some_and(|cidr| matches!(cidr, Cidr::V6 { .. }));
            let existing = self.index.entries(ipv6) as usize;
            let result = if family.len() >= BATCH_AT_LEAST && existing <= family.len() / 4 {
                self.add_batched(family, ipv6, &mut inserted, &mut present)
            } else {
                self.add_each(family, &mut inserted, &mut present)
            };
            if let Err(error) = result {
                self.rollback_inserts(&inserted);
                return Err(self.add_error(error));
            }
        }
        Ok(AddOutcome {
            added: inserted.len(),
            present,
        })
    }

    /// The error of an insert that failed: the list full, or what the kernel said.
    fn add_error(&self, error: MapError) -> ListEditError {
        if matches!(errno(&error), Some(libc::ENOSPC | libc::E2BIG)) {
            ListEditError::Full {
                list: self.kind.name(),
                iface: self.iface.clone(),
                capacity: self.capacity,
                key: match self.kind {
                    ListKind::Allow => "allow_capacity",
                    ListKind::Deny => "deny_capacity",
                    ListKind::CrowdSec => "(fixed: filter_common::maps::CROWDSEC_ENTRIES)",
                },
            }
        } else {
            self.map_error("adding to")(error)
        }
    }

    /// Inserts `cidrs` one system call each, noting in `inserted` what went in and counting in
    /// `present` what was there already.
    fn add_each(
        &mut self,
        cidrs: &[Cidr],
        inserted: &mut Vec<Cidr>,
        present: &mut usize,
    ) -> Result<(), MapError> {
        for cidr in cidrs {
            match self.insert(cidr) {
                Ok(()) => inserted.push(*cidr),
                Err(error) if errno(&error) == Some(libc::EEXIST) => *present += 1,
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Inserts `cidrs`, all of one family and in address order, [`BATCH`] per system call
    /// (after the first batch, from two threads if there are enough): first reads the family's
    /// entries, counting those already there in `present` and leaving them alone. Falls back
    /// to [`PinnedList::add_each`] on a kernel without batches.
    fn add_batched(
        &mut self,
        cidrs: &[Cidr],
        ipv6: bool,
        inserted: &mut Vec<Cidr>,
        present: &mut usize,
    ) -> Result<(), MapError> {
        let mut existing = self.family_entries(ipv6)?;
        existing.sort_unstable_by_key(Cidr::address_order);
        let new: Vec<Cidr> = cidrs
            .iter()
            .filter(|cidr| {
                let there = existing
                    .binary_search_by_key(&cidr.address_order(), Cidr::address_order)
                    .is_ok();
                *present += usize::from(there);
                !there
            })
            .copied()
            .collect();
        let counted = self.kind.counted();
        // Every count raised before any insert, so the inserting threads need not share the
        // index; whatever does not go in has its count lowered again.
        for cidr in &new {
            self.index.note(counted, cidr, true);
        }
        let fd = if ipv6 {
            IterableMap::map(&self.v6).fd().as_fd()
        } else {
            IterableMap::map(&self.v4).fd().as_fd()
        };
        // The first batch alone: a kernel without batches refuses it whole.
        let (head, rest) = new.split_at(new.len().min(BATCH));
        let (written, error) = insert_run(fd, head, ipv6);
        if let Some(io_error) = error {
            if written == 0 && batch::unsupported(&io_error) {
                for cidr in &new {
                    self.index.note(counted, cidr, false);
                }
                return self.add_each(&new, inserted, present);
            }
            inserted.extend_from_slice(&head[..written]);
            for cidr in &new[written..] {
                self.index.note(counted, cidr, false);
            }
            return Err(batch_error(io_error));
        }
        inserted.extend_from_slice(head);
        // The rest in two runs of address space, one per thread: a trie insert allocates its
        // node before it takes the trie's lock, so one thread's allocation overlaps the
        // other's walk. Each run keeps address order, so each walk follows its last path.
        let (low, high) = if rest.len() >= PARALLEL_AT_LEAST {
            rest.split_at(rest.len() / 2)
        } else {
            (rest, &rest[rest.len()..])
        };
        let outcomes = std::thread::scope(|scope| {
            // The high half on a thread of its own, or after the low one if none can start.
            let helper = (!high.is_empty()).then(|| {
                std::thread::Builder::new()
                    .name("moat-insert".into())
                    .spawn_scoped(scope, move || insert_run(fd, high, ipv6))
            });
            let low_outcome = insert_run(fd, low, ipv6);
            let high_outcome = match helper {
                None => (0, None),
                Some(Ok(thread)) => thread.join().unwrap_or_else(|_| {
                    let panicked = std::io::Error::other("the inserting thread panicked");
                    (0, Some(panicked))
                }),
                Some(Err(_)) => insert_run(fd, high, ipv6),
            };
            [low_outcome, high_outcome]
        });
        let runs = [low, high];
        let mut failure = None;
        for (run, (written, error)) in runs.iter().zip(outcomes) {
            inserted.extend_from_slice(&run[..written]);
            for cidr in &run[written..] {
                self.index.note(counted, cidr, false);
            }
            failure = failure.or(error);
        }
        match failure {
            Some(io_error) => Err(batch_error(io_error)),
            None => Ok(()),
        }
    }

    /// The entries of one family's trie.
    fn family_entries(&self, ipv6: bool) -> Result<Vec<Cidr>, MapError> {
        let mut cidrs = Vec::new();
        if ipv6 {
            for key in self.v6.keys() {
                let key = key?;
                cidrs.push(Cidr::V6 {
                    addr: key.data(),
                    prefix: key.prefix_len(),
                });
            }
        } else {
            for key in self.v4.keys() {
                let key = key?;
                cidrs.push(Cidr::V4 {
                    addr: key.data(),
                    prefix: key.prefix_len(),
                });
            }
        }
        Ok(cidrs)
    }

    /// Deletes every prefix; if one is not on the list, the ones this call deleted are put back
    /// and the list is left as it was. In address order, as [`PinnedList::add`].
    pub fn delete(&mut self, cidrs: &[Cidr]) -> Result<usize, ListEditError> {
        let _lock = self.lock()?;
        let outcome = self.delete_locked(cidrs);
        // A deletion put back on failure is an edit too, before the lock goes.
        self.index.advance_generation();
        outcome
    }

    /// [`PinnedList::delete`] under the lists lock.
    fn delete_locked(&mut self, cidrs: &[Cidr]) -> Result<usize, ListEditError> {
        let mut deleted = Vec::with_capacity(cidrs.len());
        for cidr in &in_address_order(cidrs) {
            match self.remove(cidr) {
                Ok(()) => deleted.push(*cidr),
                Err(error) => {
                    for back in &deleted {
                        if let Err(error) = self.insert(back) {
                            log::error!("restoring {back} failed error={error}");
                        }
                    }
                    if errno(&error) == Some(libc::ENOENT) || matches!(error, MapError::KeyNotFound)
                    {
                        return Err(ListEditError::Absent {
                            cidr: *cidr,
                            list: self.kind.name(),
                            iface: self.iface.clone(),
                        });
                    }
                    return Err(self.map_error("deleting from")(error));
                }
            }
        }
        Ok(deleted.len())
    }

    /// How many more prefixes of a family (IPv6 if `ipv6`) the list has room for (its entries
    /// counted one by one: for the rare caller, a restore into a smaller list).
    pub fn room(&self, ipv6: bool) -> Result<usize, ListEditError> {
        let held = self
            .family_entries(ipv6)
            .map_err(self.map_error("reading"))?
            .len();
        Ok((self.capacity as usize).saturating_sub(held))
    }

    /// Every prefix on the list, IPv4 first, sorted.
    pub fn entries(&self) -> Result<Vec<Cidr>, ListEditError> {
        let mut cidrs = self
            .family_entries(false)
            .map_err(self.map_error("reading"))?;
        cidrs.extend(
            self.family_entries(true)
                .map_err(self.map_error("reading"))?,
        );
        cidrs.sort();
        Ok(cidrs)
    }

    /// Inserts `cidr`, its index counts raised first so the program never skips a trie that
    /// holds it.
    fn insert(&mut self, cidr: &Cidr) -> Result<(), MapError> {
        let counted = self.kind.counted();
        self.index.note(counted, cidr, true);
        let result = self.insert_entry(cidr);
        if result.is_err() {
            // Not inserted (or already there, counted when it was): take the count back.
            self.index.note(counted, cidr, false);
        }
        result
    }

    /// Removes `cidr`, then lowers its index counts.
    fn remove(&mut self, cidr: &Cidr) -> Result<(), MapError> {
        match cidr {
            Cidr::V4 { addr, prefix } => self.v4.remove(&Key::new(*prefix, *addr)),
            Cidr::V6 { addr, prefix } => self.v6.remove(&Key::new(*prefix, *addr)),
        }?;
        self.index.note(self.kind.counted(), cidr, false);
        Ok(())
    }

    fn insert_entry(&mut self, cidr: &Cidr) -> Result<(), MapError> {
        // BPF_NOEXIST makes the kernel report an exact duplicate instead of overwriting it, so
        // a rollback never removes an entry that was there before.
        let flags = BPF_NOEXIST;
        match cidr {
            Cidr::V4 { addr, prefix } => {
                self.v4
                    .insert(&Key::new(*prefix, *addr), LIST_PRESENT, flags)
            }
            Cidr::V6 { addr, prefix } => {
                self.v6
                    .insert(&Key::new(*prefix, *addr), LIST_PRESENT, flags)
            }
        }
    }

    fn rollback_inserts(&mut self, inserted: &[Cidr]) {
        for cidr in inserted {
            if let Err(error) = self.remove(cidr) {
                log::error!("rolling back {cidr} failed error={error}");
            }
        }
    }
}

/// Entries per batched system call.
const BATCH: usize = 4096;

/// The smallest load that goes in batches.
const BATCH_AT_LEAST: usize = 1024;

/// The smallest batched load split between two inserting threads.
const PARALLEL_AT_LEAST: usize = 8 * BATCH;

/// Inserts `run` (all of one family, IPv6 if `ipv6`) into the trie `fd`, [`BATCH`] per system
/// call, stopping at the first refusal: how many went in, and why the next did not.
fn insert_run(fd: BorrowedFd<'_>, run: &[Cidr], ipv6: bool) -> (usize, Option<std::io::Error>) {
    let mut written = 0;
    for chunk in run.chunks(BATCH) {
        let values = vec![LIST_PRESENT; chunk.len()];
        let outcome = if ipv6 {
            let keys: Vec<Key<V6Key>> = chunk.iter().filter_map(v6_key).collect();
            batch::update(fd, &keys, &values)
        } else {
            let keys: Vec<Key<V4Key>> = chunk.iter().filter_map(v4_key).collect();
            batch::update(fd, &keys, &values)
        };
        written += outcome.written;
        if outcome.error.is_some() {
            return (written, outcome.error);
        }
    }
    (written, None)
}

/// A batch's refusal as a map error.
fn batch_error(io_error: std::io::Error) -> MapError {
    MapError::SyscallError(SyscallError {
        call: "bpf_map_update_batch",
        io_error,
    })
}

fn v4_key(cidr: &Cidr) -> Option<Key<V4Key>> {
    match cidr {
        Cidr::V4 { addr, prefix } => Some(Key::new(*prefix, *addr)),
        Cidr::V6 { .. } => None,
    }
}

fn v6_key(cidr: &Cidr) -> Option<Key<V6Key>> {
    match cidr {
        Cidr::V6 { addr, prefix } => Some(Key::new(*prefix, *addr)),
        Cidr::V4 { .. } => None,
    }
}

/// `cidrs` sorted by family (IPv4 first), then address, then length.
fn in_address_order(cidrs: &[Cidr]) -> Vec<Cidr> {
    let mut sorted = cidrs.to_vec();
    sorted.sort_unstable_by_key(Cidr::address_order);
    sorted
}

/// The errno behind a map error.
fn errno(error: &MapError) -> Option<i32> {
    match error {
        MapError::SyscallError(syscall) => syscall.io_error.raw_os_error(),
        _ => None,
    }
}

/// Waits for and takes `/run/moat/IFACE.lists.lock`, held by every edit of the interface's
/// lists (the CLI's, the daemon's CrowdSec decisions, a restore) and by a take-over while it
/// copies the lists and rebuilds their index for the new program: a batched add works out
/// which prefixes are new before it writes them and counts those in the index, so a second
/// writer between the two would have both count one entry, and the index would keep marking
/// it after its deletion; an edit during a take-over's copy would go to maps about to be
/// replaced.
pub fn lists_lock(iface: &str) -> Result<FileLock, ListEditError> {
    let path = Path::new(LOCK_DIR).join(format!("{iface}.lists.lock"));
    FileLock::acquire(&path).map_err(|source| ListEditError::Lock { path, source })
}
