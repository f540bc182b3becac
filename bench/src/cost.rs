//! Cost per packet of every path through moat, by BPF_PROG_TEST_RUN, beside two floors — the
//! trivial XDP_DROP program, and "parse + count", moat's own parser and counter with no policy
//! — and xdp-filter with an equivalent rule where one exists, all timed in the same rounds: case
//! after case in short runs ([`CHUNKS`] per round, the fastest the round's figure), round after
//! round, median reported, each round's figure kept so ratios can be paired round by round.
//!
//! moat runs the shipped policy on a fixed clock with its denylist holding the large list
//! (1,000,000 prefixes per family by default), as an origin under attack would. Each case is
//! checked, not assumed: the counters must show every timed packet under the case's own
//! `(verdict, reason)`, the parse + count floor must count every timed frame as parsed
//! (`pass/pass` on its own counters), and xdp-filter must return the case's action, or the run
//! fails. A few
//! cases need a setting changed to reach their path with one repeated frame (the same source
//! every time), or a source marked verified; each says which. Cases run from a thread inside
//! [`Origin`]'s namespace, whose sockets moat's lookups find. A SYN moat answers is timed per
//! call (see [`Method::Calls`]). Live traffic is the throughput section's.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsFd as _,
};

use aya::programs::ProgramFd;

use filter_common::{
    Class, Reason, Settings, Verdict,
    maps::{ALLOW_V4, ALLOW_V6, DENY_V4, DENY_V6, PROGRAM_NAME},
    rate::Limit,
    settings::{FLAG_TCP_SOCKETS, FLAG_UDP_SOCKETS, SYN_COOKIES_OFF},
    source::BAN_CLASS,
};

use super::{
    BenchError, Options,
    frames::{self, Shape, Tagging},
    measure::{self, Floor, FloorKind, START_NS, Subject, XDP_DROP, XDP_PASS, XDP_TX},
    median,
    origin::Origin,
    prefixes,
    tools::{self, Policy as XdpFilterPolicy, XdpFilter},
};
use moat::{
    cidr::Cidr,
    netns::{NetNs, unique_iface},
    stats::Snapshot,
};

/// Repetitions of each case before it is timed (drains buckets, warms caches).
const WARMUP: u32 = 10_000;

/// Short runs each round's repetitions of a case are split into. Within a round every case
/// runs one short run in turn, `CHUNKS` times over, so the cases a ratio pairs are timed
/// milliseconds apart rather than seconds; the round's figure is a case's fastest short run,
/// since what a noisy machine adds (an interrupt, a stolen slice) only ever adds time.
pub const CHUNKS: u32 = 10;

/// A limit no benchmark reaches on the fixed clock (its burst outlasts every repetition).
const UNREACHED: Limit = Limit {
    pps: 1_000_000_000,
    burst_packets: 1_000_000_000,
    bps: 0,
    burst_bytes: 0,
};

/// The address family of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Sources of the cases: 198.19.`third`.7 and 2001:db8:0:`third`::7.
fn source(family: Family, third: u8) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(198, 19, third, 7)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            u16::from(third),
            0,
            0,
            0,
            7,
        )),
    }
}

/// The origin every frame goes to.
fn origin_address(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    }
}

/// The prefix around a case's source: its /24 or its /64.
fn network_of(family: Family, third: u8) -> Cidr {
    match family {
        Family::V4 => Cidr::V4 {
            addr: [198, 19, third, 0],
            prefix: 24,
        },
        Family::V6 => Cidr::V6 {
            addr: Ipv6Addr::new(0x2001, 0xdb8, 0, u16::from(third), 0, 0, 0, 0).octets(),
            prefix: 64,
        },
    }
}

/// Third octet (IPv4) or fourth group (IPv6) of each path's source.
mod sources {
    pub const ALLOWED: u8 = 50;
    pub const RATE_LIMITED: u8 = 60;
    pub const FLOODING: u8 = 70;
    pub const NEW_CONNECTION: u8 = 80;
    pub const ESTABLISHED: u8 = 90;
    pub const BANNED: u8 = 100;
    pub const REFLECTOR: u8 = 110;
    pub const MALFORMED: u8 = 120;
    pub const ANSWERED: u8 = 130;
    pub const STRAY: u8 = 140;
    pub const CLOSED_ACK: u8 = 150;
    pub const CLOSED_UDP: u8 = 160;
    pub const DENIED: u8 = 200;
}

/// Sources that completed a handshake (in `VERIFIED`): their SYNs go to the per-source limit.
const VERIFIED_SOURCES: [u8; 3] = [
    sources::NEW_CONNECTION,
    sources::RATE_LIMITED,
    sources::ESTABLISHED,
];

/// A setting a case changes from the shipped policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tweak {
    /// The shipped policy as is.
    None,
    /// The host's SYN bucket (the cap on answered cookies) out of reach, the per-source SYN
    /// limit as shipped: a verified source that has spent its own burst is answered with a
    /// cookie.
    CookieCapUnreached,
    /// SYN cookies off, the one setting under which the aggregate SYN bucket gates unverified
    /// SYNs to a listener (with cookies on it only caps the answers).
    CookiesOff,
    /// Both SYN limits out of reach, so a verified source's new connection passes every stage
    /// and the cap on answered cookies is never reached.
    SynUnlimited,
    /// `require_sockets = false`: no socket is asked for, so a datagram from a reflector port
    /// is dropped unless its source is a trusted upstream, answers to the host's own queries
    /// included, as xdp-filter's source-port rule drops it.
    SocketsNotRequired,
}

impl Tweak {
    /// Whether the case must find the host's SYN bucket full.
    fn opens_syn_aggregate(self) -> bool {
        matches!(self, Tweak::SynUnlimited | Tweak::CookieCapUnreached)
    }
}

/// How a case is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// One BPF_PROG_TEST_RUN call of `repeat` repetitions.
    Repeat,
    /// `repeat / CALLS_DIVISOR` calls of one repetition, less the floor's calls timed the same
    /// way: the program rewrites the frame into its answer, and the repetitions of one call
    /// share the buffer, so the second would judge the first one's SYN-ACK.
    Calls,
}

/// Per-call cases make this many times fewer calls than repeated cases make repetitions
/// (each call costs microseconds of its own, which the floor's calls take back out).
const CALLS_DIVISOR: u32 = 10;

/// One path of the cost table.
#[derive(Clone, Copy, Debug)]
struct Path {
    name: &'static str,
    shape: Shape,
    tagging: Tagging,
    source: u8,
    tweak: Tweak,
    method: Method,
    verdict: Verdict,
    reason: Reason,
    /// xdp-filter's equivalent: the policy of the program to run, the action it must return,
    /// and the rule, as the report states it.
    xdp_filter: Option<(XdpFilterPolicy, u32, &'static str)>,
    note: &'static str,
}

impl Path {
    /// The XDP action moat must return on this path.
    const fn action(&self) -> u32 {
        match self.verdict {
            Verdict::Drop => XDP_DROP,
            Verdict::Answered => XDP_TX,
            _ => XDP_PASS,
        }
    }
}

/// Every path, in the table's order. A SYN answered with a cookie comes before the ACK with a
/// bad one, so the listener has answered with cookies seconds before (as under a flood) and
/// the kernel checks the ACK's cookie in full.
const PATHS: [Path; 16] = [
    Path {
        name: "plain pass (established TCP)",
        shape: Shape::Established,
        tagging: Tagging::Untagged,
        source: sources::ESTABLISHED,
        tweak: Tweak::None,
        method: Method::Repeat,
        verdict: Verdict::Pass,
        reason: Reason::Pass,
        xdp_filter: Some((XdpFilterPolicy::Allow, XDP_PASS, "no rule matches")),
        note: "a verified-source hit in the cache (the daemon marks the peers of the host's \
               connections every second) whose way records the source found on no list under \
               the lists' current generation, so no list index read and no trie walk, then the \
               TCP flag check, and the segment passes: no bans, socket, port or rate stage",
    },
    Path {
        name: "full pipeline pass (new connection, verified source)",
        shape: Shape::Syn,
        tagging: Tagging::Untagged,
        source: sources::NEW_CONNECTION,
        tweak: Tweak::SynUnlimited,
        method: Method::Repeat,
        verdict: Verdict::Pass,
        reason: Reason::Pass,
        xdp_filter: None,
        note: "a source that completed a handshake: lists, verified-source hit (no bans \
               lookup), sanity, per-source SYN bucket (limit raised)",
    },
    Path {
        name: "SYN answered with a cookie",
        shape: Shape::Syn,
        tagging: Tagging::Untagged,
        source: sources::ANSWERED,
        tweak: Tweak::SynUnlimited,
        method: Method::Calls,
        verdict: Verdict::Answered,
        reason: Reason::SynCookie,
        xdp_filter: None,
        note: "verified-source miss, the bans summary (no ban in the source's slot: no bans \
               lookup), listener lookup, the kernel's cookie \
               (tcp_syncookies = 2), \
               SYN-ACK written in place, XDP_TX; timed per call, the floor's calls taken out",
    },
    Path {
        name: "ACK with a bad cookie dropped",
        shape: Shape::StrayAck,
        tagging: Tagging::Untagged,
        source: sources::STRAY,
        tweak: Tweak::None,
        method: Method::Repeat,
        verdict: Verdict::Drop,
        reason: Reason::CookieBad,
        xdp_filter: None,
        note: "the bans summary (no bans lookup), then a socket lookup that finds only the \
               listener, whose cookie check fails",
    },
    Path {
        name: "ACK/RST for no connection dropped",
        shape: Shape::AckClosed,
        tagging: Tagging::Untagged,
        source: sources::CLOSED_ACK,
        tweak: Tweak::None,
        method: Method::Repeat,
        verdict: Verdict::Drop,
        reason: Reason::NoSocket,
        xdp_filter: None,
        note: "a bare ACK to port 81: the bans summary (no bans lookup), then the socket lookup \
               finds nothing",
    },
    Path {
        name: "UDP to a closed port dropped",
        shape: Shape::Udp(frames::CLOSED_PORT),
        tagging: Tagging::Untagged,
        source: sources::CLOSED_UDP,
        tweak: Tweak::None,
        method: Method::Repeat,
        verdict: Verdict::Drop,
        reason: Reason::PortClosed,
        xdp_filter: None,
        note: "port 81: reflection checks, the bans summary (no bans lookup), then the UDP \
               socket lookup finds nothing",
    },
    Path {
        name: "allowlist hit",
        shape: Shape::Syn,
        tagging: Tagging::Untagged,
        source: sources::ALLOWED,
        tweak: Tweak::None,
        method: Method::Repeat,
        verdict: Verdict::Pass,
        reason: Reason::Allowlist,
        xdp_filter: Some((
            XdpFilterPolicy::Deny,
            XDP_PASS,
            "deny policy, `ip --mode src` rule",
        )),
        note: "first lookup",
    },
    Path {
        name: "denylist hit (1,000,000 prefixes)",
        shape: Shape::Syn,
        tagging: Tagging::Untagged,
        source: sources::DENIED,
        tweak: Tweak::None,
        method: Method::Repeat,
        verdict: Verdict::Drop,
        reason: Reason::Denylist,
        xdp_filter: Some((
            XdpFilterPolicy::Allow,
            XDP_DROP,
            "`ip --mode src` (one exact address: xdp-filter has no prefixes)",
        )),
        note: "allowlist miss, then the source's /24 found covered by a denylisted /24 in its \
               cover byte: no walk of the 1,000,000-prefix trie",
    },
    Path {
        name: "ban hit",
        shape: Shape::Syn,
        tagging: Tagging::Untagged,
        source: sources::BANNED,
        tweak: Tweak::None,
        method: Method::Repeat,
        verdict: Verdict::Drop,
        reason: Reason::Banned,
        xdp_filter: Some((XdpFilterPolicy::Allow, XDP_DROP, "`ip --mode src`")),
        note: "both trie misses, the source's slot in the bans summary (a ban there), then the \
               bans hash",
    },
    Path {
        name: "SYN past a verified source's own limit, answered with a cookie",
        shape: Shape::Syn,
        tagging: Tagging::Untagged,
        source: sources::RATE_LIMITED,
        tweak: Tweak::CookieCapUnreached,
        method: Method::Calls,
        verdict: Verdict::Answered,
        reason: Reason::SynCookie,
        xdp_filter: None,
        note: "a source that completed a handshake and spent its SYN burst (the warm-up spends \
               it): verified-source hit, its empty SYN bucket, then as any first-time visitor's \
               SYN (anyone can send SYNs in its name, so none is dropped for its limit): \
               listener lookup, the kernel's cookie, SYN-ACK written in place, XDP_TX; timed per \
               call",
    },
    Path {
        name: "aggregate SYN limit drop (syn_cookies = \"off\")",
        shape: Shape::Syn,
        tagging: Tagging::Untagged,
        source: sources::FLOODING,
        tweak: Tweak::CookiesOff,
        method: Method::Repeat,
        verdict: Verdict::Drop,
        reason: Reason::FloodSyn,
        xdp_filter: None,
        note: "only with cookies off does the aggregate bucket gate unverified SYNs: \
               verified-source miss, listener lookup, empty bucket",
    },
    Path {
        name: "reflection drop (UDP from port 53)",
        shape: Shape::DnsAnswer,
        tagging: Tagging::Untagged,
        source: sources::REFLECTOR,
        tweak: Tweak::None,
        method: Method::Repeat,
        verdict: Verdict::Drop,
        reason: Reason::Reflection,
        xdp_filter: None,
        note: "the list index (no trie walk), then the ports array, a trusted-upstream trie \
               miss and a UDP socket lookup (an answer to a socket of the host's connected to \
               its sender passes), before any per-source lookup; xdp-filter has no such rule \
               (its source-port rule drops those answers too: the next row is moat's)",
    },
    Path {
        name: "reflection drop (UDP from port 53), require_sockets = false",
        shape: Shape::DnsAnswer,
        tagging: Tagging::Untagged,
        source: sources::REFLECTOR,
        tweak: Tweak::SocketsNotRequired,
        method: Method::Repeat,
        verdict: Verdict::Drop,
        reason: Reason::Reflection,
        xdp_filter: Some((
            XdpFilterPolicy::Allow,
            XDP_DROP,
            "`port --mode src --proto udp 53`",
        )),
        note: "xdp-filter's rule: every datagram from port 53 dropped, answers to the host's \
               own queries too, but from a trusted upstream (none listed here); the list index, \
               the ports array and the trusted-upstream trie miss",
    },
    Path {
        name: "malformed (TCP header cut short)",
        shape: Shape::Truncated,
        tagging: Tagging::Untagged,
        source: sources::MALFORMED,
        tweak: Tweak::None,
        method: Method::Repeat,
        verdict: Verdict::Drop,
        reason: Reason::Malformed,
        xdp_filter: None,
        note: "parser only (xdp-filter passes it)",
    },
    Path {
        name: "802.1Q VLAN, established TCP",
        shape: Shape::Established,
        tagging: Tagging::Vlan,
        source: sources::ESTABLISHED,
        tweak: Tweak::None,
        method: Method::Repeat,
        verdict: Verdict::Pass,
        reason: Reason::Pass,
        xdp_filter: Some((XdpFilterPolicy::Allow, XDP_PASS, "no rule matches")),
        note: "as plain pass, one tag",
    },
    Path {
        name: "QinQ (802.1ad + 802.1Q), established TCP",
        shape: Shape::Established,
        tagging: Tagging::QinQ,
        source: sources::ESTABLISHED,
        tweak: Tweak::None,
        method: Method::Repeat,
        verdict: Verdict::Pass,
        reason: Reason::Pass,
        xdp_filter: Some((XdpFilterPolicy::Allow, XDP_PASS, "no rule matches")),
        note: "as plain pass, two tags",
    },
];

/// The namespace the cost and scaling cases run in: the origin's addresses, listeners on
/// [`frames::ORIGIN_PORT`] and a real connection from each family's established source
/// (from [`frames::CLIENT_PORT`]), so the plain-pass and VLAN cases match a socket.
pub fn origin() -> Result<Origin, BenchError> {
    let connections: Vec<(SocketAddr, IpAddr)> = [Family::V4, Family::V6]
        .into_iter()
        .map(|family| {
            (
                SocketAddr::new(source(family, sources::ESTABLISHED), frames::CLIENT_PORT),
                origin_address(family),
            )
        })
        .collect();
    Origin::create(
        &[origin_address(Family::V4), origin_address(Family::V6)],
        frames::ORIGIN_PORT,
        &connections,
    )
}

/// One row of the cost table: a path's median cost per packet, in ns, and each round's.
#[derive(Clone, Debug, PartialEq)]
pub struct CostRow {
    /// The path.
    pub path: &'static str,
    /// What the path does, or what was changed to reach it.
    pub note: &'static str,
    /// moat, IPv4.
    pub moat_v4: f64,
    /// moat, IPv6.
    pub moat_v6: f64,
    /// moat, IPv4, each round (in round order).
    pub moat_v4_rounds: Vec<f64>,
    /// moat, IPv6, each round.
    pub moat_v6_rounds: Vec<f64>,
    /// xdp-filter, IPv4, where it has an equivalent rule.
    pub xdp_filter_v4: Option<f64>,
    /// xdp-filter, IPv6.
    pub xdp_filter_v6: Option<f64>,
    /// xdp-filter, IPv4, each round (empty without an equivalent rule).
    pub xdp_filter_v4_rounds: Vec<f64>,
    /// xdp-filter, IPv6, each round.
    pub xdp_filter_v6_rounds: Vec<f64>,
    /// xdp-filter's rule.
    pub xdp_filter_rule: Option<&'static str>,
}

/// The cost section's result.
#[derive(Clone, Debug, PartialEq)]
pub struct CostReport {
    /// The XDP_DROP floor, IPv4 frame, ns per packet.
    pub floor_v4: f64,
    /// The XDP_DROP floor, IPv6 frame.
    pub floor_v6: f64,
    /// The parse + count floor, IPv4 frame (the XDP_DROP floor's), ns per packet.
    pub parse_count_v4: f64,
    /// The parse + count floor, IPv6 frame.
    pub parse_count_v6: f64,
    /// The parse + count floor, IPv4, each round (in round order).
    pub parse_count_v4_rounds: Vec<f64>,
    /// The parse + count floor, IPv6, each round.
    pub parse_count_v6_rounds: Vec<f64>,
    /// One row per path.
    pub rows: Vec<CostRow>,
    /// Deny prefixes loaded per family.
    pub deny_prefixes: usize,
    /// Repetitions per timed run.
    pub repeat: u32,
    /// Timed runs per case in a round, of which the fastest is the round's figure.
    pub chunks: u32,
    /// Rounds.
    pub rounds: usize,
    /// Calls per timed run of a per-call case.
    pub calls: u32,
    /// Whether xdp-filter ran through libxdp's dispatcher (its own program otherwise).
    pub xdp_filter_program: String,
}

/// What runs a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    Moat(Tweak),
    Floor(FloorKind),
    XdpFilter(XdpFilterPolicy),
}

/// Whose samples to find, whatever its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Moat,
    Floor(FloorKind),
    XdpFilter,
}

/// One timed case: a runner, a frame and what it must do.
struct Case {
    label: String,
    runner: Runner,
    method: Method,
    family: Family,
    /// Index into [`PATHS`]; none for the floors.
    path: Option<usize>,
    frame: Vec<u8>,
    expect: (Verdict, Reason, u32),
    /// Each round's figure: the fastest of its short runs.
    samples: Vec<f64>,
    /// The current round's short runs.
    chunks: Vec<f64>,
}

impl Case {
    /// Whether this is `who` on path `path` (none for a floor) in `family`, timed by `method`.
    fn is(&self, who: Who, family: Family, path: Option<usize>, method: Method) -> bool {
        self.family == family
            && self.path == path
            && self.method == method
            && match self.runner {
                Runner::Moat(_) => who == Who::Moat,
                Runner::XdpFilter(_) => who == Who::XdpFilter,
                Runner::Floor(kind) => who == Who::Floor(kind),
            }
    }
}

/// The settings of `tweak`, from the shipped ones.
fn tweaked(shipped: Settings, tweak: Tweak) -> Settings {
    let mut settings = shipped;
    let syn = Class::Syn as usize;
    match tweak {
        Tweak::None => {}
        Tweak::CookieCapUnreached => settings.aggregate[syn] = UNREACHED,
        Tweak::CookiesOff => settings.syn_cookies = SYN_COOKIES_OFF,
        Tweak::SynUnlimited => {
            settings.source[syn] = UNREACHED;
            settings.aggregate[syn] = UNREACHED;
        }
        Tweak::SocketsNotRequired => settings.flags &= !(FLAG_TCP_SOCKETS | FLAG_UDP_SOCKETS),
    }
    settings
}

/// Gives `subject` each case's state: the allowed and denied networks, the banned source and
/// the verified ones.
pub fn prepare_subject(
    subject: &mut Subject,
    progress: &mut dyn FnMut(&str),
) -> Result<(), BenchError> {
    let mut allowed = Vec::new();
    let mut denied = Vec::new();
    for family in [Family::V4, Family::V6] {
        allowed.push(network_of(family, sources::ALLOWED));
        denied.push(network_of(family, sources::DENIED));
        let until = START_NS + 3_600 * 1_000_000_000;
        let key = measure::source_key(
            source(family, sources::BANNED),
            BAN_CLASS,
            subject.shipped().v6_source_prefix,
        );
        subject.ban(key, until)?;
        for third in VERIFIED_SOURCES {
            subject.verify(source(family, third))?;
        }
    }
    subject.insert_prefixes(ALLOW_V4, ALLOW_V6, &allowed)?;
    subject.insert_prefixes(DENY_V4, DENY_V6, &denied)?;
    subject.sweep_bans()?;
    progress("cost: allowed, denied, banned and verified the cases' sources");
    Ok(())
}

/// Fills moat's IPv6 denylist with `count` prefixes (the IPv4 one is filled by the scaling
/// section as it grows).
pub fn fill_v6_denylist(subject: &mut Subject, count: usize) -> Result<(), BenchError> {
    let list = prefixes::v6(count, 0x6d6f_6174_0006);
    subject.insert_prefixes(DENY_V4, DENY_V6, &list)
}

/// Measures every path on `subject` (prepared by [`prepare_subject`], denylists filled), from a
/// thread inside `origin` (made by [`origin`]).
pub fn measure(
    subject: &mut Subject,
    origin: &Origin,
    deny_prefixes: usize,
    options: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<CostReport, BenchError> {
    tools::check_xdp_filter_unused()?;
    let floors = (
        Floor::load_kind(FloorKind::XdpDrop)?,
        Floor::load_kind(FloorKind::ParseCount)?,
    );
    // xdp-filter, one policy after the other on one interface. A program stays loaded, with
    // the maps it was given, while its file descriptor is held, so each is unloaded from the
    // interface as soon as it is opened (xdp-filter keeps one policy per namespace, and its
    // pins would mix otherwise).
    let ns = NetNs::create("moat-bench-x")?;
    let end = unique_iface("mbx");
    let peer = unique_iface("mbxp");
    ns.ip(&["link", "add", &end, "type", "veth", "peer", "name", &peer])?;
    ns.ip(&["link", "set", &end, "up"])?;
    let (allow_program, xdp_filter_program) = {
        let filter = XdpFilter::load(&ns, &end, "skb", XdpFilterPolicy::Allow)?;
        for family in [Family::V4, Family::V6] {
            for third in [sources::DENIED, sources::BANNED] {
                filter.source_address(source(family, third))?;
            }
        }
        filter.udp_source_port(53)?;
        let name = ns
            .ip(&["-j", "link", "show", "dev", &end])
            .ok()
            .and_then(|json| program_name(&json))
            .unwrap_or_else(|| "xdp-filter".to_string());
        (filter.program()?, name)
    };
    let deny_program = {
        let filter = XdpFilter::load(&ns, &end, "skb", XdpFilterPolicy::Deny)?;
        for family in [Family::V4, Family::V6] {
            filter.source_address(source(family, sources::ALLOWED))?;
        }
        filter.program()?
    };

    let mut cases = Vec::new();
    for family in [Family::V4, Family::V6] {
        let floor_frame = frames::build(
            Shape::Established,
            source(family, sources::ESTABLISHED),
            origin_address(family),
            Tagging::Untagged,
        );
        for method in [Method::Repeat, Method::Calls] {
            cases.push(Case {
                label: format!("floor {family:?} {method:?}"),
                runner: Runner::Floor(FloorKind::XdpDrop),
                method,
                family,
                path: None,
                frame: floor_frame.clone(),
                expect: (Verdict::Drop, Reason::Pass, XDP_DROP),
                samples: Vec::new(),
                chunks: Vec::new(),
            });
        }
        // Parsed in full and counted as moat counts a frame it passes, then dropped.
        cases.push(Case {
            label: format!("parse + count {family:?}"),
            runner: Runner::Floor(FloorKind::ParseCount),
            method: Method::Repeat,
            family,
            path: None,
            frame: floor_frame.clone(),
            expect: (Verdict::Pass, Reason::Pass, XDP_DROP),
            samples: Vec::new(),
            chunks: Vec::new(),
        });
        for (index, path) in PATHS.iter().enumerate() {
            let frame = frames::build(
                path.shape,
                source(family, path.source),
                origin_address(family),
                path.tagging,
            );
            if let Some((policy, xdp_action, _)) = path.xdp_filter {
                cases.push(Case {
                    label: format!("xdp-filter {family:?} {}", path.name),
                    runner: Runner::XdpFilter(policy),
                    method: path.method,
                    family,
                    path: Some(index),
                    frame: frame.clone(),
                    expect: (path.verdict, path.reason, xdp_action),
                    samples: Vec::new(),
                    chunks: Vec::new(),
                });
            }
            cases.push(Case {
                label: format!("moat {family:?} {}", path.name),
                runner: Runner::Moat(path.tweak),
                method: path.method,
                family,
                path: Some(index),
                frame,
                expect: (path.verdict, path.reason, path.action()),
                samples: Vec::new(),
                chunks: Vec::new(),
            });
        }
    }

    let shipped = subject.shipped();
    let mut result = Ok(());
    for round in 0..=options.rounds {
        if result.is_err() {
            break;
        }
        // Round 0 is the warm-up, one run of each case.
        let (repeat, chunks) = if round == 0 {
            (WARMUP, 1)
        } else {
            ((options.repeat / CHUNKS).max(1), CHUNKS)
        };
        result = super::check_interrupted().and_then(|()| {
            origin.enter(|| {
                // One CPU throughout: the aggregate buckets are per CPU, and so are caches.
                let _pinned = tools::Pinned::to_cpu(0)?;
                for _ in 0..chunks {
                    for case in &mut cases {
                        time_case(
                            case,
                            subject,
                            (&floors.0, &floors.1),
                            (&allow_program, &deny_program),
                            repeat,
                            round > 0,
                        )?;
                    }
                }
                for case in &mut cases {
                    if let Some(fastest) = case.chunks.iter().copied().reduce(f64::min) {
                        case.samples.push(fastest);
                    }
                    case.chunks.clear();
                }
                Ok(())
            })
        });
        // After the warm-up, which spends the rate-limited source's SYN burst: each answered
        // case is checked to write its SYN-ACK.
        if result.is_ok() && round == 0 {
            result = check_answers(subject, origin, &cases);
        }
        if result.is_ok() && round > 0 {
            progress(&format!("cost: round {round} of {} done", options.rounds));
        }
    }
    subject.set_settings(shipped)?;
    result?;

    let find = |who: Who, family: Family, path: Option<usize>, method: Method| -> Vec<f64> {
        cases
            .iter()
            .find(|case| case.is(who, family, path, method))
            .map(|case| case.samples.clone())
            .unwrap_or_default()
    };
    let xdp_drop = Who::Floor(FloorKind::XdpDrop);
    let parse_count = Who::Floor(FloorKind::ParseCount);
    let floor_v4 = median(&find(xdp_drop, Family::V4, None, Method::Repeat));
    let floor_v6 = median(&find(xdp_drop, Family::V6, None, Method::Repeat));
    // Each round's figure of a path; for a per-call case, the floor's cost per packet plus
    // what its calls cost over the floor's calls of the same round.
    let moat_rounds = |family: Family, index: usize, method: Method| -> Vec<f64> {
        let samples = find(Who::Moat, family, Some(index), method);
        match method {
            Method::Repeat => samples,
            Method::Calls => {
                let floor_calls = find(xdp_drop, family, None, Method::Calls);
                let floor = if family == Family::V4 {
                    floor_v4
                } else {
                    floor_v6
                };
                samples
                    .iter()
                    .zip(&floor_calls)
                    .map(|(moat, floor_call)| floor + (moat - floor_call))
                    .collect()
            }
        }
    };
    let xdp_filter_rounds = |family: Family, index: usize, method: Method| -> Vec<f64> {
        find(Who::XdpFilter, family, Some(index), method)
    };
    let optional_median = |samples: &[f64]| (!samples.is_empty()).then(|| median(samples));
    let rows = PATHS
        .iter()
        .enumerate()
        .map(|(index, path)| {
            let moat_v4_rounds = moat_rounds(Family::V4, index, path.method);
            let moat_v6_rounds = moat_rounds(Family::V6, index, path.method);
            let xdp_filter_v4_rounds = xdp_filter_rounds(Family::V4, index, path.method);
            let xdp_filter_v6_rounds = xdp_filter_rounds(Family::V6, index, path.method);
            CostRow {
                path: path.name,
                note: path.note,
                moat_v4: median(&moat_v4_rounds),
                moat_v6: median(&moat_v6_rounds),
                xdp_filter_v4: optional_median(&xdp_filter_v4_rounds),
                xdp_filter_v6: optional_median(&xdp_filter_v6_rounds),
                moat_v4_rounds,
                moat_v6_rounds,
                xdp_filter_v4_rounds,
                xdp_filter_v6_rounds,
                xdp_filter_rule: path.xdp_filter.map(|(_, _, rule)| rule),
            }
        })
        .collect();
    let parse_count_v4_rounds = find(parse_count, Family::V4, None, Method::Repeat);
    let parse_count_v6_rounds = find(parse_count, Family::V6, None, Method::Repeat);
    Ok(CostReport {
        floor_v4,
        floor_v6,
        parse_count_v4: median(&parse_count_v4_rounds),
        parse_count_v6: median(&parse_count_v6_rounds),
        parse_count_v4_rounds,
        parse_count_v6_rounds,
        rows,
        deny_prefixes,
        repeat: (options.repeat / CHUNKS).max(1),
        chunks: CHUNKS,
        rounds: options.rounds,
        calls: (options.repeat / CHUNKS / CALLS_DIVISOR).max(1),
        xdp_filter_program,
    })
}

/// Runs each answered case's frame once and checks that moat returns it with XDP_TX as a
/// SYN-ACK to the SYN's sender (its ports swapped).
fn check_answers(subject: &mut Subject, origin: &Origin, cases: &[Case]) -> Result<(), BenchError> {
    let shipped = subject.shipped();
    for case in cases {
        let (Runner::Moat(tweak), Verdict::Answered) = (case.runner, case.expect.0) else {
            continue;
        };
        subject.set_settings(tweaked(shipped, tweak))?;
        subject.set_aggregate(Class::Syn, true)?;
        let fd = measure::program_fd(subject.program()?, PROGRAM_NAME)?;
        let (action, out) = origin.enter(|| measure::run_once(fd, PROGRAM_NAME, &case.frame))?;
        let answer = frames::tcp_ports_and_flags(&out);
        let expected = Some((frames::ORIGIN_PORT, frames::CLIENT_PORT, true, true));
        if action != XDP_TX || answer != expected {
            return Err(BenchError::WrongPath {
                case: case.label.clone(),
                expected: "XDP_TX with a SYN-ACK from port 80 to the SYN's port".to_string(),
                got: format!(
                    "{} with (source port, destination port, SYN, ACK) = {answer:?}",
                    measure::action_name(action)
                ),
            });
        }
    }
    subject.set_settings(shipped)
}

/// Runs `timed` between two readings of `counters` and, when `record` is set, checks that the
/// `packets` it ran were all counted on `case`'s expected path.
fn counted<T>(
    case: &Case,
    record: bool,
    packets: u32,
    counters: impl Fn() -> Result<Snapshot, BenchError>,
    timed: impl FnOnce() -> Result<T, BenchError>,
) -> Result<T, BenchError> {
    let before = counters()?;
    let timing = timed()?;
    let after = counters()?;
    if record {
        measure::check_counted(
            &case.label,
            &before,
            &after,
            case.expect.0,
            case.expect.1,
            u64::from(packets),
        )?;
    }
    Ok(timing)
}

/// Times `case` once with `repeat` repetitions (or `repeat / CALLS_DIVISOR` calls) and, when
/// `record` is set, checks its path and keeps the sample among the round's short runs.
/// `floors` are the XDP_DROP floor and the parse + count one.
fn time_case(
    case: &mut Case,
    subject: &mut Subject,
    (xdp_drop, parse_count): (&Floor, &Floor),
    (allow_program, deny_program): (&ProgramFd, &ProgramFd),
    repeat: u32,
    record: bool,
) -> Result<(), BenchError> {
    let calls = (repeat / CALLS_DIVISOR).max(1);
    let time = |fd, name: &str, frame: &[u8]| match case.method {
        Method::Repeat => measure::time_run(fd, name, frame, repeat),
        Method::Calls => measure::time_calls(fd, name, frame, calls),
    };
    let packets = match case.method {
        Method::Repeat => repeat,
        Method::Calls => calls,
    };
    let timing = match case.runner {
        Runner::Floor(FloorKind::XdpDrop) => {
            let fd = measure::program_fd(xdp_drop.program()?, "the floor")?;
            time(fd, "the floor", &case.frame)?
        }
        Runner::Floor(FloorKind::ParseCount) => {
            let name = FloorKind::ParseCount.label();
            let fd = measure::program_fd(parse_count.program()?, name)?;
            counted(
                case,
                record,
                packets,
                || parse_count.counters(),
                || time(fd, name, &case.frame),
            )?
        }
        Runner::XdpFilter(policy) => {
            let fd = match policy {
                XdpFilterPolicy::Allow => allow_program,
                XdpFilterPolicy::Deny => deny_program,
            };
            time(fd.as_fd(), "xdp-filter", &case.frame)?
        }
        Runner::Moat(tweak) => {
            subject.set_settings(tweaked(subject.shipped(), tweak))?;
            // The aggregate SYN bucket is shared by every case: full where the case must pass
            // it, empty everywhere else.
            subject.set_aggregate(Class::Syn, tweak.opens_syn_aggregate())?;
            // The refusal budget too: empty, as a flood for no socket leaves it.
            subject.spend_refusals()?;
            let fd = measure::program_fd(subject.program()?, PROGRAM_NAME)?;
            counted(
                case,
                record,
                packets,
                || subject.counters(),
                || time(fd, PROGRAM_NAME, &case.frame),
            )?
        }
    };
    if record {
        if timing.action != case.expect.2 {
            return Err(BenchError::WrongPath {
                case: case.label.clone(),
                expected: measure::action_name(case.expect.2).to_string(),
                got: measure::action_name(timing.action).to_string(),
            });
        }
        case.chunks.push(timing.ns_per_packet);
    }
    Ok(())
}

/// The name of the XDP program in `ip -j link` output.
fn program_name(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value[0]["xdp"]["prog"]["name"].as_str().map(str::to_string)
}
