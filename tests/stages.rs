//! Program tests for the policy stages: real frames through the XDP object the daemon ships
//! (`moat::FILTER_OBJECT`), run with `BPF_PROG_TEST_RUN`, with map state written through the
//! filter-common types. Each case checks the XDP action and the exact counter change: one packet
//! of the frame's length under the expected `(Verdict, Reason)` and nothing else.
//!
//! They cover bans, TCP flags, the fragment policy, closed ports, reflection, per-source and
//! aggregate rate limits, automatic bans (and a full ban table), dry-run (and the bans it
//! records) and the allowlist's precedence. Every test runs on the program's fixed clock
//! (`FLAG_FIXED_CLOCK`), so refills and expiries are exact and no test sleeps. Parsing belongs
//! to `program.rs`; attaching and live traffic to the netns tests.
//! They need root to load the program and fail, never pass, without it.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared frame builder"
)]
mod frames;
#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    EbpfLoader,
    maps::{Array, HashMap, MapError, PerCpuArray},
};
use etherparse::{
    IcmpEchoHeader, Icmpv4Type, Icmpv6Type, IpHeaders, Ipv4Header, Ipv6Header, PacketBuilder,
    PacketBuilderStep, PacketHeaders, TcpHeader, icmpv4::DestUnreachableHeader, ip_number,
};
use filter_common::{
    Class, Counter, Reason, Settings, Verdict,
    bansummary::{NO_BAN, slot},
    classify::tcp_flags::{ACK, FIN, PSH, RST, SYN, URG},
    clock::{ClockBase, TICK_RATES, tick_ns},
    counter_index,
    lists::{SLOT_PREFIX, trusted_v4_key, trusted_v6_key},
    maps::{
        ALLOW_V4, ALLOW_V6, BAN_EVENTS, BANS, BANS_EMPTY, CROWDSEC_V4, CROWDSEC_V6,
        DEFAULT_MAX_BANS, PORTS, SOURCES, TRUSTED_V4, TRUSTED_V6, VERIFIED,
    },
    ports::{PORT_REFLECTOR, PORT_TCP_OPEN, PORT_UDP_OPEN},
    rate::{Limit, RateState},
    settings::{
        FLAG_DRY_RUN, FLAG_ENFORCE_TCP_PORTS, FLAG_ENFORCE_UDP_PORTS, FLAG_FIXED_CLOCK,
        FragmentPolicy,
    },
    source::{BAN_CLASS, BAN_DRY_RUN, BAN_MANUAL, Ban, SourceKey, VERIFIED_CLASS},
};
use support::testrun::{Loaded, pin_to_cpu};

/// `enum xdp_action` in include/uapi/linux/bpf.h.
const XDP_ABORTED: u32 = 0;
const XDP_TX: u32 = 3;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const MILLISECOND_NS: u64 = 1_000_000;
const SECOND_NS: u64 = 1_000_000_000;

/// The program's clock when a test starts. Aggregate buckets start empty at time 0 and refill
/// from there, so starting this late makes them full, like a new source's buckets.
const START_NS: u64 = 1_000 * SECOND_NS;

// Documentation addresses (RFC 5737, RFC 3849). The IPv6 sources are chosen around /64
// boundaries: SOURCE_V6 and SAME_64_V6 share NETWORK_V6, OTHER_64_V6 is in the next /64.
const SOURCE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OTHER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const THIRD_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const RESOLVER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
const DESTINATION_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const SAME_64_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0xbeef, 0, 0, 2);
const NETWORK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0);
const OTHER_64_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1);
const RESOLVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x53, 0, 0, 0, 0, 0x53);
const DESTINATION_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

// Locally administered MACs, as in the shared frame builder.
const SOURCE_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const DESTINATION_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const HOP_LIMIT: u8 = 64;
const EPHEMERAL_PORT: u16 = 40_000;
const HTTPS: u16 = 443;
const DNS: u16 = 53;
const CLOSED_PORT: u16 = 8080;
const PAYLOAD: &[u8] = b"moat stage test payload";

/// The settings every test starts from: the fixed clock at [`START_NS`], IPv6 sources tracked
/// per /64 (the daemon's default), nothing limited.
fn base_settings() -> Settings {
    Settings {
        flags: FLAG_FIXED_CLOCK,
        clock_ns: START_NS,
        v6_source_prefix: 64,
        ..Settings::default()
    }
}

/// A packet limit with bytes unlimited.
const fn packets(pps: u64, burst_packets: u64) -> Limit {
    Limit {
        pps,
        burst_packets,
        bps: 0,
        burst_bytes: 0,
    }
}

/// A manual ban (offences 0, reason `Banned`) until `until_ns`.
fn manual_ban(until_ns: u64) -> Ban {
    Ban {
        until_ns,
        offences: 0,
        reason: Reason::Banned as u16,
        flags: BAN_MANUAL,
    }
}

/// The loaded program and its maps, one per test so tests running in parallel never share
/// counters, buckets or bans.
struct Filter {
    loaded: Loaded,
    /// What `SETTINGS[0]` holds.
    settings: Settings,
}

impl std::ops::Deref for Filter {
    type Target = Loaded;
    fn deref(&self) -> &Loaded {
        &self.loaded
    }
}

impl std::ops::DerefMut for Filter {
    fn deref_mut(&mut self) -> &mut Loaded {
        &mut self.loaded
    }
}

/// Every counter slot, summed over CPUs, indexed like the `COUNTERS` map.
struct Counters(Vec<Counter>);

/// How one counter slot changed between two snapshots.
#[derive(Debug, PartialEq, Eq)]
struct Delta {
    verdict: Verdict,
    reason: Reason,
    packets: u64,
    bytes: u64,
}

impl Filter {
    /// Loads the shipped object and its XDP program and writes [`base_settings`], or panics
    /// saying why it cannot.
    fn load() -> Filter {
        Filter::load_with_max_bans(DEFAULT_MAX_BANS)
    }

    /// [`Filter::load`] with `BANS` created for `max_bans` entries, as the daemon does for
    /// `max_bans` in its configuration.
    fn load_with_max_bans(max_bans: u32) -> Filter {
        let mut filter = Filter {
            loaded: Loaded::load_with(EbpfLoader::new().map_max_entries(BANS, max_bans)),
            settings: Settings::default(),
        };
        filter.set_settings(base_settings());
        filter
    }

    /// Writes `settings` to `SETTINGS[0]`.
    fn set_settings(&mut self, settings: Settings) {
        self.loaded.write_settings(&settings);
        self.settings = settings;
    }

    /// Changes the settings in place and writes them.
    fn update(&mut self, change: impl FnOnce(&mut Settings)) {
        let mut settings = self.settings;
        change(&mut settings);
        self.set_settings(settings);
    }

    /// The program's clock.
    fn now_ns(&self) -> u64 {
        self.settings.clock_ns
    }

    /// Moves the program's fixed clock forward by `ns`.
    fn advance_clock(&mut self, ns: u64) {
        self.update(|settings| settings.clock_ns += ns);
    }

    /// Sets `PORTS[port]` to `flags`.
    fn set_port(&mut self, port: u16, flags: u8) {
        let map = self
            .ebpf
            .map_mut(PORTS)
            .unwrap_or_else(|| panic!("the object has no map {PORTS:?}"));
        Array::<_, u8>::try_from(map)
            .unwrap_or_else(|error| panic!("{PORTS} is not an array of u8: {error}"))
            .set(u32::from(port), flags, 0)
            .unwrap_or_else(|error| panic!("writing {PORTS}[{port}]: {error}"));
    }

    /// Adds `cidr` to the trusted upstreams (exempt from the reflection stage) of policy
    /// slot 0, the one the program reads until `ACTIVE` is written.
    fn trust(&mut self, cidr: &str) {
        let parsed: moat::cidr::Cidr = cidr
            .parse()
            .unwrap_or_else(|error| panic!("test CIDR {cidr:?}: {error}"));
        match parsed {
            moat::cidr::Cidr::V4 { addr, prefix } => {
                self.insert_key(TRUSTED_V4, SLOT_PREFIX + prefix, trusted_v4_key(0, &addr));
            }
            moat::cidr::Cidr::V6 { addr, prefix } => {
                self.insert_key(TRUSTED_V6, SLOT_PREFIX + prefix, trusted_v6_key(0, &addr));
            }
        }
    }

    /// Inserts `key` with an LPM prefix of `prefix_len` bits into the trie `name`.
    /// Adds `cidr` to the allowlist.
    fn allow(&mut self, cidr: &str) {
        self.insert_prefix(ALLOW_V4, ALLOW_V6, cidr);
    }

    /// Inserts `cidr` into the LPM trie of its family, `v4` or `v6`, its list index counts
    /// raised first.
    fn insert_prefix(&mut self, v4: &str, v6: &str, cidr: &str) {
        let parsed: moat::cidr::Cidr = cidr
            .parse()
            .unwrap_or_else(|error| panic!("test CIDR {cidr:?}: {error}"));
        self.loaded.list((v4, v6), parsed);
    }

    /// Writes `ban` under the `BANS` key of `addr`, taken as given (an IPv6 ban on a prefix is
    /// keyed by its network address).
    fn ban(&mut self, addr: impl Into<IpAddr>, ban: Ban) {
        let addr = addr.into();
        self.try_ban(addr, ban)
            .unwrap_or_else(|error| panic!("writing the ban of {addr}: {error}"));
    }

    /// The verified-source cache, mapped.
    fn verified_cache(&self) -> moat::verified::VerifiedCache {
        let map = self
            .ebpf
            .map(VERIFIED)
            .unwrap_or_else(|| panic!("the object has no map {VERIFIED:?}"));
        moat::verified::VerifiedCache::of_map(map)
            .unwrap_or_else(|error| panic!("mapping {VERIFIED}: {error}"))
    }

    /// Marks `addr` verified (it completed a handshake) until the end of time; IPv6 addresses
    /// are given as the /64 network the program looks up.
    fn verify(&mut self, addr: impl Into<IpAddr>) {
        self.verified_cache()
            .mark(&source_key(addr.into(), VERIFIED_CLASS), u64::MAX);
    }

    /// Until when the verified-source cache holds `addr` (an IPv6 /64 given as its network),
    /// if it does with a verification in force.
    fn verified_until(&self, addr: impl Into<IpAddr>) -> Option<u64> {
        self.verified_cache()
            .until(&source_key(addr.into(), VERIFIED_CLASS))
            .filter(|until| *until > self.now_ns())
    }

    /// The `BANS` entry under `addr`, taken as given.
    fn ban_entry(&self, addr: impl Into<IpAddr>) -> Option<Ban> {
        let addr = addr.into();
        let map = self
            .ebpf
            .map(BANS)
            .unwrap_or_else(|| panic!("the object has no map {BANS:?}"));
        let bans = HashMap::<_, SourceKey, Ban>::try_from(map)
            .unwrap_or_else(|error| panic!("{BANS} is not a hash of SourceKey to Ban: {error}"));
        found(bans.get(&source_key(addr, BAN_CLASS), 0), BANS, addr)
    }

    /// Every `BANS` entry.
    fn ban_entries(&self) -> Vec<(SourceKey, Ban)> {
        let map = self
            .ebpf
            .map(BANS)
            .unwrap_or_else(|| panic!("the object has no map {BANS:?}"));
        HashMap::<_, SourceKey, Ban>::try_from(map)
            .unwrap_or_else(|error| panic!("{BANS} is not a hash of SourceKey to Ban: {error}"))
            .iter()
            .map(|entry| entry.unwrap_or_else(|error| panic!("reading {BANS}: {error}")))
            .collect()
    }

    /// Writes `ban` under the `BANS` key of `addr` like [`Filter::ban`], returning the
    /// kernel's answer instead of panicking.
    fn try_ban(&mut self, addr: impl Into<IpAddr>, ban: Ban) -> Result<(), MapError> {
        let map = self
            .ebpf
            .map_mut(BANS)
            .unwrap_or_else(|| panic!("the object has no map {BANS:?}"));
        HashMap::<_, SourceKey, Ban>::try_from(map)
            .unwrap_or_else(|error| panic!("{BANS} is not a hash of SourceKey to Ban: {error}"))
            .insert(source_key(addr.into(), BAN_CLASS), ban, 0)
    }

    /// Writes the bans summary's word that holds `addr`'s slot, as the daemon's sweep does.
    fn set_summary_word(&mut self, addr: impl Into<IpAddr>, value: u64) {
        let (index, _) = slot(&source_key(addr.into(), BAN_CLASS));
        let map = self
            .ebpf
            .map_mut(BANS_EMPTY)
            .unwrap_or_else(|| panic!("the object has no map {BANS_EMPTY:?}"));
        Array::<_, u64>::try_from(map)
            .unwrap_or_else(|error| panic!("{BANS_EMPTY} is not an array of u64: {error}"))
            .set(index, value, 0)
            .unwrap_or_else(|error| panic!("writing {BANS_EMPTY}: {error}"));
    }

    /// Whether the bans summary says no ban hashes to `addr`'s slot.
    fn slot_holds_no_ban(&self, addr: impl Into<IpAddr>) -> bool {
        let (index, mask) = slot(&source_key(addr.into(), BAN_CLASS));
        let map = self
            .ebpf
            .map(BANS_EMPTY)
            .unwrap_or_else(|| panic!("the object has no map {BANS_EMPTY:?}"));
        Array::<_, u64>::try_from(map)
            .unwrap_or_else(|error| panic!("{BANS_EMPTY} is not an array of u64: {error}"))
            .get(&index, 0)
            .unwrap_or_else(|error| panic!("reading {BANS_EMPTY}: {error}"))
            & mask
            != 0
    }

    /// Deletes the `BANS` entry under `addr`, which must exist.
    fn unban(&mut self, addr: impl Into<IpAddr>) {
        let addr = addr.into();
        let map = self
            .ebpf
            .map_mut(BANS)
            .unwrap_or_else(|| panic!("the object has no map {BANS:?}"));
        HashMap::<_, SourceKey, Ban>::try_from(map)
            .unwrap_or_else(|error| panic!("{BANS} is not a hash of SourceKey to Ban: {error}"))
            .remove(&source_key(addr, BAN_CLASS))
            .unwrap_or_else(|error| panic!("deleting the ban of {addr}: {error}"));
    }

    /// Automatic bans the program has issued for `reason` (`BAN_EVENTS`, summed over CPUs).
    fn ban_events(&self, reason: Reason) -> u64 {
        let map = self
            .ebpf
            .map(BAN_EVENTS)
            .unwrap_or_else(|| panic!("the object has no map {BAN_EVENTS:?}"));
        PerCpuArray::<_, u64>::try_from(map)
            .unwrap_or_else(|error| panic!("{BAN_EVENTS} is not a per-CPU array of u64: {error}"))
            .get(&(reason as u32), 0)
            .unwrap_or_else(|error| panic!("reading {BAN_EVENTS}[{reason:?}]: {error}"))
            .iter()
            .sum()
    }

    /// The `SOURCES` entry of `addr` (taken as given) in `class`.
    fn source_state(&self, addr: impl Into<IpAddr>, class: Class) -> Option<RateState> {
        let addr = addr.into();
        let map = self
            .ebpf
            .map(SOURCES)
            .unwrap_or_else(|| panic!("the object has no map {SOURCES:?}"));
        let sources = moat::sources::SourceTable::new(
            Array::<_, filter_common::sources::SourceSet>::try_from(map)
                .unwrap_or_else(|error| panic!("{SOURCES} is not an array of SourceSet: {error}")),
        );
        sources
            .get(&source_key(addr, class as u8))
            .unwrap_or_else(|error| panic!("reading {SOURCES} for {addr}: {error}"))
    }

    /// Runs one frame through the program and returns its XDP action.
    fn run(&self, frame: &[u8]) -> u32 {
        self.loaded.run(frame)
    }

    /// A snapshot of every counter slot, summed over CPUs.
    fn counters(&self) -> Counters {
        Counters(self.loaded.counters())
    }

    /// Runs `frame` and asserts the action that carries out `verdict`, and that exactly one
    /// packet of `frame.len()` bytes was counted under `(verdict, reason)` and nothing else.
    fn assert_verdict(&self, case: &str, frame: &[u8], verdict: Verdict, reason: Reason) {
        let before = self.counters();
        let action = self.run(frame);
        let after = self.counters();
        let expected = action_for(verdict);
        let clock = self.now_ns() - START_NS;
        assert_eq!(
            action,
            expected,
            "{case} (clock start+{clock} ns): got {} for {verdict:?}/{reason:?}, want {}; \
             frame {}",
            action_name(action),
            action_name(expected),
            hex(frame)
        );
        let only = Delta {
            verdict,
            reason,
            packets: 1,
            bytes: frame.len() as u64,
        };
        assert_eq!(
            after.since(&before),
            vec![only],
            "{case} (clock start+{clock} ns): counter change; frame {}",
            hex(frame)
        );
    }

    /// [`Filter::assert_verdict`] for `count` runs of the same frame.
    fn assert_verdicts(
        &self,
        case: &str,
        frame: &[u8],
        count: usize,
        verdict: Verdict,
        reason: Reason,
    ) {
        for run in 1..=count {
            self.assert_verdict(&format!("{case}, run {run}"), frame, verdict, reason);
        }
    }

    /// [`Filter::assert_verdict`] for a frame that passes.
    fn assert_passes(&self, case: &str, frame: &[u8]) {
        self.assert_verdict(case, frame, Verdict::Pass, Reason::Pass);
    }

    /// [`Filter::assert_verdict`] for a frame dropped for `reason`.
    fn assert_drops(&self, case: &str, frame: &[u8], reason: Reason) {
        self.assert_verdict(case, frame, Verdict::Drop, reason);
    }
}

impl Counters {
    /// The slots that changed since `before`.
    fn since(&self, before: &Counters) -> Vec<Delta> {
        let mut deltas = Vec::new();
        for verdict in Verdict::ALL {
            for reason in Reason::ALL {
                let index = counter_index(verdict, reason) as usize;
                let (now, then) = (self.0[index], before.0[index]);
                let delta = Delta {
                    verdict,
                    reason,
                    packets: now.packets.wrapping_sub(then.packets),
                    bytes: now.bytes.wrapping_sub(then.bytes),
                };
                if delta.packets != 0 || delta.bytes != 0 {
                    deltas.push(delta);
                }
            }
        }
        deltas
    }
}

/// The `SOURCES`/`BANS` key of `addr` in `class`, with the address bytes exactly as given: the
/// tests name the masked network themselves rather than reuse the program's masking.
fn source_key(addr: IpAddr, class: u8) -> SourceKey {
    let mut addr_be = [0; 16];
    let ip_version = match addr {
        IpAddr::V4(v4) => {
            addr_be[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            addr_be = v6.octets();
            6
        }
    };
    SourceKey {
        addr_be,
        ip_version,
        class,
        _pad: [0; 2],
    }
}

/// A map lookup's value, `None` if the key is absent, a panic on any other error.
fn found<V>(result: Result<V, MapError>, map: &str, addr: IpAddr) -> Option<V> {
    match result {
        Ok(value) => Some(value),
        Err(MapError::KeyNotFound) => None,
        Err(error) => panic!("looking up {addr} in {map}: {error}"),
    }
}

/// The XDP action each verdict is carried out with (see `Verdict`'s docs).
fn action_for(verdict: Verdict) -> u32 {
    match verdict {
        Verdict::Pass | Verdict::WouldDrop => XDP_PASS,
        Verdict::Drop => XDP_DROP,
        Verdict::Aborted => XDP_ABORTED,
        Verdict::Answered => XDP_TX,
    }
}

fn action_name(action: u32) -> String {
    match action {
        XDP_ABORTED => "XDP_ABORTED".to_owned(),
        XDP_TX => "XDP_TX".to_owned(),
        XDP_DROP => "XDP_DROP".to_owned(),
        XDP_PASS => "XDP_PASS".to_owned(),
        other => format!("action {other}"),
    }
}

/// The frame in hex for failure messages; headers fit in the first 128 bytes.
fn hex(bytes: &[u8]) -> String {
    const SHOWN: usize = 128;
    let mut text: String = bytes
        .iter()
        .take(SHOWN)
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() > SHOWN {
        text.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    text
}

// Frames from chosen sources, with chosen TCP flags, ports and ICMP messages. The shared builder
// in `frames` always sends from one address with one set of flags and ports, so these are
// written here with etherparse (lengths and checksums computed from the fields); `frames` still
// builds the fragments.

/// Ethernet and an IP header from `source` to the destination of its family.
fn ip_from(source: IpAddr) -> PacketBuilderStep<IpHeaders> {
    let ip = match source {
        IpAddr::V4(source) => IpHeaders::Ipv4(
            Ipv4Header::new(
                0,
                HOP_LIMIT,
                ip_number::UDP, // replaced by the builder with the real protocol
                source.octets(),
                DESTINATION_V4.octets(),
            )
            .expect("an empty IPv4 payload fits"),
            Default::default(),
        ),
        IpAddr::V6(source) => IpHeaders::Ipv6(
            Ipv6Header {
                hop_limit: HOP_LIMIT,
                source: source.octets(),
                destination: DESTINATION_V6.octets(),
                ..Default::default()
            },
            Default::default(),
        ),
    };
    PacketBuilder::ethernet2(SOURCE_MAC, DESTINATION_MAC).ip(ip)
}

/// Checks that etherparse reads the frame back, so the builder made a real frame.
fn checked(frame: Vec<u8>) -> Vec<u8> {
    if let Err(error) = PacketHeaders::from_ethernet_slice(&frame) {
        panic!("built frame does not parse: {error}; frame {}", hex(&frame));
    }
    frame
}

/// A TCP segment from `source` port 40000 to `port` with exactly the `flags` bits set.
fn tcp(source: impl Into<IpAddr>, flags: u8, port: u16) -> Vec<u8> {
    tcp_between(source, EPHEMERAL_PORT, flags, port)
}

/// A TCP segment from `source` port `source_port` to `port` with exactly the `flags` bits set.
fn tcp_between(source: impl Into<IpAddr>, source_port: u16, flags: u8, port: u16) -> Vec<u8> {
    let mut header = TcpHeader::new(source_port, port, 1_000, 64_240);
    header.fin = flags & FIN != 0;
    header.syn = flags & SYN != 0;
    header.rst = flags & RST != 0;
    header.psh = flags & PSH != 0;
    header.ack = flags & ACK != 0;
    header.urg = flags & URG != 0;
    if header.ack {
        header.acknowledgment_number = 2_000;
    }
    let mut frame = Vec::new();
    ip_from(source.into())
        .tcp_header(header)
        .write(&mut frame, PAYLOAD)
        .expect("a small TCP segment fits");
    checked(frame)
}

/// A TCP SYN from `source` to port `port`.
fn syn(source: impl Into<IpAddr>, port: u16) -> Vec<u8> {
    tcp(source, SYN, port)
}

/// A UDP datagram from `source` port `source_port` to `port` carrying `payload`.
fn udp_between(source: impl Into<IpAddr>, source_port: u16, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    ip_from(source.into())
        .udp(source_port, port)
        .write(&mut frame, payload)
        .expect("a test datagram fits");
    checked(frame)
}

/// A UDP datagram from `source` port 40000 to the DNS port.
fn udp(source: impl Into<IpAddr>) -> Vec<u8> {
    udp_between(source, EPHEMERAL_PORT, DNS, PAYLOAD)
}

/// An ICMP message from an IPv4 `source`.
fn icmpv4(source: Ipv4Addr, message: Icmpv4Type) -> Vec<u8> {
    let mut frame = Vec::new();
    ip_from(source.into())
        .icmpv4(message)
        .write(&mut frame, PAYLOAD)
        .expect("a small ICMP message fits");
    checked(frame)
}

/// An ICMPv6 message from `source` with `body` after its 8-byte header.
fn icmpv6(source: Ipv6Addr, message: Icmpv6Type, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    ip_from(source.into())
        .icmpv6(message)
        .write(&mut frame, body)
        .expect("a small ICMPv6 message fits");
    checked(frame)
}

/// An echo request from `source`: ICMP or ICMPv6 by its family.
fn echo(source: impl Into<IpAddr>) -> Vec<u8> {
    let request = IcmpEchoHeader { id: 7, seq: 1 };
    match source.into() {
        IpAddr::V4(v4) => icmpv4(v4, Icmpv4Type::EchoRequest(request)),
        IpAddr::V6(v6) => icmpv6(v6, Icmpv6Type::EchoRequest(request), PAYLOAD),
    }
}

#[test]
fn banned_source_is_dropped_until_its_ban_expires() {
    let mut filter = Filter::load();
    let until_ns = START_NS + 5 * SECOND_NS;
    filter.ban(SOURCE_V4, manual_ban(until_ns));
    // Sources are tracked per /64 (base_settings), so a v6 ban is keyed by the network.
    filter.ban(NETWORK_V6, manual_ban(until_ns));

    for (family, source, other) in [
        ("v4", IpAddr::from(SOURCE_V4), IpAddr::from(OTHER_V4)),
        ("v6", IpAddr::from(SOURCE_V6), IpAddr::from(OTHER_64_V6)),
    ] {
        for (what, frame) in [
            ("udp", udp(source)),
            ("syn", syn(source, HTTPS)),
            ("ack", tcp(source, ACK, HTTPS)),
            ("icmp echo", echo(source)),
        ] {
            filter.assert_drops(
                &format!("{family} {what} from the banned {source}"),
                &frame,
                Reason::Banned,
            );
        }
        // The checks of the packet alone come before the bans lookup, so a segment no TCP
        // stack sends is dropped under its own reason whoever sends it.
        filter.assert_drops(
            &format!("{family} null-flag tcp from the banned {source}"),
            &tcp(source, 0, HTTPS),
            Reason::TcpFlags,
        );
        filter.assert_passes(
            &format!("{family} udp from {other}, not banned"),
            &udp(other),
        );
    }

    filter.advance_clock(5 * SECOND_NS - 1);
    filter.assert_drops(
        "v4 1 ns before the ban ends",
        &udp(SOURCE_V4),
        Reason::Banned,
    );
    filter.assert_drops(
        "v6 1 ns before the ban ends",
        &udp(SOURCE_V6),
        Reason::Banned,
    );
    filter.advance_clock(1);
    filter.assert_passes("v4 when the ban ends", &udp(SOURCE_V4));
    filter.assert_passes("v6 when the ban ends", &udp(SOURCE_V6));
    assert_eq!(
        filter.ban_entry(SOURCE_V4),
        Some(manual_ban(until_ns)),
        "an expired ban stays in BANS (userspace sweeps it)"
    );
}

#[test]
fn ipv6_ban_covers_the_configured_source_prefix() {
    let mut filter = Filter::load();
    let forever = manual_ban(u64::MAX);

    // v6_source_prefix 64: a ban on 2001:db8::/64 covers every address in it.
    filter.ban(NETWORK_V6, forever);
    filter.assert_drops(
        "/64 sources, 2001:db8::1 in the banned /64",
        &udp(SOURCE_V6),
        Reason::Banned,
    );
    filter.assert_drops(
        "/64 sources, 2001:db8::beef:0:0:2 in the banned /64",
        &udp(SAME_64_V6),
        Reason::Banned,
    );
    filter.assert_passes(
        "/64 sources, 2001:db8:0:1::1 in the next /64",
        &udp(OTHER_64_V6),
    );

    // v6_source_prefix 128: bans name single addresses, and the /64 entry no longer matches.
    filter.update(|settings| settings.v6_source_prefix = 128);
    filter.assert_passes(
        "/128 sources, 2001:db8::1 under a ban keyed 2001:db8::",
        &udp(SOURCE_V6),
    );
    filter.ban(SOURCE_V6, forever);
    filter.assert_drops(
        "/128 sources, the banned 2001:db8::1",
        &udp(SOURCE_V6),
        Reason::Banned,
    );
    filter.assert_passes(
        "/128 sources, 2001:db8::beef:0:0:2 in the same /64",
        &udp(SAME_64_V6),
    );
}

#[test]
fn drops_invalid_tcp_flag_combinations_and_passes_valid_ones() {
    let filter = Filter::load();
    let invalid = [
        ("null", 0),
        ("syn+fin", SYN | FIN),
        ("syn+rst", SYN | RST),
        ("fin without ack", FIN),
        ("xmas (fin+psh+urg)", FIN | PSH | URG),
    ];
    let valid = [
        ("syn", SYN),
        ("syn+ack", SYN | ACK),
        ("ack", ACK),
        ("fin+ack", FIN | ACK),
        ("rst", RST),
    ];
    for source in [IpAddr::from(SOURCE_V4), IpAddr::from(SOURCE_V6)] {
        for (name, flags) in invalid {
            filter.assert_drops(
                &format!("{name} from {source}"),
                &tcp(source, flags, HTTPS),
                Reason::TcpFlags,
            );
        }
        for (name, flags) in valid {
            filter.assert_passes(&format!("{name} from {source}"), &tcp(source, flags, HTTPS));
        }
    }
}

/// The first and a later fragment of a UDP datagram over IPv4 and over IPv6, named.
fn fragments() -> [(&'static str, Vec<u8>); 4] {
    let v4 = frames::Packet::ipv4(frames::Transport::Udp).payload(&frames::payload_of(200));
    let v6 = frames::Packet::ipv6(frames::Transport::Udp).payload(&frames::payload_of(200));
    [
        ("v4 first fragment", v4.fragment(0..64, true).bytes),
        ("v4 later fragment", v4.fragment(64..208, false).bytes),
        ("v6 first fragment", v6.fragment(0..64, true).bytes),
        ("v6 later fragment", v6.fragment(64..208, false).bytes),
    ]
}

#[test]
fn fragment_policy_drop_drops_every_fragment() {
    let mut filter = Filter::load();
    filter.update(|settings| settings.fragment_policy = FragmentPolicy::Drop as u32);
    for (name, frame) in fragments() {
        filter.assert_drops(name, &frame, Reason::Fragment);
    }
    filter.assert_passes("unfragmented v4 udp", &udp(SOURCE_V4));
    filter.assert_passes("unfragmented v6 udp", &udp(SOURCE_V6));
}

#[test]
fn fragment_policy_pass_passes_every_fragment() {
    let mut filter = Filter::load();
    filter.update(|settings| settings.fragment_policy = FragmentPolicy::Pass as u32);
    for (name, frame) in fragments() {
        filter.assert_passes(name, &frame);
    }
}

#[test]
fn fragment_policy_rate_limit_shares_one_bucket_among_all_fragments() {
    let mut filter = Filter::load();
    filter.update(|settings| {
        settings.fragment_policy = FragmentPolicy::RateLimit as u32;
        settings.fragments = packets(1, 2);
    });
    let [v4_first, v4_later, v6_first, v6_later] = fragments();

    filter.assert_passes(v4_first.0, &v4_first.1);
    filter.assert_passes(v6_later.0, &v6_later.1);
    filter.assert_drops(
        "v4 later fragment, third in the 2-packet burst",
        &v4_later.1,
        Reason::Fragment,
    );
    filter.assert_drops(
        "v6 first fragment, fourth in the 2-packet burst",
        &v6_first.1,
        Reason::Fragment,
    );
    filter.assert_passes("unfragmented udp, not charged", &udp(SOURCE_V4));

    filter.advance_clock(SECOND_NS);
    filter.assert_passes("v4 later fragment 1 s later (1/s)", &v4_later.1);
    filter.assert_drops(
        "v6 first fragment, right after",
        &v6_first.1,
        Reason::Fragment,
    );
}

#[test]
fn enforced_tcp_ports_drop_syns_to_closed_ports_but_pass_replies() {
    let mut filter = Filter::load();
    filter.set_port(HTTPS, PORT_TCP_OPEN);
    filter.update(|settings| settings.flags |= FLAG_ENFORCE_TCP_PORTS);
    for source in [IpAddr::from(SOURCE_V4), IpAddr::from(SOURCE_V6)] {
        filter.assert_passes(
            &format!("syn to open 443 from {source}"),
            &syn(source, HTTPS),
        );
        filter.assert_drops(
            &format!("syn to closed 8080 from {source}"),
            &syn(source, CLOSED_PORT),
            Reason::PortClosed,
        );
        // Replies to the origin's own connections arrive on ports it never opened.
        for (name, flags) in [
            ("syn+ack", SYN | ACK),
            ("ack", ACK),
            ("psh+ack", PSH | ACK),
            ("fin+ack", FIN | ACK),
            ("rst", RST),
        ] {
            filter.assert_passes(
                &format!("{name} to closed 8080 from {source}"),
                &tcp(source, flags, CLOSED_PORT),
            );
        }
        filter.assert_drops(
            &format!("syn to 53, open for nothing, from {source}"),
            &syn(source, DNS),
            Reason::PortClosed,
        );
        filter.assert_passes(
            &format!("udp to 8080 from {source}: udp ports not enforced"),
            &udp_between(source, EPHEMERAL_PORT, CLOSED_PORT, PAYLOAD),
        );
    }
    // A closed port is decided before any per-source lookup (a flood of SYNs to closed ports
    // costs no bans or verified-source lookup), so even a banned source's SYN counts there.
    filter.ban(SOURCE_V4, manual_ban(u64::MAX));
    filter.assert_drops(
        "syn to closed 8080 from the banned source",
        &syn(SOURCE_V4, CLOSED_PORT),
        Reason::PortClosed,
    );
    filter.assert_drops(
        "syn to open 443 from the banned source",
        &syn(SOURCE_V4, HTTPS),
        Reason::Banned,
    );
}

#[test]
fn enforced_udp_ports_drop_datagrams_to_closed_ports() {
    let mut filter = Filter::load();
    filter.set_port(DNS, PORT_UDP_OPEN);
    filter.set_port(HTTPS, PORT_TCP_OPEN);
    filter.update(|settings| settings.flags |= FLAG_ENFORCE_UDP_PORTS);
    for source in [IpAddr::from(SOURCE_V4), IpAddr::from(SOURCE_V6)] {
        filter.assert_passes(
            &format!("udp to open 53 from {source}"),
            &udp_between(source, EPHEMERAL_PORT, DNS, PAYLOAD),
        );
        filter.assert_drops(
            &format!("udp to closed 8080 from {source}"),
            &udp_between(source, EPHEMERAL_PORT, CLOSED_PORT, PAYLOAD),
            Reason::PortClosed,
        );
        filter.assert_drops(
            &format!("udp to 443, open for tcp only, from {source}"),
            &udp_between(source, EPHEMERAL_PORT, HTTPS, PAYLOAD),
            Reason::PortClosed,
        );
        filter.assert_passes(
            &format!("syn to 8080 from {source}: tcp ports not enforced"),
            &syn(source, CLOSED_PORT),
        );
    }
}

#[test]
fn ports_are_open_unless_enforced() {
    let mut filter = Filter::load();
    filter.set_port(HTTPS, PORT_TCP_OPEN);
    filter.set_port(DNS, PORT_UDP_OPEN);
    for source in [IpAddr::from(SOURCE_V4), IpAddr::from(SOURCE_V6)] {
        filter.assert_passes(
            &format!("syn to 8080 from {source}"),
            &syn(source, CLOSED_PORT),
        );
        filter.assert_passes(
            &format!("udp to 8080 from {source}"),
            &udp_between(source, EPHEMERAL_PORT, CLOSED_PORT, PAYLOAD),
        );
    }
}

#[test]
fn drops_udp_from_reflector_ports_unless_the_source_is_trusted() {
    let mut filter = Filter::load();
    filter.set_port(DNS, PORT_REFLECTOR);
    filter.trust("203.0.113.0/24");
    filter.trust("2001:db8:53::/48");
    for (source, resolver) in [
        (IpAddr::from(SOURCE_V4), IpAddr::from(RESOLVER_V4)),
        (IpAddr::from(SOURCE_V6), IpAddr::from(RESOLVER_V6)),
    ] {
        filter.assert_drops(
            &format!("udp from port 53 of untrusted {source}"),
            &udp_between(source, DNS, EPHEMERAL_PORT, PAYLOAD),
            Reason::Reflection,
        );
        filter.assert_passes(
            &format!("udp from port 53 of trusted {resolver}"),
            &udp_between(resolver, DNS, EPHEMERAL_PORT, PAYLOAD),
        );
        filter.assert_passes(
            &format!("udp from port 40000 to 53 of {source}: the source port counts"),
            &udp_between(source, EPHEMERAL_PORT, DNS, PAYLOAD),
        );
        filter.assert_passes(
            &format!("tcp from port 53 of {source}: udp only"),
            &tcp_between(source, DNS, ACK, EPHEMERAL_PORT),
        );
    }
}

#[test]
fn per_source_udp_limit_drops_over_burst_and_refills_at_rate() {
    let mut filter = Filter::load();
    filter.update(|settings| settings.source[Class::Udp as usize] = packets(10, 3));

    filter.assert_verdicts(
        "v4 udp within the 3-packet burst",
        &udp(SOURCE_V4),
        3,
        Verdict::Pass,
        Reason::Pass,
    );
    filter.assert_verdicts(
        "v4 udp over the burst",
        &udp(SOURCE_V4),
        2,
        Verdict::Drop,
        Reason::RateUdp,
    );
    filter.assert_verdicts(
        "another v4 source, its own bucket",
        &udp(OTHER_V4),
        3,
        Verdict::Pass,
        Reason::Pass,
    );
    filter.assert_verdicts(
        "v6 udp within the burst",
        &udp(SOURCE_V6),
        3,
        Verdict::Pass,
        Reason::Pass,
    );
    filter.assert_drops(
        "v6 udp from the same /64, sharing its bucket",
        &udp(SAME_64_V6),
        Reason::RateUdp,
    );
    filter.assert_verdicts(
        "v6 udp from the next /64, its own bucket",
        &udp(OTHER_64_V6),
        3,
        Verdict::Pass,
        Reason::Pass,
    );
    assert!(
        filter.source_state(NETWORK_V6, Class::Udp).is_some()
            && filter.source_state(SOURCE_V6, Class::Udp).is_none(),
        "v6 sources are tracked under their /64"
    );

    filter.advance_clock(100 * MILLISECOND_NS - 1);
    filter.assert_drops(
        "v4 udp 1 ns short of a token",
        &udp(SOURCE_V4),
        Reason::RateUdp,
    );
    filter.advance_clock(1);
    filter.assert_passes("v4 udp 100 ms later (10/s)", &udp(SOURCE_V4));
    filter.assert_drops("v4 udp right after", &udp(SOURCE_V4), Reason::RateUdp);
    filter.assert_passes("v6 udp 100 ms later", &udp(SAME_64_V6));
    filter.assert_drops("v6 udp right after", &udp(SOURCE_V6), Reason::RateUdp);
}

/// [`Filter::load`] with `SOURCES` created for `sets` sets and the settings saying so, as the
/// daemon sizes both for `max_tracked_sources`.
fn load_with_source_sets(sets: u32) -> Filter {
    let mut filter = Filter {
        loaded: Loaded::load_with(EbpfLoader::new().map_max_entries(SOURCES, sets)),
        settings: Settings::default(),
    };
    filter.set_settings(Settings {
        source_sets: sets,
        ..base_settings()
    });
    filter
}

#[test]
fn a_source_table_at_capacity_keeps_every_source_over_its_limit() {
    // 1,024 sources in 1,024 sets (what `max_tracked_sources = 1024` creates): half the ways.
    // Two candidate sets and a move keep every source; one set each would forget about one in
    // ten, two without a move several, each then starting again from a full burst.
    const SOURCES_TRACKED: u32 = 1_024;
    let mut filter = load_with_source_sets(SOURCES_TRACKED);
    filter.update(|settings| settings.source[Class::Udp as usize] = packets(1, 1));
    let frames: Vec<Vec<u8>> = (0..SOURCES_TRACKED)
        .map(|index| {
            udp(Ipv4Addr::from(
                0x0a00_0000 | index.wrapping_mul(2_654_435_761) >> 8,
            ))
        })
        .collect();
    for (index, frame) in frames.iter().enumerate() {
        filter.assert_passes(&format!("source {index}'s first datagram"), frame);
    }
    for (index, frame) in frames.iter().enumerate() {
        filter.assert_drops(
            &format!("source {index}'s second datagram, over its burst of 1"),
            frame,
            Reason::RateUdp,
        );
    }
}

#[test]
fn a_new_source_with_no_room_replaces_the_one_quiet_longest() {
    // Two sets: every source's candidates are both, so four fill the table and none can move.
    let mut filter = load_with_source_sets(2);
    filter.update(|settings| settings.source[Class::Udp as usize] = packets(1, 1));
    let sources: Vec<Ipv4Addr> = (1..=5).map(|last| Ipv4Addr::new(192, 0, 2, last)).collect();
    for (index, &source) in sources[..4].iter().enumerate() {
        filter.assert_passes(&format!("source {index}, the table filling"), &udp(source));
        filter.advance_clock(MILLISECOND_NS);
    }
    // The first source's datagram is the furthest in the past: its way goes to the fifth.
    filter.assert_passes("a fifth source", &udp(sources[4]));
    let tracked: Vec<bool> = sources
        .iter()
        .map(|&source| filter.source_state(source, Class::Udp).is_some())
        .collect();
    assert_eq!(tracked, [false, true, true, true, true]);
    filter.assert_drops("the fifth again", &udp(sources[4]), Reason::RateUdp);
    filter.assert_drops("the second again", &udp(sources[1]), Reason::RateUdp);
}

#[test]
fn a_verified_sources_syns_past_its_limit_are_judged_as_anyones() {
    let mut filter = Filter::load();
    filter.update(|settings| {
        settings.source[Class::Syn as usize] = packets(10, 2);
        settings.aggregate[Class::Syn as usize] = packets(1, 1);
    });
    // Only verified sources' SYNs have per-source state (a spoofable one's never do, #11).
    filter.verify(SOURCE_V4);
    filter.verify(NETWORK_V6);
    for source in [IpAddr::from(SOURCE_V4), IpAddr::from(SOURCE_V6)] {
        // A second later: the host's SYN bucket holds its one SYN again.
        filter.advance_clock(SECOND_NS);
        filter.assert_verdicts(
            &format!("syn from {source} within its own burst, the host's bucket untouched"),
            &syn(source, HTTPS),
            2,
            Verdict::Pass,
            Reason::Pass,
        );
        // Past its own limit the SYN may be anyone's: the host's SYN bucket decides, as for
        // a first-time visitor (with cookies on, a cookie answers it).
        filter.assert_passes(
            &format!("syn from {source} past its burst, the host's bucket's one"),
            &syn(source, HTTPS),
        );
        filter.assert_drops(
            &format!("syn from {source} past its burst and the host's"),
            &syn(source, HTTPS),
            Reason::FloodSyn,
        );
        for (name, flags) in [
            ("syn+ack", SYN | ACK),
            ("ack", ACK),
            ("psh+ack", PSH | ACK),
            ("fin+ack", FIN | ACK),
            ("rst", RST),
        ] {
            filter.assert_verdicts(
                &format!("{name} from {source} with its syns spent"),
                &tcp(source, flags, HTTPS),
                3,
                Verdict::Pass,
                Reason::Pass,
            );
        }
        filter.assert_passes(&format!("udp from {source}: another class"), &udp(source));
    }
}

#[test]
fn syns_past_a_verified_sources_limit_earn_no_ban() {
    // Anyone can send SYNs with a verified visitor's address: a flood of them must neither
    // ban the visitor nor end its verification.
    let mut filter = Filter::load();
    filter.update(banning_settings);
    filter.update(|settings| settings.source[Class::Syn as usize] = packets(1, 1));
    for (source, verified_as) in [
        (IpAddr::from(SOURCE_V4), IpAddr::from(SOURCE_V4)),
        (IpAddr::from(SOURCE_V6), IpAddr::from(NETWORK_V6)),
    ] {
        filter.verify(verified_as);
        filter.assert_passes(
            &format!("syn from {source} within its limit"),
            &syn(source, HTTPS),
        );
        filter.assert_verdicts(
            &format!("syns from {source} past its limit, thrice the strikes that ban"),
            &syn(source, HTTPS),
            9,
            Verdict::Pass,
            Reason::Pass,
        );
        assert_eq!(
            filter.ban_entry(verified_as),
            None,
            "{source} is not banned"
        );
        assert!(
            filter.verified_until(verified_as).is_some(),
            "{source} is still verified"
        );
        filter.assert_passes(&format!("ack from {source}"), &tcp(source, ACK, HTTPS));
    }
    assert_eq!(filter.ban_events(Reason::RateSyn), 0, "no SYN ban issued");
}

#[test]
fn a_verified_sources_syn_credit_lives_in_its_cache_way_and_outlasts_a_renewal() {
    // A verified source's SYN finds its own buckets in the way that verified it, so it costs
    // no per-source table lookup; the daemon renews the mark every second, which must not
    // hand back the credit a flood in the visitor's name has spent.
    let mut filter = Filter::load();
    filter.update(|settings| {
        settings.source[Class::Syn as usize] = packets(1, 1);
        settings.aggregate[Class::Syn as usize] = packets(1, 1);
    });
    for (source, verified_as) in [
        (IpAddr::from(SOURCE_V4), IpAddr::from(SOURCE_V4)),
        (IpAddr::from(SOURCE_V6), IpAddr::from(NETWORK_V6)),
    ] {
        // A second later: the host's SYN bucket holds its one SYN again.
        filter.advance_clock(SECOND_NS);
        filter.verify(verified_as);
        filter.assert_passes(
            &format!("syn from {source}: its own credit"),
            &syn(source, HTTPS),
        );
        filter.assert_passes(
            &format!("syn from {source}: past it, the host's bucket's one"),
            &syn(source, HTTPS),
        );
        filter.verify(verified_as);
        filter.assert_drops(
            &format!("syn from {source} after the mark's renewal: its credit still spent"),
            &syn(source, HTTPS),
            Reason::FloodSyn,
        );
        for addr in [source, verified_as] {
            assert_eq!(
                filter.source_state(addr, Class::Syn),
                None,
                "no per-source table entry for {addr}'s SYNs"
            );
        }
    }
}

#[test]
fn echo_replies_have_no_per_source_limit_and_banned_sources_keep_essential_icmp() {
    let mut filter = Filter::load();
    filter.update(|settings| {
        settings.source[Class::Icmp as usize] = packets(1, 1);
        settings.aggregate[Class::Icmp as usize] = packets(100, 100);
        settings.ban_after_strikes = 1;
    });
    let reply = |source: IpAddr| {
        let header = IcmpEchoHeader { id: 7, seq: 1 };
        match source {
            IpAddr::V4(v4) => icmpv4(v4, Icmpv4Type::EchoReply(header)),
            IpAddr::V6(v6) => icmpv6(v6, Icmpv6Type::EchoReply(header), PAYLOAD),
        }
    };
    for source in [IpAddr::from(SOURCE_V4), IpAddr::from(SOURCE_V6)] {
        // The answers to the origin's own pings: far over the 1-packet per-source limit.
        filter.assert_verdicts(
            &format!("echo replies from {source}"),
            &reply(source),
            20,
            Verdict::Pass,
            Reason::Pass,
        );
    }
    assert!(
        filter.ban_entry(IpAddr::from(SOURCE_V4)).is_none(),
        "no strike, no ban"
    );
    // The aggregate ICMP limit still holds replies: 100 in all, 40 spent above.
    filter.assert_verdicts(
        "replies past the host's limit",
        &reply(OTHER_V4.into()),
        60,
        Verdict::Pass,
        Reason::Pass,
    );
    filter.assert_drops(
        "one reply too many",
        &reply(OTHER_V4.into()),
        Reason::FloodIcmp,
    );

    // A banned source (a whole /64 for IPv6) still gets through what the network needs.
    let until_ns = START_NS + 60 * SECOND_NS;
    filter.ban(SOURCE_V4, manual_ban(until_ns));
    filter.ban(NETWORK_V6, manual_ban(until_ns));
    let fragmentation_needed = icmpv4(
        SOURCE_V4,
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400,
        }),
    );
    let neighbour_solicitation = icmpv6(
        SOURCE_V6,
        Icmpv6Type::NeighborSolicitation,
        &DESTINATION_V6.octets(),
    );
    filter.assert_passes(
        "fragmentation needed from a banned source",
        &fragmentation_needed,
    );
    filter.assert_passes(
        "neighbour solicitation from a banned /64",
        &neighbour_solicitation,
    );
    filter.assert_drops(
        "an echo request from the banned /64",
        &echo(SOURCE_V6),
        Reason::Banned,
    );
}

#[test]
fn icmp_limits_spare_essential_icmp() {
    let mut filter = Filter::load();
    filter.update(|settings| {
        settings.source[Class::Icmp as usize] = packets(1, 1);
        settings.aggregate[Class::Icmp as usize] = packets(1, 1);
    });
    let fragmentation_needed = icmpv4(
        SOURCE_V4,
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400,
        }),
    );
    let packet_too_big = icmpv6(SOURCE_V6, Icmpv6Type::PacketTooBig { mtu: 1280 }, PAYLOAD);
    // The body of a neighbour solicitation is the target address.
    let neighbour_solicitation = icmpv6(
        SOURCE_V6,
        Icmpv6Type::NeighborSolicitation,
        &DESTINATION_V6.octets(),
    );
    let essential = [
        ("v4 fragmentation needed (3/4)", &fragmentation_needed),
        ("v6 packet too big (2)", &packet_too_big),
        ("v6 neighbour solicitation (135)", &neighbour_solicitation),
    ];

    for (name, frame) in essential {
        filter.assert_verdicts(name, frame, 3, Verdict::Pass, Reason::Pass);
    }
    filter.assert_passes("v4 echo, the 1-packet burst", &echo(SOURCE_V4));
    filter.assert_drops("v4 echo over its limit", &echo(SOURCE_V4), Reason::RateIcmp);
    filter.assert_drops(
        "v6 echo, own bucket full but the aggregate spent",
        &echo(SOURCE_V6),
        Reason::FloodIcmp,
    );
    for (name, frame) in essential {
        filter.assert_verdicts(
            &format!("{name} with both icmp limits spent"),
            frame,
            3,
            Verdict::Pass,
            Reason::Pass,
        );
    }
    assert!(
        filter.source_state(NETWORK_V6, Class::Icmp).is_some(),
        "the v6 echo created its source"
    );
    assert_eq!(
        filter
            .source_state(SOURCE_V4, Class::Icmp)
            .map(|state| state.strikes),
        Some(1),
        "one v4 echo over the limit, one strike"
    );
}

#[test]
fn per_source_other_limit_covers_unparsed_transports() {
    let mut filter = Filter::load();
    filter.update(|settings| settings.source[Class::Other as usize] = packets(1, 1));
    let gre = frames::gre_over_ipv4();
    filter.assert_verdict(
        "gre within the burst",
        &gre.bytes,
        Verdict::Pass,
        Reason::OtherL4,
    );
    filter.assert_drops("gre over the burst", &gre.bytes, Reason::RateOther);
}

#[test]
fn per_source_byte_limit_drops_large_packets() {
    let mut filter = Filter::load();
    let large_payload = vec![0x5a; 500];
    for source in [IpAddr::from(SOURCE_V4), IpAddr::from(SOURCE_V6)] {
        let large = udp_between(source, EPHEMERAL_PORT, DNS, &large_payload);
        let small = udp(source);
        // Room for two large frames and one small one; packets are unlimited.
        let burst_bytes = (2 * large.len() + small.len()) as u64;
        filter.update(|settings| {
            settings.source[Class::Udp as usize] = Limit {
                pps: 0,
                burst_packets: 0,
                bps: 1_000,
                burst_bytes,
            };
        });
        let size = |frame: &[u8]| format!("{}-byte frame from {source}", frame.len());
        filter.assert_verdicts(
            &format!("{} within {burst_bytes} bytes", size(&large)),
            &large,
            2,
            Verdict::Pass,
            Reason::Pass,
        );
        filter.assert_drops(
            &format!("{} with {} bytes left", size(&large), small.len()),
            &large,
            Reason::RateUdp,
        );
        filter.assert_passes(&format!("{} fitting the bytes left", size(&small)), &small);
        filter.assert_drops(
            &format!("{} with no bytes left", size(&small)),
            &small,
            Reason::RateUdp,
        );
        filter.advance_clock(SECOND_NS);
        filter.assert_passes(&format!("{} after 1 s at 1000 B/s", size(&large)), &large);
    }
}

/// Settings for the automatic-ban tests: UDP at 1/s with a burst of 1, banned after 3 strikes
/// in 1 s, for 10 s doubling per offence up to 100 s.
fn banning_settings(settings: &mut Settings) {
    settings.source[Class::Udp as usize] = packets(1, 1);
    settings.ban_after_strikes = 3;
    settings.strike_window_ns = SECOND_NS;
    settings.ban_base_ns = 10 * SECOND_NS;
    settings.ban_max_ns = 100 * SECOND_NS;
}

/// Drives `frame`'s source through one round: one packet passes, three over the limit are
/// strikes, the third bans the source (`ban_key`) for `length_ns` as offence `offences`; then it
/// stays banned until the ban ends, where the clock is left.
fn assert_ban_round(
    filter: &mut Filter,
    case: &str,
    frame: &[u8],
    ban_key: IpAddr,
    offences: u32,
    length_ns: u64,
) {
    let earlier = filter.ban_entry(ban_key);
    assert_eq!(
        earlier.map(|ban| ban.offences),
        offences.checked_sub(1).filter(|earlier| *earlier > 0),
        "{case}: the expired ban from the previous offence is still in BANS"
    );
    filter.assert_passes(&format!("{case}: within the limit"), frame);
    for strike in 1..=2 {
        filter.assert_drops(&format!("{case}: strike {strike}"), frame, Reason::RateUdp);
        assert_eq!(
            filter.ban_entry(ban_key),
            earlier,
            "{case}: strike {strike} of 3 leaves BANS alone"
        );
    }
    filter.assert_drops(&format!("{case}: strike 3"), frame, Reason::RateUdp);
    assert_eq!(
        filter.ban_entry(ban_key),
        Some(Ban {
            until_ns: filter.now_ns() + length_ns,
            offences,
            reason: Reason::RateUdp as u16,
            flags: 0,
        }),
        "{case}: the third strike bans {ban_key}"
    );
    filter.assert_drops(&format!("{case}: banned"), frame, Reason::Banned);
    filter.advance_clock(length_ns - 1);
    filter.assert_drops(
        &format!("{case}: 1 ns before the ban ends"),
        frame,
        Reason::Banned,
    );
    filter.advance_clock(1);
}

#[test]
fn the_bans_lookup_is_skipped_only_for_a_source_whose_summary_slot_holds_no_ban() {
    let mut filter = Filter::load();
    filter.update(banning_settings);
    // The summary as created means "look": a ban is found.
    assert!(!filter.slot_holds_no_ban(SOURCE_V4));
    filter.ban(SOURCE_V4, manual_ban(u64::MAX));
    filter.assert_drops("summary as created", &udp(SOURCE_V4), Reason::Banned);
    // The daemon sets a slot's bit only when no ban it read hashes there; the program then
    // trusts it and skips the lookup (a ban written behind its back, as here, goes unseen).
    filter.set_summary_word(SOURCE_V4, NO_BAN);
    filter.assert_passes("its slot says no ban", &udp(SOURCE_V4));
    // Only the source's own bit counts: every other slot of its word saying "no ban" does not
    // hide its ban.
    let (_, mask) = slot(&source_key(SOURCE_V4.into(), BAN_CLASS));
    filter.set_summary_word(SOURCE_V4, NO_BAN & !mask);
    filter.assert_drops("its bit cleared", &udp(SOURCE_V4), Reason::Banned);
    // A ban the program issues itself clears its slot's bit, so every CPU looks again.
    filter.set_summary_word(OTHER_V4, NO_BAN);
    filter.assert_passes("udp from another source within its limit", &udp(OTHER_V4));
    for strike in 1..=3 {
        filter.assert_drops(&format!("strike {strike}"), &udp(OTHER_V4), Reason::RateUdp);
    }
    assert!(
        !filter.slot_holds_no_ban(OTHER_V4),
        "the program's ban cleared its slot's bit"
    );
    filter.assert_drops("banned by the program", &udp(OTHER_V4), Reason::Banned);
}

/// A later fragment of a TCP segment and one of a UDP datagram, from `source` (the frames
/// module's source of its family, which is this file's too).
fn later_fragments(source: IpAddr) -> [Vec<u8>; 2] {
    [frames::Transport::Tcp, frames::Transport::Udp].map(|transport| {
        let packet = match source {
            IpAddr::V4(v4) => {
                assert_eq!(v4, SOURCE_V4, "the frames module sends from SOURCE_V4");
                frames::Packet::ipv4(transport)
            }
            IpAddr::V6(v6) => {
                assert_eq!(v6, SOURCE_V6, "the frames module sends from SOURCE_V6");
                frames::Packet::ipv6(transport)
            }
        };
        packet
            .payload(&frames::payload_of(200))
            .fragment(64..200, false)
            .bytes
    })
}

#[test]
fn a_ban_for_spoofable_traffic_leaves_the_sources_tcp_alone() {
    let mut filter = Filter::load();
    filter.update(banning_settings);
    for source in [IpAddr::from(SOURCE_V4), IpAddr::from(SOURCE_V6)] {
        // A UDP flood in the source's name (anyone can send one) earns it a ban...
        filter.assert_passes(&format!("udp from {source} within its limit"), &udp(source));
        for strike in 1..=3 {
            filter.assert_drops(
                &format!("udp from {source}, strike {strike}"),
                &udp(source),
                Reason::RateUdp,
            );
        }
        filter.assert_drops(
            &format!("udp from banned {source}"),
            &udp(source),
            Reason::Banned,
        );
        // ...which drops none of its TCP: a first-time visitor at that address still gets in.
        filter.assert_passes(&format!("syn from {source}"), &syn(source, HTTPS));
        filter.assert_passes(&format!("ack from {source}"), &tcp(source, ACK, HTTPS));
        // Not even a segment cut in pieces on its way, whose later fragments carry no TCP
        // header; a datagram's are banned with it.
        let [tcp_later, udp_later] = later_fragments(source);
        filter.assert_passes(
            &format!("a later fragment of a segment from {source}"),
            &tcp_later,
        );
        filter.assert_drops(
            &format!("a later fragment of a datagram from banned {source}"),
            &udp_later,
            Reason::Banned,
        );
    }
    // A manual ban covers TCP all the same.
    filter.ban(OTHER_V4, manual_ban(u64::MAX));
    filter.assert_drops(
        "syn from a manually banned source",
        &syn(OTHER_V4, HTTPS),
        Reason::Banned,
    );
}

#[test]
fn a_verified_source_earns_no_ban_from_traffic_anyone_could_send_in_its_name() {
    let mut filter = Filter::load();
    filter.update(banning_settings);
    filter.update(|settings| settings.source[Class::Icmp as usize] = packets(1, 1));
    for (source, verified_as) in [
        (IpAddr::from(SOURCE_V4), IpAddr::from(SOURCE_V4)),
        (IpAddr::from(SOURCE_V6), IpAddr::from(NETWORK_V6)),
    ] {
        filter.verify(verified_as);
        // Its excess is dropped, strike after strike, but it stays unbanned and verified.
        for (what, frame, reason) in [
            ("udp", udp(source), Reason::RateUdp),
            ("icmp echo", echo(source), Reason::RateIcmp),
        ] {
            filter.assert_passes(&format!("{what} from {source} within its limit"), &frame);
            for over in 1..=6 {
                filter.assert_drops(
                    &format!("{what} from {source}, {over} over"),
                    &frame,
                    reason,
                );
            }
        }
        assert!(
            filter.ban_entry(verified_as).is_none(),
            "{source} is not banned"
        );
        assert!(
            filter.verified_until(verified_as).is_some(),
            "{source} is still verified"
        );
        filter.assert_passes(&format!("ack from {source}"), &tcp(source, ACK, HTTPS));
    }
    // The same datagrams from a source nobody verified earn it a ban at the third strike.
    filter.assert_passes("udp from an unverified source", &udp(OTHER_V4));
    for strike in 1..=3 {
        filter.assert_drops(
            &format!("udp from an unverified source, strike {strike}"),
            &udp(OTHER_V4),
            Reason::RateUdp,
        );
    }
    assert!(filter.ban_entry(IpAddr::from(OTHER_V4)).is_some(), "banned");
}

#[test]
fn repeated_strikes_ban_the_source_for_doubling_lengths() {
    let mut filter = Filter::load();
    filter.update(banning_settings);
    let v4 = udp(SOURCE_V4);
    for (offence, length_s) in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (6, 100)] {
        assert_ban_round(
            &mut filter,
            &format!("v4 offence {offence}"),
            &v4,
            SOURCE_V4.into(),
            offence,
            length_s * SECOND_NS,
        );
    }
    filter.assert_passes("v4 after the last ban", &v4);

    let v6 = udp(SOURCE_V6);
    assert_ban_round(
        &mut filter,
        "v6 offence 1",
        &v6,
        NETWORK_V6.into(),
        1,
        10 * SECOND_NS,
    );
    filter.assert_passes("v6 after its first ban", &v6);
    for strike in 1..=3 {
        filter.assert_drops(
            &format!("v6 second round, strike {strike}"),
            &v6,
            Reason::RateUdp,
        );
    }
    filter.assert_drops(
        "another address in the banned /64",
        &udp(SAME_64_V6),
        Reason::Banned,
    );
    filter.assert_passes("an address in the next /64", &udp(OTHER_64_V6));
    assert_eq!(
        filter.ban_entry(NETWORK_V6).map(|ban| ban.offences),
        Some(2),
        "the v6 /64's second ban"
    );
}

#[test]
fn strikes_spread_beyond_the_window_do_not_ban() {
    let mut filter = Filter::load();
    filter.update(banning_settings);
    let frame = udp(SOURCE_V4);
    filter.assert_passes("within the limit", &frame);
    filter.assert_verdicts("strikes 1-2", &frame, 2, Verdict::Drop, Reason::RateUdp);
    // Just past the 1 s window that started with the source's first packet.
    filter.advance_clock(SECOND_NS + 1);
    filter.assert_passes("refilled", &frame);
    filter.assert_verdicts(
        "strikes 1-2 of a new window",
        &frame,
        2,
        Verdict::Drop,
        Reason::RateUdp,
    );
    assert_eq!(
        filter.ban_entry(SOURCE_V4),
        None,
        "four strikes, but never three in one window"
    );
    filter.assert_drops("strike 3 of the new window", &frame, Reason::RateUdp);
    assert_eq!(
        filter.ban_entry(SOURCE_V4).map(|ban| ban.until_ns),
        Some(filter.now_ns() + 10 * SECOND_NS),
        "three strikes in one window ban"
    );
}

#[test]
fn aggregate_syn_limit_drops_floods_from_many_sources() {
    let mut filter = Filter::load();
    filter.update(|settings| settings.aggregate[Class::Syn as usize] = packets(5, 2));

    filter.assert_passes("syn from 192.0.2.1", &syn(SOURCE_V4, HTTPS));
    filter.assert_passes("syn from 2001:db8::1", &syn(SOURCE_V6, HTTPS));
    filter.assert_drops(
        "syn from 192.0.2.2, third of all sources",
        &syn(OTHER_V4, HTTPS),
        Reason::FloodSyn,
    );
    filter.assert_drops(
        "syn from 2001:db8:0:1::1, fourth of all sources",
        &syn(OTHER_64_V6, HTTPS),
        Reason::FloodSyn,
    );
    filter.assert_passes("ack: not a syn", &tcp(OTHER_V4, ACK, HTTPS));
    filter.assert_passes("udp: another class", &udp(OTHER_V4));
    assert_eq!(
        filter.source_state(SOURCE_V4, Class::Syn),
        None,
        "no per-source limit, so no per-source state"
    );

    filter.advance_clock(200 * MILLISECOND_NS);
    filter.assert_passes(
        "syn from 192.0.2.3 200 ms later (5/s)",
        &syn(THIRD_V4, HTTPS),
    );
    filter.assert_drops(
        "syn from 192.0.2.1 right after",
        &syn(SOURCE_V4, HTTPS),
        Reason::FloodSyn,
    );
}

#[test]
fn aggregate_and_source_limits_are_the_hosts_whatever_cpu_a_packet_lands_on() {
    // One bucket for every CPU: the host's limit, neither divided by the CPUs (a single-queue
    // NIC puts all traffic on one CPU) nor multiplied by them (RSS spreads a flood over all).
    let mut filter = Filter::load();
    filter.update(|settings| {
        settings.aggregate[Class::Syn as usize] = packets(5, 2);
        settings.source[Class::Udp as usize] = packets(1, 3);
    });
    pin_to_cpu(0);
    filter.assert_passes("syn 1 on the first CPU", &syn(SOURCE_V4, HTTPS));
    filter.assert_passes("udp 1 on the first CPU", &udp(SOURCE_V4));
    filter.assert_passes("udp 2 on the first CPU", &udp(SOURCE_V4));
    pin_to_cpu(1);
    filter.assert_passes("syn 2 on the second CPU", &syn(OTHER_V4, HTTPS));
    filter.assert_drops(
        "syn 3 on the second CPU: the burst of 2 is spent",
        &syn(THIRD_V4, HTTPS),
        Reason::FloodSyn,
    );
    filter.assert_passes("udp 3 on the second CPU", &udp(SOURCE_V4));
    filter.assert_drops(
        "udp 4 on the second CPU: the source's burst of 3 is spent",
        &udp(SOURCE_V4),
        Reason::RateUdp,
    );
    pin_to_cpu(0);
    filter.assert_drops(
        "syn 4 back on the first CPU",
        &syn(SOURCE_V4, HTTPS),
        Reason::FloodSyn,
    );
    filter.assert_drops(
        "udp 5 back on the first CPU",
        &udp(SOURCE_V4),
        Reason::RateUdp,
    );
}

#[test]
fn dry_run_passes_over_limit_packets_as_would_drop() {
    let mut filter = Filter::load();
    filter.update(|settings| {
        settings.flags |= FLAG_DRY_RUN;
        settings.source[Class::Udp as usize] = packets(10, 1);
    });
    for source in [IpAddr::from(SOURCE_V4), IpAddr::from(SOURCE_V6)] {
        filter.assert_passes(&format!("udp from {source} within the burst"), &udp(source));
        filter.assert_verdicts(
            &format!("udp from {source} over the burst, dry run"),
            &udp(source),
            2,
            Verdict::WouldDrop,
            Reason::RateUdp,
        );
    }
}

#[test]
fn bans_recorded_in_a_dry_run_are_ignored_once_enforcing() {
    let mut filter = Filter::load();
    filter.update(|settings| {
        banning_settings(settings);
        settings.flags |= FLAG_DRY_RUN;
    });
    let frame = udp(SOURCE_V4);
    filter.assert_passes("dry run: within the limit", &frame);
    for strike in 1..=3 {
        filter.assert_verdict(
            &format!("dry run: strike {strike}"),
            &frame,
            Verdict::WouldDrop,
            Reason::RateUdp,
        );
    }
    let dry_run_ban = Ban {
        until_ns: filter.now_ns() + 10 * SECOND_NS,
        offences: 1,
        reason: Reason::RateUdp as u16,
        flags: BAN_DRY_RUN,
    };
    assert_eq!(
        filter.ban_entry(SOURCE_V4),
        Some(dry_run_ban),
        "dry run: the third strike records a 10 s ban marked BAN_DRY_RUN"
    );
    filter.assert_verdict(
        "dry run: the banned source would be dropped",
        &frame,
        Verdict::WouldDrop,
        Reason::Banned,
    );

    // Enforcing from 1 s later: the bucket holds a token again and, by its time, the dry-run
    // ban has 9 s left.
    filter.update(|settings| {
        settings.flags &= !FLAG_DRY_RUN;
        settings.clock_ns += SECOND_NS;
    });
    filter.assert_passes(
        "enforcing: within the limit, the dry-run ban ignored",
        &frame,
    );
    for strike in 1..=3 {
        filter.assert_drops(
            &format!("enforcing: strike {strike}"),
            &frame,
            Reason::RateUdp,
        );
    }
    assert_eq!(
        filter.ban_entry(SOURCE_V4),
        Some(Ban {
            until_ns: filter.now_ns() + 10 * SECOND_NS,
            offences: 1,
            reason: Reason::RateUdp as u16,
            flags: 0,
        }),
        "enforcing: the third strike is a first offence (10 s), not a second (20 s), and \
         is not marked BAN_DRY_RUN"
    );
    filter.assert_drops("enforcing: banned", &frame, Reason::Banned);
}

/// Capacity of `BANS` in the full-table test: small, so filling it takes a moment.
const SMALL_MAX_BANS: u32 = 64;

/// `entries` in a fixed order, to compare two readings of `BANS`.
fn sorted(mut entries: Vec<(SourceKey, Ban)>) -> Vec<(SourceKey, Ban)> {
    entries.sort_by_key(|(key, _)| (key.ip_version, key.addr_be));
    entries
}

#[test]
fn a_full_ban_table_records_no_automatic_ban_and_keeps_the_manual_one() {
    let mut filter = Filter::load_with_max_bans(SMALL_MAX_BANS);
    filter.update(banning_settings);
    filter.ban(SOURCE_V4, manual_ban(u64::MAX));
    // The rest of the table: automatic bans of 198.18.0.1 and on, in force for an hour.
    let automatic = Ban {
        until_ns: START_NS + 3_600 * SECOND_NS,
        offences: 1,
        reason: Reason::RateUdp as u16,
        flags: 0,
    };
    let banned: Vec<Ipv4Addr> = (1..SMALL_MAX_BANS)
        .map(|host| Ipv4Addr::new(198, 18, 0, host as u8))
        .collect();
    for addr in &banned {
        filter.ban(*addr, automatic);
    }
    let filled = sorted(filter.ban_entries());
    assert_eq!(
        filled.len(),
        SMALL_MAX_BANS as usize,
        "one manual and {} automatic bans",
        banned.len()
    );
    match filter.try_ban(THIRD_V4, automatic) {
        Err(MapError::SyscallError(error))
            if error.io_error.raw_os_error() == Some(libc::E2BIG) => {}
        other => panic!("{BANS} of {SMALL_MAX_BANS} should be full (E2BIG), got {other:?}"),
    }

    let frame = udp(OTHER_V4);
    filter.assert_passes("table full: within the limit", &frame);
    for strike in 1..=3 {
        filter.assert_drops(
            &format!("table full: strike {strike}"),
            &frame,
            Reason::RateUdp,
        );
    }
    assert_eq!(
        filter.ban_entry(OTHER_V4),
        None,
        "table full: the third strike records no ban"
    );
    assert_eq!(
        filter.ban_events(Reason::RateUdp),
        0,
        "table full: no ban issued, none counted"
    );
    filter.assert_drops(
        "table full: after its third strike, rate-limited, not banned",
        &frame,
        Reason::RateUdp,
    );
    assert_eq!(
        sorted(filter.ban_entries()),
        filled,
        "table full: nothing evicted, the manual ban least of all"
    );
    filter.assert_drops(
        "table full: the manually banned source",
        &udp(SOURCE_V4),
        Reason::Banned,
    );

    // With room again, the same offence is recorded: strike 1 of the new count came above.
    filter.unban(banned[0]);
    for strike in 2..=3 {
        filter.assert_drops(
            &format!("room for one: strike {strike}"),
            &frame,
            Reason::RateUdp,
        );
    }
    assert_eq!(
        filter.ban_entry(OTHER_V4),
        Some(Ban {
            until_ns: filter.now_ns() + 10 * SECOND_NS,
            offences: 1,
            reason: Reason::RateUdp as u16,
            flags: 0,
        }),
        "room for one: the third strike bans"
    );
    assert_eq!(
        filter.ban_events(Reason::RateUdp),
        1,
        "room for one: counted"
    );
    filter.assert_drops("room for one: banned", &frame, Reason::Banned);
}

#[test]
fn allowlist_bypasses_bans_and_rate_limits() {
    let mut filter = Filter::load();
    filter.update(|settings| {
        settings.source[Class::Udp as usize] = packets(1, 1);
        settings.source[Class::Syn as usize] = packets(1, 1);
    });
    filter.ban(SOURCE_V4, manual_ban(u64::MAX));
    filter.ban(NETWORK_V6, manual_ban(u64::MAX));
    filter.ban(OTHER_V4, manual_ban(u64::MAX));
    filter.allow("192.0.2.1/32");
    filter.allow("2001:db8::/64");

    for source in [IpAddr::from(SOURCE_V4), IpAddr::from(SOURCE_V6)] {
        for (name, frame) in [("udp", udp(source)), ("syn", syn(source, HTTPS))] {
            filter.assert_verdicts(
                &format!("{name} from allowlisted, banned {source}, over its limit"),
                &frame,
                3,
                Verdict::Pass,
                Reason::Allowlist,
            );
        }
    }
    assert_eq!(
        filter.source_state(SOURCE_V4, Class::Udp),
        None,
        "allowlisted sources never reach the rate stage"
    );
    filter.assert_drops(
        "udp from banned 192.0.2.2, not allowlisted",
        &udp(OTHER_V4),
        Reason::Banned,
    );
}

#[test]
fn crowdsec_decisions_drop_their_sources_unless_allowlisted() {
    let mut filter = Filter::load();
    let decided = |filter: &mut Filter, cidr: &str| {
        filter.insert_prefix(CROWDSEC_V4, CROWDSEC_V6, cidr);
    };
    // An Ip decision of each family and a Range; neighbours pass.
    decided(&mut filter, "192.0.2.1/32");
    decided(&mut filter, "2001:db8::/64");
    decided(&mut filter, "198.51.100.0/24");
    for source in [
        IpAddr::from(SOURCE_V4),
        IpAddr::from(SOURCE_V6),
        "198.51.100.200".parse().expect("literal"),
    ] {
        filter.assert_drops(
            &format!("udp from {source}, under a decision"),
            &udp(source),
            Reason::CrowdSec,
        );
    }
    filter.assert_verdicts(
        "udp from 192.0.2.2, no decision",
        &udp(OTHER_V4),
        1,
        Verdict::Pass,
        Reason::Pass,
    );
    // The operator's denylist is checked first and keeps its own reason.
    filter.insert_prefix(
        filter_common::maps::DENY_V4,
        filter_common::maps::DENY_V6,
        "198.51.100.0/25",
    );
    filter.assert_drops(
        "udp from 198.51.100.7, denied and decided",
        &udp("198.51.100.7".parse::<Ipv4Addr>().expect("literal")),
        Reason::Denylist,
    );
    // The allowlist wins over a decision.
    filter.allow("192.0.2.1/32");
    filter.assert_verdicts(
        "udp from allowlisted 192.0.2.1, under a decision",
        &udp(SOURCE_V4),
        1,
        Verdict::Pass,
        Reason::Allowlist,
    );
}

#[test]
fn the_live_clock_is_monotonic_time_read_through_the_calibrated_jiffies() {
    let mut filter = Filter::load();
    filter.update(|settings| settings.flags &= !FLAG_FIXED_CLOCK);
    let calibrated = moat::clock::set_up(&mut filter.loaded.ebpf)
        .unwrap_or_else(|error| panic!("calibrating the program's clock: {error}"));
    assert!(
        TICK_RATES
            .iter()
            .any(|&hz| tick_ns(hz) == calibrated.jiffy_ns),
        "a jiffy of {} ns is no kernel's tick",
        calibrated.jiffy_ns
    );
    filter.update(|settings| settings.clock = calibrated);
    // The program's time is CLOCK_MONOTONIC at the last tick: a ban that ends 10 s from now
    // holds, one that ended a jiffy and 20 ms ago is over.
    let now = moat::bans::monotonic_ns();
    filter.ban(SOURCE_V4, manual_ban(now + 10 * SECOND_NS));
    filter.ban(
        OTHER_V4,
        manual_ban(now - calibrated.jiffy_ns - 20 * MILLISECOND_NS),
    );
    filter.assert_drops("a ban 10 s from its end", &udp(SOURCE_V4), Reason::Banned);
    filter.assert_passes("a ban a jiffy and 20 ms over", &udp(OTHER_V4));
    // The program reads the settings' clock base: an hour on, by its base, the first ban is
    // over too.
    let later = ClockBase {
        base_ns: calibrated.base_ns + 3_600 * SECOND_NS,
        ..calibrated
    };
    for (what, value, reason) in [
        ("an hour later by the clock base", later, Reason::Pass),
        // Uncalibrated, it reads the kernel's coarse clock, the same time.
        (
            "with the clock base cleared",
            ClockBase::default(),
            Reason::Banned,
        ),
        ("calibrated again", calibrated, Reason::Banned),
    ] {
        filter.update(|settings| settings.clock = value);
        if reason == Reason::Pass {
            filter.assert_passes(what, &udp(SOURCE_V4));
        } else {
            filter.assert_drops(what, &udp(SOURCE_V4), reason);
        }
    }
}
