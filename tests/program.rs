//! Program tests: real frames through the XDP object the daemon ships (`moat::FILTER_OBJECT`),
//! run with `BPF_PROG_TEST_RUN`. Each case checks the XDP action and the exact counter change:
//! one packet of the frame's length under the expected `(Verdict, Reason)` and nothing else.
//!
//! They cover every parse path (VLAN/QinQ, IPv4 options and fragments, IPv6 extension headers,
//! TCP/UDP/ICMP), malformed and truncated headers, dry-run and the map names. They need root to
//! load the program and fail, never pass, without it. Attaching to interfaces, pinning and live
//! traffic belong to the veth/netns tests, not here.

mod frames;
#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use aya::maps::{Array, PerCpuArray, RingBuf};
use etherparse::Ipv6Extensions;
use filter_common::{
    COUNTER_SLOTS, Counter, Reason, Settings, Verdict, counter_index,
    maps::{
        ALL_MAPS, ALLOW_V4, ALLOW_V6, COUNTERS, DENY_V4, DENY_V6, POLICY_SLOTS, SAMPLES, SETTINGS,
    },
    sample::Sample,
    settings::FLAG_DRY_RUN,
};
use frames::{DOT1AD, DOT1Q, Frame, Packet, ROUTER_ALERT, TCP_OPTIONS, Transport};
use support::testrun::Loaded;

/// `enum xdp_action` in include/uapi/linux/bpf.h.
const XDP_ABORTED: u32 = 0;
const XDP_TX: u32 = 3;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// `BPF_PROG_TEST_RUN` refuses XDP input shorter than an Ethernet header (`ETH_HLEN`,
/// net/bpf/test_run.c), so no test can hand the program fewer bytes.
const MIN_TEST_RUN_LEN: usize = 14;

/// The loaded program and its maps, one per test so tests running in parallel never share
/// counters.
struct Filter {
    loaded: Loaded,
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
    /// Loads the shipped object and its XDP program, or panics saying why it cannot.
    fn load() -> Filter {
        Filter {
            loaded: Loaded::load(),
        }
    }

    /// Runs one frame through the program and returns its XDP action.
    fn run(&self, frame: &[u8]) -> u32 {
        assert!(
            frame.len() >= MIN_TEST_RUN_LEN,
            "BPF_PROG_TEST_RUN refuses {}-byte frames",
            frame.len()
        );
        self.loaded.run(frame)
    }

    /// A snapshot of every counter slot, summed over CPUs.
    fn counters(&self) -> Counters {
        Counters(self.loaded.counters())
    }

    /// Turns dry-run on or off through the `SETTINGS` map.
    fn set_dry_run(&mut self, on: bool) {
        let map = self
            .ebpf
            .map_mut(SETTINGS)
            .unwrap_or_else(|| panic!("the object has no map {SETTINGS:?}"));
        let mut settings = Array::<_, Settings>::try_from(map)
            .unwrap_or_else(|error| panic!("{SETTINGS} is not an array of Settings: {error}"));
        let value = Settings {
            flags: if on { FLAG_DRY_RUN } else { 0 },
            ..Settings::default()
        };
        settings
            .set(0, value, 0)
            .unwrap_or_else(|error| panic!("writing {SETTINGS}[0]: {error}"));
    }

    /// Puts `cidr` on the allowlist (`allow`) or the denylist, its list index counts raised
    /// first as every list writer does.
    fn list(&mut self, allow: bool, cidr: &str) {
        self.loaded.list(list_maps(allow), parse(cidr));
    }

    /// The list index of the loaded object.
    fn index(&self) -> moat::listindex::ListIndex {
        self.loaded.index()
    }

    /// Denylists each prefix alone and asserts `frame` is dropped under it, then unlists it and
    /// asserts the frame passes again.
    fn assert_each_denied_then_passed(&mut self, frame: &[u8], prefixes: &[(&str, &str)]) {
        for (prefix, label) in prefixes {
            self.list(false, prefix);
            self.assert_verdict(label, frame, Verdict::Drop, Reason::Denylist);
            self.unlist(false, prefix);
            self.assert_verdict(label, frame, Verdict::Pass, Reason::Pass);
        }
    }

    /// Takes `cidr` off a list, then lowers its index counts.
    fn unlist(&mut self, allow: bool, cidr: &str) {
        self.loaded.unlist(list_maps(allow), parse(cidr));
    }

    /// Takes `cidr` off a list's trie alone, leaving the list index as it is.
    fn unlist_unindexed(&mut self, allow: bool, cidr: &str) {
        self.loaded.unlist_unindexed(list_maps(allow), parse(cidr));
    }

    /// Inserts `cidr` into a list's trie alone, leaving the list index as it is.
    fn list_unindexed(&mut self, allow: bool, cidr: &str) {
        self.loaded.list_unindexed(list_maps(allow), parse(cidr));
    }

    /// Runs `frame` and asserts the action that carries out `verdict`, and that exactly one
    /// packet of `frame.len()` bytes was counted under `(verdict, reason)` and nothing else.
    fn assert_verdict(&self, case: &str, frame: &[u8], verdict: Verdict, reason: Reason) {
        let before = self.counters();
        let action = self.run(frame);
        let after = self.counters();
        let expected = action_for(verdict);
        assert_eq!(
            action,
            expected,
            "{case}: got {} for {verdict:?}/{reason:?}, want {}; frame {}",
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
            "{case}: counter change; frame {}",
            hex(frame)
        );
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

/// Runs every case in `cases` on one loaded program, expecting `(verdict, reason)` for each.
fn assert_all(cases: &[(&str, Frame)], verdict: Verdict, reason: Reason) {
    let filter = Filter::load();
    for (case, frame) in cases {
        filter.assert_verdict(case, &frame.bytes, verdict, reason);
    }
}

/// Checks the whole `frame` passes, then cuts it to every length from 14 bytes up to one byte
/// short: every header boundary, every byte inside each header and inside the payload. Each
/// cut is malformed, since it truncates a header or leaves the IP length past the frame end.
fn assert_every_cut_is_malformed(base: &str, frame: &Frame, headers: &[&str]) {
    assert_eq!(frame.header_names(), headers, "{base}: builder layout");
    let filter = Filter::load();
    filter.assert_verdict(
        &format!("{base}, whole"),
        &frame.bytes,
        Verdict::Pass,
        Reason::Pass,
    );
    for len in MIN_TEST_RUN_LEN..frame.bytes.len() {
        filter.assert_verdict(
            &format!("{base}, {}", frame.describe_cut(len)),
            &frame.bytes[..len],
            Verdict::Drop,
            Reason::Malformed,
        );
    }
}

#[test]
fn passes_well_formed_tcp_udp_and_icmp() {
    assert_all(
        &[
            ("ipv4 tcp", Packet::ipv4(Transport::Tcp).build()),
            ("ipv4 udp", Packet::ipv4(Transport::Udp).build()),
            ("ipv4 icmp echo", Packet::ipv4(Transport::IcmpEcho).build()),
            ("ipv6 tcp", Packet::ipv6(Transport::Tcp).build()),
            ("ipv6 udp", Packet::ipv6(Transport::Udp).build()),
            (
                "ipv6 icmpv6 echo",
                Packet::ipv6(Transport::IcmpEcho).build(),
            ),
            (
                "ipv4 tcp with options",
                Packet::ipv4(Transport::Tcp)
                    .tcp_options(&TCP_OPTIONS)
                    .build(),
            ),
            (
                "ipv6 tcp with options and no payload",
                Packet::ipv6(Transport::Tcp)
                    .tcp_options(&TCP_OPTIONS)
                    .payload(&[])
                    .build(),
            ),
            (
                "ipv4 udp with no payload",
                Packet::ipv4(Transport::Udp).payload(&[]).build(),
            ),
        ],
        Verdict::Pass,
        Reason::Pass,
    );
}

#[test]
fn passes_vlan_and_qinq_tagged_frames() {
    assert_all(
        &[
            (
                "802.1Q ipv4 tcp",
                Packet::ipv4(Transport::Tcp).vlan().build(),
            ),
            (
                "802.1Q ipv6 udp",
                Packet::ipv6(Transport::Udp).vlan().build(),
            ),
            (
                "802.1Q ipv4 icmp echo",
                Packet::ipv4(Transport::IcmpEcho).vlan().build(),
            ),
            ("QinQ ipv4 udp", Packet::ipv4(Transport::Udp).qinq().build()),
            ("QinQ ipv6 tcp", Packet::ipv6(Transport::Tcp).qinq().build()),
            (
                "two 802.1Q tags ipv6 icmpv6",
                Packet::ipv6(Transport::IcmpEcho)
                    .tagged(&[DOT1Q, DOT1Q])
                    .build(),
            ),
        ],
        Verdict::Pass,
        Reason::Pass,
    );
}

#[test]
fn passes_ipv4_with_options() {
    let mut all_options = ROUTER_ALERT.to_vec();
    all_options.resize(39, 1); // NOP up to the 40-byte limit...
    all_options.push(0); // ...ending with End of Options List
    assert_all(
        &[
            (
                "ipv4 ihl 6 (router alert) udp",
                Packet::ipv4(Transport::Udp)
                    .ipv4_options(&ROUTER_ALERT)
                    .build(),
            ),
            (
                "ipv4 ihl 15 tcp",
                Packet::ipv4(Transport::Tcp)
                    .ipv4_options(&all_options)
                    .build(),
            ),
            (
                "802.1Q ipv4 ihl 6 icmp echo",
                Packet::ipv4(Transport::IcmpEcho)
                    .vlan()
                    .ipv4_options(&ROUTER_ALERT)
                    .build(),
            ),
        ],
        Verdict::Pass,
        Reason::Pass,
    );
}

#[test]
fn passes_ipv6_behind_each_extension_header() {
    let hop_by_hop = Ipv6Extensions {
        hop_by_hop_options: Some(frames::hop_by_hop(8)),
        ..Default::default()
    };
    let destination = Ipv6Extensions {
        destination_options: Some(frames::destination_options(16)),
        ..Default::default()
    };
    let routing = Ipv6Extensions {
        routing: Some(frames::routing()),
        ..Default::default()
    };
    let atomic_fragment = Ipv6Extensions {
        fragment: Some(frames::atomic_fragment()),
        ..Default::default()
    };
    let authentication = Ipv6Extensions {
        auth: Some(frames::authentication()),
        ..Default::default()
    };
    let mut routing_with_final = frames::routing();
    routing_with_final.final_destination_options = Some(frames::destination_options(8));
    let all_six = Ipv6Extensions {
        hop_by_hop_options: Some(frames::hop_by_hop(8)),
        destination_options: Some(frames::destination_options(8)),
        routing: Some(routing_with_final),
        fragment: Some(frames::atomic_fragment()),
        auth: Some(frames::authentication()),
    };
    let six = Packet::ipv6(Transport::Tcp)
        .ipv6_extensions(all_six)
        .build();
    assert_eq!(
        six.header_names(),
        [
            "ethernet",
            "ipv6",
            "hop-by-hop options",
            "destination options",
            "routing",
            "fragment",
            "authentication",
            "final destination options",
            "tcp"
        ]
    );
    assert_all(
        &[
            (
                "hop-by-hop, tcp",
                Packet::ipv6(Transport::Tcp)
                    .ipv6_extensions(hop_by_hop.clone())
                    .build(),
            ),
            (
                "hop-by-hop, udp",
                Packet::ipv6(Transport::Udp)
                    .ipv6_extensions(hop_by_hop.clone())
                    .build(),
            ),
            (
                "hop-by-hop, icmpv6",
                Packet::ipv6(Transport::IcmpEcho)
                    .ipv6_extensions(hop_by_hop)
                    .build(),
            ),
            (
                "destination options, udp",
                Packet::ipv6(Transport::Udp)
                    .ipv6_extensions(destination)
                    .build(),
            ),
            (
                "routing type 2, tcp",
                Packet::ipv6(Transport::Tcp)
                    .ipv6_extensions(routing)
                    .build(),
            ),
            (
                "atomic fragment, udp",
                Packet::ipv6(Transport::Udp)
                    .ipv6_extensions(atomic_fragment)
                    .build(),
            ),
            (
                "authentication, udp",
                Packet::ipv6(Transport::Udp)
                    .ipv6_extensions(authentication)
                    .build(),
            ),
            ("six extension headers, tcp", six),
            (
                "eight destination options headers, udp",
                frames::ipv6_udp_behind_destination_options(8),
            ),
            (
                "QinQ, hop-by-hop, udp",
                Packet::ipv6(Transport::Udp)
                    .qinq()
                    .ipv6_extensions(Ipv6Extensions {
                        hop_by_hop_options: Some(frames::hop_by_hop(16)),
                        ..Default::default()
                    })
                    .build(),
            ),
        ],
        Verdict::Pass,
        Reason::Pass,
    );
}

#[test]
fn passes_first_fragments_carrying_the_whole_transport_header() {
    let segment = Packet::ipv4(Transport::Tcp).payload(&frames::payload_of(200));
    let segment_v6 = Packet::ipv6(Transport::Tcp)
        .payload(&frames::payload_of(200))
        .ipv6_extensions(Ipv6Extensions {
            hop_by_hop_options: Some(frames::hop_by_hop(8)),
            ..Default::default()
        });
    let echo = Packet::ipv4(Transport::IcmpEcho).payload(&frames::payload_of(200));
    assert_all(
        &[
            ("ipv4 tcp, first fragment", segment.fragment(0..64, true)),
            (
                "ipv6 hop-by-hop tcp, first fragment",
                segment_v6.fragment(0..64, true),
            ),
            ("ipv4 icmp echo, first fragment", echo.fragment(0..64, true)),
        ],
        Verdict::Pass,
        Reason::Pass,
    );
}

#[test]
fn passes_first_fragment_of_a_large_udp_datagram() {
    // A sender fragmenting a 1208-byte UDP datagram (a large DNS answer, say) keeps the UDP
    // length of the whole datagram in the first fragment, so it exceeds what that fragment
    // carries. That is how every fragmented UDP datagram looks, not a malformed header.
    let datagram = Packet::ipv4(Transport::Udp).payload(&frames::payload_of(1200));
    let datagram_v6 = Packet::ipv6(Transport::Udp).payload(&frames::payload_of(1200));
    assert_all(
        &[
            ("ipv4 udp, first fragment", datagram.fragment(0..1000, true)),
            (
                "ipv6 udp, first fragment",
                datagram_v6.fragment(0..1000, true),
            ),
        ],
        Verdict::Pass,
        Reason::Pass,
    );
}

#[test]
fn passes_later_fragments_without_parsing_a_transport_header() {
    let datagram = Packet::ipv4(Transport::Udp).payload(&frames::payload_of(1200));
    let datagram_v6 = Packet::ipv6(Transport::Udp).payload(&frames::payload_of(1200));
    let segment_v6 = Packet::ipv6(Transport::Tcp)
        .vlan()
        .payload(&frames::payload_of(200))
        .ipv6_extensions(Ipv6Extensions {
            routing: Some(frames::routing()),
            ..Default::default()
        });
    assert_all(
        &[
            (
                "ipv4 udp, last fragment",
                datagram.fragment(1000..1208, false),
            ),
            (
                "ipv4 udp, middle fragment",
                datagram.fragment(504..1000, true),
            ),
            (
                "ipv6 udp, last fragment",
                datagram_v6.fragment(1000..1208, false),
            ),
            (
                "802.1Q ipv6 routing tcp, later fragment",
                segment_v6.fragment(64..136, true),
            ),
        ],
        Verdict::Pass,
        Reason::Pass,
    );
}

#[test]
fn passes_padded_short_frame() {
    let short = Packet::ipv4(Transport::Udp).payload(b"hi").build();
    assert!(short.bytes.len() < 60, "the frame must need padding");
    assert_all(
        &[
            ("ipv4 udp padded to 60 bytes", short.padded_to(60)),
            (
                "802.1Q ipv4 tcp padded to 64 bytes",
                Packet::ipv4(Transport::Tcp)
                    .vlan()
                    .payload(&[])
                    .build()
                    .padded_to(64),
            ),
        ],
        Verdict::Pass,
        Reason::Pass,
    );
}

#[test]
fn passes_non_ip_uninspected() {
    assert_all(
        &[
            ("arp", frames::arp(&[])),
            ("802.1Q arp", frames::arp(&[DOT1Q])),
            ("QinQ arp", frames::arp(&[DOT1AD, DOT1Q])),
        ],
        Verdict::Pass,
        Reason::NonIp,
    );
}

#[test]
fn passes_other_transports_as_other_l4() {
    assert_all(
        &[
            ("gre over ipv4", frames::gre_over_ipv4()),
            ("icmp (protocol 1) inside ipv6", frames::icmpv4_in_ipv6()),
            ("ipv6 no next header", frames::ipv6_no_next_header()),
        ],
        Verdict::Pass,
        Reason::OtherL4,
    );
}

#[test]
fn drops_malformed_headers() {
    let tcp4 = Packet::ipv4(Transport::Tcp).build();
    let udp4 = Packet::ipv4(Transport::Udp).build();
    let udp6 = Packet::ipv6(Transport::Udp).build();
    let tcp6 = Packet::ipv6(Transport::Tcp).build();
    let options4 = Packet::ipv4(Transport::Udp)
        .ipv4_options(&ROUTER_ALERT)
        .build();
    let udp4_len = udp4.bytes.len() - udp4.span("udp").start;
    let udp6_len = udp6.bytes.len() - udp6.span("udp").start;
    let bare_tcp4 = Packet::ipv4(Transport::Tcp)
        .tcp_options(&TCP_OPTIONS)
        .payload(&[])
        .build();
    let bare_tcp6 = Packet::ipv6(Transport::Tcp)
        .tcp_options(&TCP_OPTIONS)
        .payload(&[])
        .build();
    let bare_icmp4 = Packet::ipv4(Transport::IcmpEcho).payload(&[]).build();
    let hop_by_hop_16 = Packet::ipv6(Transport::Udp)
        .ipv6_extensions(Ipv6Extensions {
            hop_by_hop_options: Some(frames::hop_by_hop(16)),
            ..Default::default()
        })
        .payload(&[])
        .build();
    let authenticated = Packet::ipv6(Transport::Udp)
        .ipv6_extensions(Ipv6Extensions {
            auth: Some(frames::authentication()),
            ..Default::default()
        })
        .build();
    let routed = Packet::ipv6(Transport::Tcp)
        .ipv6_extensions(Ipv6Extensions {
            routing: Some(frames::routing()),
            ..Default::default()
        })
        .build();
    let later_fragment = Packet::ipv4(Transport::Udp)
        .payload(&frames::payload_of(200))
        .fragment(64..208, false);
    let later_fragment_len = later_fragment.datagram_len();

    assert_all(
        &[
            (
                "three vlan tags (802.1ad, 802.1Q, 802.1Q)",
                Packet::ipv4(Transport::Udp)
                    .tagged(&[DOT1AD, DOT1Q, DOT1Q])
                    .build(),
            ),
            (
                "three 802.1Q tags",
                Packet::ipv6(Transport::Tcp)
                    .tagged(&[DOT1Q, DOT1Q, DOT1Q])
                    .build(),
            ),
            (
                "ipv4 header with version 5",
                tcp4.clone().with_ip_version(5),
            ),
            (
                "ipv4 header with version 6",
                udp4.clone().with_ip_version(6),
            ),
            (
                "ipv6 header with version 4",
                tcp6.clone().with_ip_version(4),
            ),
            ("ipv4 ihl 4", tcp4.clone().with_ipv4_ihl(4)),
            ("ipv4 ihl 0", udp4.clone().with_ipv4_ihl(0)),
            (
                "ipv4 total length 19, below the 20-byte header",
                tcp4.clone().with_ipv4_total_len(19),
            ),
            (
                "ipv4 total length 20, below the 24-byte header with options",
                options4.with_ipv4_total_len(20),
            ),
            (
                "ipv4 total length one byte past the frame",
                tcp4.clone()
                    .with_ipv4_total_len(u16::try_from(tcp4.datagram_len() + 1).expect("small")),
            ),
            (
                "ipv4 later fragment with total length past the frame",
                later_fragment
                    .with_ipv4_total_len(u16::try_from(later_fragment_len + 1).expect("small")),
            ),
            (
                "ipv6 payload length one byte past the frame",
                udp6.clone().with_ipv6_payload_len(
                    u16::try_from(udp6.datagram_len() - 40 + 1).expect("small"),
                ),
            ),
            ("tcp data offset 4", tcp4.clone().with_tcp_data_offset(4)),
            ("tcp data offset 0", tcp6.clone().with_tcp_data_offset(0)),
            (
                "tcp data offset 15 past a short segment",
                tcp4.clone().with_tcp_data_offset(15),
            ),
            (
                "ipv4 tcp options running past the datagram",
                bare_tcp4
                    .clone()
                    .with_datagram_ending_at(bare_tcp4.span("tcp").start + 30),
            ),
            (
                "ipv6 tcp options running past the datagram",
                bare_tcp6
                    .clone()
                    .with_datagram_ending_at(bare_tcp6.span("tcp").end - 4),
            ),
            ("ipv4 udp length 7", udp4.clone().with_udp_length(7)),
            ("ipv6 udp length 0", udp6.clone().with_udp_length(0)),
            (
                "ipv4 udp length one byte past the datagram",
                udp4.clone()
                    .with_udp_length(u16::try_from(udp4_len + 1).expect("small")),
            ),
            (
                "ipv6 udp length one byte past the datagram",
                udp6.clone()
                    .with_udp_length(u16::try_from(udp6_len + 1).expect("small")),
            ),
            (
                "icmp header ending in ethernet padding",
                bare_icmp4
                    .clone()
                    .with_datagram_ending_at(bare_icmp4.span("icmp").start + 4)
                    .padded_to(60),
            ),
            (
                "nine ipv6 extension headers",
                frames::ipv6_udp_behind_destination_options(9),
            ),
            (
                "hop-by-hop header running past the datagram",
                hop_by_hop_16
                    .clone()
                    .with_datagram_ending_at(hop_by_hop_16.span("hop-by-hop options").start + 8),
            ),
            (
                "hop-by-hop length field past the datagram",
                hop_by_hop_16.patched("hop-by-hop options", 1, &[200]),
            ),
            (
                "routing header length field past the datagram",
                routed.patched("routing", 1, &[200]),
            ),
            (
                "authentication header length field past the datagram",
                authenticated.patched("authentication", 1, &[200]),
            ),
        ],
        Verdict::Drop,
        Reason::Malformed,
    );
}

#[test]
fn drops_ipv4_tcp_truncated_at_every_length() {
    assert_every_cut_is_malformed(
        "ipv4 tcp",
        &Packet::ipv4(Transport::Tcp).build(),
        &["ethernet", "ipv4", "tcp"],
    );
}

#[test]
fn drops_ipv4_tcp_with_options_truncated_at_every_length() {
    assert_every_cut_is_malformed(
        "ipv4 ihl 6 tcp with options",
        &Packet::ipv4(Transport::Tcp)
            .ipv4_options(&ROUTER_ALERT)
            .tcp_options(&TCP_OPTIONS)
            .build(),
        &["ethernet", "ipv4", "tcp"],
    );
}

#[test]
fn drops_ipv6_hop_by_hop_udp_truncated_at_every_length() {
    assert_every_cut_is_malformed(
        "ipv6 hop-by-hop udp",
        &Packet::ipv6(Transport::Udp)
            .ipv6_extensions(Ipv6Extensions {
                hop_by_hop_options: Some(frames::hop_by_hop(16)),
                ..Default::default()
            })
            .build(),
        &["ethernet", "ipv6", "hop-by-hop options", "udp"],
    );
}

#[test]
fn drops_vlan_ipv4_icmp_truncated_at_every_length() {
    assert_every_cut_is_malformed(
        "802.1Q ipv4 icmp echo",
        &Packet::ipv4(Transport::IcmpEcho).vlan().build(),
        &["ethernet", "vlan tag 1", "ipv4", "icmp"],
    );
}

#[test]
fn drops_qinq_ipv6_tcp_truncated_at_every_length() {
    assert_every_cut_is_malformed(
        "QinQ ipv6 tcp",
        &Packet::ipv6(Transport::Tcp).qinq().build(),
        &["ethernet", "vlan tag 1", "vlan tag 2", "ipv6", "tcp"],
    );
}

#[test]
fn dry_run_passes_malformed_frames_and_counts_them_as_would_drop() {
    let mut filter = Filter::load();
    let malformed = Packet::ipv4(Transport::Udp).build().with_udp_length(7);
    let truncated = Packet::ipv6(Transport::Tcp).qinq().build();
    let truncated = &truncated.bytes[..truncated.span("ipv6").start + 10];
    let good = Packet::ipv4(Transport::Udp).build();

    filter.assert_verdict(
        "enforcing, udp length 7",
        &malformed.bytes,
        Verdict::Drop,
        Reason::Malformed,
    );
    filter.set_dry_run(true);
    filter.assert_verdict(
        "dry run, udp length 7",
        &malformed.bytes,
        Verdict::WouldDrop,
        Reason::Malformed,
    );
    filter.assert_verdict(
        "dry run, QinQ ipv6 cut inside the ipv6 header",
        truncated,
        Verdict::WouldDrop,
        Reason::Malformed,
    );
    filter.assert_verdict(
        "dry run, well-formed udp",
        &good.bytes,
        Verdict::Pass,
        Reason::Pass,
    );
    filter.assert_verdict(
        "dry run, arp",
        &frames::arp(&[]).bytes,
        Verdict::Pass,
        Reason::NonIp,
    );
    filter.set_dry_run(false);
    filter.assert_verdict(
        "dry run off again, udp length 7",
        &malformed.bytes,
        Verdict::Drop,
        Reason::Malformed,
    );
}

#[test]
fn loaded_object_has_every_map_in_all_maps() {
    let filter = Filter::load();
    let present: Vec<&str> = filter.ebpf.maps().map(|(name, _)| name).collect();
    for name in ALL_MAPS {
        assert!(
            filter.ebpf.map(name).is_some(),
            "filter_common::maps::ALL_MAPS lists {name:?} but the object only has {present:?}"
        );
    }
    for name in &present {
        assert!(
            name.starts_with('.') || ALL_MAPS.contains(name),
            "the object declares map {name:?}, which filter_common::maps::ALL_MAPS leaves out"
        );
    }

    let counters =
        PerCpuArray::<_, Counter>::try_from(filter.ebpf.map(COUNTERS).expect("checked above"))
            .unwrap_or_else(|error| {
                panic!("{COUNTERS} is not a per-CPU array of Counter: {error}")
            });
    assert_eq!(counters.len(), COUNTER_SLOTS, "{COUNTERS} slots");
    let settings =
        Array::<_, Settings>::try_from(filter.ebpf.map(SETTINGS).expect("checked above"))
            .unwrap_or_else(|error| panic!("{SETTINGS} is not an array of Settings: {error}"));
    assert_eq!(
        settings.len(),
        POLICY_SLOTS,
        "{SETTINGS} entries: one per policy slot"
    );
    assert_eq!(
        settings.get(&0, 0).expect("reading SETTINGS[0]"),
        Settings::default(),
        "a freshly loaded filter enforces (all-zero settings)"
    );
}

#[test]
fn frame_builder_keeps_ipv4_checksums_valid_when_patching() {
    // Not a kernel test: checks that Frame::patched recomputes the IPv4 header checksum the way
    // etherparse does, so the malformed frames above break only the field they name.
    let frame = Packet::ipv4(Transport::Udp)
        .ipv4_options(&ROUTER_ALERT)
        .build();
    let total_len = u16::try_from(frame.datagram_len()).expect("small");
    let rewritten = frame.clone().with_ipv4_total_len(total_len);
    assert_eq!(rewritten.bytes, frame.bytes);
}

#[test]
fn every_sample_carries_its_own_packets_source_and_a_runt_carries_none() {
    let mut filter = Filter::load();
    let value = Settings {
        sample_every: 1,
        ..Settings::default()
    };
    Array::<_, Settings>::try_from(filter.ebpf.map_mut(SETTINGS).expect("SETTINGS"))
        .expect("SETTINGS is an array")
        .set(0, value, 0)
        .expect("writing SETTINGS");
    filter.list(false, "192.0.2.0/24");
    let denied = Packet::ipv4(Transport::Tcp).build();
    filter.assert_verdict(
        "denied source",
        &denied.bytes,
        Verdict::Drop,
        Reason::Denylist,
    );
    // An Ethernet header that says IPv4 and nothing after it: dropped as malformed, right
    // after a packet whose source was parsed.
    let mut runt = denied.bytes[..14].to_vec();
    runt[12..14].copy_from_slice(&[0x08, 0x00]);
    filter.assert_verdict("runt", &runt, Verdict::Drop, Reason::Malformed);
    let mut ring = RingBuf::try_from(filter.ebpf.map_mut(SAMPLES).expect("SAMPLES"))
        .expect("SAMPLES is a ring buffer");
    let mut samples = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), std::mem::size_of::<Sample>(), "a Sample record");
        // SAFETY: the record holds exactly one Sample, a plain-old-data type.
        samples.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Sample>()) });
    }
    assert_eq!(samples.len(), 2, "one sample per drop: {samples:?}");
    assert_eq!(
        &samples[0].src_addr_be[..4],
        &[192, 0, 2, 1],
        "the denied source"
    );
    assert_eq!(samples[0].reason, Reason::Denylist as u8);
    assert_eq!(
        (
            samples[1].src_addr_be,
            samples[1].ip_version,
            samples[1].reason
        ),
        ([0; 16], 0, Reason::Malformed as u8),
        "the runt names no source, not the previous packet's"
    );
}

#[test]
fn denylist_drops_by_longest_prefix_and_allowlist_wins() {
    let mut filter = Filter::load();
    let v4 = Packet::ipv4(Transport::Tcp).build();
    let v6 = Packet::ipv6(Transport::Udp).build();
    // Sources are 192.0.2.1 and 2001:db8::1.
    filter.list(false, "198.51.100.0/24");
    filter.list(false, "2001:db8:1::/48");
    filter.assert_verdict(
        "v4 source outside the denied prefix",
        &v4.bytes,
        Verdict::Pass,
        Reason::Pass,
    );
    filter.assert_verdict(
        "v6 source outside the denied prefix",
        &v6.bytes,
        Verdict::Pass,
        Reason::Pass,
    );

    filter.list(false, "192.0.0.0/8");
    filter.list(false, "2001:db8::/32");
    filter.assert_verdict(
        "v4 source in 192.0.0.0/8",
        &v4.bytes,
        Verdict::Drop,
        Reason::Denylist,
    );
    filter.assert_verdict(
        "v6 source in 2001:db8::/32",
        &v6.bytes,
        Verdict::Drop,
        Reason::Denylist,
    );
    filter.assert_verdict(
        "a malformed frame from a denied source is malformed first",
        &Packet::ipv4(Transport::Tcp)
            .build()
            .with_tcp_data_offset(4)
            .bytes,
        Verdict::Drop,
        Reason::Malformed,
    );

    filter.list(true, "192.0.2.1");
    filter.list(true, "2001:db8::/64");
    filter.assert_verdict(
        "allowlisted v4 host inside a denied /8",
        &v4.bytes,
        Verdict::Pass,
        Reason::Allowlist,
    );
    filter.assert_verdict(
        "allowlisted v6 /64 inside a denied /32",
        &v6.bytes,
        Verdict::Pass,
        Reason::Allowlist,
    );
}

/// A test CIDR.
fn parse(cidr: &str) -> moat::cidr::Cidr {
    cidr.parse().expect("test CIDRs are valid")
}

/// The allow (`allow`) or deny tries, IPv4 then IPv6.
fn list_maps(allow: bool) -> (&'static str, &'static str) {
    if allow {
        (ALLOW_V4, ALLOW_V6)
    } else {
        (DENY_V4, DENY_V6)
    }
}

#[test]
fn the_list_index_gates_every_trie_walk_and_never_hides_an_entry() {
    let mut filter = Filter::load();
    // Sources are 192.0.2.1 and 2001:db8::1.
    let v4 = Packet::ipv4(Transport::Tcp).build();
    let v6 = Packet::ipv6(Transport::Udp).build();
    // An entry the index does not count is never looked for: the program walks a trie only
    // where the index marks the source (this is what makes a miss cheap).
    // First with no entries counted at all (the family's entry count gates the index), then
    // with an indexed entry elsewhere in each family (the source's own bytes gate the walks).
    filter.list_unindexed(false, "192.0.2.0/24");
    filter.list_unindexed(false, "2001:db8::/64");
    filter.assert_verdict(
        "no v4 entries counted",
        &v4.bytes,
        Verdict::Pass,
        Reason::Pass,
    );
    filter.assert_verdict(
        "no v6 entries counted",
        &v6.bytes,
        Verdict::Pass,
        Reason::Pass,
    );
    filter.list(false, "198.51.100.0/24");
    filter.list(false, "2001:db8:5::/48");
    filter.assert_verdict("unindexed v4 entry", &v4.bytes, Verdict::Pass, Reason::Pass);
    filter.assert_verdict("unindexed v6 entry", &v6.bytes, Verdict::Pass, Reason::Pass);
    filter.unlist_unindexed(false, "192.0.2.0/24");
    filter.unlist_unindexed(false, "2001:db8::/64");
    filter.unlist(false, "198.51.100.0/24");
    filter.unlist(false, "2001:db8:5::/48");

    // Each IPv6 length marks its own byte (/48 bucket, /32 bucket, wide byte), and each is
    // found, alone, then gone once removed.
    filter.assert_each_denied_then_passed(
        &v6.bytes,
        &[
            ("2001:db8::1/128", "a /128"),
            ("2001:db8::/40", "a /40"),
            ("2000::/8", "a /8"),
        ],
    );
    filter.list(false, "0.0.0.0/0");
    filter.assert_verdict("0.0.0.0/0", &v4.bytes, Verdict::Drop, Reason::Denylist);
    filter.unlist(false, "0.0.0.0/0");
    filter.assert_verdict("0.0.0.0/0 removed", &v4.bytes, Verdict::Pass, Reason::Pass);

    // Twenty hosts in the source's /24 push its deny count past 15, where it sticks: removing
    // nineteen of them never lets the count reach zero while the last one is listed.
    for host in 1..=20 {
        filter.list(false, &format!("192.0.2.{host}"));
    }
    let index = filter.index();
    let byte = index.byte(filter_common::listindex::v4_index(&[192, 0, 2, 0]));
    assert_eq!(
        byte, 0xf0,
        "twenty deny entries, a sticky deny count and no allow count"
    );
    for host in 2..=20 {
        filter.unlist(false, &format!("192.0.2.{host}"));
    }
    filter.assert_verdict(
        "the last host left",
        &v4.bytes,
        Verdict::Drop,
        Reason::Denylist,
    );
    let other = Packet::ipv4(Transport::Tcp)
        .sent_from(std::net::Ipv4Addr::new(192, 0, 2, 2).into())
        .build();
    filter.assert_verdict("a removed host", &other.bytes, Verdict::Pass, Reason::Pass);
    // Allow counts are kept apart: an allowlisted host in the same /24 wins.
    filter.list(true, "192.0.2.1");
    assert_eq!(
        index.byte(filter_common::listindex::v4_index(&[192, 0, 2, 0])),
        0xf1
    );
    filter.assert_verdict("allowed", &v4.bytes, Verdict::Pass, Reason::Allowlist);
}

#[test]
fn an_ipv6_source_looks_only_at_the_levels_some_entry_marks() {
    use filter_common::listindex;
    let mut filter = Filter::load();
    // The source is 2001:db8::1. 2001:db9:11a:f8b5::/64's bucket is, by the hash, the same
    // byte as the source's /32 bucket: a listed /64 marks the byte the source reads for /32s.
    let v6 = Packet::ipv6(Transport::Udp).build();
    let source = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let moat::cidr::Cidr::V6 { addr, prefix } = parse("2001:db9:11a:f8b5::/64") else {
        panic!("an IPv6 prefix");
    };
    assert_eq!(
        listindex::v6_entry(&addr, prefix),
        listindex::v6_lookup(&source)[listindex::v6_level(32) as usize],
        "the collider marks the source's /32 bucket"
    );
    // The source's /64 in the trie without its count: found only if its /32 byte is read.
    filter.list_unindexed(false, "2001:db8::/64");
    filter.list(false, "2001:db9:11a:f8b5::/64");
    filter.assert_verdict(
        "no entry on the /32 level: its byte is not read",
        &v6.bytes,
        Verdict::Pass,
        Reason::Pass,
    );
    // A /40 anywhere puts the /32 level in use: the marked byte now sends the source to the
    // trie, which has it.
    filter.list(false, "2001:db9:ff00::/40");
    assert_eq!(filter.index().levels(), (1 << 32) | 1);
    filter.assert_verdict(
        "the /32 level in use",
        &v6.bytes,
        Verdict::Drop,
        Reason::Denylist,
    );
    filter.unlist(false, "2001:db9:ff00::/40");
    filter.assert_verdict(
        "the /32 level empty again",
        &v6.bytes,
        Verdict::Pass,
        Reason::Pass,
    );
    // Every level of a listed source's own network is found: a /128, /56, /36 and /0 each.
    filter.unlist_unindexed(false, "2001:db8::/64");
    filter.assert_each_denied_then_passed(
        &v6.bytes,
        &[
            ("2001:db8::1/128", "a /128"),
            ("2001:db8::/56", "a /56"),
            ("2001:db8::/36", "a /36"),
            ("::/0", "a /0"),
        ],
    );
    assert_eq!(filter.index().levels(), 1, "only the collider is left");
}

#[test]
fn a_slash24_the_denylist_covers_is_denied_without_a_walk() {
    use moat::listindex::Counted;
    let mut filter = Filter::load();
    let index = filter.index();
    /// Asserts the verdict on a TCP segment from `source`.
    fn assert_from(filter: &Filter, case: &str, source: [u8; 4], verdict: Verdict, reason: Reason) {
        let frame = Packet::ipv4(Transport::Tcp)
            .sent_from(std::net::Ipv4Addr::from(source).into())
            .build();
        filter.assert_verdict(case, &frame.bytes, verdict, reason);
    }
    let counted_only = |counted: Counted, cidr: &str, add: bool| {
        index.note(counted, &parse(cidr), add);
    };
    // A denylist entry of /24 or shorter covers its /24s: the cover byte alone decides, so a
    // /24 counted but absent from the trie still drops (with a walk, nothing would be found).
    counted_only(Counted::Deny, "198.51.100.0/24", true);
    assert_from(
        &filter,
        "covered, no trie entry",
        [198, 51, 100, 7],
        Verdict::Drop,
        Reason::Denylist,
    );
    // The allowlist still comes first.
    filter.list(true, "198.51.100.7");
    assert_from(
        &filter,
        "covered but allowed",
        [198, 51, 100, 7],
        Verdict::Pass,
        Reason::Allowlist,
    );
    filter.unlist(true, "198.51.100.7");
    // The count is exact: the last covering entry gone, the /24 is open again.
    counted_only(Counted::Deny, "198.51.100.0/24", false);
    assert_from(
        &filter,
        "cover removed",
        [198, 51, 100, 7],
        Verdict::Pass,
        Reason::Pass,
    );
    // A /16 covers each of its 256 /24s, a /25 none, and CrowdSec decisions never cover (they
    // keep their own reason, found in their trie).
    counted_only(Counted::Deny, "203.0.0.0/16", true);
    for third in [0, 128, 255] {
        assert_from(
            &filter,
            "inside a covering /16",
            [203, 0, third, 9],
            Verdict::Drop,
            Reason::Denylist,
        );
    }
    assert_from(
        &filter,
        "outside it",
        [203, 1, 0, 9],
        Verdict::Pass,
        Reason::Pass,
    );
    counted_only(Counted::Deny, "192.0.2.0/25", true);
    counted_only(Counted::Decisions, "233.252.0.0/24", true);
    assert_from(
        &filter,
        "a /25 covers no /24",
        [192, 0, 2, 7],
        Verdict::Pass,
        Reason::Pass,
    );
    assert_from(
        &filter,
        "a decision covers nothing",
        [233, 252, 0, 7],
        Verdict::Pass,
        Reason::Pass,
    );
    // A count too high to keep exact sticks, and the trie decides: 255 covering entries, all
    // counted but none in the trie, and the source passes.
    for _ in 0..255 {
        counted_only(Counted::Deny, "100.64.0.0/24", true);
    }
    assert_eq!(
        index.byte(
            filter_common::listindex::V4_COVER
                + filter_common::listindex::v4_index(&[100, 64, 0, 0])
        ),
        filter_common::listindex::COVER_UNKNOWN
    );
    assert_from(
        &filter,
        "an unknown count walks the trie",
        [100, 64, 0, 7],
        Verdict::Pass,
        Reason::Pass,
    );
    filter.list(false, "100.64.0.7");
    assert_from(
        &filter,
        "which holds the source",
        [100, 64, 0, 7],
        Verdict::Drop,
        Reason::Denylist,
    );
}

#[test]
fn dry_run_counts_denied_sources_as_would_drop() {
    let mut filter = Filter::load();
    filter.list(false, "0.0.0.0/0");
    filter.set_dry_run(true);
    let frame = Packet::ipv4(Transport::Udp).build();
    filter.assert_verdict(
        "denied by 0.0.0.0/0 in dry run",
        &frame.bytes,
        Verdict::WouldDrop,
        Reason::Denylist,
    );
}
