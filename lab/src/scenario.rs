//! The attacks the lab can run: what real attack each models, and its flood plans for the
//! generator (template frames from the attackers' interface to the origin through the router,
//! and how each copy's source and ports vary), its timing (steady or pulsed) and whether it
//! needs real handshakes instead. It neither sends nor measures anything.

use std::{net::Ipv6Addr, time::Duration};

use etherparse::PacketBuilder;
use filter_common::flood::{
    FloodConfig, L4_NONE, L4_TCP, L4_UDP, V6_RANDOM_HOST, V6_RANDOM_SUBNET,
};

use crate::{
    flood::FloodPlan,
    origin::HTTP_PORT,
    topology::{LabNet, ORIGIN_IPV4, ORIGIN_IPV6, SPOOFED_V4, SPOOFED_V6},
};

/// How many packets per second of a sweep's rate one connection attempt per second of the
/// botnet of real handshakes stands for: a held connection costs its SYN, the handshake's
/// ACK and the request, and the origin's answers.
pub const PACKETS_PER_CONNECTION: u64 = 100;

/// The connection attempts per second a botnet of real handshakes makes at a sweep's `rate`
/// (0, as fast as it can, stays 0): 30k packets/s asks for 300 connections/s.
pub const fn connections_per_second(rate: u64) -> u64 {
    if rate == 0 {
        0
    } else {
        let connections = rate / PACKETS_PER_CONNECTION;
        if connections == 0 { 1 } else { connections }
    }
}

/// An attack scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// SYNs from random spoofed IPv4 sources (a /16).
    SpoofedSyn,
    /// SYNs from a fixed pool of 10,000 sources.
    BotnetSyn,
    /// UDP to a closed port from random spoofed sources.
    UdpFlood,
    /// Large UDP "answers" from DNS, NTP and memcached source ports (amplified reflection).
    Reflection,
    /// ICMP echo requests from random spoofed sources.
    IcmpFlood,
    /// Non-first IPv4 fragments from random spoofed sources.
    FragmentFlood,
    /// IPv6 SYNs from sources rotating inside a /64.
    Ipv6Syn,
    /// TCP ACKs from random spoofed sources and ports to the origin's HTTP port, belonging to
    /// no connection.
    AckFlood,
    /// UDP and TCP SYNs from random spoofed sources to random destination ports (carpet
    /// bombing: no port list stops it, only knowing which ports have a socket).
    CarpetBomb,
    /// IPv6 SYNs from random /64s inside one /48 ([`ROTATE_V6`]), with random host parts.
    Ipv6Rotate,
    /// Real TCP handshakes from about 1,000 real addresses (no spoofing; sent by the lab's
    /// botnet, not by the generator).
    BotnetConnect,
    /// Spoofed SYNs and UDP to a closed port in pulses: [`PULSE`] on, [`PULSE`] off.
    Pulse,
    /// All of the generator's floods above at once, steadily (the botnet's handshakes and the
    /// pulse's timing are left to their own scenarios).
    Mixed,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Scenario; 13] = [
        Scenario::SpoofedSyn,
        Scenario::BotnetSyn,
        Scenario::UdpFlood,
        Scenario::Reflection,
        Scenario::IcmpFlood,
        Scenario::FragmentFlood,
        Scenario::Ipv6Syn,
        Scenario::AckFlood,
        Scenario::CarpetBomb,
        Scenario::Ipv6Rotate,
        Scenario::BotnetConnect,
        Scenario::Pulse,
        Scenario::Mixed,
    ];

    /// The name on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Scenario::SpoofedSyn => "spoofed-syn",
            Scenario::BotnetSyn => "botnet-syn",
            Scenario::UdpFlood => "udp-flood",
            Scenario::Reflection => "reflection",
            Scenario::IcmpFlood => "icmp-flood",
            Scenario::FragmentFlood => "fragment-flood",
            Scenario::Ipv6Syn => "ipv6-syn",
            Scenario::AckFlood => "ack-flood",
            Scenario::CarpetBomb => "carpet-bomb",
            Scenario::Ipv6Rotate => "ipv6-rotate",
            Scenario::BotnetConnect => "botnet-connect",
            Scenario::Pulse => "pulse",
            Scenario::Mixed => "mixed",
        }
    }

    /// What real attack the scenario models, with a public reference where there is one.
    pub const fn models(self) -> &'static str {
        match self {
            Scenario::SpoofedSyn => {
                "The classic SYN flood: half-open connections from forged sources fill the \
                 origin's backlog (CERT Advisory CA-1996-21, 1996; IETF RFC 4987, \
                 \"TCP SYN Flooding Attacks and Common Mitigations\", 2007)."
            }
            Scenario::BotnetSyn => {
                "A SYN flood from a fixed set of bots, the way IoT botnets send it; Mirai's \
                 took down Krebs on Security and Dyn in 2016 (Antonakakis et al., \
                 \"Understanding the Mirai Botnet\", USENIX Security 2017)."
            }
            Scenario::UdpFlood => {
                "A plain UDP flood at a port with no socket, which costs the origin's stack a \
                 lookup and an ICMP error per packet; UDP floods are a standard vector of \
                 Mirai and its successors (Antonakakis et al., USENIX Security 2017)."
            }
            Scenario::Reflection => {
                "Reflected, amplified answers from open DNS, NTP and memcached servers \
                 (US-CERT TA14-017A, \"UDP-Based Amplification Attacks\", amplification \
                 factors up to 556.9 for NTP and 51,000 for memcached); memcached reflection \
                 hit GitHub at 1.35 Tbps (GitHub, \"February 28th DDoS Incident Report\", \
                 2018)."
            }
            Scenario::IcmpFlood => {
                "A ping flood from forged sources: echo requests the origin's kernel answers \
                 one by one, spending CPU and uplink on each."
            }
            Scenario::FragmentFlood => {
                "Later fragments of large datagrams, which carry no ports, so port-based \
                 filters cannot judge them and the origin holds reassembly state for each \
                 (IETF RFC 1858, \"Security Considerations for IP Fragment Filtering\", 1995)."
            }
            Scenario::Ipv6Syn => {
                "A SYN flood over IPv6 from one host's /64, whose 2^64 addresses it may all \
                 use (privacy addresses, IETF RFC 4941, 2007), so limits per address never \
                 see the same source twice."
            }
            Scenario::Ipv6Rotate => {
                "A SYN flood from random /64s of one /48, a prefix many providers give a single \
                 site (IETF RFC 6177, 2011): it defeats limits per address and per /64 alike; \
                 only aggregating by a shorter prefix sees one source."
            }
            Scenario::BotnetConnect => {
                "A botnet of real hosts completing real TCP handshakes and holding the \
                 connections (1,000 addresses; each step asks for one connection per second \
                 per 100 packets per second of the sweep's rate), which SYN cookies and \
                 spoofing checks let through, as the Meris botnet's did at 21.8 million \
                 requests per second against Yandex (Qrator Labs and Yandex, 2021)."
            }
            Scenario::AckFlood => {
                "TCP ACKs belonging to no connection, which pass a filter that only watches \
                 SYNs; an attack vector of the Mirai source code released in 2016 \
                 (Antonakakis et al., USENIX Security 2017)."
            }
            Scenario::CarpetBomb => {
                "Carpet bombing across the whole port range, UDP and TCP SYNs alike, so no \
                 port list stops it; Cloudflare's record 7.3 Tbps attack of 2025 hit an average \
                 of 21,925 destination ports per second, peaking at 34,517 (Cloudflare blog, \
                 June 2025)."
            }
            Scenario::Pulse => {
                "A pulse-wave attack: full-rate bursts with pauses between them, which \
                 defeats a filter that reacts slower than a burst lasts (Imperva Incapsula, \
                 \"Attackers Use DDoS Pulses to Pin Down Multiple Targets\", 2017)."
            }
            Scenario::Mixed => {
                "A multi-vector attack, several floods at once so that a filter tuned for one \
                 meets the others, as most large attacks in Cloudflare's quarterly DDoS threat \
                 reports are."
            }
        }
    }

    /// Whether the scenario is real TCP handshakes from real addresses (the lab's botnet)
    /// rather than generated floods; its [`plans`](Scenario::plans) are empty.
    pub const fn real_handshakes(self) -> bool {
        matches!(self, Scenario::BotnetConnect)
    }

    /// For a pulsed scenario, how long each burst and each pause lasts; `None` for a steady
    /// one.
    pub const fn pulse(self) -> Option<Duration> {
        match self {
            Scenario::Pulse => Some(PULSE),
            _ => None,
        }
    }

    /// Parses `all` or a comma-separated list of names.
    pub fn parse_list(text: &str) -> Result<Vec<Scenario>, String> {
        if text == "all" {
            return Ok(Scenario::ALL.to_vec());
        }
        text.split(',')
            .map(|name| {
                Scenario::ALL
                    .into_iter()
                    .find(|s| s.name() == name.trim())
                    .ok_or_else(|| {
                        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                        format!("unknown scenario {name:?}; use all or {}", names.join(", "))
                    })
            })
            .collect()
    }

    /// The flood plans (the generator rotates among them); empty for
    /// [`real_handshakes`](Scenario::real_handshakes).
    pub fn plans(self, net: &LabNet) -> Vec<FloodPlan> {
        self.plans_from(&Templates::new(net))
    }

    fn plans_from(self, t: &Templates) -> Vec<FloodPlan> {
        match self {
            Scenario::SpoofedSyn => vec![t.syn_v4(65_536)],
            Scenario::BotnetSyn => vec![t.syn_v4(10_000)],
            Scenario::UdpFlood => vec![t.udp_v4(40_000, 9_999, 512, true)],
            Scenario::Reflection => [53, 123, 11_211]
                .into_iter()
                .map(|port| t.udp_v4(port, 443, 1_200, false))
                .collect(),
            Scenario::IcmpFlood => vec![t.icmp_v4()],
            Scenario::FragmentFlood => vec![t.fragment_v4()],
            Scenario::Ipv6Syn => vec![t.syn_v6()],
            Scenario::AckFlood => vec![t.ack_v4()],
            Scenario::CarpetBomb => vec![t.carpet_v4(), t.syn_carpet_v4()],
            Scenario::Ipv6Rotate => vec![t.syn_v6_rotating()],
            Scenario::BotnetConnect => Vec::new(),
            Scenario::Pulse => vec![t.syn_v4(65_536), t.udp_v4(40_000, 9_999, 512, true)],
            Scenario::Mixed => vec![
                t.syn_v4(65_536),
                t.udp_v4(53, 443, 1_200, false),
                t.icmp_v4(),
                t.fragment_v4(),
                t.syn_v6(),
                t.ack_v4(),
                t.carpet_v4(),
                t.syn_v6_rotating(),
            ],
        }
    }
}

/// How long each burst and each pause of [`Scenario::Pulse`] lasts.
pub const PULSE: Duration = Duration::from_secs(2);

/// The /48 inside [`SPOOFED_V6`] whose /64s [`Scenario::Ipv6Rotate`] rotates over.
pub const ROTATE_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 0xff01, 0, 0, 0, 0, 0), 48);

/// Builds template frames from the attackers' interface to the origin via the router.
struct Templates {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
}

fn v4_base() -> [u8; 16] {
    let mut base = [0u8; 16];
    base[..4].copy_from_slice(&SPOOFED_V4.0.octets());
    base
}

fn build(
    builder: impl FnOnce(&mut Vec<u8>) -> Result<(), etherparse::err::packet::BuildWriteError>,
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(1600);
    // Writing into a Vec cannot fail and every template fits its length fields.
    if builder(&mut frame).is_err() {
        frame.clear();
    }
    frame
}

impl Templates {
    fn new(net: &LabNet) -> Templates {
        Templates {
            src_mac: net.attacker_link.host_mac,
            dst_mac: net.attacker_link.router_mac,
        }
    }

    fn config(
        &self,
        base: [u8; 16],
        count: u32,
        version: u8,
        l4_kind: u8,
        random_port: bool,
    ) -> FloodConfig {
        FloodConfig {
            src_base_be: base,
            src_count: count,
            v6_random_host: if version == 6 { V6_RANDOM_HOST } else { 0 },
            l3_offset: 14,
            l4_offset: if version == 4 { 34 } else { 54 },
            ip_version: version,
            l4_kind,
            random_src_port: u8::from(random_port),
            random_dst_port: 0,
        }
    }

    /// A bare ACK to the origin's HTTP port, as if for a connection that does not exist; the
    /// generator varies source and source port, so the sequence and acknowledgement numbers
    /// match nothing (nor any SYN cookie).
    fn ack_v4(&self) -> FloodPlan {
        let builder = PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ipv4(SPOOFED_V4.0.octets(), ORIGIN_IPV4.octets(), 64)
            .tcp(40_000, HTTP_PORT, 0x6d6f_6174, 64_240)
            .ack(0x0bad_c0de);
        FloodPlan {
            template: build(|f| builder.write(f, &[])),
            config: self.config(v4_base(), 65_536, 4, L4_TCP, true),
        }
    }

    /// UDP from random spoofed sources and source ports to random destination ports.
    fn carpet_v4(&self) -> FloodPlan {
        let mut plan = self.udp_v4(40_000, 9_999, 512, true);
        plan.config.random_dst_port = 1;
        plan
    }

    /// SYNs from random spoofed sources and ports to random destination ports.
    fn syn_carpet_v4(&self) -> FloodPlan {
        let mut plan = self.syn_v4(65_536);
        plan.config.random_dst_port = 1;
        plan
    }

    fn syn_v4(&self, sources: u32) -> FloodPlan {
        let builder = PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ipv4(SPOOFED_V4.0.octets(), ORIGIN_IPV4.octets(), 64)
            .tcp(40_000, 80, 1, 64_240)
            .syn();
        FloodPlan {
            template: build(|f| builder.write(f, &[])),
            config: self.config(v4_base(), sources, 4, L4_TCP, true),
        }
    }

    fn udp_v4(&self, src_port: u16, dst_port: u16, payload: usize, random_port: bool) -> FloodPlan {
        let builder = PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ipv4(SPOOFED_V4.0.octets(), ORIGIN_IPV4.octets(), 64)
            .udp(src_port, dst_port);
        let data = vec![0x42; payload];
        FloodPlan {
            template: build(|f| builder.write(f, &data)),
            config: self.config(v4_base(), 65_536, 4, L4_UDP, random_port),
        }
    }

    fn icmp_v4(&self) -> FloodPlan {
        let builder = PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ipv4(SPOOFED_V4.0.octets(), ORIGIN_IPV4.octets(), 64)
            .icmpv4_echo_request(0x6d6f, 1);
        FloodPlan {
            template: build(|f| builder.write(f, &[0x42; 56])),
            config: self.config(v4_base(), 65_536, 4, L4_NONE, false),
        }
    }

    /// A later fragment (offset 1480) of a large UDP datagram: no transport header.
    fn fragment_v4(&self) -> FloodPlan {
        let mut header = etherparse::Ipv4Header::new(
            1_000,
            64,
            etherparse::IpNumber::UDP,
            SPOOFED_V4.0.octets(),
            ORIGIN_IPV4.octets(),
        )
        .expect("a 1000-byte payload fits an IPv4 header");
        header.identification = 0x6d6f;
        // Offset in 8-byte units; 185 * 8 = 1480.
        header.fragment_offset = etherparse::IpFragOffset::try_new(185).expect("185 < 8192");
        header.more_fragments = true;
        header.header_checksum = header.calc_header_checksum();
        let builder = PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ip(etherparse::IpHeaders::Ipv4(header, Default::default()));
        FloodPlan {
            template: build(|f| builder.write(f, etherparse::IpNumber::UDP, &[0x42; 1_000])),
            config: self.config(v4_base(), 65_536, 4, L4_NONE, false),
        }
    }

    fn syn_v6(&self) -> FloodPlan {
        let builder = PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ipv6(SPOOFED_V6.0.octets(), ORIGIN_IPV6.octets(), 64)
            .tcp(40_000, 80, 1, 64_240)
            .syn();
        let mut base = SPOOFED_V6.0.octets();
        // One attacker's /64 inside the spoofed range; the generator rotates the host part.
        base[6..8].copy_from_slice(&[0x00, 0x01]);
        FloodPlan {
            template: build(|f| builder.write(f, &[])),
            config: self.config(base, 65_536, 6, L4_TCP, true),
        }
    }

    /// SYNs from a random /64 of [`ROTATE_V6`] each, with a random host part.
    fn syn_v6_rotating(&self) -> FloodPlan {
        let base = ROTATE_V6.0.octets();
        let builder = PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ipv6(base, ORIGIN_IPV6.octets(), 64)
            .tcp(40_000, 80, 1, 64_240)
            .syn();
        let mut config = self.config(base, 65_536, 6, L4_TCP, true);
        config.v6_random_host = V6_RANDOM_HOST | V6_RANDOM_SUBNET;
        FloodPlan {
            template: build(|f| builder.write(f, &[])),
            config,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn templates() -> Templates {
        Templates {
            src_mac: [0x02, 0, 0, 0, 0, 0x02],
            dst_mac: [0x02, 0, 0, 0, 0, 0x01],
        }
    }

    #[test]
    fn every_scenario_has_its_own_name_and_says_what_it_models() {
        let names: HashSet<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Scenario::ALL.len(), "names are unique");
        for scenario in Scenario::ALL {
            assert_eq!(
                Scenario::parse_list(scenario.name()),
                Ok(vec![scenario]),
                "{scenario:?}"
            );
            assert!(
                scenario.models().len() > 40,
                "{scenario:?} says what it models"
            );
        }
        assert_eq!(
            Scenario::ALL.last(),
            Some(&Scenario::Mixed),
            "mixed runs last"
        );
    }

    #[test]
    fn only_botnet_connect_uses_real_handshakes_and_has_no_plans() {
        for scenario in Scenario::ALL {
            let plans = scenario.plans_from(&templates());
            let botnet = scenario == Scenario::BotnetConnect;
            assert_eq!(scenario.real_handshakes(), botnet, "{scenario:?}");
            assert_eq!(plans.is_empty(), botnet, "{scenario:?} plans");
            for plan in plans {
                assert!(!plan.template.is_empty(), "{scenario:?} template built");
            }
        }
    }

    #[test]
    fn ipv6_rotate_randomises_subnet_and_host_inside_one_48_of_the_spoofed_range() {
        let plans = Scenario::Ipv6Rotate.plans_from(&templates());
        let [plan] = plans.as_slice() else {
            panic!("one plan: {plans:?}");
        };
        let config = plan.config;
        assert_eq!((config.ip_version, config.l4_kind), (6, L4_TCP));
        assert_eq!((config.l3_offset, config.l4_offset), (14, 54));
        assert_eq!(config.v6_random_host, V6_RANDOM_HOST | V6_RANDOM_SUBNET);
        assert_eq!(config.src_base_be, ROTATE_V6.0.octets());
        let (spoofed, spoofed_len) = SPOOFED_V6;
        let bits = |address: Ipv6Addr| u128::from(address);
        assert!(
            ROTATE_V6.1 >= spoofed_len
                && bits(ROTATE_V6.0) >> (128 - spoofed_len) == bits(spoofed) >> (128 - spoofed_len),
            "{ROTATE_V6:?} lies inside {SPOOFED_V6:?}"
        );
        // The generator keeps the template's first 48 bits of source: they must be the /48's.
        let headers = etherparse::PacketHeaders::from_ethernet_slice(&plan.template)
            .expect("the template parses");
        let Some(etherparse::NetHeaders::Ipv6(ip, _)) = headers.net else {
            panic!("not IPv6: {:?}", headers.net);
        };
        let Some(etherparse::TransportHeader::Tcp(tcp)) = headers.transport else {
            panic!("not TCP");
        };
        assert_eq!(ip.source, ROTATE_V6.0.octets());
        assert!(tcp.syn && !tcp.ack, "a SYN");
        assert_eq!(
            tcp.checksum,
            tcp.calc_checksum_ipv6(&ip, &[]).expect("no payload"),
            "the template's checksum is right, so incremental updates stay right"
        );
    }

    #[test]
    fn ipv6_syn_rotates_only_the_host_part() {
        let plans = Scenario::Ipv6Syn.plans_from(&templates());
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].config.v6_random_host, V6_RANDOM_HOST);
    }

    #[test]
    fn pulse_sends_spoofed_syns_and_closed_port_udp_two_seconds_on_two_off() {
        for scenario in Scenario::ALL {
            let expected = (scenario == Scenario::Pulse).then_some(Duration::from_secs(2));
            assert_eq!(scenario.pulse(), expected, "{scenario:?}");
        }
        let plans = Scenario::Pulse.plans_from(&templates());
        let kinds: Vec<(u8, u8, u32)> = plans
            .iter()
            .map(|plan| {
                (
                    plan.config.ip_version,
                    plan.config.l4_kind,
                    plan.config.src_count,
                )
            })
            .collect();
        assert_eq!(kinds, [(4, L4_TCP, 65_536), (4, L4_UDP, 65_536)]);
        // The SYN's flags byte and the UDP destination port (nothing listens on 9999).
        assert_eq!(plans[0].template[47], 0x02, "SYN only");
        assert_eq!(
            u16::from_be_bytes([plans[1].template[36], plans[1].template[37]]),
            9_999
        );
        assert!(
            plans.iter().all(|plan| plan.config.random_src_port == 1),
            "random source ports"
        );
    }

    #[test]
    fn carpet_bombing_sends_udp_and_syns_to_random_destination_ports() {
        let plans = Scenario::CarpetBomb.plans_from(&templates());
        let kinds: Vec<(u8, u8, u8)> = plans
            .iter()
            .map(|plan| {
                (
                    plan.config.l4_kind,
                    plan.config.random_dst_port,
                    plan.config.random_src_port,
                )
            })
            .collect();
        assert_eq!(kinds, [(L4_UDP, 1, 1), (L4_TCP, 1, 1)]);
        assert_eq!(plans[1].template[47], 0x02, "SYN only");
    }

    #[test]
    fn a_sweep_rate_asks_the_botnet_for_a_hundredth_as_many_connections() {
        assert_eq!(connections_per_second(30_000), 300);
        assert_eq!(connections_per_second(1_000_000), 10_000);
        assert_eq!(
            connections_per_second(50),
            1,
            "never 0, which means as fast as it can"
        );
        assert_eq!(connections_per_second(0), 0);
    }
}
