//! Carrying an earlier run's pinned maps over to the object about to load.
//!
//! For every map an earlier run pinned, [`plan`] compares the pinned map (type, key and value
//! sizes, capacity, flags) with what this object declares (with the configured capacities):
//! - the same: the map is reused as it is, so nothing is copied and nothing is lost;
//! - different: the object gets a new map. Maps that hold what the operator said or what the
//!   filter learned (lists, bans, per-source state, counters) have their entries copied into it
//!   by [`copy_entries`] before the new program is swapped in; maps the policy rewrites or that
//!   only hold scratch state or a cache start empty. The verified-source cache is one: the
//!   daemon marks the origin's connected peers again within a second, and a source it forgot
//!   answers a SYN cookie on its next SYN.
//!
//! A stateful map whose entries changed size cannot be carried over; [`plan`] refuses, and the
//! running filter stays attached.

use std::{collections::HashMap as StdHashMap, path::PathBuf};

use aya::maps::{
    HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues,
    lpm_trie::{Key, LpmTrie},
};
use filter_common::{
    lists::{ListValue, V4Key, V6Key},
    maps::{
        ALLOW_V4, ALLOW_V6, BAN_EVENTS, BANS, COUNTERS, CROWDSEC_V4, CROWDSEC_V6, DENY_V4, DENY_V6,
        SOURCES,
    },
    source::{Ban, SourceKey},
};

use crate::policy::map_data;

/// Why an earlier run's maps cannot be carried over.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The object could not be parsed.
    #[error("reading the XDP object's map definitions: {0}")]
    Object(String),
    /// A pinned map could not be read.
    #[error("reading the pinned map {name}: {source}")]
    Pinned {
        /// The map's name.
        name: String,
        /// What aya reported.
        source: MapError,
    },
    /// A stateful map's entries changed size between versions.
    #[error(
        "the pinned map {name} holds entries of {old} and this version's of {new}; moat cannot \
         carry them over"
    )]
    Layout {
        /// The map's name.
        name: String,
        /// The old key and value sizes.
        old: String,
        /// The new ones.
        new: String,
    },
    /// The new map is too small for the old one's entries (a lowered capacity).
    #[error(
        "{name} holds more entries than its new capacity of {capacity}; set {key} back to at \
         least what it holds, or delete entries first"
    )]
    TooSmall {
        /// The map's name.
        name: String,
        /// Its new capacity.
        capacity: u32,
        /// The configuration key that sets it.
        key: &'static str,
    },
    /// Copying entries failed.
    #[error("copying the entries of {name}: {source}")]
    Copy {
        /// The map's name.
        name: String,
        /// What aya reported.
        source: MapError,
    },
}

/// What the kernel knows of a map's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `BPF_F_*` creation flags.
    pub flags: u32,
}

impl Shape {
    fn sizes(&self) -> String {
        format!(
            "{}-byte keys and {}-byte values",
            self.key_size, self.value_size
        )
    }

    /// What changed from `self` to `new`, for the log: capacities and sizes always, the map
    /// type and creation flags only when they changed.
    fn change_to(&self, new: &Shape) -> String {
        let mut change = format!(
            "{} entries of {} -> {} entries of {}",
            self.max_entries,
            self.sizes(),
            new.max_entries,
            new.sizes()
        );
        if self.map_type != new.map_type {
            change.push_str(&format!(", map type {} -> {}", self.map_type, new.map_type));
        }
        if self.flags != new.flags {
            change.push_str(&format!(", flags {:#x} -> {:#x}", self.flags, new.flags));
        }
        change
    }
}

/// The shape of every map `object` declares, with `max_entries` overridden as the loader will.
pub fn declared(
    object: &[u8],
    max_entries: &[(&str, u32)],
) -> Result<StdHashMap<String, Shape>, MigrateError> {
    let parsed =
        aya_obj::Object::parse(object).map_err(|error| MigrateError::Object(error.to_string()))?;
    Ok(parsed
        .maps
        .iter()
        .map(|(name, map)| {
            let capacity = max_entries
                .iter()
                .find(|(overridden, _)| overridden == name)
                .map_or(map.max_entries(), |(_, value)| *value);
            (
                name.clone(),
                Shape {
                    map_type: map.map_type(),
                    key_size: map.key_size(),
                    value_size: map.value_size(),
                    max_entries: capacity,
                    flags: map.map_flags(),
                },
            )
        })
        .collect())
}

/// The shape of a pinned map.
pub fn pinned_shape(name: &str, data: &MapData) -> Result<Shape, MigrateError> {
    let info = data.info().map_err(|source| MigrateError::Pinned {
        name: name.to_string(),
        source,
    })?;
    let map_type = info.map_type().map_err(|source| MigrateError::Pinned {
        name: name.to_string(),
        source,
    })? as u32;
    Ok(Shape {
        map_type,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        flags: info.map_flags(),
    })
}

/// Maps whose entries are carried into a replacement: what the operator said and what the
/// filter learned. Every other map is rewritten by the policy or holds scratch state or a
/// cache.
pub const STATEFUL: &[&str] = &[
    ALLOW_V4,
    ALLOW_V6,
    DENY_V4,
    DENY_V6,
    CROWDSEC_V4,
    CROWDSEC_V6,
    BANS,
    SOURCES,
    COUNTERS,
    BAN_EVENTS,
];

/// Stateful maps whose entries may be dropped when their layout changes: per-source rate
/// state, which the next packets rebuild (each source starts from a full bucket, as a new one
/// would). Lists and bans are never dropped.
pub const RELEARNED: &[&str] = &[SOURCES];

/// What to do with one pinned map.
#[derive(Debug)]
pub enum Fit {
    /// Its shape is the object's: load the object on it.
    Reuse,
    /// The object gets a new map; `old` is the pinned one, whose entries are copied over if
    /// the map is [`STATEFUL`].
    Replace {
        /// The pinned map.
        old: MapData,
        /// How it differs, for the log.
        why: String,
        /// Whether its entries are copied: a [`STATEFUL`] map whose entries kept their
        /// layout.
        copy: bool,
    },
}

/// One pinned map and what to do with it.
#[derive(Debug)]
pub struct Pinned {
    /// The map's name.
    pub name: &'static str,
    /// Where it is pinned.
    pub path: PathBuf,
    /// Reuse or replace.
    pub fit: Fit,
}

/// Decides, for each `(name, pin path)` whose pin exists, whether the object can reuse it.
/// Refuses when a stateful map's entries changed size.
pub fn plan(
    declared: &StdHashMap<String, Shape>,
    pins: impl IntoIterator<Item = (&'static str, PathBuf)>,
) -> Result<Vec<Pinned>, MigrateError> {
    let mut planned = Vec::new();
    for (name, path) in pins {
        if !path.exists() {
            continue;
        }
        let Some(want) = declared.get(name) else {
            continue;
        };
        let old = MapData::from_pin(&path).map_err(|source| MigrateError::Pinned {
            name: name.to_string(),
            source,
        })?;
        let have = pinned_shape(name, &old)?;
        let fit = if have == *want {
            Fit::Reuse
        } else {
            let stateful = STATEFUL.contains(&name);
            let same_entries = have.key_size == want.key_size
                && (have.value_size == want.value_size
                    // Per-CPU arrays of counters may grow by whole slots.
                    || name == COUNTERS || name == BAN_EVENTS);
            if stateful && !same_entries && !RELEARNED.contains(&name) {
                return Err(MigrateError::Layout {
                    name: name.to_string(),
                    old: have.sizes(),
                    new: want.sizes(),
                });
            }
            Fit::Replace {
                old,
                why: have.change_to(want),
                copy: stateful && same_entries,
            }
        };
        planned.push(Pinned { name, path, fit });
    }
    Ok(planned)
}

/// Copies every entry of `old` into the map `name` of `ebpf`; returns how many. Maps that are
/// not [`STATEFUL`] copy nothing, and neither do the packet counters, whose slots move when
/// verdicts or reasons are added (they start from zero, which Prometheus reads as a reset).
pub fn copy_entries(name: &str, old: MapData, ebpf: &mut aya::Ebpf) -> Result<usize, MigrateError> {
    let Some(new) = ebpf.map_mut(name) else {
        return Ok(0);
    };
    let capacity = map_data(new).map_or(Ok(0), |data| data.info().map(|info| info.max_entries()));
    let copy_error = |source: MapError| {
        let full = matches!(&source, MapError::SyscallError(call)
            if matches!(call.io_error.raw_os_error(), Some(libc::ENOSPC | libc::E2BIG)));
        match (full, capacity_key(name), &capacity) {
            (true, Some(key), Ok(capacity)) => MigrateError::TooSmall {
                name: name.to_string(),
                capacity: *capacity,
                key,
            },
            _ => MigrateError::Copy {
                name: name.to_string(),
                source,
            },
        }
    };
    let old_map = wrap_like(new, old);
    match name {
        ALLOW_V4 | DENY_V4 | CROWDSEC_V4 => copy_trie::<V4Key>(old_map, new),
        ALLOW_V6 | DENY_V6 | CROWDSEC_V6 => copy_trie::<V6Key>(old_map, new),
        BANS => copy_hash::<Ban>(old_map, new),
        // A table of another set count places every source elsewhere: relearned, never copied.
        SOURCES => Ok(0),
        BAN_EVENTS => copy_per_cpu::<u64>(old_map, new),
        _ => Ok(0),
    }
    .map_err(copy_error)
}

/// The configuration key that sets the capacity of the map `name`, if one does.
fn capacity_key(name: &str) -> Option<&'static str> {
    match name {
        ALLOW_V4 | ALLOW_V6 => Some("allow_capacity"),
        DENY_V4 | DENY_V6 => Some("deny_capacity"),
        BANS => Some("max_bans"),
        _ => None,
    }
}

/// Wraps `data` in the same [`Map`] variant family as `like` (hash kinds are interchangeable
/// for reading).
fn wrap_like(like: &Map, data: MapData) -> Map {
    match like {
        Map::LpmTrie(_) => Map::LpmTrie(data),
        Map::PerCpuArray(_) => Map::PerCpuArray(data),
        Map::Array(_) => Map::Array(data),
        Map::LruHashMap(_) => Map::LruHashMap(data),
        _ => Map::HashMap(data),
    }
}

fn copy_trie<K: aya::Pod>(old: Map, new: &mut Map) -> Result<usize, MapError> {
    let old: LpmTrie<MapData, K, ListValue> = LpmTrie::try_from(old)?;
    let mut new: LpmTrie<&mut MapData, K, ListValue> = LpmTrie::try_from(new)?;
    let mut count = 0;
    for entry in old.iter() {
        let (key, value): (Key<K>, ListValue) = entry?;
        new.insert(&key, value, 0)?;
        count += 1;
    }
    Ok(count)
}

fn copy_hash<V: aya::Pod>(old: Map, new: &mut Map) -> Result<usize, MapError> {
    let old: HashMap<MapData, SourceKey, V> = HashMap::try_from(old)?;
    let mut new: HashMap<&mut MapData, SourceKey, V> = HashMap::try_from(new)?;
    let mut count = 0;
    for entry in old.iter() {
        let (key, value) = entry?;
        new.insert(key, value, 0)?;
        count += 1;
    }
    Ok(count)
}

fn copy_per_cpu<V: aya::Pod + Default + Clone>(old: Map, new: &mut Map) -> Result<usize, MapError> {
    let old_len =
        map_data(&old).map_or(Ok(0), |data| data.info().map(|info| info.max_entries()))?;
    let old: PerCpuArray<MapData, V> = PerCpuArray::try_from(old)?;
    let mut new: PerCpuArray<&mut MapData, V> = PerCpuArray::try_from(new)?;
    let len = old_len.min(new.len());
    for index in 0..len {
        let values: Vec<V> = old.get(&index, 0)?.iter().cloned().collect();
        new.set(index, PerCpuValues::try_from(values)?, 0)?;
    }
    Ok(len as usize)
}

#[cfg(test)]
mod tests {
    use super::Shape;

    fn shape(map_type: u32, value_size: u32, max_entries: u32) -> Shape {
        Shape {
            map_type,
            key_size: 4,
            value_size,
            max_entries,
            flags: 0,
        }
    }

    #[test]
    fn a_change_reads_as_capacities_and_sizes() {
        assert_eq!(
            shape(6, 16, 125).change_to(&shape(6, 16, 130)),
            "125 entries of 4-byte keys and 16-byte values -> 130 entries of 4-byte keys and \
             16-byte values"
        );
        assert_eq!(
            shape(2, 680, 2).change_to(&shape(6, 744, 2)),
            "2 entries of 4-byte keys and 680-byte values -> 2 entries of 4-byte keys and \
             744-byte values, map type 2 -> 6"
        );
    }
}
