//! Throughput over veth: floods from spoofed sources, sent by moat's live-frames generator
//! (`lab::flood::Generator`) out of a client namespace's veth end, and each receiver in turn on
//! the origin namespace's end. A SYN flood to the origin's listening port meets the trivial
//! XDP_DROP floor, the parse + count floor (moat's parser and counter, no policy, every frame
//! dropped), `moat run` with a deny rule, with the port closed and with its shipped policy
//! alone (answering SYN cookies with XDP_TX), xdp-filter, nftables at netdev ingress and at inet prerouting priority -300, and no
//! filter at all (the kernel stack answers with SYN cookies). Where the origin answers (moat's
//! cookies, the bare stack's SYN-ACKs), an XDP_DROP on the client's end takes the answers: veth
//! would lose XDP_TX frames without a program there, and a real uplink only transmits them, so
//! the client's stack discarding them is kept out of the origin's figure. An ACK flood at no connection (to
//! the same port) meets the floor, `moat run` with its shipped policy and nftables at netdev
//! ingress. Receivers take turns round by round (A B A B), so a noisy moment hurts them all
//! alike; each figure is the median over rounds, and each round's figures are kept so ratios can
//! be paired round by round.
//!
//! A veth end receives what its peer transmits on the sender's own CPU (NAPI runs in the
//! sender's softirq), so sender and receiver share one pinned core, and the figure is that
//! core's CPU time per packet — the sending thread's plus the core's ksoftirqd's, so that other
//! processes preempting the sender on a shared machine do not count. One more turn per flood
//! and round sends with nothing able to receive (GRO off, no XDP: the frames are refused at
//! transmit), which is the sender's own cost; a receiver's cost per packet is the difference,
//! and its receive-side rate the inverse. What a receiver disposed of is counted on its own side
//! (`ethtool -S` XDP drops, moat's counters for answered SYNs, nftables counters, the
//! interface's received packets for the bare stack). The floods' addresses are 198.18.0.0/15
//! and 2001:db8::/32 only, between namespaces this module creates and removes.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket},
    time::{Duration, Instant},
};

use aya::{
    maps::{Map, MapData},
    programs::XdpMode,
};
use filter_common::{
    Class, Reason, Verdict,
    classify::tcp_flags::ACK,
    flood::{FloodConfig, L4_TCP, L4_UDP},
    maps::SOURCES,
    rate::{Buckets, Limit, Pace, RateState, ticks},
    source::SourceKey,
    sources::{Placed, sets_for},
};

use super::{
    BenchError, Options,
    measure::{self, Floor, FloorKind},
    median, memory,
    scaling::SOURCE_SIZES,
    tools::{self, Policy as XdpFilterPolicy, TempFile, XdpFilter},
};
use moat::{
    cidr::Cidr,
    config::{Config, MIN_BURST_BYTES},
    control::{ListKind, PinnedList},
    netns::{Endpoint, NetNs, quiet_veth, unique_iface},
    pins::PinDir,
    stats::Snapshot,
};
use moat_lab::{
    flood::{FloodPlan, Generator},
    process::Daemon,
    traffic,
};

/// The flood's sources: 198.19.0.0/16, 65,536 addresses.
pub const FLOOD_SOURCES: &str = "198.19.0.0/16";
/// First source of the flood.
const FLOOD_BASE: [u8; 4] = [198, 19, 0, 0];
/// Number of sources.
const FLOOD_COUNT: u32 = 65_536;
/// The origin's port the flood targets.
pub const TARGET_PORT: u16 = 80;

/// Which flood a receiver meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloodKind {
    /// TCP SYNs to the target port.
    Syn,
    /// Bare TCP ACKs to the target port, belonging to no connection.
    Ack,
}

impl FloodKind {
    /// Both floods, in the order their receivers take turns.
    pub const ALL: [FloodKind; 2] = [FloodKind::Syn, FloodKind::Ack];

    /// How the report names it.
    pub const fn label(self) -> &'static str {
        match self {
            FloodKind::Syn => "SYN flood",
            FloodKind::Ack => "ACK flood",
        }
    }
}

/// What sits on the origin's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receiver {
    /// Nothing: the kernel stack, with a listener on the target port (SYN cookies).
    Stack,
    /// The trivial XDP_DROP program.
    Floor,
    /// moat's parser and counter with no policy, dropping every frame.
    ParseCount,
    /// `moat run` with the shipped policy and the flood's prefix on the denylist.
    MoatDeny,
    /// `moat run` with the target port closed (`ports.tcp = [22, 443]`).
    MoatClosedPort,
    /// `moat run` with the shipped policy and no rule: its listener's queue full, moat answers
    /// each SYN with a SYN cookie (XDP_TX), taken by an XDP_DROP on the client's end.
    MoatCookies,
    /// xdp-filter dropping TCP to the target port.
    XdpFilter,
    /// nftables: `ip saddr 198.19.0.0/16 drop` at netdev ingress.
    NftNetdev,
    /// nftables: the same rule at inet prerouting, priority -300.
    NftPrerouting,
    /// The ACK flood: the trivial XDP_DROP program.
    AckFloor,
    /// The ACK flood: `moat run` with the shipped policy (no socket matches; the cookie check at
    /// the listener fails).
    AckMoat,
    /// The ACK flood: nftables' saddr drop at netdev ingress.
    AckNftNetdev,
}

impl Receiver {
    /// Every receiver, in the order they take turns.
    pub const ALL: [Receiver; 12] = [
        Receiver::Floor,
        Receiver::ParseCount,
        Receiver::MoatDeny,
        Receiver::MoatClosedPort,
        Receiver::MoatCookies,
        Receiver::XdpFilter,
        Receiver::NftNetdev,
        Receiver::NftPrerouting,
        Receiver::Stack,
        Receiver::AckFloor,
        Receiver::AckMoat,
        Receiver::AckNftNetdev,
    ];

    /// How the report names it (within its flood's table).
    pub const fn label(self) -> &'static str {
        match self {
            Receiver::Stack => "no filter (kernel stack, SYN cookies)",
            Receiver::Floor | Receiver::AckFloor => "floor: XDP_DROP everything",
            Receiver::ParseCount => "floor: parse + count (moat's parser and counter), drop",
            Receiver::MoatDeny => "moat, deny 198.19.0.0/16",
            Receiver::MoatClosedPort => "moat, port 80 closed (ports.tcp = [22, 443])",
            Receiver::MoatCookies => "moat, shipped policy: SYN cookies answered",
            Receiver::XdpFilter => "xdp-filter, drop tcp port 80",
            Receiver::NftNetdev | Receiver::AckNftNetdev => {
                "nftables netdev ingress, saddr 198.19.0.0/16 drop"
            }
            Receiver::NftPrerouting => "nftables inet prerouting -300, saddr drop",
            Receiver::AckMoat => "moat, shipped policy: no connection (cookie_bad)",
        }
    }

    /// The flood it meets.
    pub const fn flood(self) -> FloodKind {
        match self {
            Receiver::AckFloor | Receiver::AckMoat | Receiver::AckNftNetdev => FloodKind::Ack,
            _ => FloodKind::Syn,
        }
    }

    /// The floor of its flood.
    pub const fn floor(self) -> Receiver {
        match self.flood() {
            FloodKind::Syn => Receiver::Floor,
            FloodKind::Ack => Receiver::AckFloor,
        }
    }

    /// nftables at netdev ingress on its flood.
    pub const fn nftables(self) -> Receiver {
        match self.flood() {
            FloodKind::Syn => Receiver::NftNetdev,
            FloodKind::Ack => Receiver::AckNftNetdev,
        }
    }
}

/// One receiver's figures (medians over rounds).
#[derive(Clone, Debug, PartialEq)]
pub struct ReceiverResult {
    /// Which receiver.
    pub receiver: Receiver,
    /// Packets per second the one core sent and received.
    pub core_pps: f64,
    /// The receiver's CPU time per packet: the core's time per packet less the sender's own.
    pub receive_ns: f64,
    /// Share of the frames the receiver dropped (the stack: received; moat answering cookies:
    /// answered).
    pub disposed_share: f64,
    /// Each round's core CPU time per packet (sender and receiver), in ns.
    pub rounds_ns: Vec<f64>,
    /// Each round's receive-side CPU time per packet (that round's sender-alone cost taken
    /// out), in ns: ratios pair these round by round.
    pub rounds_receive_ns: Vec<f64>,
}

impl ReceiverResult {
    /// Packets per second the receiving side alone would handle on one core.
    pub fn receive_pps(&self) -> f64 {
        1e9 / self.receive_ns.max(1e-3)
    }
}

/// moat on a spoofed IPv6 UDP flood whose sources are all tracked already, at one table size.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackedPoint {
    /// Sources in the flood, the first this many of the tracked ones, all tracked before any
    /// flood starts.
    pub sources: u32,
    /// moat's CPU time per packet on the receiving side, ns (median over rounds).
    pub receive_ns: f64,
    /// Share of the flood moat dropped.
    pub disposed_share: f64,
    /// Each round's receive-side CPU time per packet, ns (in round order).
    pub rounds_receive_ns: Vec<f64>,
    /// One dependent random load among this many sets of a buffer the table's size, ns
    /// ([`crate::memory::random_access_ns`]): what a lookup's memory access costs here.
    pub access_ns: f64,
}

/// The throughput section's result.
#[derive(Clone, Debug, PartialEq)]
pub struct ThroughputReport {
    /// One entry per receiver, in [`Receiver::ALL`] order.
    pub receivers: Vec<ReceiverResult>,
    /// moat over ever more tracked sources (random source per packet).
    pub tracked: Vec<TrackedPoint>,
    /// The sender's own CPU time per packet, in ns, per flood (in [`FloodKind::ALL`] order).
    pub sender_ns: Vec<f64>,
    /// How long each flood lasted.
    pub flood: Duration,
    /// Rounds per receiver.
    pub rounds: usize,
    /// The attach mode of the XDP receivers.
    pub xdp_mode: &'static str,
}

impl ThroughputReport {
    /// The result of `receiver`.
    pub fn get(&self, receiver: Receiver) -> Option<&ReceiverResult> {
        self.receivers.iter().find(|r| r.receiver == receiver)
    }

    /// `receiver`'s receive-side rate over `reference`'s: the median ratio (of the medians)
    /// and the lowest and highest ratio of one round's figures.
    pub fn speed_ratio(&self, receiver: Receiver, reference: Receiver) -> Option<Ratio> {
        let (a, b) = (self.get(receiver)?, self.get(reference)?);
        let rounds: Vec<f64> = a
            .rounds_receive_ns
            .iter()
            .zip(&b.rounds_receive_ns)
            .map(|(a, b)| b / a.max(1e-3))
            .collect();
        Some(Ratio {
            median: a.receive_pps() / b.receive_pps().max(1e-3),
            low: rounds.iter().copied().fold(f64::INFINITY, f64::min),
            high: rounds.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// A ratio of two receivers' rates, with its spread over rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio {
    /// The ratio of the two receivers' median figures.
    pub median: f64,
    /// The lowest ratio of one round's figures.
    pub low: f64,
    /// The highest.
    pub high: f64,
}

/// An origin and a client namespace joined by veth, with a listener on the origin's target
/// port; removed (with every pin `moat run` left for its interface) on drop.
pub struct Bed {
    /// The client end (the sender's).
    pub client_end: Endpoint,
    /// The origin end (the receiver's).
    pub origin_end: Endpoint,
    /// The client namespace.
    pub client: NetNs,
    /// The origin namespace.
    pub origin: NetNs,
    /// A listener on the target port, so the bare stack answers the flood as a server would.
    _listener: TcpListener,
}

/// `moat run` on the bed with its configuration file.
pub struct Moat {
    /// The daemon.
    pub daemon: Daemon,
    _config: TempFile,
}

impl Bed {
    /// Creates the namespaces, the veth pair, GRO on the origin end (so it accepts XDP_TX'd
    /// frames with no XDP program), a route back to the flood's sources and a listener.
    pub fn create() -> Result<Bed, BenchError> {
        let origin = NetNs::create("moat-bench-o")?;
        let client = NetNs::create("moat-bench-c")?;
        let origin_end = Endpoint {
            iface: unique_iface("mbo"),
            mac: [0x02, 0, 0, 0, 0x0b, 0x01],
            ipv4: Ipv4Addr::new(198, 18, 0, 1),
        };
        let client_end = Endpoint {
            iface: unique_iface("mbc"),
            mac: [0x02, 0, 0, 0, 0x0b, 0x02],
            ipv4: Ipv4Addr::new(198, 18, 0, 2),
        };
        quiet_veth(&origin, &origin_end, &client, &client_end)?;
        tools::gro(&origin, &origin_end.iface, true)?;
        origin.ip(&[
            "route",
            "add",
            FLOOD_SOURCES,
            "via",
            &client_end.ipv4.to_string(),
        ])?;
        origin.sysctl("net.ipv4.tcp_syncookies", "1")?;
        let address = SocketAddrV4::new(origin_end.ipv4, TARGET_PORT);
        let listener = origin
            .enter(|| TcpListener::bind(address))?
            .map_err(|source| BenchError::Io {
                action: "listening on",
                target: address.to_string(),
                source,
            })?;
        Ok(Bed {
            client_end,
            origin_end,
            client,
            origin,
            _listener: listener,
        })
    }

    /// The flood `kind`: SYNs, or bare ACKs belonging to no connection, to the target port
    /// from random sources (and source ports) in [`FLOOD_SOURCES`].
    pub fn plan(&self, kind: FloodKind) -> FloodPlan {
        let source = Ipv4Addr::from(FLOOD_BASE);
        let template = match kind {
            FloodKind::Syn => {
                traffic::syn_frame(&self.client_end, source, &self.origin_end, TARGET_PORT)
            }
            FloodKind::Ack => traffic::tcp_frame(
                &self.client_end,
                source,
                &self.origin_end,
                super::frames::CLIENT_PORT,
                TARGET_PORT,
                ACK,
                1_000,
                super::frames::ACK_NUMBER,
            ),
        };
        let mut src_base_be = [0u8; 16];
        src_base_be[..4].copy_from_slice(&FLOOD_BASE);
        let (l3_offset, l4_offset) = super::frames::offsets(false);
        FloodPlan {
            template,
            config: FloodConfig {
                src_base_be,
                src_count: FLOOD_COUNT,
                l3_offset,
                l4_offset,
                ip_version: 4,
                l4_kind: L4_TCP,
                random_src_port: 1,
                ..FloodConfig::default()
            },
        }
    }

    /// An IPv6 UDP flood to [`TRACKED_PORT`] from `sources` addresses in 2001:db8::/96, at
    /// random (the source port fixed, so no datagram looks like a reflected answer).
    pub fn v6_plan(&self, sources: u32) -> FloodPlan {
        let mut template = super::frames::build(
            super::frames::Shape::Udp(TRACKED_PORT),
            Ipv6Addr::from(TRACKED_BASE).into(),
            TRACKED_ORIGIN.into(),
            super::frames::Tagging::Untagged,
        );
        template[..6].copy_from_slice(&self.origin_end.mac);
        template[6..12].copy_from_slice(&self.client_end.mac);
        let (l3_offset, l4_offset) = super::frames::offsets(true);
        FloodPlan {
            template,
            config: FloodConfig {
                src_base_be: TRACKED_BASE,
                src_count: sources,
                l3_offset,
                l4_offset,
                ip_version: 6,
                l4_kind: L4_UDP,
                random_src_port: 0,
                ..FloodConfig::default()
            },
        }
    }

    /// Starts `moat run` on the origin end with `config`, in native mode.
    pub fn start_moat(&self, exe: &std::path::Path, config: &Config) -> Result<Moat, BenchError> {
        self.start_moat_toml(exe, &config.to_toml())
    }

    /// Starts `moat run` on the origin end with the configuration file `toml`, in native mode:
    /// for sections [`Config`] cannot show, such as `[crowdsec]` with its key file.
    pub fn start_moat_toml(&self, exe: &std::path::Path, toml: &str) -> Result<Moat, BenchError> {
        let file = TempFile::create("moat.toml", toml)?;
        let path = file.path().display().to_string();
        let daemon = Daemon::start(
            &self.origin,
            exe,
            &self.origin_end.iface,
            &["--mode", "native", "--config", &path],
        )?;
        Ok(Moat {
            daemon,
            _config: file,
        })
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // `moat run` leaves its counters pinned on purpose; this interface is about to vanish.
        let _ = PinDir::for_iface(&self.origin_end.iface).remove_persistent();
    }
}

/// Where a receiver's disposals are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tally {
    /// The origin end's received packets (the bare stack).
    Received,
    /// The nftables ruleset's counters.
    Nftables,
    /// The origin end's XDP drops (`ethtool -S`).
    XdpDrops,
    /// One of `moat run`'s own counters, which also checks the path taken.
    Moat(Verdict, Reason),
}

impl Receiver {
    /// Where its disposals are counted.
    const fn tally(self) -> Tally {
        match self {
            Receiver::Stack => Tally::Received,
            Receiver::NftNetdev | Receiver::NftPrerouting | Receiver::AckNftNetdev => {
                Tally::Nftables
            }
            Receiver::MoatCookies => Tally::Moat(Verdict::Answered, Reason::SynCookie),
            Receiver::AckMoat => Tally::Moat(Verdict::Drop, Reason::CookieBad),
            _ => Tally::XdpDrops,
        }
    }
}

/// What has been disposed of so far, on the counters `tally` names.
fn disposed(bed: &Bed, tally: Tally) -> Result<u64, BenchError> {
    let iface = &bed.origin_end.iface;
    match tally {
        Tally::Received => tools::rx_packets(&bed.origin, iface),
        Tally::Nftables => tools::nft_counted(&bed.origin),
        Tally::Moat(verdict, reason) => {
            Ok(Snapshot::read_pinned(iface)?.get(verdict, reason).packets)
        }
        Tally::XdpDrops => tools::queue_stat(&bed.origin, iface, "xdp_drops"),
    }
}

/// A receiver in place on the origin end; removed on drop.
enum Installed<'a> {
    /// A floor (either kind), detached when dropped.
    Floor { _attached: Floor },
    /// `moat run`, stopped by [`remove`]; with the sink for its XDP_TX answers on the client's
    /// end, detached when dropped.
    Moat(Moat, Option<Floor>),
    /// The bare stack, with the sink for its SYN-ACKs on the client's end.
    Stack { _sink: Floor },
    /// xdp-filter, unloaded when dropped.
    XdpFilter { _loaded: XdpFilter<'a> },
    /// An nftables ruleset, flushed by [`remove`].
    Nft,
}

/// Installs `receiver` on the bed's origin end.
fn install<'a>(
    bed: &'a Bed,
    receiver: Receiver,
    options: &Options,
) -> Result<Installed<'a>, BenchError> {
    let iface = bed.origin_end.iface.clone();
    Ok(match receiver {
        Receiver::Stack => Installed::Stack {
            _sink: answer_sink(bed)?,
        },
        Receiver::Floor | Receiver::AckFloor | Receiver::ParseCount => {
            let kind = if receiver == Receiver::ParseCount {
                FloorKind::ParseCount
            } else {
                FloorKind::XdpDrop
            };
            let mut floor = Floor::load_kind(kind)?;
            let program = floor.program_mut()?;
            bed.origin
                .enter(|| program.attach(&iface, XdpMode::Driver))?
                .map_err(BenchError::program("attaching", kind.label()))?;
            Installed::Floor { _attached: floor }
        }
        Receiver::MoatDeny
        | Receiver::MoatClosedPort
        | Receiver::MoatCookies
        | Receiver::AckMoat => {
            let mut config = Config::default();
            if receiver == Receiver::MoatClosedPort {
                config.ports.tcp = Some(vec![22, 443]);
            }
            let moat = bed.start_moat(&options.moat_exe, &config)?;
            if receiver == Receiver::MoatDeny {
                let cidr: Cidr = FLOOD_SOURCES.parse().map_err(|error| BenchError::Tool {
                    tool: "moat-bench",
                    problem: format!("the flood prefix: {error}"),
                })?;
                PinnedList::open(&iface, ListKind::Deny)?.add(&[cidr])?;
            }
            let sink = if receiver == Receiver::MoatCookies {
                Some(answer_sink(bed)?)
            } else {
                None
            };
            Installed::Moat(moat, sink)
        }
        Receiver::XdpFilter => {
            let filter = XdpFilter::load(&bed.origin, &iface, "native", XdpFilterPolicy::Allow)?;
            filter.tcp_port(TARGET_PORT)?;
            Installed::XdpFilter { _loaded: filter }
        }
        Receiver::NftNetdev | Receiver::AckNftNetdev => {
            tools::nft_apply(
                &bed.origin,
                &format!(
                    "table netdev moat_bench {{\n chain ingress {{\n  type filter hook ingress \
                     device \"{iface}\" priority 0; policy accept;\n  ip saddr {FLOOD_SOURCES} \
                     counter drop\n }}\n}}\n"
                ),
            )?;
            Installed::Nft
        }
        Receiver::NftPrerouting => {
            tools::nft_apply(
                &bed.origin,
                &format!(
                    "table inet moat_bench {{\n chain prerouting {{\n  type filter hook \
                     prerouting priority -300; policy accept;\n  ip saddr {FLOOD_SOURCES} \
                     counter drop\n }}\n}}\n"
                ),
            )?;
            Installed::Nft
        }
    })
}

/// The floor attached to the client's end, where it drops the answers the origin sends back
/// (XDP_TX from moat, SYN-ACKs from the stack): veth loses XDP_TX frames unless the peer has
/// an XDP program, and dropping them there costs the sending core next to nothing, as a NIC's
/// transmit would, instead of the client stack's work on answers it never asked for.
fn answer_sink(bed: &Bed) -> Result<Floor, BenchError> {
    let mut floor = Floor::load()?;
    let program = floor.program_mut()?;
    let iface = bed.client_end.iface.clone();
    bed.client
        .enter(|| program.attach(&iface, XdpMode::Driver))?
        .map_err(BenchError::program("attaching", "the answer sink"))?;
    Ok(floor)
}

/// Removes what [`install`] put in place.
fn remove(bed: &Bed, installed: Installed<'_>) -> Result<(), BenchError> {
    match installed {
        Installed::Floor { .. } | Installed::Stack { .. } | Installed::XdpFilter { .. } => Ok(()),
        Installed::Moat(moat, sink) => {
            drop(sink);
            moat.daemon.stop()?;
            Ok(())
        }
        Installed::Nft => tools::nft_flush(&bed.origin),
    }
}

/// Frames per BPF_PROG_TEST_RUN call of the generator. Every call swaps the kernel's XDP
/// dispatcher twice (each a `synchronize_rcu`, milliseconds on a VM), so calls must be long for
/// that idle time to vanish from the rate.
const CHUNK: u32 = 1 << 18;

/// The CPU the sender (and so the receiver) runs on.
const SENDER_CPU: usize = 0;

/// Upper bound on the frames one flood sends, whatever the clock says.
const MAX_FRAMES_PER_SECOND: f64 = 50e6;

/// One flood's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Flood {
    /// Frames generated.
    sent: u64,
    /// Frames the receiver dropped (the stack: received).
    disposed: u64,
    /// Wall-clock time the flood lasted.
    seconds: f64,
    /// CPU time spent on the core meanwhile by the flood: the sending thread (with the
    /// receiving softirq work it ran) plus the core's ksoftirqd, in ns.
    cpu_ns: u64,
}

/// Sends the flood for `duration` from the first CPU and counts disposals on `tally`.
fn flood_once(
    bed: &Bed,
    generator: &mut Generator,
    plan: &FloodPlan,
    tally: Tally,
    duration: Duration,
) -> Result<Flood, BenchError> {
    let before = disposed(bed, tally)?;
    let iface = bed.client_end.iface.clone();
    let max_frames = (duration.as_secs_f64() * MAX_FRAMES_PER_SECOND) as u64;
    let ksoftirqd = tools::ksoftirqd(SENDER_CPU)?;
    let (sent, seconds, cpu_ns) = bed.client.enter(|| -> Result<_, BenchError> {
        // Sender and receiver (the peer's NAPI, in this thread's softirq) on one CPU.
        tools::pin_to_cpu(SENDER_CPU)?;
        let ifindex = moat::preflight::iface_index(&iface)?;
        let softirq_before = tools::runtime_ns(ksoftirqd)?;
        let cpu_before = measure::thread_cpu_ns();
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < duration && sent < max_frames {
            generator.send(&plan.template, ifindex, CHUNK)?;
            sent += u64::from(CHUNK);
        }
        let cpu = measure::thread_cpu_ns().saturating_sub(cpu_before);
        let softirq = tools::runtime_ns(ksoftirqd)?.saturating_sub(softirq_before);
        Ok((sent, started.elapsed().as_secs_f64(), cpu + softirq))
    })??;
    let after = disposed(bed, tally)?;
    Ok(Flood {
        sent,
        disposed: after.saturating_sub(before),
        seconds,
        cpu_ns,
    })
}

/// CPU time per packet of one flood's core, in ns: CPU time, not wall time, so that other
/// processes preempting the sender on a shared machine do not count.
fn per_packet(flood: &Flood) -> f64 {
    flood.cpu_ns as f64 / flood.sent.max(1) as f64
}

/// Floods `count` times with nothing on the origin end able to take the frames (no XDP, GRO
/// off: veth refuses them at transmit), which times the sender alone.
fn sender_alone(
    bed: &Bed,
    generator: &mut Generator,
    plan: &FloodPlan,
    count: usize,
    duration: Duration,
) -> Result<Vec<Flood>, BenchError> {
    tools::gro(&bed.origin, &bed.origin_end.iface, false)?;
    let floods: Result<Vec<Flood>, BenchError> = (0..count.max(1))
        .map(|_| flood_once(bed, generator, plan, Tally::Received, duration))
        .collect();
    tools::gro(&bed.origin, &bed.origin_end.iface, true)?;
    floods
}

/// Measures every receiver, round by round.
pub fn measure(
    options: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<ThroughputReport, BenchError> {
    tools::check_xdp_filter_unused()?;
    let bed = Bed::create()?;
    let mut generator = Generator::load()?;
    let plans: Vec<FloodPlan> = FloodKind::ALL.iter().map(|&k| bed.plan(k)).collect();
    let plan_of =
        |kind: FloodKind| &plans[FloodKind::ALL.iter().position(|&k| k == kind).unwrap_or(0)];
    generator.configure(plans[0].config)?;
    let mut floods: Vec<Vec<Flood>> = vec![Vec::new(); Receiver::ALL.len()];
    let mut sender_only: Vec<Vec<Flood>> = vec![Vec::new(); FloodKind::ALL.len()];
    for round in 0..options.flood_rounds.max(1) {
        for (kind_index, kind) in FloodKind::ALL.into_iter().enumerate() {
            super::check_interrupted()?;
            let plan = plan_of(kind);
            generator.configure(plan.config)?;
            let alone = sender_alone(&bed, &mut generator, plan, 1, options.flood)?
                .into_iter()
                .next()
                .unwrap_or_default();
            progress(&format!(
                "throughput round {}: {:<10} {:<55} {:>7.1} ns per packet",
                round + 1,
                kind.label(),
                "sender alone (frames refused at transmit)",
                per_packet(&alone)
            ));
            sender_only[kind_index].push(alone);
            for (index, receiver) in Receiver::ALL.into_iter().enumerate() {
                if receiver.flood() != kind {
                    continue;
                }
                super::check_interrupted()?;
                let installed = install(&bed, receiver, options)?;
                let measured =
                    flood_once(&bed, &mut generator, plan, receiver.tally(), options.flood);
                remove(&bed, installed)?;
                let flood = measured?;
                progress(&format!(
                    "throughput round {}: {:<10} {:<55} {:>7.1} ns per packet, {:.1}% disposed of",
                    round + 1,
                    kind.label(),
                    receiver.label(),
                    per_packet(&flood),
                    flood.disposed as f64 * 100.0 / flood.sent.max(1) as f64,
                ));
                floods[index].push(flood);
            }
        }
    }
    let sender_ns: Vec<f64> = sender_only
        .iter()
        .map(|runs| median(&runs.iter().map(per_packet).collect::<Vec<_>>()))
        .collect();
    let receivers = Receiver::ALL
        .into_iter()
        .enumerate()
        .map(|(index, receiver)| {
            let runs = &floods[index];
            let kind_index = FloodKind::ALL
                .iter()
                .position(|&k| k == receiver.flood())
                .unwrap_or(0);
            let alone = &sender_only[kind_index];
            let total_ns = median(&runs.iter().map(per_packet).collect::<Vec<_>>());
            ReceiverResult {
                receiver,
                core_pps: 1e9 / total_ns.max(1e-3),
                receive_ns: (total_ns - sender_ns[kind_index]).max(0.0),
                disposed_share: median(
                    &runs
                        .iter()
                        .map(|f| f.disposed as f64 / f.sent.max(1) as f64)
                        .collect::<Vec<_>>(),
                ),
                rounds_ns: runs.iter().map(per_packet).collect(),
                rounds_receive_ns: runs
                    .iter()
                    .zip(alone)
                    .map(|(run, alone)| (per_packet(run) - per_packet(alone)).max(0.0))
                    .collect(),
            }
        })
        .collect();
    let tracked = grow_tracked(&bed, &mut generator, options, progress)?;
    Ok(ThroughputReport {
        receivers,
        tracked,
        sender_ns,
        flood: options.flood,
        rounds: options.flood_rounds.max(1),
        xdp_mode: "native",
    })
}

/// First source of the tracked-sources flood: 2001:db8::/96, sources vary in the last 32 bits.
const TRACKED_BASE: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// Where the tracked-sources flood goes: an address of the origin's (only its sockets matter).
const TRACKED_ORIGIN: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
/// The UDP port the tracked-sources flood goes to, where the origin has a socket.
pub const TRACKED_PORT: u16 = 5353;

/// The `SOURCES` key of tracked source `index` (IPv6 tracked per address), UDP class.
fn tracked_key(index: u32) -> SourceKey {
    let mut addr_be = TRACKED_BASE;
    addr_be[12..].copy_from_slice(&index.to_be_bytes());
    SourceKey {
        addr_be,
        ip_version: 6,
        class: Class::Udp as u8,
        _pad: [0; 2],
    }
}

/// Runs `moat run` with every IPv6 address its own source, a UDP socket on [`TRACKED_PORT`],
/// and room for the largest table; tracks the largest number of sources, each over its UDP
/// limit; then, in every round, floods from the first that many sources at random for each
/// size of [`SOURCE_SIZES`] in turn (A B A B), so each size's figure is paired with the
/// others' of the same round, seconds apart rather than minutes. Only traffic a
/// socket takes (and SYNs of verified sources) reaches per-source state now, so UDP to a bound
/// port is what makes the table grow; each datagram costs the socket lookup, a lookup of a
/// random tracked source and its drop (automatic bans off, so it stays on that path).
fn grow_tracked(
    bed: &Bed,
    generator: &mut Generator,
    options: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<TrackedPoint>, BenchError> {
    let largest = options.max_sources.max(1);
    let mut sizes: Vec<u32> = SOURCE_SIZES
        .iter()
        .copied()
        .filter(|&n| n < largest)
        .collect();
    sizes.push(largest);
    // One byte a second: a tracked source's first datagram (110 bytes) would need nearly two
    // minutes of refill, longer than the series runs.
    let trickle = Limit {
        pps: 0,
        burst_packets: 0,
        bps: 1,
        burst_bytes: MIN_BURST_BYTES,
    };
    let mut config = Config {
        // The table gets twice as many ways as its capacity (see `filter_common::sources`).
        max_tracked_sources: largest,
        ..Config::default()
    };
    config.bans.ipv6_prefix = 128;
    config.bans.after_strikes = 0;
    config.limits.source[Class::Udp as usize] = trickle;
    let address = SocketAddr::from((Ipv6Addr::UNSPECIFIED, TRACKED_PORT));
    let _socket = bed
        .origin
        .enter(|| UdpSocket::bind(address))?
        .map_err(|source| BenchError::Io {
            action: "binding a UDP socket to",
            target: address.to_string(),
            source,
        })?;
    // The sender's own cost for these IPv6 frames, before anything can receive them.
    let plan = bed.v6_plan(largest);
    generator.configure(plan.config)?;
    let alone = sender_alone(bed, generator, &plan, options.flood_rounds, options.flood)?;
    let sender_ns = median(&alone.iter().map(per_packet).collect::<Vec<_>>());
    let moat = bed.start_moat(&options.moat_exe, &config)?;
    let result = (|| -> Result<Vec<TrackedPoint>, BenchError> {
        let path = PinDir::for_iface(&bed.origin_end.iface).map(SOURCES);
        let data = MapData::from_pin(&path).map_err(BenchError::map("opening", SOURCES))?;
        let mut table = moat::sources::SourceTable::new(
            aya::maps::Array::try_from(Map::Array(data))
                .map_err(BenchError::map("opening", SOURCES))?,
        );
        let table_bytes = sets_for(largest) as usize * memory::SET_BYTES;
        let now_ns = moat::bans::monotonic_ns();
        // An empty byte bucket: its time runs a whole burst ahead of the clock.
        let state = RateState {
            buckets: Buckets {
                packets: 0,
                bytes: ticks(now_ns).saturating_add(Pace::of(&trickle).byte_tolerance),
            },
            ..RateState::new(now_ns)
        };
        // Every source is tracked before any flood, so the sizes can take turns in every round
        // (A B A B): a flood at one size comes from the first that many sources, at random.
        super::check_interrupted()?;
        let mut replaced = 0;
        for index in 0..largest {
            let placed = table
                .insert(&tracked_key(index), state)
                .map_err(BenchError::map("writing", SOURCES))?;
            replaced += u32::from(placed == Placed::Replaced);
        }
        if replaced > 0 {
            progress(&format!(
                "throughput: {replaced} of {largest} tracked sources found no way of their own"
            ));
        }
        // A flood's receive-side cost per packet: the sender's own taken out.
        let receive_of = |flood: &Flood| (per_packet(flood) - sender_ns).max(0.0);
        let plans: Vec<FloodPlan> = sizes.iter().map(|&size| bed.v6_plan(size)).collect();
        let mut runs: Vec<Vec<Flood>> = vec![Vec::new(); sizes.len()];
        for round in 0..options.flood_rounds.max(1) {
            for (index, plan) in plans.iter().enumerate() {
                super::check_interrupted()?;
                generator.configure(plan.config)?;
                let flood = flood_once(
                    bed,
                    generator,
                    plan,
                    Tally::Moat(Verdict::Drop, Reason::RateUdp),
                    options.flood,
                )?;
                progress(&format!(
                    "throughput round {}: moat, {} of {largest} tracked sources at random: \
                     {:.0} ns per packet",
                    round + 1,
                    sizes[index],
                    receive_of(&flood)
                ));
                runs[index].push(flood);
            }
        }
        let mut points = Vec::new();
        for (size, runs) in sizes.iter().copied().zip(runs) {
            let receive_ns =
                (median(&runs.iter().map(per_packet).collect::<Vec<_>>()) - sender_ns).max(0.0);
            let rounds_receive_ns = runs.iter().map(receive_of).collect();
            let disposed_share = median(
                &runs
                    .iter()
                    .map(|f| f.disposed as f64 / f.sent.max(1) as f64)
                    .collect::<Vec<_>>(),
            );
            let access_ns = memory::random_access_ns(table_bytes, size, u64::from(size))?;
            progress(&format!(
                "throughput: moat, {size} tracked sources at random: {receive_ns:.0} ns per \
                 packet, {:.1}% dropped; one random access among as many sets: \
                 {access_ns:.0} ns",
                disposed_share * 100.0
            ));
            points.push(TrackedPoint {
                sources: size,
                receive_ns,
                disposed_share,
                rounds_receive_ns,
                access_ns,
            });
        }
        Ok(points)
    })();
    moat.daemon.stop()?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(receiver: Receiver, rounds_receive_ns: Vec<f64>) -> ReceiverResult {
        ReceiverResult {
            receiver,
            core_pps: 0.0,
            receive_ns: median(&rounds_receive_ns),
            disposed_share: 1.0,
            rounds_ns: Vec::new(),
            rounds_receive_ns,
        }
    }

    #[test]
    fn speed_ratio_pairs_rounds_and_keeps_the_medians_ratio() {
        let report = ThroughputReport {
            receivers: vec![
                result(Receiver::AckMoat, vec![100.0, 200.0, 400.0]),
                result(Receiver::AckNftNetdev, vec![300.0, 300.0, 600.0]),
            ],
            tracked: Vec::new(),
            sender_ns: vec![0.0, 0.0],
            flood: Duration::from_secs(1),
            rounds: 3,
            xdp_mode: "native",
        };
        let ratio = report
            .speed_ratio(Receiver::AckMoat, Receiver::AckNftNetdev)
            .expect("both receivers ran");
        // Medians 200 and 300 ns: 1.5x the rate; by round 3.0, 1.5 and 1.5.
        assert!((ratio.median - 1.5).abs() < 1e-9, "{ratio:?}");
        assert!((ratio.low - 1.5).abs() < 1e-9, "{ratio:?}");
        assert!((ratio.high - 3.0).abs() < 1e-9, "{ratio:?}");
        assert_eq!(report.speed_ratio(Receiver::Floor, Receiver::AckMoat), None);
    }

    #[test]
    fn each_receiver_is_compared_within_its_flood() {
        for receiver in Receiver::ALL {
            assert_eq!(receiver.floor().flood(), receiver.flood(), "{receiver:?}");
            assert_eq!(
                receiver.nftables().flood(),
                receiver.flood(),
                "{receiver:?}"
            );
        }
    }
}
