//! Pure questions about one parsed packet: which rate class it falls in, whether its TCP flags
//! make sense, whether it is ICMP the network needs, and whether it comes from a reflector port.

use crate::{
    Packet,
    packet::{Fragment, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    reason::Reason,
};

/// Number of rate classes.
pub const CLASS_COUNT: usize = 4;

/// A traffic class with its own rate limits.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// TCP SYN without ACK: a new connection.
    Syn = 0,
    /// UDP.
    Udp = 1,
    /// ICMP and ICMPv6, except what the network needs ([`is_essential_icmp`]).
    Icmp = 2,
    /// Any other IP protocol (GRE, ESP, SCTP...).
    Other = 3,
}

impl Class {
    /// Every class, in discriminant order.
    pub const ALL: [Class; CLASS_COUNT] = [Class::Syn, Class::Udp, Class::Icmp, Class::Other];

    /// The name used in configuration keys and labels.
    pub const fn label(self) -> &'static str {
        match self {
            Class::Syn => "syn",
            Class::Udp => "udp",
            Class::Icmp => "icmp",
            Class::Other => "other",
        }
    }

    /// The reason for a source over its own limit in this class.
    pub const fn source_reason(self) -> Reason {
        match self {
            Class::Syn => Reason::RateSyn,
            Class::Udp => Reason::RateUdp,
            Class::Icmp => Reason::RateIcmp,
            Class::Other => Reason::RateOther,
        }
    }

    /// The reason for all sources together over the aggregate limit in this class.
    pub const fn flood_reason(self) -> Reason {
        match self {
            Class::Syn => Reason::FloodSyn,
            Class::Udp => Reason::FloodUdp,
            Class::Icmp => Reason::FloodIcmp,
            Class::Other => Reason::FloodOther,
        }
    }
}

/// TCP flag bits.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
}

/// Whether a TCP segment is a connection attempt (SYN without ACK).
pub const fn is_syn(flags: u8) -> bool {
    flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
}

/// Whether a TCP flag combination can occur in a real connection. Refused: NULL (no flags),
/// SYN+FIN, SYN+RST, FIN+RST, and FIN, PSH or URG without ACK (FIN and XMAS scans).
pub const fn tcp_flags_valid(flags: u8) -> bool {
    use tcp_flags::*;
    let core = flags & (FIN | SYN | RST | PSH | ACK | URG);
    if core == 0 {
        return false;
    }
    if flags & SYN != 0 && flags & (FIN | RST) != 0 {
        return false;
    }
    if flags & FIN != 0 && flags & RST != 0 {
        return false;
    }
    if flags & ACK == 0 && flags & (FIN | PSH | URG) != 0 {
        return false;
    }
    true
}

/// Whether an ICMP (IPv4) or ICMPv6 message is one the network needs to work: destination
/// unreachable (every code, fragmentation needed among them), packet too big, time exceeded,
/// parameter problem, and IPv6 neighbour and router discovery. These are never rate-limited.
pub const fn is_essential_icmp(ip_version: u8, icmp_type: u8) -> bool {
    if ip_version == 4 {
        matches!(icmp_type, 3 | 11 | 12)
    } else {
        matches!(icmp_type, 1..=4 | 133..=137)
    }
}

/// Whether a parsed packet is ICMP the network needs ([`is_essential_icmp`]). No ban drops it
/// either: a banned router's "packet too big" or a banned neighbour's solicitation would
/// otherwise cut the origin off (a ban of an IPv6 /64 holding the gateway stopped neighbour
/// discovery), and spoofing one gains a banned source nothing, since none is ever limited.
pub const fn is_network_control(packet: &Packet) -> bool {
    packet.has_l4()
        && matches!(packet.l4_proto, IPPROTO_ICMP | IPPROTO_ICMPV6)
        && is_essential_icmp(packet.ip_version, packet.icmp_type)
}

/// Whether a parsed packet is an ICMP or ICMPv6 echo reply: the answer to a ping the origin
/// sent, which the kernel hands only to the pinging socket. No per-source limit applies to it
/// (the origin's own `ping -i 0.01` of a backend earned that backend a ban); the aggregate
/// ICMP limit does.
pub const fn is_echo_reply(packet: &Packet) -> bool {
    packet.has_l4()
        && matches!(packet.l4_proto, IPPROTO_ICMP | IPPROTO_ICMPV6)
        && packet.icmp_type == if packet.ip_version == 4 { 0 } else { 129 }
}

/// Whether a class's per-source limit may earn a source an automatic ban when it is
/// `verified` (it completed a TCP handshake): never for SYNs, which anyone can send with any
/// address (a verified source's past its limit are verified like a first-time visitor's);
/// UDP, ICMP and other traffic only from sources not verified, since anyone can send those
/// with a visitor's address too, and a ban would cut the visitor off from the site. Their
/// excess is dropped all the same.
pub const fn may_earn_ban(class: Class, verified: bool) -> bool {
    !matches!(class, Class::Syn) && !verified
}

/// The rate class of a packet, or `None` if rate limits do not apply to it: established TCP
/// (not a SYN), essential ICMP, and later fragments (the fragment policy covers them).
pub const fn class_of(packet: &Packet) -> Option<Class> {
    if matches!(packet.fragment, Fragment::Later) {
        return None;
    }
    if !packet.has_l4() {
        return Some(Class::Other);
    }
    match packet.l4_proto {
        IPPROTO_TCP => {
            if is_syn(packet.tcp_flags) {
                Some(Class::Syn)
            } else {
                None
            }
        }
        IPPROTO_UDP => Some(Class::Udp),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if is_essential_icmp(packet.ip_version, packet.icmp_type) {
                None
            } else {
                Some(Class::Icmp)
            }
        }
        _ => Some(Class::Other),
    }
}

/// UDP source ports of services abused for reflection and amplification: chargen, DNS,
/// portmap, NTP, NetBIOS, SNMP, CLDAP, SSDP, WS-Discovery, mDNS, memcached, and others from
/// the US-CERT TA14-017A list and later reports (RIP, OpenVPN, Ubiquiti discovery, ARMS,
/// CoAP, Jenkins discovery, DHCPDiscover, TP240).
pub const REFLECTOR_PORTS: &[u16] = &[
    7,     // echo
    17,    // qotd
    19,    // chargen
    53,    // DNS
    69,    // TFTP
    111,   // portmap / rpcbind
    123,   // NTP
    137,   // NetBIOS name service
    161,   // SNMP
    389,   // CLDAP
    520,   // RIPv1
    1194,  // OpenVPN
    1900,  // SSDP
    3283,  // Apple Remote Desktop (ARMS)
    3702,  // WS-Discovery
    5353,  // mDNS
    5683,  // CoAP
    10001, // Ubiquiti discovery
    10074, // Mitel TP240
    11211, // memcached
    33848, // Jenkins discovery
    37810, // DHCPDiscover (DVR)
];

#[cfg(test)]
mod tests {
    use super::tcp_flags::*;
    use super::*;

    #[test]
    fn invalid_flag_combinations() {
        for flags in [
            0,
            SYN | FIN,
            SYN | RST,
            SYN | FIN | RST | PSH | ACK | URG,
            FIN,
            FIN | PSH | URG,
            PSH,
            URG,
            FIN | RST | ACK,
        ] {
            assert!(!tcp_flags_valid(flags), "{flags:#04x}");
        }
        for flags in [
            SYN,
            SYN | ACK,
            ACK,
            ACK | PSH,
            FIN | ACK,
            RST,
            RST | ACK,
            ACK | URG,
        ] {
            assert!(tcp_flags_valid(flags), "{flags:#04x}");
        }
    }

    #[test]
    fn classes() {
        let mut packet = Packet::new(4, 60);
        packet.l4_parsed = 1;
        packet.l4_proto = IPPROTO_TCP;
        packet.tcp_flags = SYN;
        assert_eq!(class_of(&packet), Some(Class::Syn));
        packet.tcp_flags = SYN | ACK;
        assert_eq!(class_of(&packet), None);
        packet.l4_proto = IPPROTO_UDP;
        assert_eq!(class_of(&packet), Some(Class::Udp));
        packet.l4_proto = IPPROTO_ICMP;
        packet.icmp_type = 8;
        assert_eq!(class_of(&packet), Some(Class::Icmp));
        packet.icmp_type = 3;
        assert_eq!(class_of(&packet), None, "fragmentation needed is essential");
        packet.ip_version = 6;
        packet.l4_proto = IPPROTO_ICMPV6;
        packet.icmp_type = 135;
        assert_eq!(
            class_of(&packet),
            None,
            "neighbour solicitation is essential"
        );
        packet.icmp_type = 128;
        assert_eq!(class_of(&packet), Some(Class::Icmp));
        packet.l4_parsed = 0;
        packet.l4_proto = 47;
        assert_eq!(class_of(&packet), Some(Class::Other));
        packet.fragment = Fragment::Later;
        assert_eq!(class_of(&packet), None);
    }

    #[test]
    fn reflector_ports_are_sorted_and_unique() {
        assert!(REFLECTOR_PORTS.windows(2).all(|w| w[0] < w[1]));
    }
}
