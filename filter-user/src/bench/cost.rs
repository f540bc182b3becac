//! Cost per packet of every path through moat, by BPF_PROG_TEST_RUN, beside the trivial
//! XDP_DROP floor and xdp-filter with an equivalent rule where one exists, all timed in the same
//! rounds: case after case, round after round, median reported.
//!
//! moat runs the shipped policy on a fixed clock with its denylist holding the large list
//! (1,000,000 prefixes per family by default), as an origin under attack would. Each case is
//! checked, not assumed: the counters must show every timed packet under the case's own
//! `(verdict, reason)`, and xdp-filter must return the case's action, or the run fails. A few
//! cases need a setting changed to reach their path with one repeated frame (the same source
//! every time); each says which. Live traffic is the throughput section's.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
};

use filter_common::{
    Class, Reason, Settings, Verdict,
    maps::{ALLOW_V4, ALLOW_V6, DENY_V4, DENY_V6, PROGRAM_NAME},
    rate::Limit,
    source::BAN_CLASS,
};

use super::{
    BenchError, Options,
    frames::{self, Shape, Tagging},
    measure::{self, Floor, START_NS, Subject, XDP_DROP, XDP_PASS},
    median, prefixes,
    tools::{self, Policy as XdpFilterPolicy, XdpFilter},
};
use crate::{
    cidr::Cidr,
    netns::{NetNs, unique_iface},
};

/// Repetitions of each case before it is timed (drains buckets, warms caches).
const WARMUP: u32 = 10_000;

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
fn origin(family: Family) -> IpAddr {
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
    pub const DENIED: u8 = 200;
}

/// A setting a case changes from the shipped policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tweak {
    /// The shipped policy as is.
    None,
    /// No automatic bans, so a source over its limit keeps taking the rate-limit path
    /// instead of the ban path.
    NoAutoBan,
    /// The per-source SYN limit out of reach, so one repeated source reaches the aggregate
    /// limit, as each of a spoofed flood's sources does.
    SourceUnlimited,
    /// Both SYN limits out of reach, so a new connection passes every stage.
    SynUnlimited,
}

/// One path of the cost table.
#[derive(Clone, Copy, Debug)]
struct Path {
    name: &'static str,
    shape: Shape,
    tagging: Tagging,
    source: u8,
    tweak: Tweak,
    verdict: Verdict,
    reason: Reason,
    /// xdp-filter's equivalent: the policy of the program to run, the action it must return,
    /// and the rule, as the report states it.
    xdp_filter: Option<(XdpFilterPolicy, u32, &'static str)>,
    note: &'static str,
}

/// Every path, in the table's order.
const PATHS: [Path; 11] = [
    Path {
        name: "plain pass (established TCP)",
        shape: Shape::Established,
        tagging: Tagging::Untagged,
        source: sources::ESTABLISHED,
        tweak: Tweak::None,
        verdict: Verdict::Pass,
        reason: Reason::Pass,
        xdp_filter: Some((XdpFilterPolicy::Allow, XDP_PASS, "no rule matches")),
        note: "allowlist and denylist trie misses, bans miss, TCP flag, fragment and port checks",
    },
    Path {
        name: "full pipeline pass (new connection)",
        shape: Shape::Syn,
        tagging: Tagging::Untagged,
        source: sources::NEW_CONNECTION,
        tweak: Tweak::SynUnlimited,
        verdict: Verdict::Pass,
        reason: Reason::Pass,
        xdp_filter: None,
        note: "every stage: lists, ban, sanity, per-source and aggregate SYN buckets (limits raised)",
    },
    Path {
        name: "allowlist hit",
        shape: Shape::Syn,
        tagging: Tagging::Untagged,
        source: sources::ALLOWED,
        tweak: Tweak::None,
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
        verdict: Verdict::Drop,
        reason: Reason::Denylist,
        xdp_filter: Some((
            XdpFilterPolicy::Allow,
            XDP_DROP,
            "`ip --mode src` (one exact address: xdp-filter has no prefixes)",
        )),
        note: "allowlist miss, then a hit in the 1,000,000-prefix trie",
    },
    Path {
        name: "ban hit",
        shape: Shape::Syn,
        tagging: Tagging::Untagged,
        source: sources::BANNED,
        tweak: Tweak::None,
        verdict: Verdict::Drop,
        reason: Reason::Banned,
        xdp_filter: Some((XdpFilterPolicy::Allow, XDP_DROP, "`ip --mode src`")),
        note: "both trie misses, then the bans hash",
    },
    Path {
        name: "per-source rate-limit drop (SYN)",
        shape: Shape::Syn,
        tagging: Tagging::Untagged,
        source: sources::RATE_LIMITED,
        tweak: Tweak::NoAutoBan,
        verdict: Verdict::Drop,
        reason: Reason::RateSyn,
        xdp_filter: None,
        note: "automatic bans off, else the source is banned after 200 strikes",
    },
    Path {
        name: "aggregate SYN limit drop",
        shape: Shape::Syn,
        tagging: Tagging::Untagged,
        source: sources::FLOODING,
        tweak: Tweak::SourceUnlimited,
        verdict: Verdict::Drop,
        reason: Reason::FloodSyn,
        xdp_filter: None,
        note: "source tracked (per-source limit raised), verified-source miss, aggregate bucket",
    },
    Path {
        name: "reflection drop (UDP from port 53)",
        shape: Shape::DnsAnswer,
        tagging: Tagging::Untagged,
        source: sources::REFLECTOR,
        tweak: Tweak::None,
        verdict: Verdict::Drop,
        reason: Reason::Reflection,
        xdp_filter: Some((
            XdpFilterPolicy::Allow,
            XDP_DROP,
            "`port --mode src --proto udp 53`",
        )),
        note: "as plain pass, then the ports array and a trusted-upstream trie miss",
    },
    Path {
        name: "malformed (TCP header cut short)",
        shape: Shape::Truncated,
        tagging: Tagging::Untagged,
        source: sources::MALFORMED,
        tweak: Tweak::None,
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
        verdict: Verdict::Pass,
        reason: Reason::Pass,
        xdp_filter: Some((XdpFilterPolicy::Allow, XDP_PASS, "no rule matches")),
        note: "as plain pass, two tags",
    },
];

/// One row of the cost table: a path's median cost per packet, in ns.
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
    /// xdp-filter, IPv4, where it has an equivalent rule.
    pub xdp_filter_v4: Option<f64>,
    /// xdp-filter, IPv6.
    pub xdp_filter_v6: Option<f64>,
    /// xdp-filter's rule.
    pub xdp_filter_rule: Option<&'static str>,
}

/// The cost section's result.
#[derive(Clone, Debug, PartialEq)]
pub struct CostReport {
    /// The floor, IPv4 frame, ns per packet.
    pub floor_v4: f64,
    /// The floor, IPv6 frame.
    pub floor_v6: f64,
    /// One row per path.
    pub rows: Vec<CostRow>,
    /// Deny prefixes loaded per family.
    pub deny_prefixes: usize,
    /// Repetitions per timed run.
    pub repeat: u32,
    /// Timed runs per case.
    pub rounds: usize,
    /// Whether xdp-filter ran through libxdp's dispatcher (its own program otherwise).
    pub xdp_filter_program: String,
}

/// What runs a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    Moat(Tweak),
    Floor,
    XdpFilter(XdpFilterPolicy),
}

/// One timed case: a runner, a frame and what it must do.
struct Case {
    label: String,
    runner: Runner,
    family: Family,
    /// Index into [`PATHS`]; none for the floor.
    path: Option<usize>,
    frame: Vec<u8>,
    expect: (Verdict, Reason, u32),
    samples: Vec<f64>,
}

impl Case {
    /// Whether this is `moat` (or xdp-filter) on path `path` in `family`.
    fn is(&self, moat: bool, family: Family, path: Option<usize>) -> bool {
        self.family == family
            && self.path == path
            && match self.runner {
                Runner::Moat(_) => moat,
                Runner::XdpFilter(_) => !moat,
                Runner::Floor => path.is_none(),
            }
    }
}

/// The settings of `tweak`, from the shipped ones.
fn tweaked(shipped: Settings, tweak: Tweak) -> Settings {
    let mut settings = shipped;
    let syn = Class::Syn as usize;
    match tweak {
        Tweak::None => {}
        Tweak::NoAutoBan => settings.ban_after_strikes = 0,
        Tweak::SourceUnlimited => settings.source[syn] = UNREACHED,
        Tweak::SynUnlimited => {
            settings.source[syn] = UNREACHED;
            settings.aggregate[syn] = UNREACHED;
        }
    }
    settings
}

/// Loads moat with `deny` prefixes per family plus each case's state: the allowed and denied
/// networks and the banned source.
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
    }
    subject.insert_prefixes(ALLOW_V4, ALLOW_V6, &allowed)?;
    subject.insert_prefixes(DENY_V4, DENY_V6, &denied)?;
    progress("cost: allowed, denied and banned the cases' sources");
    Ok(())
}

/// Fills moat's IPv6 denylist with `count` prefixes (the IPv4 one is filled by the scaling
/// section as it grows).
pub fn fill_v6_denylist(subject: &mut Subject, count: usize) -> Result<(), BenchError> {
    let list = prefixes::v6(count, 0x6d6f_6174_0006);
    subject.insert_prefixes(DENY_V4, DENY_V6, &list)
}

/// Measures every path on `subject` (prepared by [`prepare_subject`], denylists filled).
pub fn measure(
    subject: &mut Subject,
    deny_prefixes: usize,
    options: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<CostReport, BenchError> {
    tools::check_xdp_filter_unused()?;
    let floor = Floor::load()?;
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
            origin(family),
            Tagging::Untagged,
        );
        cases.push(Case {
            label: format!("floor {family:?}"),
            runner: Runner::Floor,
            family,
            path: None,
            frame: floor_frame,
            expect: (Verdict::Drop, Reason::Pass, XDP_DROP),
            samples: Vec::new(),
        });
        for (index, path) in PATHS.iter().enumerate() {
            let frame = frames::build(
                path.shape,
                source(family, path.source),
                origin(family),
                path.tagging,
            );
            let action = match path.verdict {
                Verdict::Drop => XDP_DROP,
                _ => XDP_PASS,
            };
            if let Some((policy, xdp_action, _)) = path.xdp_filter {
                cases.push(Case {
                    label: format!("xdp-filter {family:?} {}", path.name),
                    runner: Runner::XdpFilter(policy),
                    family,
                    path: Some(index),
                    frame: frame.clone(),
                    expect: (path.verdict, path.reason, xdp_action),
                    samples: Vec::new(),
                });
            }
            cases.push(Case {
                label: format!("moat {family:?} {}", path.name),
                runner: Runner::Moat(path.tweak),
                family,
                path: Some(index),
                frame,
                expect: (path.verdict, path.reason, action),
                samples: Vec::new(),
            });
        }
    }

    let shipped = subject.shipped();
    // One CPU throughout: the aggregate buckets are per CPU, and so are caches.
    let pinned = tools::Pinned::to_cpu(0)?;
    let result = (|| -> Result<(), BenchError> {
        for round in 0..=options.rounds {
            super::check_interrupted()?;
            // Round 0 is the warm-up.
            let repeat = if round == 0 { WARMUP } else { options.repeat };
            for case in &mut cases {
                let timing = match case.runner {
                    Runner::Floor => {
                        let program = floor.program()?;
                        let fd = measure::program_fd(program, "the floor")?;
                        measure::time_run(fd, "the floor", &case.frame, repeat)?
                    }
                    Runner::XdpFilter(policy) => {
                        let fd = match policy {
                            XdpFilterPolicy::Allow => &allow_program,
                            XdpFilterPolicy::Deny => &deny_program,
                        };
                        measure::time_run(fd.as_fd(), "xdp-filter", &case.frame, repeat)?
                    }
                    Runner::Moat(tweak) => {
                        subject.set_settings(tweaked(shipped, tweak))?;
                        // The aggregate SYN bucket is shared by every case: full where the
                        // case must pass it, empty everywhere else.
                        let full = tweak == Tweak::SynUnlimited;
                        subject.set_aggregate(Class::Syn, full)?;
                        let before = subject.counters()?;
                        let program = subject.program()?;
                        let fd = measure::program_fd(program, PROGRAM_NAME)?;
                        let timing = measure::time_run(fd, PROGRAM_NAME, &case.frame, repeat)?;
                        let after = subject.counters()?;
                        if round > 0 {
                            measure::check_counted(
                                &case.label,
                                &before,
                                &after,
                                case.expect.0,
                                case.expect.1,
                                u64::from(repeat),
                            )?;
                        }
                        timing
                    }
                };
                if round > 0 {
                    if timing.action != case.expect.2 {
                        return Err(BenchError::WrongPath {
                            case: case.label.clone(),
                            expected: measure::action_name(case.expect.2).to_string(),
                            got: measure::action_name(timing.action).to_string(),
                        });
                    }
                    case.samples.push(timing.ns_per_packet);
                }
            }
            if round > 0 {
                progress(&format!("cost: round {round} of {} done", options.rounds));
            }
        }
        Ok(())
    })();
    subject.set_settings(shipped)?;
    drop(pinned);
    result?;

    let find = |moat: bool, family: Family, path: Option<usize>| -> Option<f64> {
        cases
            .iter()
            .find(|case| case.is(moat, family, path))
            .map(|case| median(&case.samples))
    };
    let rows = PATHS
        .iter()
        .enumerate()
        .map(|(index, path)| CostRow {
            path: path.name,
            note: path.note,
            moat_v4: find(true, Family::V4, Some(index)).unwrap_or(0.0),
            moat_v6: find(true, Family::V6, Some(index)).unwrap_or(0.0),
            xdp_filter_v4: find(false, Family::V4, Some(index)),
            xdp_filter_v6: find(false, Family::V6, Some(index)),
            xdp_filter_rule: path.xdp_filter.map(|(_, _, rule)| rule),
        })
        .collect();
    Ok(CostReport {
        floor_v4: find(false, Family::V4, None).unwrap_or(0.0),
        floor_v6: find(false, Family::V6, None).unwrap_or(0.0),
        rows,
        deny_prefixes,
        repeat: options.repeat,
        rounds: options.rounds,
        xdp_filter_program,
    })
}

/// The name of the XDP program in `ip -j link` output.
fn program_name(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value[0]["xdp"]["prog"]["name"].as_str().map(str::to_string)
}
