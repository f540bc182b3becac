//! The frames the benchmark runs through the filter: one well-formed frame per path (a SYN, an
//! established-connection segment, bare ACKs to a listener and to a closed port, datagrams from
//! a reflector port and to a closed port, a truncated header), each
//! in IPv4 or IPv6 and untagged, 802.1Q-tagged or QinQ-tagged. Headers are written by etherparse
//! from their fields, so lengths and checksums are right unless a frame is broken on purpose.
//!
//! Addresses are documentation ranges only (198.18.0.0/15, 2001:db8::/32). This is not a traffic
//! generator: the throughput section sends copies of [`syn`] frames with `lab::flood`.

use std::net::IpAddr;

use etherparse::PacketBuilder;

/// MAC of the sending end (locally administered).
pub const SOURCE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];
/// MAC of the receiving end (locally administered).
pub const DESTINATION_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x02];
/// The origin's port every TCP frame goes to.
pub const ORIGIN_PORT: u16 = 80;
/// The client's port of the TCP frames.
pub const CLIENT_PORT: u16 = 40_000;
/// A port of the origin nobody listens on, TCP or UDP.
pub const CLOSED_PORT: u16 = 81;
/// The acknowledgement number of the bare ACKs: no SYN cookie the origin made (a cookie check
/// fails unless a SYN-ACK carried `ACK_NUMBER - 1`, one chance in 2^24 a minute).
pub const ACK_NUMBER: u32 = 2_000;

/// Tag protocol identifier of an 802.1Q VLAN tag.
const DOT1Q: u16 = 0x8100;
/// Tag protocol identifier of an 802.1ad (QinQ outer) tag.
const DOT1AD: u16 = 0x88a8;
/// Offset of the EtherType in an untagged frame (after both MACs).
const ETHER_TYPE_OFFSET: usize = 12;
/// Ethernet header length of an untagged frame.
pub const ETHERNET_LEN: usize = 14;
/// IPv4 header length (no options).
pub const IPV4_LEN: usize = 20;
/// IPv6 header length.
pub const IPV6_LEN: usize = 40;

/// How a frame is tagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tagging {
    /// No VLAN tag.
    Untagged,
    /// One 802.1Q tag.
    Vlan,
    /// An 802.1ad tag around an 802.1Q tag.
    QinQ,
}

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A TCP SYN to [`ORIGIN_PORT`]: a new connection.
    Syn,
    /// A TCP ACK with 64 bytes of payload to [`ORIGIN_PORT`]: an established connection.
    Established,
    /// A bare TCP ACK to [`ORIGIN_PORT`] (a listener's) that belongs to no connection: its
    /// acknowledgement number is checked as a SYN cookie.
    StrayAck,
    /// A bare TCP ACK to [`CLOSED_PORT`]: no socket at all.
    AckClosed,
    /// A UDP datagram from source port 53 (DNS) to an ephemeral port: a reflected answer.
    DnsAnswer,
    /// A UDP datagram from [`CLIENT_PORT`] to this port.
    Udp(u16),
    /// A TCP SYN whose TCP header is cut short: malformed.
    Truncated,
}

/// Builds `shape` from `source` to `destination` (the same family), tagged as `tagging` says.
pub fn build(shape: Shape, source: IpAddr, destination: IpAddr, tagging: Tagging) -> Vec<u8> {
    let ethernet = PacketBuilder::ethernet2(SOURCE_MAC, DESTINATION_MAC);
    let ip = match (source, destination) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            ethernet.ipv4(source.octets(), destination.octets(), 64)
        }
        (IpAddr::V6(source), IpAddr::V6(destination)) => {
            ethernet.ipv6(source.octets(), destination.octets(), 64)
        }
        // Callers pair addresses of one family; a mixed pair gets an IPv6 header from the
        // mapped IPv4 address, still a well-formed frame.
        (source, destination) => ethernet.ipv6(v6_octets(source), v6_octets(destination), 64),
    };
    let mut frame = Vec::new();
    let written = match shape {
        Shape::Syn | Shape::Truncated => {
            let builder = ip.tcp(CLIENT_PORT, ORIGIN_PORT, 1, 64_240).syn();
            frame.reserve(builder.size(0));
            builder.write(&mut frame, &[])
        }
        Shape::Established => {
            let payload = [0x6d; 64];
            let builder = ip
                .tcp(CLIENT_PORT, ORIGIN_PORT, 1_000, 64_240)
                .ack(2_000)
                .psh();
            frame.reserve(builder.size(payload.len()));
            builder.write(&mut frame, &payload)
        }
        Shape::StrayAck | Shape::AckClosed => {
            let port = if shape == Shape::StrayAck {
                ORIGIN_PORT
            } else {
                CLOSED_PORT
            };
            let builder = ip.tcp(CLIENT_PORT, port, 1_000, 64_240).ack(ACK_NUMBER);
            frame.reserve(builder.size(0));
            builder.write(&mut frame, &[])
        }
        Shape::DnsAnswer | Shape::Udp(_) => {
            let payload = [0x35; 48];
            let builder = match shape {
                Shape::Udp(port) => ip.udp(CLIENT_PORT, port),
                _ => ip.udp(53, CLIENT_PORT),
            };
            frame.reserve(builder.size(payload.len()));
            builder.write(&mut frame, &payload)
        }
    };
    // Writing into a Vec cannot fail, and these payloads fit every length field.
    if written.is_err() {
        frame.clear();
    }
    if shape == Shape::Truncated {
        // Keep 8 of the TCP header's 20 bytes: the IP header still claims all of them.
        let l3 = match source {
            IpAddr::V4(_) => IPV4_LEN,
            IpAddr::V6(_) => IPV6_LEN,
        };
        frame.truncate(ETHERNET_LEN + l3 + 8);
    }
    tag(frame, tagging)
}

/// `address` as 16 bytes (IPv4-mapped for IPv4).
fn v6_octets(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Inserts the VLAN tags `tagging` asks for after the MAC addresses.
fn tag(mut frame: Vec<u8>, tagging: Tagging) -> Vec<u8> {
    let tags: &[(u16, u16)] = match tagging {
        Tagging::Untagged => &[],
        Tagging::Vlan => &[(DOT1Q, 100)],
        Tagging::QinQ => &[(DOT1AD, 200), (DOT1Q, 100)],
    };
    let mut bytes = Vec::with_capacity(tags.len() * 4);
    for (tpid, vlan_id) in tags {
        bytes.extend_from_slice(&tpid.to_be_bytes());
        bytes.extend_from_slice(&vlan_id.to_be_bytes());
    }
    if frame.len() >= ETHER_TYPE_OFFSET {
        frame.splice(ETHER_TYPE_OFFSET..ETHER_TYPE_OFFSET, bytes);
    }
    frame
}

/// The TCP source and destination ports and the SYN and ACK flags of `frame`, if it is a
/// well-formed TCP frame: how a check reads the answer moat wrote in place of a SYN.
pub fn tcp_ports_and_flags(frame: &[u8]) -> Option<(u16, u16, bool, bool)> {
    let headers = etherparse::PacketHeaders::from_ethernet_slice(frame).ok()?;
    let tcp = headers.transport?.tcp()?;
    Some((tcp.source_port, tcp.destination_port, tcp.syn, tcp.ack))
}

/// The offsets of the IP and transport headers in an untagged frame of `source`'s family, as
/// the flood generator's configuration wants them.
pub const fn offsets(v6: bool) -> (u16, u16) {
    let l3 = ETHERNET_LEN as u16;
    if v6 {
        (l3, l3 + IPV6_LEN as u16)
    } else {
        (l3, l3 + IPV4_LEN as u16)
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, last])
    }

    #[test]
    fn syn_parses_with_its_addresses_and_port() {
        let frame = build(Shape::Syn, v4(7), v4(1), Tagging::Untagged);
        let packet = SlicedPacket::from_ethernet(&frame).expect("a well-formed frame");
        let Some(NetSlice::Ipv4(ip)) = packet.net else {
            panic!("no IPv4 header in {frame:02x?}");
        };
        assert_eq!(ip.header().source(), [198, 18, 0, 7]);
        let Some(TransportSlice::Tcp(tcp)) = packet.transport else {
            panic!("no TCP header in {frame:02x?}");
        };
        assert!(tcp.syn() && !tcp.ack());
        assert_eq!(tcp.destination_port(), ORIGIN_PORT);
    }

    #[test]
    fn tags_go_after_the_macs() {
        let plain = build(Shape::Established, v4(7), v4(1), Tagging::Untagged);
        let qinq = build(Shape::Established, v4(7), v4(1), Tagging::QinQ);
        assert_eq!(qinq.len(), plain.len() + 8);
        assert_eq!(&qinq[12..14], &DOT1AD.to_be_bytes());
        assert_eq!(&qinq[16..18], &DOT1Q.to_be_bytes());
        assert_eq!(&qinq[20..], &plain[12..]);
    }

    #[test]
    fn truncated_frame_cuts_the_tcp_header() {
        let frame = build(
            Shape::Truncated,
            IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 7]),
            IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
            Tagging::Untagged,
        );
        assert_eq!(frame.len(), ETHERNET_LEN + IPV6_LEN + 8);
    }
}
