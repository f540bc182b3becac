//! Timing a program on a frame with BPF_PROG_TEST_RUN, and the programs timed: moat's filter
//! loaded with the shipped policy on a fixed clock (a [`Subject`]), and the two floors (a
//! [`Floor`] of either [`FloorKind`]): the trivial XDP_DROP program, and "parse + count", which
//! parses with moat's own parser and counts as moat does but decides nothing. Also the memory a
//! map holds, from its fdinfo.
//!
//! A timed run repeats the frame `repeat` times inside the kernel; the time is the calling
//! thread's CPU time across the call, divided by `repeat`, so time the thread spends preempted
//! is not counted, and it resolves fractions of a nanosecond (the kernel's own average is whole
//! nanoseconds). The syscall around the loop costs a few microseconds once per call, which is
//! picoseconds per packet at a million repetitions. A frame the program rewrites into an answer
//! is timed over many calls of one repetition instead ([`time_calls`]), since the repetitions of
//! one call share one buffer. It does not attach anything: the throughput section does that.

use std::{
    collections::HashMap as StdHashMap,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, MapData,
        lpm_trie::{Key, LpmTrie},
    },
    programs::Xdp,
};
use filter_common::{
    Class, Reason, Settings, Verdict,
    lists::{LIST_PRESENT, ListValue, V4Key, V6Key},
    maps::{
        ACTIVE, AGGREGATE, AGGREGATE_REFUSAL_SLOT, BANS, COUNTERS, DENY_V4, DENY_V6, LIST_INDEX,
        POLICY_SLOTS, PROGRAM_NAME, SETTINGS, SOURCES, VERIFIED,
    },
    rate::{Buckets, Pace, RateState, ticks},
    settings::FLAG_FIXED_CLOCK,
    source::{Ban, SourceKey},
};

use super::BenchError;
use moat::{
    FILTER_OBJECT,
    bansummary::BanSummary,
    cidr::Cidr,
    config::Config,
    listindex::ListIndex,
    loader::Capacities,
    policy::{self, Policy, map_data},
    stats::Snapshot,
};
pub use moat::{FLOOR_OBJECT, PARSE_COUNT_OBJECT};

/// The floor's program name.
pub const FLOOR_PROGRAM: &str = "moat_floor";

/// The parse + count floor's program name.
pub const PARSE_COUNT_PROGRAM: &str = "moat_parse_count";

/// `XDP_DROP` in `enum xdp_action` (include/uapi/linux/bpf.h).
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS` in `enum xdp_action`.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX` in `enum xdp_action`.
pub const XDP_TX: u32 = 3;

/// A subject's fixed clock: late enough that buckets created at 0 are full.
pub const START_NS: u64 = 1_000 * 1_000_000_000;

/// One timed run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// CPU time per packet, in ns.
    pub ns_per_packet: f64,
    /// The XDP action the program returned.
    pub action: u32,
}

/// The calling thread's CPU time, in ns.
pub fn thread_cpu_ns() -> u64 {
    // SAFETY: all-zero is a valid timespec, and clock_gettime only writes it.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `now` is a valid, writable timespec; this clock exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// The `test` member of `union bpf_attr` (include/uapi/linux/bpf.h), for `BPF_PROG_TEST_RUN`.
/// aya's own test run needs an `Xdp` value, which cannot be made for a program another tool
/// loaded without a type aya does not export; one raw call serves every program alike.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}
const _: () = assert!(std::mem::size_of::<TestRunAttr>() == 80);

/// `BPF_PROG_TEST_RUN` in `enum bpf_cmd`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Runs `frame` through the XDP program `fd` (named `name` in errors) `repeat` times and
/// returns the CPU time per packet.
pub fn time_run(
    fd: BorrowedFd<'_>,
    name: &str,
    frame: &[u8],
    repeat: u32,
) -> Result<Timing, BenchError> {
    let before = thread_cpu_ns();
    let action = test_run(fd, name, frame, repeat.max(1), None)?;
    let spent = thread_cpu_ns().saturating_sub(before);
    Ok(Timing {
        ns_per_packet: spent as f64 / f64::from(repeat.max(1)),
        action,
    })
}

/// Runs `frame` through `fd` in `calls` separate BPF_PROG_TEST_RUN calls of one repetition
/// each, and returns the CPU time per call (the call's own cost included) and the last action.
/// For a frame the program rewrites: the repetitions of one call share one buffer, so the
/// second would see the first one's answer.
pub fn time_calls(
    fd: BorrowedFd<'_>,
    name: &str,
    frame: &[u8],
    calls: u32,
) -> Result<Timing, BenchError> {
    let calls = calls.max(1);
    let mut action = 0;
    let before = thread_cpu_ns();
    for _ in 0..calls {
        action = test_run(fd, name, frame, 1, None)?;
    }
    let spent = thread_cpu_ns().saturating_sub(before);
    Ok(Timing {
        ns_per_packet: spent as f64 / f64::from(calls),
        action,
    })
}

/// Runs `frame` through `fd` once and returns the action and the frame as the program left it.
pub fn run_once(
    fd: BorrowedFd<'_>,
    name: &str,
    frame: &[u8],
) -> Result<(u32, Vec<u8>), BenchError> {
    let mut out = vec![0u8; frame.len().max(256)];
    let mut size = out.len() as u32;
    let action = test_run(fd, name, frame, 1, Some((&mut out, &mut size)))?;
    out.truncate(size as usize);
    Ok((action, out))
}

/// One BPF_PROG_TEST_RUN call; writes the output frame and its size into `out` if given.
fn test_run(
    fd: BorrowedFd<'_>,
    name: &str,
    frame: &[u8],
    repeat: u32,
    out: Option<(&mut Vec<u8>, &mut u32)>,
) -> Result<u32, BenchError> {
    let mut attr = TestRunAttr {
        prog_fd: fd.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    let out = out.map(|(buffer, size)| {
        attr.data_out = buffer.as_mut_ptr() as u64;
        attr.data_size_out = buffer.len() as u32;
        size
    });
    // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; `data_in` points at
    // `frame` and `data_out` (if set) at a writable buffer of `data_size_out` bytes, both of
    // which outlive the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &raw mut attr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if result != 0 {
        return Err(BenchError::Io {
            action: "running BPF_PROG_TEST_RUN on",
            target: name.to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    if let Some(size) = out {
        *size = attr.data_size_out;
    }
    Ok(attr.retval)
}

/// The file descriptor of a loaded program.
pub fn program_fd<'a>(program: &'a Xdp, name: &str) -> Result<BorrowedFd<'a>, BenchError> {
    Ok(program
        .fd()
        .map_err(BenchError::program("opening", name))?
        .as_fd())
}

/// The name of an XDP action, for messages.
pub fn action_name(action: u32) -> &'static str {
    match action {
        0 => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "an unknown action",
    }
}

/// The bytes of kernel memory a map holds (`memlock` in its fdinfo; since Linux 6.4 the map's
/// actual usage, so a trie grows with its entries while a preallocated hash does not).
pub fn map_bytes(fd: impl AsFd) -> Result<u64, BenchError> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
    let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        action: "reading",
        target: path.clone(),
        source,
    })?;
    text.lines()
        .find_map(|line| line.strip_prefix("memlock:")?.trim().parse().ok())
        .ok_or_else(|| BenchError::Unparsable {
            command: format!("cat {path}"),
            wanted: "memlock line",
            output: text.chars().take(200).collect(),
        })
}

/// Which floor: both drop every frame, so they time alike over veth and through
/// BPF_PROG_TEST_RUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloorKind {
    /// Drops every frame without reading it: the least any XDP program costs.
    XdpDrop,
    /// Parses every frame with moat's parser and counts it in its own `COUNTERS` as moat does,
    /// then drops it: the least any filter that reads headers and counts costs.
    ParseCount,
}

impl FloorKind {
    /// How the report names it.
    pub const fn label(self) -> &'static str {
        match self {
            FloorKind::XdpDrop => "floor: XDP_DROP",
            FloorKind::ParseCount => "floor: parse + count",
        }
    }

    /// Its object.
    fn object(self) -> &'static [u8] {
        match self {
            FloorKind::XdpDrop => FLOOR_OBJECT,
            FloorKind::ParseCount => PARSE_COUNT_OBJECT,
        }
    }

    /// Its program's name.
    pub const fn program_name(self) -> &'static str {
        match self {
            FloorKind::XdpDrop => FLOOR_PROGRAM,
            FloorKind::ParseCount => PARSE_COUNT_PROGRAM,
        }
    }
}

/// A floor program, loaded.
pub struct Floor {
    ebpf: Ebpf,
    kind: FloorKind,
}

impl Floor {
    /// Loads the XDP_DROP floor.
    pub fn load() -> Result<Floor, BenchError> {
        Floor::load_kind(FloorKind::XdpDrop)
    }

    /// Loads the floor `kind`.
    pub fn load_kind(kind: FloorKind) -> Result<Floor, BenchError> {
        let mut ebpf = Ebpf::load(kind.object()).map_err(|source| BenchError::Load {
            object: kind.label(),
            source: Box::new(source),
        })?;
        program_mut(&mut ebpf, kind.program_name())?
            .load()
            .map_err(BenchError::program("loading", kind.program_name()))?;
        Ok(Floor { ebpf, kind })
    }

    /// Which floor this is.
    pub fn kind(&self) -> FloorKind {
        self.kind
    }

    /// The loaded program.
    pub fn program(&self) -> Result<&Xdp, BenchError> {
        program(&self.ebpf, self.kind.program_name())
    }

    /// The loaded program, for attaching.
    pub fn program_mut(&mut self) -> Result<&mut Xdp, BenchError> {
        program_mut(&mut self.ebpf, self.kind.program_name())
    }

    /// The parse + count floor's counters, summed over CPUs (the XDP_DROP floor has none).
    pub fn counters(&self) -> Result<Snapshot, BenchError> {
        counters_of(&self.ebpf)
    }
}

/// The XDP program `name` of `ebpf`.
pub fn program<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp, BenchError> {
    ebpf.program(name)
        .ok_or_else(|| BenchError::Tool {
            tool: "moat-bench",
            problem: format!("the object has no program {name}"),
        })?
        .try_into()
        .map_err(BenchError::program("finding", name))
}

/// The XDP program `name` of `ebpf`, mutably.
pub fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, BenchError> {
    ebpf.program_mut(name)
        .ok_or_else(|| BenchError::Tool {
            tool: "moat-bench",
            problem: format!("the object has no program {name}"),
        })?
        .try_into()
        .map_err(BenchError::program("finding", name))
}

/// Map capacities of a [`Subject`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Each denylist trie.
    pub deny: u32,
    /// Tracked sources.
    pub sources: u32,
}

impl Default for Sizes {
    fn default() -> Sizes {
        let config = Config::default();
        Sizes {
            deny: config.deny_capacity,
            sources: config.max_tracked_sources,
        }
    }
}

/// moat's filter loaded for BPF_PROG_TEST_RUN: the shipped policy (`Config::default()`) and
/// map capacities (those `moat run` gives it, but for [`Sizes`]), its clock calibrated as
/// `moat run` calibrates it but fixed at [`START_NS`] so buckets neither refill nor expire
/// while it is timed.
pub struct Subject {
    ebpf: Ebpf,
    shipped: Settings,
    current: Settings,
}

impl Subject {
    /// Loads the filter with these capacities and the shipped policy.
    pub fn load(sizes: Sizes) -> Result<Subject, BenchError> {
        let mut loader = EbpfLoader::new();
        for (name, max_entries) in Capacities::of(&Config::default()).overrides() {
            loader.map_max_entries(name, max_entries);
        }
        let mut ebpf = loader
            .map_max_entries(DENY_V4, sizes.deny)
            .map_max_entries(DENY_V6, sizes.deny)
            .map_max_entries(SOURCES, filter_common::sources::sets_for(sizes.sources))
            .load(FILTER_OBJECT)
            .map_err(|source| BenchError::Load {
                object: "moat's filter",
                source: Box::new(source),
            })?;
        // Calibrated as `moat run` does, so each packet reads the clock (then ignores it for
        // the fixed one) at the cost a live packet pays.
        let clock = moat::clock::set_up(&mut ebpf).map_err(|error| BenchError::Tool {
            tool: "moat-bench",
            problem: format!("calibrating the program's clock: {error}"),
        })?;
        let mut policy = Policy::compile(&Config::default(), false);
        policy.settings.clock = clock;
        policy.settings.source_sets = filter_common::sources::sets_for(sizes.sources);
        policy.settings.flags |= FLAG_FIXED_CLOCK;
        policy.settings.clock_ns = START_NS;
        policy::write_policy(&ebpf, &policy).map_err(|error| BenchError::Tool {
            tool: "moat-bench",
            problem: format!("writing the shipped policy: {error}"),
        })?;
        program_mut(&mut ebpf, PROGRAM_NAME)?
            .load()
            .map_err(BenchError::program("loading", PROGRAM_NAME))?;
        Ok(Subject {
            ebpf,
            shipped: policy.settings,
            current: policy.settings,
        })
    }

    /// The loaded program.
    pub fn program(&self) -> Result<&Xdp, BenchError> {
        program(&self.ebpf, PROGRAM_NAME)
    }

    /// The shipped settings on the fixed clock.
    pub fn shipped(&self) -> Settings {
        self.shipped
    }

    /// Replaces the running settings, in the policy slot the program reads (nothing runs
    /// meanwhile, so the slot is written in place).
    pub fn set_settings(&mut self, mut settings: Settings) -> Result<(), BenchError> {
        let active = self.ebpf.map(ACTIVE).ok_or_else(|| missing_map(ACTIVE))?;
        let slot = Array::<_, u32>::try_from(active)
            .map_err(BenchError::map("opening", ACTIVE))?
            .get(&0, 0)
            .map_err(BenchError::map("reading", ACTIVE))?
            % POLICY_SLOTS;
        settings.slot = slot;
        let settings = settings.compiled();
        let map = self
            .ebpf
            .map_mut(SETTINGS)
            .ok_or_else(|| missing_map(SETTINGS))?;
        Array::<_, Settings>::try_from(map)
            .map_err(BenchError::map("opening", SETTINGS))?
            .set(slot, settings, 0)
            .map_err(BenchError::map("writing", SETTINGS))?;
        self.current = settings;
        Ok(())
    }

    /// Inserts `cidrs` into the list whose tries are `v4` and `v6`.
    pub fn insert_prefixes(
        &mut self,
        v4: &str,
        v6: &str,
        cidrs: &[Cidr],
    ) -> Result<(), BenchError> {
        // The index counts go up before the entries go in, and the lists' generation after,
        // as every list writer does.
        let index = self
            .ebpf
            .map(LIST_INDEX)
            .ok_or_else(|| missing_map(LIST_INDEX))
            .and_then(|map| {
                ListIndex::of_map(map).map_err(|error| BenchError::Tool {
                    tool: "moat",
                    problem: error.to_string(),
                })
            })?;
        if let Some(counted) = moat::listindex::counted_as(v4) {
            for cidr in cidrs {
                index.note(counted, cidr, true);
            }
        }
        let mut trie4: LpmTrie<&mut MapData, V4Key, ListValue> =
            LpmTrie::try_from(self.ebpf.map_mut(v4).ok_or_else(|| missing_map(v4))?)
                .map_err(BenchError::map("opening", v4))?;
        for cidr in cidrs {
            if let Cidr::V4 { addr, prefix } = cidr {
                trie4
                    .insert(&Key::new(*prefix, *addr), LIST_PRESENT, 0)
                    .map_err(BenchError::map("inserting into", v4))?;
            }
        }
        let mut trie6: LpmTrie<&mut MapData, V6Key, ListValue> =
            LpmTrie::try_from(self.ebpf.map_mut(v6).ok_or_else(|| missing_map(v6))?)
                .map_err(BenchError::map("opening", v6))?;
        for cidr in cidrs {
            if let Cidr::V6 { addr, prefix } = cidr {
                trie6
                    .insert(&Key::new(*prefix, *addr), LIST_PRESENT, 0)
                    .map_err(BenchError::map("inserting into", v6))?;
            }
        }
        index.advance_generation();
        Ok(())
    }

    /// Sets the aggregate buckets of `class` on every CPU: full for its current limit, or
    /// empty; either way as of the fixed clock, so they neither refill nor drain by time.
    pub fn set_aggregate(&mut self, class: Class, full: bool) -> Result<(), BenchError> {
        let pace = self.current.compiled().aggregate_pace[class as usize];
        self.set_bucket(class as u32, pace, full)
    }

    /// Empties the host's refusal budget (the `AGGREGATE` refusal slot) as of the fixed clock:
    /// a case for no socket then times the drop a flood meets once it has used the budget up,
    /// the path every packet of such a flood but a thousand a second takes.
    pub fn spend_refusals(&mut self) -> Result<(), BenchError> {
        let pace = self.current.compiled().refusals_pace;
        self.set_bucket(AGGREGATE_REFUSAL_SLOT, pace, false)
    }

    /// Sets the `AGGREGATE` buckets at `slot`, paced by `pace`, full or empty as of the fixed
    /// clock.
    fn set_bucket(&mut self, slot: u32, pace: Pace, full: bool) -> Result<(), BenchError> {
        let settings = self.current.compiled();
        let now = ticks(settings.clock_ns);
        // A full bucket's time is the clock; an empty one's runs a whole burst ahead.
        let buckets = if full {
            Buckets::full(settings.clock_ns)
        } else {
            Buckets {
                packets: now.saturating_add(pace.packet_tolerance),
                bytes: now.saturating_add(pace.byte_tolerance),
            }
        };
        let map = self
            .ebpf
            .map_mut(AGGREGATE)
            .ok_or_else(|| missing_map(AGGREGATE))?;
        Array::<_, Buckets>::try_from(map)
            .map_err(BenchError::map("opening", AGGREGATE))?
            .set(slot, buckets, 0)
            .map_err(BenchError::map("writing", AGGREGATE))
    }

    /// Bans `key` until `until_ns` on the fixed clock.
    pub fn ban(&mut self, key: SourceKey, until_ns: u64) -> Result<(), BenchError> {
        let map = self.ebpf.map_mut(BANS).ok_or_else(|| missing_map(BANS))?;
        let ban = Ban {
            until_ns,
            offences: 0,
            reason: Reason::Banned as u16,
            flags: filter_common::source::BAN_MANUAL,
        };
        HashMap::<_, SourceKey, Ban>::try_from(map)
            .map_err(BenchError::map("opening", BANS))?
            .insert(key, ban, 0)
            .map_err(BenchError::map("writing", BANS))
    }

    /// Sets the bans summary from the bans table as the daemon's sweep does, so a source whose
    /// slot holds no ban skips the bans lookup.
    pub fn sweep_bans(&mut self) -> Result<(), BenchError> {
        let map = self.ebpf.map(BANS).ok_or_else(|| missing_map(BANS))?;
        let keys = HashMap::<_, SourceKey, Ban>::try_from(map)
            .map_err(BenchError::map("opening", BANS))?
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(BenchError::map("reading", BANS))?;
        BanSummary::of_object(&self.ebpf)?.rebuild(&keys, || Ok::<_, BenchError>(keys.clone()))
    }

    /// Marks `addr` as a source that completed a handshake, for as long as the run lasts.
    pub fn verify(&mut self, addr: IpAddr) -> Result<(), BenchError> {
        let key = moat::verify::key_for(addr, self.shipped.v6_source_prefix);
        let map = self
            .ebpf
            .map(VERIFIED)
            .ok_or_else(|| missing_map(VERIFIED))?;
        let cache = moat::verified::VerifiedCache::of_map(map)?;
        cache.mark(&key, u64::MAX);
        Ok(())
    }

    /// Tracks every key in `keys` with rate state `state`.
    pub fn track(
        &mut self,
        keys: impl Iterator<Item = SourceKey>,
        state: RateState,
    ) -> Result<(), BenchError> {
        let map = self
            .ebpf
            .map_mut(SOURCES)
            .ok_or_else(|| missing_map(SOURCES))?;
        let mut sources = moat::sources::SourceTable::new(
            Array::try_from(map).map_err(BenchError::map("opening", SOURCES))?,
        );
        for key in keys {
            sources
                .insert(&key, state)
                .map_err(BenchError::map("writing", SOURCES))?;
        }
        Ok(())
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Snapshot, BenchError> {
        counters_of(&self.ebpf)
    }

    /// The capacity map `name` was created with (`max_entries`).
    pub fn map_capacity(&self, name: &str) -> Result<u32, BenchError> {
        let map = self.ebpf.map(name).ok_or_else(|| missing_map(name))?;
        let data = map_data(map).ok_or_else(|| BenchError::Tool {
            tool: "moat-bench",
            problem: format!("map {name} is of a kind the benchmark does not size"),
        })?;
        Ok(data
            .info()
            .map_err(BenchError::map("reading the info of", name))?
            .max_entries())
    }

    /// The kernel memory of each named map, in bytes.
    pub fn map_bytes(&self, names: &[&str]) -> Result<StdHashMap<String, u64>, BenchError> {
        let mut sizes = StdHashMap::new();
        for name in names {
            let map = self.ebpf.map(name).ok_or_else(|| missing_map(name))?;
            let data = map_data(map).ok_or_else(|| BenchError::Tool {
                tool: "moat-bench",
                problem: format!("map {name} is of a kind the benchmark does not size"),
            })?;
            sizes.insert((*name).to_string(), map_bytes(data.fd())?);
        }
        Ok(sizes)
    }
}

/// The error for a map the object lacks.
pub fn missing_map(name: &str) -> BenchError {
    BenchError::Tool {
        tool: "moat-bench",
        problem: format!("the object has no map {name}"),
    }
}

/// The `SourceKey` of `addr` in `class` (IPv6 masked to `v6_prefix` bits), as the program
/// builds it.
pub fn source_key(addr: IpAddr, class: u8, v6_prefix: u32) -> SourceKey {
    let mut key = moat::bans::key_for(addr, v6_prefix);
    key.class = class;
    key
}

/// Checks that exactly `packets` packets were counted between `before` and `after`, all under
/// `(verdict, reason)`.
pub fn check_counted(
    case: &str,
    before: &Snapshot,
    after: &Snapshot,
    verdict: Verdict,
    reason: Reason,
    packets: u64,
) -> Result<(), BenchError> {
    let mut got = Vec::new();
    for (v, r, counter) in after.nonzero() {
        let delta = counter.packets.saturating_sub(before.get(v, r).packets);
        if delta != 0 {
            got.push((v, r, delta));
        }
    }
    if got == [(verdict, reason, packets)] {
        Ok(())
    } else {
        Err(BenchError::WrongPath {
            case: case.to_string(),
            expected: format!("{packets} × {}/{}", verdict.label(), reason.label()),
            got: got
                .iter()
                .map(|(v, r, n)| format!("{n} × {}/{}", v.label(), r.label()))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// The `COUNTERS` of a loaded object, summed over CPUs.
fn counters_of(ebpf: &Ebpf) -> Result<Snapshot, BenchError> {
    let map = ebpf.map(COUNTERS).ok_or_else(|| missing_map(COUNTERS))?;
    Snapshot::read(map).map_err(BenchError::map("reading", COUNTERS))
}
