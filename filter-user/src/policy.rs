//! The policy a configuration decides (settings, ports, trusted upstreams), written to the
//! running filter in one step as packets see it.
//!
//! The program reads one of two policy slots, the one the single `u32` in `ACTIVE` names. A
//! change is written whole into the other slot and then `ACTIVE` is flipped, so:
//! - packets see the old policy or the new one, never a mix, and never a torn `Settings` value
//!   (an array update of 360 bytes is not atomic, a 4-byte one is);
//! - a write that fails before the flip leaves what packets read exactly as it was, so a failed
//!   reload needs no undo;
//! - trusted upstreams in both the old and the new policy are trusted throughout.
//!
//! Every writer (the daemon's reload, `moat set`, the upstream watcher) holds the interface's
//! [`PolicyLock`] from reading the active slot to the flip, so none loses another's update.

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::maps::{
    Array, Map, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use filter_common::{
    Settings,
    lists::{
        LIST_PRESENT, ListValue, SLOT_PREFIX, TrustedV4Key, TrustedV6Key, trusted_v4_key,
        trusted_v6_key,
    },
    maps::{ACTIVE, POLICY_SLOTS, PORTS, SETTINGS, TRUSTED_V4, TRUSTED_V6},
    ports::{PORT_COUNT, port_index},
};

use crate::{
    cidr::Cidr,
    config::Config,
    filelock::FileLock,
    pins::{LOCK_DIR, PinDir},
};

/// A policy write that failed; what packets read is as it was.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The object has no map of that name (the object and this binary disagree).
    #[error("the filter has no map named {name}")]
    MissingMap {
        /// The map's name.
        name: &'static str,
    },
    /// The kernel refused a read or write.
    #[error("writing map {name}: {source}")]
    Write {
        /// The map's name.
        name: &'static str,
        /// What aya reported.
        source: MapError,
    },
    /// The policy lock could not be taken.
    #[error("locking {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Everything the program reads that a configuration decides, compiled and ready to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The `SETTINGS` value (its `slot` is set when written).
    pub settings: Settings,
    /// One `PORTS` flag byte per port.
    pub port_flags: Vec<u8>,
    /// Trusted upstreams for the reflection stage.
    pub trusted: Vec<Cidr>,
}

impl Policy {
    /// Compiles `config` for this host: its ephemeral port range (UDP replies must reach it)
    /// and its resolv.conf.
    pub fn compile(config: &Config, dry_run: bool) -> Policy {
        Policy {
            settings: config.settings(dry_run),
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

/// The map data behind a map of the kinds moat declares.
pub fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(data)
        | Map::HashMap(data)
        | Map::LpmTrie(data)
        | Map::LruHashMap(data)
        | Map::PerCpuArray(data)
        | Map::PerCpuHashMap(data)
        | Map::RingBuf(data) => Some(data),
        _ => None,
    }
}

/// A second handle on the map `name` of a loaded object.
pub fn duplicate(ebpf: &aya::Ebpf, name: &'static str) -> Result<MapData, ControlError> {
    let data = ebpf
        .map(name)
        .and_then(map_data)
        .ok_or(ControlError::MissingMap { name })?;
    let write_error = |source| ControlError::Write { name, source };
    let fd = data.fd().as_fd().try_clone_to_owned().map_err(|io_error| {
        write_error(MapError::SyscallError(aya::sys::SyscallError {
            call: "dup",
            io_error,
        }))
    })?;
    MapData::from_fd(fd).map_err(write_error)
}

/// The five maps of the policy, open.
pub struct PolicyMaps {
    active: Array<MapData, u32>,
    settings: Array<MapData, Settings>,
    ports: Array<MapData, u8>,
    v4: LpmTrie<MapData, TrustedV4Key, ListValue>,
    v6: LpmTrie<MapData, TrustedV6Key, ListValue>,
}

fn typed<T>(
    name: &'static str,
    data: MapData,
    wrap: fn(MapData) -> Map,
    convert: impl FnOnce(Map) -> Result<T, MapError>,
) -> Result<T, ControlError> {
    convert(wrap(data)).map_err(|source| ControlError::Write { name, source })
}

impl PolicyMaps {
    fn from_data(
        mut open: impl FnMut(&'static str) -> Result<MapData, ControlError>,
    ) -> Result<PolicyMaps, ControlError> {
        Ok(PolicyMaps {
            active: typed(ACTIVE, open(ACTIVE)?, Map::Array, Array::try_from)?,
            settings: typed(SETTINGS, open(SETTINGS)?, Map::Array, Array::try_from)?,
            ports: typed(PORTS, open(PORTS)?, Map::Array, Array::try_from)?,
            v4: typed(
                TRUSTED_V4,
                open(TRUSTED_V4)?,
                Map::LpmTrie,
                LpmTrie::try_from,
            )?,
            v6: typed(
                TRUSTED_V6,
                open(TRUSTED_V6)?,
                Map::LpmTrie,
                LpmTrie::try_from,
            )?,
        })
    }

    /// The policy maps of a loaded object.
    pub fn of_object(ebpf: &aya::Ebpf) -> Result<PolicyMaps, ControlError> {
        PolicyMaps::from_data(|name| duplicate(ebpf, name))
    }

    /// The policy maps of the filter pinned at `pins`.
    pub fn of_pins(pins: &PinDir) -> Result<PolicyMaps, ControlError> {
        PolicyMaps::from_data(|name| {
            MapData::from_pin(pins.map(name)).map_err(|source| ControlError::Write { name, source })
        })
    }

    /// The slot packets read now.
    pub fn active_slot(&self) -> Result<u32, ControlError> {
        let slot = self
            .active
            .get(&0, 0)
            .map_err(|source| ControlError::Write {
                name: ACTIVE,
                source,
            })?;
        Ok(slot % POLICY_SLOTS)
    }

    /// The settings packets read now.
    pub fn settings(&self) -> Result<Settings, ControlError> {
        let slot = self.active_slot()?;
        self.settings
            .get(&slot, 0)
            .map_err(|source| ControlError::Write {
                name: SETTINGS,
                source,
            })
    }

    /// The whole policy packets read now.
    pub fn read(&self) -> Result<Policy, ControlError> {
        let slot = self.active_slot()?;
        let settings = self.settings()?;
        let ports_error = |source| ControlError::Write {
            name: PORTS,
            source,
        };
        let mut port_flags = Vec::with_capacity(PORT_COUNT as usize);
        for port in 0..PORT_COUNT {
            port_flags.push(
                self.ports
                    .get(&port_index(slot, port as u16), 0)
                    .map_err(ports_error)?,
            );
        }
        let mut trusted = Vec::new();
        for key in self.v4.keys() {
            let key = key.map_err(|source| ControlError::Write {
                name: TRUSTED_V4,
                source,
            })?;
            let data = key.data();
            if u32::from(data[0]) == slot {
                trusted.push(Cidr::V4 {
                    addr: [data[1], data[2], data[3], data[4]],
                    prefix: key.prefix_len().saturating_sub(SLOT_PREFIX),
                });
            }
        }
        for key in self.v6.keys() {
            let key = key.map_err(|source| ControlError::Write {
                name: TRUSTED_V6,
                source,
            })?;
            let data = key.data();
            if u32::from(data[0]) == slot {
                let mut addr = [0u8; 16];
                addr.copy_from_slice(&data[1..]);
                trusted.push(Cidr::V6 {
                    addr,
                    prefix: key.prefix_len().saturating_sub(SLOT_PREFIX),
                });
            }
        }
        trusted.sort();
        Ok(Policy {
            settings,
            port_flags,
            trusted,
        })
    }

    /// Writes `policy` whole into the slot packets do not read, then flips `ACTIVE` to it.
    /// Returns the slot now active. On an error before the flip, packets still read the
    /// previous policy, untouched.
    pub fn write(&mut self, policy: &Policy) -> Result<u32, ControlError> {
        let slot = (self.active_slot()? + 1) % POLICY_SLOTS;
        self.fill(slot, policy)?;
        self.active
            .set(0, slot, 0)
            .map_err(|source| ControlError::Write {
                name: ACTIVE,
                source,
            })?;
        Ok(slot)
    }

    /// Makes packets read `slot` again: a take-over's way back when the program it wrote a
    /// policy for could not be swapped in.
    pub fn activate(&mut self, slot: u32) -> Result<(), ControlError> {
        self.active
            .set(0, slot % POLICY_SLOTS, 0)
            .map_err(|source| ControlError::Write {
                name: ACTIVE,
                source,
            })
    }

    /// Writes `policy` into `slot` without flipping.
    fn fill(&mut self, slot: u32, policy: &Policy) -> Result<(), ControlError> {
        let ports_error = |source| ControlError::Write {
            name: PORTS,
            source,
        };
        for port in 0..PORT_COUNT {
            let flag = policy.port_flags.get(port as usize).copied().unwrap_or(0);
            let index = port_index(slot, port as u16);
            if self.ports.get(&index, 0).map_err(ports_error)? != flag {
                self.ports.set(index, flag, 0).map_err(ports_error)?;
            }
        }
        let slot_byte = slot as u8;
        let v4: Vec<Key<TrustedV4Key>> = policy
            .trusted
            .iter()
            .filter_map(|cidr| match cidr {
                Cidr::V4 { addr, prefix } => Some(Key::new(
                    SLOT_PREFIX + prefix,
                    trusted_v4_key(slot_byte, addr),
                )),
                Cidr::V6 { .. } => None,
            })
            .collect();
        let v6: Vec<Key<TrustedV6Key>> = policy
            .trusted
            .iter()
            .filter_map(|cidr| match cidr {
                Cidr::V6 { addr, prefix } => Some(Key::new(
                    SLOT_PREFIX + prefix,
                    trusted_v6_key(slot_byte, addr),
                )),
                Cidr::V4 { .. } => None,
            })
            .collect();
        replace_slot(&mut self.v4, slot_byte, &v4).map_err(|source| ControlError::Write {
            name: TRUSTED_V4,
            source,
        })?;
        replace_slot(&mut self.v6, slot_byte, &v6).map_err(|source| ControlError::Write {
            name: TRUSTED_V6,
            source,
        })?;
        let mut settings = policy.settings;
        settings.slot = slot;
        // The clock base is the running filter's: a policy without one (built from the
        // configuration) keeps the one packets read now.
        if !settings.clock.is_set() {
            settings.clock = self.settings()?.clock;
        }
        // Paces follow the limits, whoever changed them (`moat set` edits limits only).
        let settings = settings.compiled();
        self.settings
            .set(slot, settings, 0)
            .map_err(|source| ControlError::Write {
                name: SETTINGS,
                source,
            })
    }
}

/// Makes the keys of `trie` whose first byte is `slot` exactly `wanted`.
fn replace_slot<const N: usize>(
    trie: &mut LpmTrie<MapData, [u8; N], ListValue>,
    slot: u8,
    wanted: &[Key<[u8; N]>],
) -> Result<(), MapError> {
    let present: Vec<Key<[u8; N]>> = trie.keys().collect::<Result<_, _>>()?;
    for key in present {
        let data = key.data();
        let keep = wanted
            .iter()
            .any(|want| want.prefix_len() == key.prefix_len() && want.data() == data);
        if data[0] == slot && !keep {
            trie.remove(&key)?;
        }
    }
    for key in wanted {
        trie.insert(key, LIST_PRESENT, 0)?;
    }
    Ok(())
}

/// The settings packets read now in the filter pinned at `pins` (only `ACTIVE` and
/// `SETTINGS` are opened).
pub fn pinned_settings(pins: &PinDir) -> Result<Settings, ControlError> {
    let open = |name: &'static str| {
        MapData::from_pin(pins.map(name)).map_err(|source| ControlError::Write { name, source })
    };
    active_settings(open(ACTIVE)?, open(SETTINGS)?)
}

/// The settings packets read now in a loaded object.
pub fn object_settings(ebpf: &aya::Ebpf) -> Result<Settings, ControlError> {
    active_settings(duplicate(ebpf, ACTIVE)?, duplicate(ebpf, SETTINGS)?)
}

fn active_settings(active: MapData, settings: MapData) -> Result<Settings, ControlError> {
    let active: Array<MapData, u32> = typed(ACTIVE, active, Map::Array, Array::try_from)?;
    let settings: Array<MapData, Settings> =
        typed(SETTINGS, settings, Map::Array, Array::try_from)?;
    let slot = active.get(&0, 0).map_err(|source| ControlError::Write {
        name: ACTIVE,
        source,
    })? % POLICY_SLOTS;
    settings
        .get(&slot, 0)
        .map_err(|source| ControlError::Write {
            name: SETTINGS,
            source,
        })
}

/// Writes `policy` into a loaded object's maps (the daemon at attach, the tests, the bench).
pub fn write_policy(ebpf: &aya::Ebpf, policy: &Policy) -> Result<(), ControlError> {
    PolicyMaps::of_object(ebpf)?.write(policy).map(|_| ())
}

/// An exclusive lock on `/run/moat/IFACE.policy.lock`, held by whoever changes the policy of
/// the filter on the interface, from reading the active slot to the flip.
#[derive(Debug)]
pub struct PolicyLock {
    _lock: FileLock,
}

impl PolicyLock {
    /// Waits for and takes the policy lock of `iface`.
    pub fn acquire(iface: &str) -> Result<PolicyLock, ControlError> {
        let path = Path::new(LOCK_DIR).join(format!("{iface}.policy.lock"));
        match FileLock::acquire(&path) {
            Ok(lock) => Ok(PolicyLock { _lock: lock }),
            Err(source) => Err(ControlError::Lock { path, source }),
        }
    }
}

/// Changes the policy of the filter running on `iface` under its lock: `change` gets the
/// policy packets read now, edits it and says whether anything changed; if so, the result is
/// written in one step. Returns the policy and what `change` said.
pub fn update<E: From<ControlError>>(
    iface: &str,
    change: impl FnOnce(&mut Policy) -> Result<bool, E>,
) -> Result<(Policy, bool), E> {
    let _lock = PolicyLock::acquire(iface)?;
    let mut maps = PolicyMaps::of_pins(&PinDir::for_iface(iface))?;
    let mut policy = maps.read()?;
    let changed = change(&mut policy)?;
    if changed {
        maps.write(&policy)?;
    }
    Ok((policy, changed))
}
