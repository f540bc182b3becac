//! The attacks the lab can run, as flood plans for the generator: template frames from the
//! attackers' interface to the origin through the router, and how each copy's source (and
//! ports) vary. It neither sends nor measures anything.

use etherparse::PacketBuilder;
use filter_common::flood::{FloodConfig, L4_NONE, L4_TCP, L4_UDP};

use crate::{
    flood::FloodPlan,
    origin::HTTP_PORT,
    topology::{LabNet, ORIGIN_IPV4, ORIGIN_IPV6, SPOOFED_V4, SPOOFED_V6},
};

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
    /// UDP from random spoofed sources to random destination ports (carpet bombing: no port
    /// list stops it, only knowing which ports have a socket).
    CarpetBomb,
    /// All of the above at once.
    Mixed,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Scenario; 10] = [
        Scenario::SpoofedSyn,
        Scenario::BotnetSyn,
        Scenario::UdpFlood,
        Scenario::Reflection,
        Scenario::IcmpFlood,
        Scenario::FragmentFlood,
        Scenario::Ipv6Syn,
        Scenario::AckFlood,
        Scenario::CarpetBomb,
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
            Scenario::Mixed => "mixed",
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

    /// The flood plans (the generator rotates among them).
    pub fn plans(self, net: &LabNet) -> Vec<FloodPlan> {
        let t = Templates::new(net);
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
            Scenario::CarpetBomb => vec![t.carpet_v4()],
            Scenario::Mixed => vec![
                t.syn_v4(65_536),
                t.udp_v4(53, 443, 1_200, false),
                t.icmp_v4(),
                t.fragment_v4(),
                t.syn_v6(),
                t.ack_v4(),
                t.carpet_v4(),
            ],
        }
    }
}

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
            v6_random_host: u32::from(version == 6),
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
}
