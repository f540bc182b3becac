//! How moat's cost per packet and its maps' memory grow with its tables: deny prefixes from 10
//! to 1,000,000, and tracked sources from 1,000 to 1,000,000. Each size is timed with
//! BPF_PROG_TEST_RUN next to the floor, in interleaved rounds, as soon as the table reaches it
//! (tables only grow, so sizes are measured one after another, seconds apart).
//!
//! The denylist grows in the very object the cost section then measures, so its largest size is
//! the cost table's state. Tracked sources grow in an object of their own, with the SYN limits
//! out of reach so a new connection from a tracked, verified source passes every stage (only a
//! source that completed a handshake has per-source SYN state); a map's memory
//! at a size is read from a map created with that capacity (the sources table is an array,
//! allocated whole, so it is the capacity, not the entries, that costs memory). Live traffic
//! over many sources is the throughput section's.

use filter_common::{
    Class, Reason, Verdict,
    maps::{ALL_MAPS, DENY_V4, DENY_V6, PROGRAM_NAME, SOURCES},
    rate::{Limit, RateState},
};

use super::{
    BenchError, Options,
    frames::{self, Shape, Tagging},
    measure::{self, Floor, START_NS, Sizes, Subject, XDP_DROP, XDP_PASS},
    median,
    origin::Origin,
    prefixes, tools,
};
use moat::{config::Config, loader::Capacities, migrate};

/// Deny list sizes measured (those up to the configured largest).
pub const DENY_SIZES: [usize; 4] = [10, 1_000, 100_000, 1_000_000];
/// Tracked-source counts measured (those up to the configured largest).
pub const SOURCE_SIZES: [u32; 4] = [1_000, 10_000, 100_000, 1_000_000];

/// A limit no benchmark reaches on the fixed clock.
const UNREACHED: Limit = Limit {
    pps: 1_000_000_000,
    burst_packets: 1_000_000_000,
    bps: 0,
    burst_bytes: 0,
};

/// The denylist at one size.
#[derive(Clone, Debug, PartialEq)]
pub struct DenyPoint {
    /// IPv4 prefixes on the list.
    pub prefixes: usize,
    /// A SYN from a denied source, ns per packet.
    pub hit_ns: f64,
    /// An established-connection segment from a source on no list (two trie misses), ns.
    pub miss_ns: f64,
    /// The floor, ns.
    pub floor_ns: f64,
    /// Kernel memory of the IPv4 trie, bytes.
    pub trie_bytes: u64,
}

/// The sources table at one size.
#[derive(Clone, Debug, PartialEq)]
pub struct SourcesPoint {
    /// Sources tracked.
    pub sources: u32,
    /// A new connection from a tracked, verified source (every stage), ns per packet.
    pub tracked_ns: f64,
    /// The floor, ns.
    pub floor_ns: f64,
    /// Kernel memory of a sources table with this capacity, bytes.
    pub table_bytes: u64,
}

/// The kernel memory and capacity of one map of the cost section's object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapMemory {
    /// The map.
    pub name: String,
    /// Bytes.
    pub bytes: u64,
    /// Its capacity as created (`max_entries`; a ring buffer's bytes).
    pub capacity: u32,
    /// The capacity `moat run` gives it with the shipped configuration: the object's
    /// declaration (`filter_common::maps`' constants) with the loader's overrides from
    /// `Config::default()`; none if the object does not declare it.
    pub shipped: Option<u32>,
}

/// The scaling section's result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScalingReport {
    /// The denylist at each size (empty if the section did not run).
    pub deny: Vec<DenyPoint>,
    /// The sources table at each size.
    pub sources: Vec<SourcesPoint>,
    /// Every map of the cost section's object (shipped capacities, the large denylists).
    pub maps: Vec<MapMemory>,
}

/// Grows the IPv4 denylist of `subject` to `options.deny_prefixes`, timing it at each size of
/// [`DENY_SIZES`] on the way. The denied network of the cost cases is already on the list
/// (see [`super::cost::prepare_subject`]) and counts as one prefix.
pub fn grow_denylist(
    subject: &mut Subject,
    origin: &Origin,
    options: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<DenyPoint>, BenchError> {
    let largest = options.deny_prefixes.max(1);
    let list = prefixes::v4(largest - 1, 0x6d6f_6174_0004);
    let mut sizes: Vec<usize> = DENY_SIZES
        .iter()
        .copied()
        .filter(|&n| n < largest)
        .collect();
    sizes.push(largest);
    let floor = Floor::load()?;
    let denied = frames::build(
        Shape::Syn,
        [198, 19, 200, 7].into(),
        [198, 18, 0, 1].into(),
        Tagging::Untagged,
    );
    let unlisted = frames::build(
        Shape::Established,
        [198, 19, 90, 7].into(),
        [198, 18, 0, 1].into(),
        Tagging::Untagged,
    );
    let mut points = Vec::new();
    let mut on_list: usize = 1;
    for size in sizes {
        super::check_interrupted()?;
        let chunk = &list[on_list.saturating_sub(1)..size.saturating_sub(1)];
        subject.insert_prefixes(DENY_V4, DENY_V6, chunk)?;
        on_list = size;
        let &[hit, miss, floor_ns] = &interleave(
            subject,
            origin,
            &floor,
            &[
                (&denied, Verdict::Drop, Reason::Denylist),
                (&unlisted, Verdict::Pass, Reason::Pass),
            ],
            options,
        )?[..] else {
            return Err(interleave_shape());
        };
        let trie_bytes = subject
            .map_bytes(&[DENY_V4])?
            .get(DENY_V4)
            .copied()
            .unwrap_or(0);
        progress(&format!(
            "scaling: {size} deny prefixes: hit {hit:.1} ns, miss {miss:.1} ns, floor \
             {floor_ns:.1} ns, trie {:.1} MiB",
            trie_bytes as f64 / (1u64 << 20) as f64
        ));
        points.push(DenyPoint {
            prefixes: size,
            hit_ns: hit,
            miss_ns: miss,
            floor_ns,
            trie_bytes,
        });
    }
    Ok(points)
}

/// Times moat on each of `frames` and the floor (on the last frame) in interleaved rounds,
/// from a thread inside `origin`; returns the medians, the floor's last.
fn interleave(
    subject: &Subject,
    origin: &Origin,
    floor: &Floor,
    frames: &[(&Vec<u8>, Verdict, Reason)],
    options: &Options,
) -> Result<Vec<f64>, BenchError> {
    let mut samples = vec![Vec::new(); frames.len() + 1];
    let moat_fd = measure::program_fd(subject.program()?, PROGRAM_NAME)?;
    let floor_fd = measure::program_fd(floor.program()?, "the floor")?;
    let Some((last, _, _)) = frames.last() else {
        return Ok(vec![0.0]);
    };
    for round in 0..=options.rounds {
        super::check_interrupted()?;
        let repeat = if round == 0 { 10_000 } else { options.repeat };
        origin.enter(|| {
            let _pinned = tools::Pinned::to_cpu(0)?;
            for (index, (frame, verdict, reason)) in frames.iter().enumerate() {
                let before = subject.counters()?;
                let timing = measure::time_run(moat_fd, PROGRAM_NAME, frame, repeat)?;
                let after = subject.counters()?;
                let action = if *verdict == Verdict::Drop {
                    XDP_DROP
                } else {
                    XDP_PASS
                };
                let label = format!("scaling {}/{}", verdict.label(), reason.label());
                measure::check_counted(&label, &before, &after, *verdict, *reason, repeat.into())?;
                if timing.action != action {
                    return Err(BenchError::WrongPath {
                        case: label,
                        expected: measure::action_name(action).to_string(),
                        got: measure::action_name(timing.action).to_string(),
                    });
                }
                if round > 0 {
                    samples[index].push(timing.ns_per_packet);
                }
            }
            let timing = measure::time_run(floor_fd, "the floor", last, repeat)?;
            if round > 0 {
                samples[frames.len()].push(timing.ns_per_packet);
            }
            Ok(())
        })?;
    }
    Ok(samples.iter().map(|s| median(s)).collect())
}

/// The error for an [`interleave`] result of the wrong length (it has one median per frame,
/// plus the floor's).
fn interleave_shape() -> BenchError {
    BenchError::Tool {
        tool: "moat-bench",
        problem: "interleave returned the wrong number of medians".to_string(),
    }
}

/// The `SOURCES` key of tracked source number `index`: the /64 2001:db8:`hi`:`lo`::/64.
fn tracked_key(index: u32, class: Class) -> filter_common::source::SourceKey {
    let mut addr_be = [0u8; 16];
    addr_be[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    addr_be[4..8].copy_from_slice(&index.to_be_bytes());
    filter_common::source::SourceKey {
        addr_be,
        ip_version: 6,
        class: class as u8,
        _pad: [0; 2],
    }
}

/// Tracks ever more sources in an object of its own and times a new connection from one of
/// them at each size of [`SOURCE_SIZES`]; reads a sources table's memory at each capacity.
pub fn grow_sources(
    origin: &Origin,
    options: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<SourcesPoint>, BenchError> {
    let largest = options.max_sources.max(1);
    let mut sizes: Vec<u32> = SOURCE_SIZES
        .iter()
        .copied()
        .filter(|&n| n < largest)
        .collect();
    sizes.push(largest);
    // An eighth more than the largest size, kept from when the table was an LRU hash that
    // evicted before it was full; the set table needs none (it has twice as many ways as its
    // capacity), so this only makes its sets the next power of two up. The measured source is
    // found in its set either way.
    let capacity = largest.saturating_add(largest / 8);
    let mut subject = Subject::load(Sizes {
        sources: capacity,
        ..Sizes::default()
    })?;
    let mut settings = subject.shipped();
    settings.source[Class::Syn as usize] = UNREACHED;
    settings.aggregate[Class::Syn as usize] = UNREACHED;
    subject.set_settings(settings)?;
    let floor = Floor::load()?;
    // The measured source is tracked source number 7: 2001:db8:0:7::/64. It completed a
    // handshake (only then does a SYN meet its per-source state).
    let measured = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, 7);
    subject.verify(measured.into())?;
    let tracked = frames::build(
        Shape::Syn,
        measured.into(),
        std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1).into(),
        Tagging::Untagged,
    );
    let state = RateState::new(START_NS);
    let mut points = Vec::new();
    let mut tracked_so_far = 0;
    for size in sizes {
        super::check_interrupted()?;
        subject.track(
            (tracked_so_far..size).map(|index| tracked_key(index, Class::Syn)),
            state,
        )?;
        tracked_so_far = size;
        let &[tracked_ns, floor_ns] = &interleave(
            &subject,
            origin,
            &floor,
            &[(&tracked, Verdict::Pass, Reason::Pass)],
            options,
        )?[..] else {
            return Err(interleave_shape());
        };
        let table_bytes = sources_table_bytes(size)?;
        progress(&format!(
            "scaling: {size} tracked sources: {tracked_ns:.1} ns, floor {floor_ns:.1} ns, \
             table {:.1} MiB",
            table_bytes as f64 / (1u64 << 20) as f64
        ));
        points.push(SourcesPoint {
            sources: size,
            tracked_ns,
            floor_ns,
            table_bytes,
        });
    }
    Ok(points)
}

/// The kernel memory of a sources table created with `capacity` entries.
fn sources_table_bytes(capacity: u32) -> Result<u64, BenchError> {
    let ebpf = aya::EbpfLoader::new()
        .map_max_entries(SOURCES, filter_common::sources::sets_for(capacity))
        .load(moat::FILTER_OBJECT)
        .map_err(|source| BenchError::Load {
            object: "moat's filter (for its map sizes)",
            source: Box::new(source),
        })?;
    let map = ebpf
        .map(SOURCES)
        .ok_or_else(|| measure::missing_map(SOURCES))?;
    let data = moat::policy::map_data(map).ok_or_else(|| measure::missing_map(SOURCES))?;
    measure::map_bytes(data.fd())
}

/// The kernel memory and capacity of every map of `subject`, with the capacity `moat run`
/// ships, largest first.
pub fn map_memory(subject: &Subject) -> Result<Vec<MapMemory>, BenchError> {
    let sizes = subject.map_bytes(ALL_MAPS)?;
    let overrides = Capacities::of(&Config::default()).overrides();
    let shipped =
        migrate::declared(moat::FILTER_OBJECT, &overrides).map_err(|error| BenchError::Tool {
            tool: "moat-bench",
            problem: format!("reading the maps the object declares: {error}"),
        })?;
    let mut maps = Vec::new();
    for (name, bytes) in sizes {
        maps.push(MapMemory {
            capacity: subject.map_capacity(&name)?,
            shipped: shipped.get(&name).map(|shape| shape.max_entries),
            name,
            bytes,
        });
    }
    maps.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    Ok(maps)
}
