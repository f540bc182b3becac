//! Writes to the running filter's maps. Today that is the settings map; lists and bans join it
//! with the policy work (issue #3).

use aya::maps::{
    Array, Map, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use filter_common::{
    Settings,
    lists::{LIST_PRESENT, ListValue, V4Key, V6Key},
    maps::{ALLOW_V4, ALLOW_V6, DENY_V4, DENY_V6, PORTS, SETTINGS, TRUSTED_V4, TRUSTED_V6},
};

use crate::{cidr::Cidr, config::Config, pins::PinDir};

/// `BPF_NOEXIST` from `linux/bpf.h`: fail with EEXIST instead of replacing an entry.
const BPF_NOEXIST: u64 = 1;

/// A map write that failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The object has no map of that name (the object and this binary disagree).
    #[error("the filter has no map named {name}")]
    MissingMap {
        /// The map's name.
        name: &'static str,
    },
    /// The kernel refused the write.
    #[error("writing map {name}: {source}")]
    Write {
        /// The map's name.
        name: &'static str,
        /// What aya reported.
        source: MapError,
    },
}

/// Everything the program reads that a configuration decides, compiled and ready to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The `SETTINGS` value.
    pub settings: Settings,
    /// One `PORTS` flag byte per port.
    pub port_flags: Vec<u8>,
    /// Trusted upstreams for the reflection stage.
    pub trusted: Vec<Cidr>,
}

impl Policy {
    /// Compiles `config` for this host: its CPU count (aggregate buckets are per CPU), its
    /// ephemeral port range (UDP replies must reach it) and its resolv.conf.
    pub fn compile(config: &Config, dry_run: bool) -> Policy {
        let cpus = aya::util::nr_cpus().map_or(1, |n| n as u32);
        Policy {
            settings: config.settings(cpus, dry_run),
            port_flags: config.port_flags(ephemeral_ports()),
            trusted: config.trusted(),
        }
    }
}

/// The kernel's ephemeral port range, from `net.ipv4.ip_local_port_range` (the Linux default
/// if unreadable).
pub fn ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .unwrap_or((32768, 60999))
}

/// Writes `policy` into the loaded object's maps: ports and trusted upstreams first, the
/// settings (which switch port enforcement on) last.
pub fn write_policy(ebpf: &mut aya::Ebpf, policy: &Policy) -> Result<(), ControlError> {
    write_ports(ebpf.map_mut(PORTS), &policy.port_flags)?;
    write_trusted(ebpf, &policy.trusted)?;
    write_settings(ebpf.map_mut(SETTINGS), policy.settings)
}

/// Writes one flag byte per port into `PORTS`, skipping entries that already hold it.
pub fn write_ports(map: Option<&mut Map>, flags: &[u8]) -> Result<(), ControlError> {
    let map = map.ok_or(ControlError::MissingMap { name: PORTS })?;
    let write_error = |source| ControlError::Write {
        name: PORTS,
        source,
    };
    let mut array: Array<&mut MapData, u8> = Array::try_from(map).map_err(write_error)?;
    for (port, flag) in flags.iter().enumerate() {
        let port = port as u32;
        if array.get(&port, 0).map_err(write_error)? != *flag {
            array.set(port, *flag, 0).map_err(write_error)?;
        }
    }
    Ok(())
}

/// Makes `TRUSTED_V4`/`TRUSTED_V6` hold exactly `cidrs`: new prefixes are inserted before old
/// ones are removed, so an upstream trusted before and after a reload is trusted throughout
/// and its replies are never dropped in between.
pub fn write_trusted(ebpf: &mut aya::Ebpf, cidrs: &[Cidr]) -> Result<(), ControlError> {
    for (name, v6) in [(TRUSTED_V4, false), (TRUSTED_V6, true)] {
        let map = ebpf
            .map_mut(name)
            .ok_or(ControlError::MissingMap { name })?;
        let write_error = |source| ControlError::Write { name, source };
        let wanted = cidrs
            .iter()
            .filter(|cidr| matches!(cidr, Cidr::V6 { .. }) == v6);
        if v6 {
            let keys: Vec<Key<V6Key>> = wanted
                .filter_map(|cidr| match cidr {
                    Cidr::V6 { addr, prefix } => Some(Key::new(*prefix, *addr)),
                    Cidr::V4 { .. } => None,
                })
                .collect();
            let trie: LpmTrie<&mut MapData, V6Key, ListValue> =
                LpmTrie::try_from(map).map_err(write_error)?;
            replace_prefixes(trie, &keys).map_err(write_error)?;
        } else {
            let keys: Vec<Key<V4Key>> = wanted
                .filter_map(|cidr| match cidr {
                    Cidr::V4 { addr, prefix } => Some(Key::new(*prefix, *addr)),
                    Cidr::V6 { .. } => None,
                })
                .collect();
            let trie: LpmTrie<&mut MapData, V4Key, ListValue> =
                LpmTrie::try_from(map).map_err(write_error)?;
            replace_prefixes(trie, &keys).map_err(write_error)?;
        }
    }
    Ok(())
}

/// Inserts every key of `wanted` into `trie`, then removes the keys not in it.
fn replace_prefixes<K: aya::Pod + PartialEq>(
    mut trie: LpmTrie<&mut MapData, K, ListValue>,
    wanted: &[Key<K>],
) -> Result<(), aya::maps::MapError> {
    for key in wanted {
        trie.insert(key, LIST_PRESENT, 0)?;
    }
    let present: Vec<Key<K>> = trie.keys().collect::<Result<_, _>>()?;
    for key in present {
        let still_wanted = wanted
            .iter()
            .any(|want| want.prefix_len() == key.prefix_len() && want.data() == key.data());
        if !still_wanted {
            trie.remove(&key)?;
        }
    }
    Ok(())
}

/// Replaces the running settings in the `SETTINGS` map. One map update: the program sees the
/// old value or the new one, never a mix.
pub fn write_settings(map: Option<&mut Map>, value: Settings) -> Result<(), ControlError> {
    let map = map.ok_or(ControlError::MissingMap { name: SETTINGS })?;
    let mut array: Array<&mut MapData, Settings> =
        Array::try_from(map).map_err(|source| ControlError::Write {
            name: SETTINGS,
            source,
        })?;
    array
        .set(0, value, 0)
        .map_err(|source| ControlError::Write {
            name: SETTINGS,
            source,
        })
}

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
    #[error(
        "moat is not running on {iface} (nothing pinned at {path}); start it with `moat run --iface {iface}`"
    )]
    NotRunning {
        /// The interface.
        iface: String,
        /// The pin looked for.
        path: String,
    },
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
            let path = pins.map(name);
            if !path.exists() {
                return Err(ListEditError::NotRunning {
                    iface: iface.to_string(),
                    path: path.display().to_string(),
                });
            }
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
        Ok(PinnedList {
            kind,
            iface: iface.to_string(),
            v4: LpmTrie::try_from(Map::LpmTrie(v4)).map_err(map_error)?,
            v6: LpmTrie::try_from(Map::LpmTrie(open(v6_name)?)).map_err(map_error)?,
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
            let result = match cidr {
                Cidr::V4 { addr, prefix } => self.v4.remove(&Key::new(*prefix, *addr)),
                Cidr::V6 { addr, prefix } => self.v6.remove(&Key::new(*prefix, *addr)),
            };
            match result {
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

    fn insert(&mut self, cidr: &Cidr) -> Result<(), MapError> {
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
            let result = match cidr {
                Cidr::V4 { addr, prefix } => self.v4.remove(&Key::new(*prefix, *addr)),
                Cidr::V6 { addr, prefix } => self.v6.remove(&Key::new(*prefix, *addr)),
            };
            if let Err(error) = result {
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
