//! Edits the allow and deny lists of a running filter through their pins.

use aya::maps::{
    Map, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use filter_common::{
    listindex::Side,
    lists::{LIST_PRESENT, ListValue, V4Key, V6Key},
    maps::{ALLOW_V4, ALLOW_V6, DENY_V4, DENY_V6, LIST_INDEX},
};

use crate::{
    cidr::Cidr,
    listindex::{IndexError, ListIndex},
    pins::{NotRunning, PinDir},
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
}

impl ListKind {
    /// "allowlist" or "denylist".
    pub const fn name(self) -> &'static str {
        match self {
            ListKind::Allow => "allowlist",
            ListKind::Deny => "denylist",
        }
    }

    /// The side of the list index this list counts on.
    pub const fn side(self) -> Side {
        match self {
            ListKind::Allow => Side::Allow,
            ListKind::Deny => Side::Deny,
        }
    }

    const fn maps(self) -> (&'static str, &'static str) {
        match self {
            ListKind::Allow => (ALLOW_V4, ALLOW_V6),
            ListKind::Deny => (DENY_V4, DENY_V6),
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
    pub fn add(&mut self, cidrs: &[Cidr]) -> Result<AddOutcome, ListEditError> {
        let mut inserted = Vec::new();
        let mut present = 0;
        for cidr in cidrs {
            match self.insert(cidr) {
                Ok(()) => inserted.push(*cidr),
                Err(error) if errno(&error) == Some(libc::EEXIST) => present += 1,
                Err(error) => {
                    let full = matches!(errno(&error), Some(libc::ENOSPC | libc::E2BIG));
                    self.rollback_inserts(&inserted);
                    if full {
                        return Err(ListEditError::Full {
                            list: self.kind.name(),
                            iface: self.iface.clone(),
                            capacity: self.capacity,
                            key: match self.kind {
                                ListKind::Allow => "allow_capacity",
                                ListKind::Deny => "deny_capacity",
                            },
                        });
                    }
                    return Err(self.map_error("adding to")(error));
                }
            }
        }
        Ok(AddOutcome {
            added: inserted.len(),
            present,
        })
    }

    /// Deletes every prefix; if one is not on the list, the ones this call deleted are put back
    /// and the list is left as it was.
    pub fn delete(&mut self, cidrs: &[Cidr]) -> Result<usize, ListEditError> {
        let mut deleted = Vec::new();
        for cidr in cidrs {
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

    /// Every prefix on the list, IPv4 first, sorted.
    pub fn entries(&self) -> Result<Vec<Cidr>, ListEditError> {
        let mut cidrs = Vec::new();
        for key in self.v4.keys() {
            let key = key.map_err(self.map_error("reading"))?;
            cidrs.push(Cidr::V4 {
                addr: key.data(),
                prefix: key.prefix_len(),
            });
        }
        for key in self.v6.keys() {
            let key = key.map_err(self.map_error("reading"))?;
            cidrs.push(Cidr::V6 {
                addr: key.data(),
                prefix: key.prefix_len(),
            });
        }
        cidrs.sort();
        Ok(cidrs)
    }

    /// Inserts `cidr`, its index counts raised first so the program never skips a trie that
    /// holds it.
    fn insert(&mut self, cidr: &Cidr) -> Result<(), MapError> {
        let side = self.kind.side();
        self.index.note(side, cidr, true);
        let result = self.insert_entry(cidr);
        if result.is_err() {
            // Not inserted (or already there, counted when it was): take the count back.
            self.index.note(side, cidr, false);
        }
        result
    }

    /// Removes `cidr`, then lowers its index counts.
    fn remove(&mut self, cidr: &Cidr) -> Result<(), MapError> {
        match cidr {
            Cidr::V4 { addr, prefix } => self.v4.remove(&Key::new(*prefix, *addr)),
            Cidr::V6 { addr, prefix } => self.v6.remove(&Key::new(*prefix, *addr)),
        }?;
        self.index.note(self.kind.side(), cidr, false);
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

/// The errno behind a map error.
fn errno(error: &MapError) -> Option<i32> {
    match error {
        MapError::SyscallError(syscall) => syscall.io_error.raw_os_error(),
        _ => None,
    }
}
