//! Program tests for the verification stages (issue #11): SYN cookies answered in XDP and
//! socket-aware filtering, with real sockets. Each test creates a network namespace, opens its
//! listeners and UDP sockets there and runs frames through the shipped object with
//! `BPF_PROG_TEST_RUN` from a thread inside that namespace: the program's socket lookups search
//! the namespace of the test run's device, which is the calling thread's.
//!
//! The SYN-ACK the program writes is decoded with etherparse, an independent decoder: addresses,
//! ports and MACs swapped, SYN|ACK, the acknowledgement, one MSS option (the host's, from the
//! loopback's MTU), both checksums. The cookie it carries is then returned in an ACK, which the
//! kernel's own check accepts.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use aya::maps::{Array, HashMap};
use etherparse::{PacketBuilder, PacketHeaders, TcpOptionElement};
use filter_common::{
    Counter, Reason, Settings, Verdict, counter_index,
    maps::{BANS, PORTS, VERIFIED},
    ports::PORT_REFLECTOR,
    settings::{
        FLAG_DRY_RUN, FLAG_FIXED_CLOCK, FLAG_TCP_SOCKETS, FLAG_UDP_SOCKETS, SYN_COOKIES_AUTO,
    },
    source::{BAN_CLASS, BAN_MANUAL, Ban, SourceKey, VERIFIED_CLASS},
};
use moat::netns::NetNs;
use support::testrun::Loaded;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const START_NS: u64 = 1_000_000_000_000;
const VERIFIED_TTL_NS: u64 = 600_000_000_000;
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const LISTENING: u16 = 8080;
const NOBODY: u16 = 8081;
/// A port in the kernel's ephemeral range, open to UDP for replies only (and the one after it).
const REPLIES: u16 = 40_100;
const CLIENT_PORT: u16 = 40_000;
const CLIENT_SEQ: u32 = 0x1234_5678;
const CLIENT_MSS: u16 = 1460;

/// The MTU of the test namespace's loopback, the device a test run receives on.
const LOOPBACK_MTU: u16 = 1400;

/// The settings of a daemon with the default `syn_cookies = "auto"` and `require_sockets`,
/// on the program's fixed clock.
fn verifying_settings() -> Settings {
    Settings {
        flags: FLAG_FIXED_CLOCK | FLAG_TCP_SOCKETS | FLAG_UDP_SOCKETS,
        clock_ns: START_NS,
        v6_source_prefix: 64,
        syn_cookies: SYN_COOKIES_AUTO,
        verified_ttl_ns: VERIFIED_TTL_NS,
        ..Settings::default()
    }
}

/// The loaded program, run from inside a namespace.
struct Filter {
    loaded: Loaded,
}

impl Filter {
    fn load(settings: Settings) -> Filter {
        let mut loaded = Loaded::load();
        loaded.write_settings(&settings);
        Filter { loaded }
    }

    /// Runs `frame`; returns the action and the frame as the program left it.
    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.loaded.run_with_output(frame)
    }

    /// Every counter slot, summed over CPUs.
    fn counters(&self) -> Vec<Counter> {
        self.loaded.counters()
    }

    /// Runs `frame` and checks its action and that exactly one packet was counted, under
    /// `(verdict, reason)`. Returns the frame as the program left it.
    fn expect(
        &self,
        case: &str,
        frame: &[u8],
        action: u32,
        verdict: Verdict,
        reason: Reason,
    ) -> Vec<u8> {
        let before = self.counters();
        let (got, out) = self.run(frame);
        let after = self.counters();
        let changed: Vec<(usize, u64)> = (0..before.len())
            .filter(|i| after[*i].packets != before[*i].packets)
            .map(|i| (i, after[i].packets - before[i].packets))
            .collect();
        let slot = counter_index(verdict, reason) as usize;
        assert_eq!(
            got, action,
            "{case}: action (counters changed: {changed:?})"
        );
        assert_eq!(
            changed,
            vec![(slot, 1)],
            "{case}: exactly one packet under {verdict:?}/{reason:?}"
        );
        out
    }

    fn cache(&self) -> moat::verified::VerifiedCache {
        moat::verified::VerifiedCache::of_map(self.loaded.ebpf.map(VERIFIED).expect("VERIFIED"))
            .expect("VERIFIED mapped")
    }

    fn verified(&self, addr: IpAddr) -> Option<u64> {
        self.cache().until(&verified_key(addr))
    }

    fn mark_verified(&mut self, addr: IpAddr) {
        self.cache().mark(&verified_key(addr), u64::MAX);
    }
}

/// The `VERIFIED` key of `addr`, written out here (IPv6 masked to its /64).
fn verified_key(addr: IpAddr) -> SourceKey {
    let mut addr_be = [0u8; 16];
    let ip_version = match addr {
        IpAddr::V4(v4) => {
            addr_be[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            addr_be[..8].copy_from_slice(&v6.octets()[..8]);
            6
        }
    };
    SourceKey {
        addr_be,
        ip_version,
        class: VERIFIED_CLASS,
        _pad: [0; 2],
    }
}

/// A namespace with loopback up and `net.ipv4.tcp_syncookies` set to `syncookies`.
fn namespace(syncookies: &str) -> NetNs {
    let ns = NetNs::create("moat-sock").expect("creating a namespace");
    // A test run receives on the namespace's loopback, whose MTU the SYN-ACK's MSS follows:
    // below the client's, as behind a tunnel.
    ns.ip(&["link", "set", "lo", "mtu", &LOOPBACK_MTU.to_string(), "up"])
        .expect("lo up");
    ns.sysctl("net.ipv4.tcp_syncookies", syncookies)
        .expect("setting tcp_syncookies");
    ns
}

/// Listeners on every address, IPv4 and IPv6 (v6-only), at `port`.
fn listeners(port: u16) -> (TcpListener, socket2::Socket) {
    let v4 = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("IPv4 listener");
    let v6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)
        .expect("IPv6 socket");
    v6.set_only_v6(true).expect("v6only");
    v6.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())
        .expect("IPv6 bind");
    v6.listen(128).expect("IPv6 listen");
    (v4, v6)
}

/// A TCP segment from the client to the server with `flags` (SYN carries an MSS option).
fn segment(
    v6: bool,
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC);
    let ip = if v6 {
        eth.ipv6(CLIENT_V6.octets(), SERVER_V6.octets(), 64)
    } else {
        eth.ipv4(CLIENT_V4.octets(), SERVER_V4.octets(), 64)
    };
    let mut tcp = ip.tcp(src_port, dst_port, seq, 64_240);
    if syn {
        tcp = tcp
            .syn()
            .options(&[
                TcpOptionElement::MaximumSegmentSize(CLIENT_MSS),
                TcpOptionElement::SelectiveAcknowledgementPermitted,
                TcpOptionElement::WindowScale(7),
            ])
            .expect("options fit");
    }
    if let Some(ack) = ack {
        tcp = tcp.ack(ack);
    }
    let mut frame = Vec::new();
    tcp.write(&mut frame, &[]).expect("building a segment");
    frame
}

/// A UDP datagram from the client to the server's `port`.
fn datagram(v6: bool, port: u16) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC);
    let ip = if v6 {
        eth.ipv6(CLIENT_V6.octets(), SERVER_V6.octets(), 64)
    } else {
        eth.ipv4(CLIENT_V4.octets(), SERVER_V4.octets(), 64)
    };
    let mut frame = Vec::new();
    ip.udp(CLIENT_PORT, port)
        .write(&mut frame, b"query")
        .expect("building a datagram");
    frame
}

/// Decodes the SYN-ACK the program wrote, checks every field against the SYN it answers, and
/// returns the cookie (its sequence number).
fn check_synack(v6: bool, out: &[u8]) -> u32 {
    let headers = PacketHeaders::from_ethernet_slice(out).expect("the SYN-ACK decodes");
    let eth = headers
        .link
        .expect("Ethernet")
        .ethernet2()
        .expect("Ethernet II");
    assert_eq!(eth.source, SERVER_MAC, "MACs swapped");
    assert_eq!(eth.destination, CLIENT_MAC, "MACs swapped");
    let tcp = headers.transport.expect("a transport").tcp().expect("TCP");
    match headers.net.expect("an IP header") {
        etherparse::NetHeaders::Ipv4(ip, _) => {
            assert!(!v6);
            assert_eq!(ip.source, SERVER_V4.octets(), "addresses swapped");
            assert_eq!(ip.destination, CLIENT_V4.octets(), "addresses swapped");
            assert_eq!(ip.time_to_live, 64);
            assert!(ip.dont_fragment, "DF");
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "IPv4 header checksum"
            );
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv4(&ip, &[]).expect("checksum"),
                "TCP checksum over IPv4"
            );
            assert_eq!(out.len(), 14 + 20 + 24, "frame cut to the SYN-ACK");
        }
        etherparse::NetHeaders::Ipv6(ip, _) => {
            assert!(v6);
            assert_eq!(ip.source, SERVER_V6.octets(), "addresses swapped");
            assert_eq!(ip.destination, CLIENT_V6.octets(), "addresses swapped");
            assert_eq!(ip.hop_limit, 64);
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv6(&ip, &[]).expect("checksum"),
                "TCP checksum over IPv6"
            );
            assert_eq!(out.len(), 14 + 40 + 24, "frame cut to the SYN-ACK");
        }
        other => panic!("not IP: {other:?}"),
    }
    assert_eq!(tcp.source_port, LISTENING, "ports swapped");
    assert_eq!(tcp.destination_port, CLIENT_PORT, "ports swapped");
    assert!(tcp.syn && tcp.ack, "SYN|ACK");
    assert!(!(tcp.fin || tcp.rst || tcp.psh || tcp.urg), "only SYN|ACK");
    assert_eq!(tcp.acknowledgment_number, CLIENT_SEQ.wrapping_add(1));
    let options: Vec<_> = tcp
        .options_iterator()
        .collect::<Result<_, _>>()
        .expect("options");
    match options.as_slice() {
        [TcpOptionElement::MaximumSegmentSize(mss)] => assert_eq!(
            *mss,
            LOOPBACK_MTU - if v6 { 60 } else { 40 },
            "the host's own MSS, its device's MTU less the headers, not the client's \
             {CLIENT_MSS}"
        ),
        other => panic!("the SYN-ACK's only option is the MSS: {other:?}"),
    }
    tcp.sequence_number
}

fn cookie_round_trip(v6: bool) {
    let ns = namespace("2");
    ns.enter(|| {
        let _listening = listeners(LISTENING);
        let filter = Filter::load(verifying_settings());
        let syn = segment(v6, CLIENT_PORT, LISTENING, CLIENT_SEQ, None, true);
        let out = filter.expect(
            "SYN to a listener",
            &syn,
            XDP_TX,
            Verdict::Answered,
            Reason::SynCookie,
        );
        let cookie = check_synack(v6, &out);
        let client = if v6 {
            IpAddr::V6(CLIENT_V6)
        } else {
            IpAddr::V4(CLIENT_V4)
        };
        let bad = segment(
            v6,
            CLIENT_PORT,
            LISTENING,
            CLIENT_SEQ.wrapping_add(1),
            Some(cookie.wrapping_add(7)),
            false,
        );
        filter.expect(
            "ACK with a wrong cookie",
            &bad,
            XDP_DROP,
            Verdict::Drop,
            Reason::CookieBad,
        );
        assert_eq!(
            filter.verified(client),
            None,
            "a bad cookie verifies no one"
        );
        let ack = segment(
            v6,
            CLIENT_PORT,
            LISTENING,
            CLIENT_SEQ.wrapping_add(1),
            Some(cookie.wrapping_add(1)),
            false,
        );
        filter.expect(
            "ACK returning the cookie",
            &ack,
            XDP_PASS,
            Verdict::Pass,
            Reason::CookieAck,
        );
        assert_eq!(
            filter.verified(client),
            Some(START_NS + VERIFIED_TTL_NS),
            "a valid cookie verifies its source for the configured time"
        );
        // The program's own mark set the bucket's summary bit: the source's next segment is
        // known verified and skips the socket lookup.
        let stray = segment(v6, CLIENT_PORT, NOBODY, CLIENT_SEQ, Some(1), false);
        filter.expect(
            "a segment from the source the cookie verified",
            &stray,
            XDP_PASS,
            Verdict::Pass,
            Reason::Pass,
        );
    })
    .expect("entering the namespace");
}

#[test]
fn a_syn_with_a_tcp_header_of_any_length_is_answered_with_a_cookie() {
    let ns = namespace("2");
    ns.enter(|| {
        let _listening = listeners(LISTENING);
        let filter = Filter::load(verifying_settings());
        for v6 in [false, true] {
            // 20 to 60 bytes: no options, then the MSS padded with no-ops.
            for words in 5..=15usize {
                let padding = (words - 5) * 4;
                let mut options = Vec::new();
                if padding >= 4 {
                    options.push(TcpOptionElement::MaximumSegmentSize(CLIENT_MSS));
                    options.extend(std::iter::repeat_n(TcpOptionElement::Noop, padding - 4));
                }
                let eth = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC);
                let ip = if v6 {
                    eth.ipv6(CLIENT_V6.octets(), SERVER_V6.octets(), 64)
                } else {
                    eth.ipv4(CLIENT_V4.octets(), SERVER_V4.octets(), 64)
                };
                let mut syn = Vec::new();
                ip.tcp(CLIENT_PORT, LISTENING, CLIENT_SEQ, 64_240)
                    .syn()
                    .options(&options)
                    .expect("options fit")
                    .write(&mut syn, &[])
                    .expect("building a SYN");
                let l4 = if v6 { 14 + 40 } else { 14 + 20 };
                assert_eq!(usize::from(syn[l4 + 12] >> 4), words, "data offset");
                let out = filter.expect(
                    &format!("SYN with a {}-byte TCP header (IPv6: {v6})", words * 4),
                    &syn,
                    XDP_TX,
                    Verdict::Answered,
                    Reason::SynCookie,
                );
                check_synack(v6, &out);
            }
        }
    })
    .expect("entering the namespace");
}

#[test]
fn syn_to_an_ipv4_listener_is_answered_with_a_cookie_the_kernel_accepts() {
    cookie_round_trip(false);
}

#[test]
fn syn_to_an_ipv6_listener_is_answered_with_a_cookie_the_kernel_accepts() {
    cookie_round_trip(true);
}

#[test]
fn auto_leaves_syns_to_the_kernel_while_the_listener_has_room() {
    let ns = namespace("1");
    ns.enter(|| {
        let _listening = listeners(LISTENING);
        let filter = Filter::load(verifying_settings());
        for v6 in [false, true] {
            let syn = segment(v6, CLIENT_PORT, LISTENING, CLIENT_SEQ, None, true);
            let (action, out) = filter.run(&syn);
            assert_eq!(action, XDP_PASS, "v6={v6}: the kernel answers");
            assert_eq!(out, syn, "v6={v6}: the SYN is untouched");
        }
    })
    .expect("entering the namespace");
}

#[test]
fn dry_run_and_verified_sources_never_get_a_cookie() {
    let ns = namespace("2");
    ns.enter(|| {
        let _listening = listeners(LISTENING);
        let mut settings = verifying_settings();
        settings.flags |= FLAG_DRY_RUN;
        let dry = Filter::load(settings);
        let syn = segment(false, CLIENT_PORT, LISTENING, CLIENT_SEQ, None, true);
        dry.expect("dry run", &syn, XDP_PASS, Verdict::Pass, Reason::Pass);
        let mut filter = Filter::load(verifying_settings());
        filter.mark_verified(IpAddr::V4(CLIENT_V4));
        filter.expect(
            "verified source",
            &syn,
            XDP_PASS,
            Verdict::Pass,
            Reason::Pass,
        );
    })
    .expect("entering the namespace");
}

#[test]
fn traffic_that_no_socket_takes_is_dropped() {
    let ns = namespace("1");
    ns.enter(|| {
        let _listening = listeners(LISTENING);
        let _bound = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 5353)).expect("UDP socket");
        let filter = Filter::load(verifying_settings());
        for v6 in [false, true] {
            let syn = segment(v6, CLIENT_PORT, NOBODY, CLIENT_SEQ, None, true);
            filter.expect(
                "SYN to a port nobody listens on",
                &syn,
                XDP_DROP,
                Verdict::Drop,
                Reason::PortClosed,
            );
            let ack = segment(v6, CLIENT_PORT, NOBODY, CLIENT_SEQ, Some(1), false);
            filter.expect(
                "ACK for no connection",
                &ack,
                XDP_DROP,
                Verdict::Drop,
                Reason::NoSocket,
            );
            filter.expect(
                "UDP to a port with no socket",
                &datagram(v6, NOBODY),
                XDP_DROP,
                Verdict::Drop,
                Reason::PortClosed,
            );
        }
        filter.expect(
            "UDP to a bound socket",
            &datagram(false, 5353),
            XDP_PASS,
            Verdict::Pass,
            Reason::Pass,
        );
    })
    .expect("entering the namespace");
}

/// The refusal budget: of the packets no socket takes (a SYN or datagram to a port nobody
/// serves, an ACK for no connection, an ACK to a listener with a bad cookie), the first
/// `burst` pass for the kernel to refuse, counted as pass/refusal, and the rest drop under
/// their own reasons until the host-wide bucket refills, both families sharing it.
#[test]
fn a_budget_of_packets_for_no_socket_passes_for_the_kernel_to_refuse() {
    let ns = namespace("2");
    ns.enter(|| {
        let _listening = listeners(LISTENING);
        let mut settings = Settings {
            refusals: filter_common::rate::Limit {
                pps: 1,
                burst_packets: 4,
                bps: 0,
                burst_bytes: 0,
            },
            ..verifying_settings()
        };
        let mut filter = Filter::load(settings);
        let bad_cookie = segment(false, CLIENT_PORT, LISTENING, CLIENT_SEQ, Some(7), false);
        let refused: [(&str, Vec<u8>); 4] = [
            (
                "SYN to a port nobody listens on",
                segment(false, CLIENT_PORT, NOBODY, CLIENT_SEQ, None, true),
            ),
            (
                "ACK for no connection",
                segment(true, CLIENT_PORT, NOBODY, CLIENT_SEQ, Some(1), false),
            ),
            ("UDP to a port with no socket", datagram(false, NOBODY)),
            ("ACK to a listener with a bad cookie", bad_cookie.clone()),
        ];
        // A reset for no connection is dropped and spends nothing: the kernel answers none.
        let mut rst = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
            .ipv4(CLIENT_V4.octets(), SERVER_V4.octets(), 64)
            .tcp(CLIENT_PORT, NOBODY, CLIENT_SEQ, 0)
            .rst()
            .write(&mut rst, &[])
            .expect("a reset");
        filter.expect(
            "RST for no connection",
            &rst,
            XDP_DROP,
            Verdict::Drop,
            Reason::NoSocket,
        );
        for (case, frame) in &refused {
            filter.expect(case, frame, XDP_PASS, Verdict::Pass, Reason::Refusal);
        }
        let beyond: [(&str, Vec<u8>, Reason); 4] = [
            (
                "SYN beyond the budget",
                segment(true, CLIENT_PORT, NOBODY, CLIENT_SEQ, None, true),
                Reason::PortClosed,
            ),
            (
                "ACK beyond the budget",
                segment(false, CLIENT_PORT, NOBODY, CLIENT_SEQ, Some(1), false),
                Reason::NoSocket,
            ),
            (
                "UDP beyond the budget",
                datagram(true, NOBODY),
                Reason::PortClosed,
            ),
            (
                "bad cookie beyond the budget",
                bad_cookie.clone(),
                Reason::CookieBad,
            ),
        ];
        for (case, frame, reason) in &beyond {
            filter.expect(case, frame, XDP_DROP, Verdict::Drop, *reason);
        }
        // One second refills one packet's worth, at 1 pps.
        settings.clock_ns = START_NS + 1_000_000_000;
        filter.loaded.write_settings(&settings);
        filter.expect(
            "a second later",
            &refused[1].1,
            XDP_PASS,
            Verdict::Pass,
            Reason::Refusal,
        );
        filter.expect(
            "and then the bucket is empty again",
            &refused[1].1,
            XDP_DROP,
            Verdict::Drop,
            Reason::NoSocket,
        );
        // Raised to 1,000 pps, the budget refills at the new rate from empty at once, not after
        // the 4 s its old rate would take to refill.
        settings.refusals.pps = 1_000;
        settings.clock_ns = START_NS + 1_000_000_000;
        filter.loaded.write_settings(&settings);
        filter.expect(
            "the raised budget starts empty",
            &refused[1].1,
            XDP_DROP,
            Verdict::Drop,
            Reason::NoSocket,
        );
        settings.clock_ns += 1_000_000;
        filter.loaded.write_settings(&settings);
        filter.expect(
            "and refills at its own rate",
            &refused[1].1,
            XDP_PASS,
            Verdict::Pass,
            Reason::Refusal,
        );
        assert_eq!(
            filter.verified(IpAddr::V4(CLIENT_V4)),
            None,
            "a refusal verifies no one"
        );
    })
    .expect("entering the namespace");
}

/// A port the operator's `[ports]` list closes is refused within the budget only when nothing
/// listens there: with a listener (or a bound UDP socket) the kernel would take the packet,
/// so the list's word stands and it is dropped in silence. The budget counts both.
#[test]
fn ports_the_list_closes_are_refused_only_where_nothing_listens() {
    use filter_common::settings::{FLAG_ENFORCE_TCP_PORTS, FLAG_ENFORCE_UDP_PORTS};
    let ns = namespace("1");
    ns.enter(|| {
        let _listening = listeners(LISTENING);
        let _bound_v4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, LISTENING)).expect("UDP v4");
        let bound_v6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)
            .expect("UDP v6");
        bound_v6.set_only_v6(true).expect("v6only");
        bound_v6
            .bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, LISTENING)).into())
            .expect("UDP v6 bind");
        // Every port closed by the list (the loaded object's PORTS is all zero).
        let mut settings = Settings {
            refusals: filter_common::rate::Limit {
                pps: 1,
                burst_packets: 8,
                bps: 0,
                burst_bytes: 0,
            },
            ..verifying_settings()
        };
        settings.flags |= FLAG_ENFORCE_TCP_PORTS | FLAG_ENFORCE_UDP_PORTS;
        let filter = Filter::load(settings);
        for v6 in [false, true] {
            filter.expect(
                "SYN to a closed port nobody listens on",
                &segment(v6, CLIENT_PORT, NOBODY, CLIENT_SEQ, None, true),
                XDP_PASS,
                Verdict::Pass,
                Reason::Refusal,
            );
            filter.expect(
                "SYN to a closed port with a listener",
                &segment(v6, CLIENT_PORT, LISTENING, CLIENT_SEQ, None, true),
                XDP_DROP,
                Verdict::Drop,
                Reason::PortClosed,
            );
            filter.expect(
                "UDP to a closed port with no socket",
                &datagram(v6, NOBODY),
                XDP_PASS,
                Verdict::Pass,
                Reason::Refusal,
            );
            filter.expect(
                "UDP to a closed port with a bound socket",
                &datagram(v6, LISTENING),
                XDP_DROP,
                Verdict::Drop,
                Reason::PortClosed,
            );
        }
        filter.expect(
            "beyond the budget",
            &segment(false, CLIENT_PORT, NOBODY, CLIENT_SEQ, None, true),
            XDP_DROP,
            Verdict::Drop,
            Reason::PortClosed,
        );
    })
    .expect("entering the namespace");
}

/// The DNS port, a reflector port.
const DNS: u16 = 53;

/// A UDP datagram from `source` port 53 (a reflector port) to `destination`.
fn dns_answer(source: IpAddr, destination: SocketAddr) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC);
    let ip = match (source, destination.ip()) {
        (IpAddr::V4(from), IpAddr::V4(to)) => eth.ipv4(from.octets(), to.octets(), 64),
        (IpAddr::V6(from), IpAddr::V6(to)) => eth.ipv6(from.octets(), to.octets(), 64),
        _ => panic!("one family"),
    };
    let mut frame = Vec::new();
    ip.udp(DNS, destination.port())
        .write(&mut frame, b"answer")
        .expect("building a datagram");
    frame
}

#[test]
fn answers_to_the_hosts_own_connected_queries_pass_the_reflection_stage() {
    let ns = namespace("1");
    ns.enter(|| {
        let mut filter = Filter::load(verifying_settings());
        // Port 53 a reflector port, as the daemon's policy marks it.
        Array::<_, u8>::try_from(filter.loaded.ebpf.map_mut(PORTS).expect("PORTS"))
            .expect("PORTS is an array")
            .set(u32::from(DNS), PORT_REFLECTOR, 0)
            .expect("marking port 53");
        for (server, other) in [
            (
                IpAddr::from(Ipv4Addr::LOCALHOST),
                IpAddr::from(Ipv4Addr::new(127, 0, 0, 2)),
            ),
            (IpAddr::from(Ipv6Addr::LOCALHOST), IpAddr::from(CLIENT_V6)),
        ] {
            // A query socket connected to the server's port 53, as a resolver's or dig's is.
            let query = UdpSocket::bind((server, 0)).expect("a query socket");
            query.connect((server, DNS)).expect("connecting it");
            let local = query.local_addr().expect("its address");
            // Bound but not connected: any sender could reach it.
            let open = UdpSocket::bind((server, 0)).expect("an unconnected socket");
            let open_addr = open.local_addr().expect("its address");
            filter.expect(
                &format!("the answer from {server} to its query"),
                &dns_answer(server, local),
                XDP_PASS,
                Verdict::Pass,
                Reason::Pass,
            );
            filter.expect(
                &format!("port 53 from {other} to the query's port"),
                &dns_answer(other, local),
                XDP_DROP,
                Verdict::Drop,
                Reason::Reflection,
            );
            filter.expect(
                &format!("port 53 from {server} to an unconnected socket"),
                &dns_answer(server, open_addr),
                XDP_DROP,
                Verdict::Drop,
                Reason::Reflection,
            );
            // A DNS server bound on port 53 itself: a peer querying it from its own port 53
            // is expected (NTP 123 to 123, OpenVPN 1194 to 1194 alike).
            let service = UdpSocket::bind((server, DNS)).expect("a DNS service");
            let service_addr = service.local_addr().expect("its address");
            filter.expect(
                &format!("port 53 from {other} to the service on port 53"),
                &dns_answer(other, service_addr),
                XDP_PASS,
                Verdict::Pass,
                Reason::Pass,
            );
        }
    })
    .expect("entering the namespace");
}

#[test]
fn segments_from_verified_sources_skip_the_socket_lookup() {
    let ns = namespace("1");
    ns.enter(|| {
        let mut filter = Filter::load(verifying_settings());
        for (v6, client) in [
            (false, IpAddr::V4(CLIENT_V4)),
            (true, IpAddr::V6(CLIENT_V6)),
        ] {
            let ack = segment(v6, CLIENT_PORT, NOBODY, CLIENT_SEQ, Some(1), false);
            filter.expect(
                "ACK for no connection, unverified source",
                &ack,
                XDP_DROP,
                Verdict::Drop,
                Reason::NoSocket,
            );
            filter.mark_verified(client);
            // The source completed a handshake: its segments are not looked up (the kernel
            // answers one for no connection with a reset, as without moat).
            filter.expect(
                "ACK for no connection, verified source",
                &ack,
                XDP_PASS,
                Verdict::Pass,
                Reason::Pass,
            );
        }
    })
    .expect("entering the namespace");
}

#[test]
fn a_verified_sources_segments_skip_the_lists_until_a_list_changes() {
    use filter_common::maps::{DENY_V4, DENY_V6};
    let ns = namespace("1");
    ns.enter(|| {
        let mut filter = Filter::load(verifying_settings());
        for (v6, client, denied) in [
            (false, IpAddr::V4(CLIENT_V4), format!("{CLIENT_V4}/32")),
            (true, IpAddr::V6(CLIENT_V6), format!("{CLIENT_V6}/128")),
        ] {
            let denied: moat::cidr::Cidr = denied.parse().expect("literal prefix");
            let ack = segment(v6, CLIENT_PORT, NOBODY, CLIENT_SEQ, Some(1), false);
            filter.mark_verified(client);
            filter.expect(
                "verified: the lists checked, the way stamped",
                &ack,
                XDP_PASS,
                Verdict::Pass,
                Reason::Pass,
            );
            // An entry written as every writer writes one, but with the generation left as it
            // was: the stamp still stands, so the lists are not read at all.
            moat::listindex::note_insert(&filter.loaded.ebpf, DENY_V4, &denied)
                .expect("indexing the entry");
            filter.loaded.list_unindexed((DENY_V4, DENY_V6), denied);
            filter.expect(
                "denied, generation as it was",
                &ack,
                XDP_PASS,
                Verdict::Pass,
                Reason::Pass,
            );
            filter.loaded.index().advance_generation();
            filter.expect(
                "denied, generation advanced",
                &ack,
                XDP_DROP,
                Verdict::Drop,
                Reason::Denylist,
            );
            filter.expect(
                "denied, again",
                &ack,
                XDP_DROP,
                Verdict::Drop,
                Reason::Denylist,
            );
            filter.loaded.unlist((DENY_V4, DENY_V6), denied);
            filter.expect("deny lifted", &ack, XDP_PASS, Verdict::Pass, Reason::Pass);
        }
    })
    .expect("entering the namespace");
}

#[test]
fn a_verified_source_is_found_only_through_its_buckets_summary_bit() {
    let ns = namespace("1");
    ns.enter(|| {
        let filter = Filter::load(verifying_settings());
        for (v6, client) in [
            (false, IpAddr::V4(CLIENT_V4)),
            (true, IpAddr::V6(CLIENT_V6)),
        ] {
            let ack = segment(v6, CLIENT_PORT, NOBODY, CLIENT_SEQ, Some(1), false);
            let key = verified_key(client);
            let bucket = filter_common::verified::locate(&key).1;
            // Verified until a second after the program's fixed clock.
            filter.cache().mark(&key, START_NS + 1_000_000_000);
            assert!(filter.cache().summarised(bucket), "a mark sets the bit");
            filter.expect(
                "verified, bit set",
                &ack,
                XDP_PASS,
                Verdict::Pass,
                Reason::Pass,
            );
            // A sweep by a clock past the end clears the bit; the program, whose clock has not
            // moved, still finds the way in force but no longer reads it.
            assert_eq!(filter.cache().sweep(START_NS + 1_000_000_000), 1);
            assert_eq!(filter.verified(client), Some(START_NS + 1_000_000_000));
            filter.expect(
                "way in force, bit clear",
                &ack,
                XDP_DROP,
                Verdict::Drop,
                Reason::NoSocket,
            );
            // A sweep by the program's own clock keeps a bit whose way is in force.
            filter.cache().mark(&key, START_NS + 2_000_000_000);
            assert_eq!(filter.cache().sweep(START_NS), 0);
            filter.expect("marked again", &ack, XDP_PASS, Verdict::Pass, Reason::Pass);
        }
    })
    .expect("entering the namespace");
}

#[test]
fn segments_of_a_real_connection_pass() {
    let ns = namespace("1");
    ns.enter(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, LISTENING)).expect("listen");
        let mut client = TcpStream::connect((Ipv4Addr::LOCALHOST, LISTENING)).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(b"x").expect("write");
        let mut byte = [0u8; 1];
        server
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        server.read_exact(&mut byte).expect("read");
        let port = client.local_addr().expect("local address").port();
        let filter = Filter::load(verifying_settings());
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
            .ipv4(
                Ipv4Addr::LOCALHOST.octets(),
                Ipv4Addr::LOCALHOST.octets(),
                64,
            )
            .tcp(port, LISTENING, 2, 64_240)
            .ack(2)
            .write(&mut frame, b"data")
            .expect("segment");
        filter.expect(
            "a segment of an established connection",
            &frame,
            XDP_PASS,
            Verdict::Pass,
            Reason::Pass,
        );
    })
    .expect("entering the namespace");
}

/// A ban the program issued for SYNs (over a verified source's limit) cuts none of the source's
/// open connections: their segments pass, found by a socket lookup, while its SYNs and its
/// segments for no connection are dropped as banned. A manual ban cuts the connection too.
#[test]
fn a_syn_ban_spares_the_sources_open_connections() {
    let ns = namespace("1");
    ns.enter(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, LISTENING)).expect("listen");
        let client = TcpStream::connect((Ipv4Addr::LOCALHOST, LISTENING)).expect("connect");
        let _accepted = listener.accept().expect("accept");
        let port = client.local_addr().expect("local address").port();
        let segment_to = |dst_port: u16, syn: bool| {
            let builder = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
                .ipv4(
                    Ipv4Addr::LOCALHOST.octets(),
                    Ipv4Addr::LOCALHOST.octets(),
                    64,
                )
                .tcp(port, dst_port, 2, 64_240);
            let builder = if syn { builder.syn() } else { builder.ack(2) };
            let mut frame = Vec::new();
            builder.write(&mut frame, b"").expect("segment");
            frame
        };
        let mut filter = Filter::load(verifying_settings());
        let ban = |filter: &mut Filter, reason: Reason, flags: u16| {
            HashMap::<_, SourceKey, Ban>::try_from(filter.loaded.map_mut(BANS))
                .expect("BANS")
                .insert(
                    SourceKey::for_addr(IpAddr::V4(Ipv4Addr::LOCALHOST), BAN_CLASS, 64),
                    Ban {
                        until_ns: START_NS + 600_000_000_000,
                        offences: 1,
                        reason: reason as u16,
                        flags,
                    },
                    0,
                )
                .expect("writing the ban");
        };
        ban(&mut filter, Reason::RateSyn, 0);
        filter.expect(
            "a segment of the SYN-banned source's open connection",
            &segment_to(LISTENING, false),
            XDP_PASS,
            Verdict::Pass,
            Reason::Pass,
        );
        filter.expect(
            "a segment of the SYN-banned source for no connection",
            &segment_to(NOBODY, false),
            XDP_DROP,
            Verdict::Drop,
            Reason::Banned,
        );
        filter.expect(
            "a SYN of the SYN-banned source",
            &segment_to(NOBODY, true),
            XDP_DROP,
            Verdict::Drop,
            Reason::Banned,
        );
        ban(&mut filter, Reason::Banned, BAN_MANUAL);
        filter.expect(
            "a segment of the manually banned source's open connection",
            &segment_to(LISTENING, false),
            XDP_DROP,
            Verdict::Drop,
            Reason::Banned,
        );
        drop(client);
    })
    .expect("entering the namespace");
}

#[test]
fn the_aggregate_syn_bucket_caps_the_cookies_answered() {
    let ns = namespace("2");
    ns.enter(|| {
        let _listening = listeners(LISTENING);
        let mut settings = verifying_settings();
        settings.aggregate[filter_common::Class::Syn as usize] = filter_common::rate::Limit {
            pps: 1,
            burst_packets: 2,
            bps: 0,
            burst_bytes: 0,
        };
        let filter = Filter::load(settings);
        // The fixed clock never advances, so the bucket holds its burst of two answers and
        // refills nothing. Each SYN comes from another port, as a flood's would.
        for port in [CLIENT_PORT, CLIENT_PORT + 1] {
            let syn = segment(false, port, LISTENING, CLIENT_SEQ, None, true);
            filter.expect(
                "SYN within the cap",
                &syn,
                XDP_TX,
                Verdict::Answered,
                Reason::SynCookie,
            );
        }
        let syn = segment(false, CLIENT_PORT + 2, LISTENING, CLIENT_SEQ, None, true);
        filter.expect(
            "SYN over the cap",
            &syn,
            XDP_DROP,
            Verdict::Drop,
            Reason::FloodSyn,
        );
    })
    .expect("entering the namespace");
}

#[test]
fn ports_listed_open_pass_without_a_socket() {
    use filter_common::{
        ports::{PORT_TCP_OPEN, PORT_UDP_OPEN, PORT_UDP_REPLIES},
        settings::{FLAG_ENFORCE_TCP_PORTS, FLAG_ENFORCE_UDP_PORTS},
    };
    let ns = namespace("1");
    ns.enter(|| {
        let mut settings = verifying_settings();
        settings.flags |= FLAG_ENFORCE_TCP_PORTS | FLAG_ENFORCE_UDP_PORTS;
        let mut filter = Filter::load(settings);
        // A port forwarded to a container has no socket on the host; listing it opens it.
        let mut ports = Array::<_, u8>::try_from(filter.loaded.ebpf.map_mut(PORTS).expect("PORTS"))
            .expect("PORTS is an array");
        ports
            .set(u32::from(NOBODY), PORT_TCP_OPEN | PORT_UDP_OPEN, 0)
            .expect("opening the port");
        for port in [REPLIES, REPLIES + 1] {
            ports
                .set(u32::from(port), PORT_UDP_OPEN | PORT_UDP_REPLIES, 0)
                .expect("opening the port for replies");
        }
        let _reply_v4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, REPLIES + 1)).expect("UDP v4");
        let reply_v6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)
            .expect("UDP v6");
        reply_v6.set_only_v6(true).expect("v6only");
        reply_v6
            .bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, REPLIES + 1)).into())
            .expect("UDP v6 bind");
        for v6 in [false, true] {
            let ack = segment(v6, CLIENT_PORT, NOBODY, CLIENT_SEQ, Some(1), false);
            filter.expect(
                "ACK to a listed port with no socket",
                &ack,
                XDP_PASS,
                Verdict::Pass,
                Reason::Pass,
            );
            filter.expect(
                "UDP to a listed port with no socket",
                &datagram(v6, NOBODY),
                XDP_PASS,
                Verdict::Pass,
                Reason::Pass,
            );
            let syn = segment(v6, CLIENT_PORT, NOBODY, CLIENT_SEQ, None, true);
            filter.expect(
                "SYN to a listed port with no socket",
                &syn,
                XDP_PASS,
                Verdict::Pass,
                Reason::Pass,
            );
            filter.expect(
                "UDP to an unlisted port",
                &datagram(v6, LISTENING),
                XDP_DROP,
                Verdict::Drop,
                Reason::PortClosed,
            );
            // Ports open for replies only (the ephemeral range) take a datagram only for a socket.
            filter.expect(
                "UDP to a port open for replies, no socket",
                &datagram(v6, REPLIES),
                XDP_DROP,
                Verdict::Drop,
                Reason::PortClosed,
            );
            filter.expect(
                "UDP to a port open for replies, a bound socket",
                &datagram(v6, REPLIES + 1),
                XDP_PASS,
                Verdict::Pass,
                Reason::Pass,
            );
        }
    })
    .expect("entering the namespace");
}
