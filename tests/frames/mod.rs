//! Builds real Ethernet frames for the program tests: every header is written by etherparse from
//! its fields, so lengths and checksums are right unless a test breaks one field on purpose. A
//! [`Frame`] remembers where each of its headers lies, so a test can name a header, break one of
//! its fields or cut the frame at every boundary.
//!
//! This is not a parser and not a traffic generator: it builds single frames of the shapes the
//! XDP program must recognise, and nothing else.

use std::ops::Range;

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, IcmpEchoHeader,
    Icmpv4Header, Icmpv4Type, IpAuthHeader, IpFragOffset, IpHeaders, IpNumber, Ipv4Header,
    Ipv6Extensions, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions,
    PacketBuilder, PacketHeaders, SingleVlanHeader, TcpHeader, UdpHeader, VlanId, VlanPcp,
    checksum::Sum16BitWords, ip_number,
};

/// Tag protocol identifier of an 802.1Q (customer) VLAN tag.
pub const DOT1Q: EtherType = EtherType::VLAN_TAGGED_FRAME;
/// Tag protocol identifier of an 802.1ad (service, QinQ outer) VLAN tag.
pub const DOT1AD: EtherType = EtherType::PROVIDER_BRIDGING;

/// The payload every builder carries unless a test sets another.
pub const PAYLOAD: &[u8] = b"moat program test payload";

/// Typical SYN options: MSS 1460, SACK permitted, timestamps, NOP, window scale 7 (20 bytes).
pub const TCP_OPTIONS: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x30, 0x39, 0, 0, 0, 0, 1, 3, 3, 7,
];

/// IPv4 Router Alert option (RFC 2113): one 4-byte option, IHL 6.
pub const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];

// Locally administered MACs and documentation addresses (RFC 5737, RFC 3849).
const SOURCE_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const DESTINATION_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const SOURCE_V4: [u8; 4] = [192, 0, 2, 1];
const DESTINATION_V4: [u8; 4] = [198, 51, 100, 2];
const SOURCE_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DESTINATION_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const HOME_ADDRESS_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
const SOURCE_PORT: u16 = 40_000;
const TCP_PORT: u16 = 443;
const UDP_PORT: u16 = 53;
const HOP_LIMIT: u8 = 64;
const IDENTIFICATION: u16 = 0x1234;
const ECHO: IcmpEchoHeader = IcmpEchoHeader { id: 7, seq: 1 };

// Field offsets inside headers (RFC 791, RFC 8200, RFC 9293, RFC 768).
const IPV4_VERSION_IHL: usize = 0;
const IPV4_TOTAL_LEN: usize = 2;
const IPV4_CHECKSUM: usize = 10;
const IPV6_VERSION: usize = 0;
const IPV6_PAYLOAD_LEN: usize = 4;
const IPV6_HEADER_LEN: usize = 40;
const TCP_DATA_OFFSET: usize = 12;
const UDP_LENGTH: usize = 4;

/// One header of a frame and the bytes it occupies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// What it is: "ethernet", "vlan tag 1", "ipv4", "hop-by-hop options", "tcp", ...
    pub name: String,
    /// Where it lies in the frame.
    pub span: Range<usize>,
}

/// A frame and where its headers lie; whatever follows the last header is payload (and, if
/// [`Frame::padded_to`] was used, Ethernet padding).
#[derive(Clone, Debug, Default)]
pub struct Frame {
    /// The bytes handed to the program.
    pub bytes: Vec<u8>,
    /// Its headers, in order, contiguous from byte 0.
    pub headers: Vec<Header>,
}

impl Frame {
    fn push(&mut self, name: &str, bytes: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.headers.push(Header {
            name: name.to_owned(),
            span: start..self.bytes.len(),
        });
    }

    fn push_spans(&mut self, start: usize, headers: &[(String, usize)]) {
        let mut offset = start;
        for (name, len) in headers {
            self.headers.push(Header {
                name: name.clone(),
                span: offset..offset + len,
            });
            offset += len;
        }
    }

    /// The names of its headers, in order.
    pub fn header_names(&self) -> Vec<&str> {
        self.headers.iter().map(|h| h.name.as_str()).collect()
    }

    /// Where the last header ends.
    pub fn headers_end(&self) -> usize {
        self.headers.last().map_or(0, |h| h.span.end)
    }

    /// The span of the header called `name`.
    pub fn span(&self, name: &str) -> Range<usize> {
        match self.headers.iter().find(|h| h.name == name) {
            Some(header) => header.span.clone(),
            None => panic!("frame has no {name} header, only {:?}", self.header_names()),
        }
    }

    /// Says where a cut to `len` bytes falls, for assertion messages.
    pub fn describe_cut(&self, len: usize) -> String {
        for header in &self.headers {
            if len == header.span.start {
                return format!("cut to {len} bytes, just before the {}", header.name);
            }
            if header.span.contains(&len) {
                return format!(
                    "cut to {len} bytes, {} of {} bytes into the {}",
                    len - header.span.start,
                    header.span.len(),
                    header.name
                );
            }
        }
        match len - self.headers_end() {
            0 => format!("cut to {len} bytes, just after the last header"),
            into => format!("cut to {len} bytes, {into} bytes into the payload"),
        }
    }

    /// Overwrites bytes at `offset` inside the header called `header`; refreshes the IPv4 header
    /// checksum if the header is IPv4. Transport checksums are left as built: they stop being
    /// defined once a length field is broken, and the filter does not read them.
    pub fn patched(mut self, header: &str, offset: usize, bytes: &[u8]) -> Frame {
        let span = self.span(header);
        assert!(
            offset + bytes.len() <= span.len(),
            "patch of {} bytes at {offset} runs past the {}-byte {header} header",
            bytes.len(),
            span.len()
        );
        let start = span.start + offset;
        self.bytes[start..start + bytes.len()].copy_from_slice(bytes);
        if header == "ipv4" {
            self.refresh_ipv4_checksum();
        }
        self
    }

    fn refresh_ipv4_checksum(&mut self) {
        let span = self.span("ipv4");
        let header = &mut self.bytes[span];
        header[IPV4_CHECKSUM..IPV4_CHECKSUM + 2].copy_from_slice(&[0, 0]);
        // Sum16BitWords sums native-endian words, so its result is stored in native order too.
        let checksum = Sum16BitWords::new().add_slice(header).ones_complement();
        header[IPV4_CHECKSUM..IPV4_CHECKSUM + 2].copy_from_slice(&checksum.to_ne_bytes());
    }

    fn ip_header(&self) -> &'static str {
        if self.headers.iter().any(|h| h.name == "ipv4") {
            "ipv4"
        } else {
            "ipv6"
        }
    }

    /// Bytes from the start of the IP header to the end of the frame.
    pub fn datagram_len(&self) -> usize {
        self.bytes.len() - self.span(self.ip_header()).start
    }

    /// Sets the version nibble of the IP header (IPv4 or IPv6, whichever the frame carries).
    pub fn with_ip_version(self, version: u8) -> Frame {
        let header = self.ip_header();
        let offset = if header == "ipv4" {
            IPV4_VERSION_IHL
        } else {
            IPV6_VERSION
        };
        let first = self.bytes[self.span(header).start + offset];
        self.patched(header, offset, &[(version << 4) | (first & 0x0f)])
    }

    /// Sets the IPv4 header length field (in 4-byte words), keeping the version.
    pub fn with_ipv4_ihl(self, words: u8) -> Frame {
        let first = self.bytes[self.span("ipv4").start + IPV4_VERSION_IHL];
        self.patched("ipv4", IPV4_VERSION_IHL, &[(first & 0xf0) | (words & 0x0f)])
    }

    /// Sets the IPv4 total length field.
    pub fn with_ipv4_total_len(self, len: u16) -> Frame {
        self.patched("ipv4", IPV4_TOTAL_LEN, &len.to_be_bytes())
    }

    /// Sets the IPv6 payload length field.
    pub fn with_ipv6_payload_len(self, len: u16) -> Frame {
        self.patched("ipv6", IPV6_PAYLOAD_LEN, &len.to_be_bytes())
    }

    /// Sets the TCP data offset (header length in 4-byte words), keeping the reserved bits.
    pub fn with_tcp_data_offset(self, words: u8) -> Frame {
        let byte = self.bytes[self.span("tcp").start + TCP_DATA_OFFSET];
        self.patched("tcp", TCP_DATA_OFFSET, &[(words << 4) | (byte & 0x0f)])
    }

    /// Sets the UDP length field.
    pub fn with_udp_length(self, len: u16) -> Frame {
        self.patched("udp", UDP_LENGTH, &len.to_be_bytes())
    }

    /// Cuts the frame to `frame_len` bytes and sets the IP length field so that the datagram
    /// ends exactly there: the IP layer stays consistent and whatever header is cut is the only
    /// thing wrong.
    pub fn with_datagram_ending_at(mut self, frame_len: usize) -> Frame {
        let ip = self.ip_header();
        let ip_start = self.span(ip).start;
        assert!(
            frame_len >= self.span(ip).end && frame_len <= self.bytes.len(),
            "a datagram ending at {frame_len} must keep the whole IP header and not grow"
        );
        self.bytes.truncate(frame_len);
        self.headers.retain(|h| h.span.start < frame_len);
        for header in &mut self.headers {
            header.span.end = header.span.end.min(frame_len);
        }
        let datagram_len = frame_len - ip_start;
        if ip == "ipv4" {
            let total_len = u16::try_from(datagram_len).expect("test datagrams fit in 64 KiB");
            self.with_ipv4_total_len(total_len)
        } else {
            let payload_len = u16::try_from(datagram_len - IPV6_HEADER_LEN)
                .expect("test datagrams fit in 64 KiB");
            self.with_ipv6_payload_len(payload_len)
        }
    }

    /// Appends zero bytes up to `len`, as a NIC pads a frame shorter than the Ethernet minimum.
    pub fn padded_to(mut self, len: usize) -> Frame {
        assert!(
            self.bytes.len() <= len,
            "frame is already longer than {len}"
        );
        self.bytes.resize(len, 0);
        self
    }
}

/// What follows the IP header.
#[derive(Clone, Debug)]
pub enum Transport {
    /// A TCP segment with ACK and PSH set.
    Tcp,
    /// A UDP datagram.
    Udp,
    /// An echo request: ICMP over IPv4, ICMPv6 over IPv6.
    IcmpEcho,
    /// Headers this builder does not write itself, each named, under IP protocol `protocol`;
    /// the payload follows them.
    Raw {
        /// The protocol number in the last IP-layer header.
        protocol: IpNumber,
        /// Each header's name and bytes, in order.
        headers: Vec<(&'static str, Vec<u8>)>,
    },
}

/// A packet to build: VLAN tags, an IP header with its options or extension headers, a transport
/// and a payload.
#[derive(Clone, Debug)]
pub struct Packet {
    tags: Vec<EtherType>,
    ip: IpHeaders,
    transport: Transport,
    tcp_options: Vec<u8>,
    payload: Vec<u8>,
}

impl Packet {
    /// An untagged IPv4 packet carrying `transport` and [`PAYLOAD`].
    pub fn ipv4(transport: Transport) -> Packet {
        let mut header = Ipv4Header::new(0, HOP_LIMIT, ip_number::UDP, SOURCE_V4, DESTINATION_V4)
            .expect("an empty IPv4 payload fits");
        header.identification = IDENTIFICATION;
        Packet::new(IpHeaders::Ipv4(header, Default::default()), transport)
    }

    /// An untagged IPv6 packet carrying `transport` and [`PAYLOAD`].
    pub fn ipv6(transport: Transport) -> Packet {
        let header = Ipv6Header {
            hop_limit: HOP_LIMIT,
            source: SOURCE_V6,
            destination: DESTINATION_V6,
            ..Default::default()
        };
        Packet::new(IpHeaders::Ipv6(header, Default::default()), transport)
    }

    fn new(ip: IpHeaders, transport: Transport) -> Packet {
        Packet {
            tags: Vec::new(),
            ip,
            transport,
            tcp_options: Vec::new(),
            payload: PAYLOAD.to_vec(),
        }
    }

    /// One 802.1Q tag.
    pub fn vlan(self) -> Packet {
        self.tagged(&[DOT1Q])
    }

    /// QinQ: an 802.1ad outer tag around an 802.1Q inner tag.
    pub fn qinq(self) -> Packet {
        self.tagged(&[DOT1AD, DOT1Q])
    }

    /// VLAN tags with these tag protocol identifiers, outermost first.
    pub fn tagged(mut self, tpids: &[EtherType]) -> Packet {
        self.tags = tpids.to_vec();
        self
    }

    /// IPv4 options (a multiple of 4 bytes, at most 40), raising the IHL above 5.
    pub fn ipv4_options(mut self, options: &[u8]) -> Packet {
        let IpHeaders::Ipv4(header, _) = &mut self.ip else {
            panic!("IPv4 options on an IPv6 packet");
        };
        header.options = options
            .try_into()
            .expect("IPv4 options are a multiple of 4 bytes, at most 40");
        self
    }

    /// IPv6 extension headers; etherparse writes them in RFC 8200 order and chains their next
    /// header fields.
    pub fn ipv6_extensions(mut self, extensions: Ipv6Extensions) -> Packet {
        let IpHeaders::Ipv6(_, current) = &mut self.ip else {
            panic!("IPv6 extension headers on an IPv4 packet");
        };
        *current = extensions;
        self
    }

    /// TCP options (a multiple of 4 bytes, at most 40).
    pub fn tcp_options(mut self, options: &[u8]) -> Packet {
        assert!(
            matches!(self.transport, Transport::Tcp),
            "TCP options need a TCP transport"
        );
        assert!(
            options.len().is_multiple_of(4),
            "TCP options are a multiple of 4 bytes"
        );
        self.tcp_options = options.to_vec();
        self
    }

    /// The transport payload.
    pub fn payload(mut self, payload: &[u8]) -> Packet {
        self.payload = payload.to_vec();
        self
    }

    /// The whole frame.
    pub fn build(&self) -> Frame {
        let mut frame = self.link();
        let ip_start = frame.bytes.len();
        let builder = PacketBuilder::ip(self.ip.clone());
        let written = match &self.transport {
            Transport::Tcp => builder
                .tcp_header(self.tcp_header())
                .write(&mut frame.bytes, &self.payload),
            Transport::Udp => builder
                .udp(SOURCE_PORT, UDP_PORT)
                .write(&mut frame.bytes, &self.payload),
            Transport::IcmpEcho => match self.ip {
                IpHeaders::Ipv4(..) => builder
                    .icmpv4_echo_request(ECHO.id, ECHO.seq)
                    .write(&mut frame.bytes, &self.payload),
                IpHeaders::Ipv6(..) => builder
                    .icmpv6_echo_request(ECHO.id, ECHO.seq)
                    .write(&mut frame.bytes, &self.payload),
            },
            Transport::Raw { protocol, headers } => {
                let mut body: Vec<u8> = headers.iter().flat_map(|(_, h)| h.clone()).collect();
                body.extend_from_slice(&self.payload);
                builder.write(&mut frame.bytes, *protocol, &body)
            }
        };
        written.unwrap_or_else(|error| panic!("etherparse refused {self:?}: {error}"));

        let mut spans = ip_spans(&self.ip);
        spans.extend(self.transport_spans());
        frame.push_spans(ip_start, &spans);
        assert_eq!(
            frame.headers_end() + self.payload.len(),
            frame.bytes.len(),
            "recorded headers {:?} disagree with what etherparse wrote",
            frame.headers
        );
        check_parses(&frame);
        frame
    }

    /// The fragment of this packet that carries bytes `carried` of its fragmentable part (the
    /// transport header and payload), as a sender splitting the datagram would send it: the
    /// transport header, its length and its checksum describe the whole datagram. IPv6 gets a
    /// fragment header after any hop-by-hop, destination options and routing headers.
    pub fn fragment(&self, carried: Range<usize>, more_fragments: bool) -> Frame {
        assert!(
            carried.start.is_multiple_of(8),
            "fragment offsets count 8-byte units"
        );
        let whole = self.build();
        let transport_len: usize = self.transport_spans().iter().map(|(_, len)| len).sum();
        let fragmentable = &whole.bytes[whole.headers_end() - transport_len..];
        let body = fragmentable.get(carried.clone()).unwrap_or_else(|| {
            panic!(
                "fragment {carried:?} is outside the {}-byte datagram",
                fragmentable.len()
            )
        });
        let offset = IpFragOffset::try_new(
            u16::try_from(carried.start / 8).expect("test datagrams fit in 64 KiB"),
        )
        .expect("test fragment offsets fit in 13 bits");
        let ip = match self.ip.clone() {
            IpHeaders::Ipv4(mut header, extensions) => {
                header.dont_fragment = false;
                header.more_fragments = more_fragments;
                header.fragment_offset = offset;
                IpHeaders::Ipv4(header, extensions)
            }
            IpHeaders::Ipv6(header, mut extensions) => {
                assert!(
                    extensions.fragment.is_none()
                        && extensions.auth.is_none()
                        && extensions
                            .routing
                            .as_ref()
                            .is_none_or(|r| r.final_destination_options.is_none()),
                    "fragment() puts the fragment header last among the extension headers"
                );
                extensions.fragment = Some(Ipv6FragmentHeader::new(
                    ip_number::UDP, // replaced by the builder with the real next header
                    offset,
                    more_fragments,
                    u32::from(IDENTIFICATION),
                ));
                IpHeaders::Ipv6(header, extensions)
            }
        };

        let mut frame = self.link();
        let ip_start = frame.bytes.len();
        PacketBuilder::ip(ip.clone())
            .write(&mut frame.bytes, self.protocol(), body)
            .unwrap_or_else(|error| panic!("etherparse refused fragment {carried:?}: {error}"));
        let mut spans = ip_spans(&ip);
        if carried.start == 0 && carried.end >= transport_len {
            spans.extend(self.transport_spans());
        }
        frame.push_spans(ip_start, &spans);
        check_parses(&frame);
        frame
    }

    fn link(&self) -> Frame {
        let ether_type = match self.ip {
            IpHeaders::Ipv4(..) => EtherType::IPV4,
            IpHeaders::Ipv6(..) => EtherType::IPV6,
        };
        link(&self.tags, ether_type)
    }

    fn tcp_header(&self) -> TcpHeader {
        let mut header = TcpHeader::new(SOURCE_PORT, TCP_PORT, 1_000, 64_240);
        header.ack = true;
        header.psh = true;
        header.acknowledgment_number = 2_000;
        header
            .set_options_raw(&self.tcp_options)
            .expect("checked by tcp_options()");
        header
    }

    fn protocol(&self) -> IpNumber {
        match (&self.transport, &self.ip) {
            (Transport::Tcp, _) => ip_number::TCP,
            (Transport::Udp, _) => ip_number::UDP,
            (Transport::IcmpEcho, IpHeaders::Ipv4(..)) => ip_number::ICMP,
            (Transport::IcmpEcho, IpHeaders::Ipv6(..)) => ip_number::IPV6_ICMP,
            (Transport::Raw { protocol, .. }, _) => *protocol,
        }
    }

    fn transport_spans(&self) -> Vec<(String, usize)> {
        match (&self.transport, &self.ip) {
            (Transport::Tcp, _) => vec![("tcp".to_owned(), self.tcp_header().header_len())],
            (Transport::Udp, _) => vec![("udp".to_owned(), UdpHeader::LEN)],
            (Transport::IcmpEcho, IpHeaders::Ipv4(..)) => vec![("icmp".to_owned(), 8)],
            (Transport::IcmpEcho, IpHeaders::Ipv6(..)) => vec![("icmpv6".to_owned(), 8)],
            (Transport::Raw { headers, .. }, _) => headers
                .iter()
                .map(|(name, bytes)| ((*name).to_owned(), bytes.len()))
                .collect(),
        }
    }
}

/// The spans of the IP header and its extension headers, in the order etherparse writes them.
fn ip_spans(ip: &IpHeaders) -> Vec<(String, usize)> {
    let mut spans = Vec::new();
    match ip {
        IpHeaders::Ipv4(header, extensions) => {
            spans.push(("ipv4".to_owned(), header.header_len()));
            if let Some(auth) = &extensions.auth {
                spans.push(("authentication".to_owned(), auth.header_len()));
            }
        }
        IpHeaders::Ipv6(_, extensions) => {
            spans.push(("ipv6".to_owned(), IPV6_HEADER_LEN));
            // RFC 8200 §4.1 order, which etherparse's set_next_headers follows.
            let routing = extensions.routing.as_ref();
            let ordered = [
                ("hop-by-hop options", extensions.hop_by_hop_options.as_ref()),
                (
                    "destination options",
                    extensions.destination_options.as_ref(),
                ),
                ("routing", routing.map(|r| &r.routing)),
            ];
            for (name, header) in ordered {
                if let Some(header) = header {
                    spans.push((name.to_owned(), header.header_len()));
                }
            }
            if let Some(fragment) = &extensions.fragment {
                spans.push(("fragment".to_owned(), fragment.header_len()));
            }
            if let Some(auth) = &extensions.auth {
                spans.push(("authentication".to_owned(), auth.header_len()));
            }
            if let Some(last) = routing.and_then(|r| r.final_destination_options.as_ref()) {
                spans.push(("final destination options".to_owned(), last.header_len()));
            }
        }
    }
    spans
}

/// An Ethernet header and VLAN tags ending in `ether_type`.
fn link(tpids: &[EtherType], ether_type: EtherType) -> Frame {
    let mut frame = Frame::default();
    let ethernet = Ethernet2Header {
        source: SOURCE_MAC,
        destination: DESTINATION_MAC,
        ether_type: tpids.first().copied().unwrap_or(ether_type),
    };
    frame.push("ethernet", &ethernet.to_bytes());
    for index in 0..tpids.len() {
        let id = u16::try_from(100 * (index + 1)).expect("a few tags");
        let tag = SingleVlanHeader {
            pcp: VlanPcp::ZERO,
            drop_eligible_indicator: false,
            vlan_id: VlanId::try_new(id).expect("VLAN ids below 4095"),
            ether_type: tpids.get(index + 1).copied().unwrap_or(ether_type),
        };
        frame.push(&format!("vlan tag {}", index + 1), &tag.to_bytes());
    }
    frame
}

/// Asserts that etherparse reads the frame back: the builder made a real frame.
fn check_parses(frame: &Frame) {
    if let Err(error) = PacketHeaders::from_ethernet_slice(&frame.bytes) {
        panic!(
            "built frame with headers {:?} does not parse: {error}",
            frame.header_names()
        );
    }
}

/// The payload bytes of a large datagram: [`PAYLOAD`] repeated to `len` bytes.
pub fn payload_of(len: usize) -> Vec<u8> {
    PAYLOAD.iter().copied().cycle().take(len).collect()
}

/// An ARP request for 198.51.100.2 behind VLAN tags with these identifiers.
pub fn arp(tpids: &[EtherType]) -> Frame {
    let request = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &SOURCE_MAC,
        &SOURCE_V4,
        &[0; 6], // target hardware address: unknown, which is what ARP asks for
        &DESTINATION_V4,
    )
    .expect("Ethernet/IPv4 address sizes");
    let mut frame = link(tpids, EtherType::ARP);
    frame.push("arp", &request.to_bytes());
    check_parses(&frame);
    frame
}

/// A UDP datagram inside GRE (RFC 2784, no optional fields) inside IPv4.
pub fn gre_over_ipv4() -> Frame {
    let mut inner = Vec::new();
    PacketBuilder::ipv4(SOURCE_V4, DESTINATION_V4, HOP_LIMIT)
        .udp(SOURCE_PORT, UDP_PORT)
        .write(&mut inner, PAYLOAD)
        .expect("inner packet fits");
    let flags_version = [0u8, 0];
    let gre: Vec<u8> = flags_version
        .into_iter()
        .chain(EtherType::IPV4.0.to_be_bytes())
        .collect();
    Packet::ipv4(Transport::Raw {
        protocol: ip_number::GRE,
        headers: vec![("gre", gre)],
    })
    .payload(&inner)
    .build()
}

/// An ICMP (IPv4 protocol 1) echo request carried in IPv6, where ICMPv6 (58) belongs.
pub fn icmpv4_in_ipv6() -> Frame {
    let echo = Icmpv4Header::with_checksum(Icmpv4Type::EchoRequest(ECHO), PAYLOAD);
    Packet::ipv6(Transport::Raw {
        protocol: ip_number::ICMP,
        headers: vec![("icmp", echo.to_bytes().to_vec())],
    })
    .build()
}

/// IPv6 with no next header (59) and nothing after the IP header.
pub fn ipv6_no_next_header() -> Frame {
    Packet::ipv6(Transport::Raw {
        protocol: ip_number::IPV6_NO_NEXT_HEADER,
        headers: Vec::new(),
    })
    .payload(&[])
    .build()
}

/// IPv6 UDP behind a chain of `count` 8-byte destination options headers: more than
/// `Ipv6Extensions` holds, so the chain is written header by header.
pub fn ipv6_udp_behind_destination_options(count: usize) -> Frame {
    let ip = Ipv6Header {
        source: SOURCE_V6,
        destination: DESTINATION_V6,
        ..Default::default()
    };
    let mut headers: Vec<(&'static str, Vec<u8>)> = (0..count)
        .map(|index| {
            let next = if index + 1 == count {
                ip_number::UDP
            } else {
                ip_number::IPV6_DEST_OPTIONS
            };
            let mut header = destination_options(8);
            header.next_header = next;
            ("destination options", header.to_bytes().to_vec())
        })
        .collect();
    let udp =
        UdpHeader::with_ipv6_checksum(SOURCE_PORT, UDP_PORT, &ip, PAYLOAD).expect("payload fits");
    headers.push(("udp", udp.to_bytes().to_vec()));
    Packet::ipv6(Transport::Raw {
        protocol: ip_number::IPV6_DEST_OPTIONS,
        headers,
    })
    .build()
}

/// An options header (hop-by-hop or destination) of `len` bytes, a multiple of 8, holding one
/// PadN option (RFC 8200 §4.2), whose padding bytes are zero by definition.
fn options_header(len: usize) -> Ipv6RawExtHeader {
    assert!(
        len >= 8 && len.is_multiple_of(8),
        "options headers are 8n bytes"
    );
    let pad_len = u8::try_from(len - 4).expect("options headers below 259 bytes");
    let mut options = vec![1, pad_len];
    options.resize(len - 2, 0);
    Ipv6RawExtHeader::new_raw(ip_number::UDP, &options).expect("length checked above")
}

/// A hop-by-hop options header of `len` bytes; the next header is set when the packet is built.
pub fn hop_by_hop(len: usize) -> Ipv6RawExtHeader {
    options_header(len)
}

/// A destination options header of `len` bytes; the next header is set when the packet is built.
pub fn destination_options(len: usize) -> Ipv6RawExtHeader {
    options_header(len)
}

/// A type 2 routing header (RFC 6275) carrying one home address, 24 bytes.
pub fn routing() -> Ipv6RoutingExtensions {
    let mut data = vec![2, 1, 0, 0, 0, 0]; // routing type 2, segments left 1, reserved
    data.extend_from_slice(&HOME_ADDRESS_V6);
    Ipv6RoutingExtensions {
        routing: Ipv6RawExtHeader::new_raw(ip_number::UDP, &data).expect("22-byte payload"),
        final_destination_options: None,
    }
}

/// An authentication header (RFC 4302) with a 12-byte ICV (HMAC-SHA1-96), 24 bytes.
pub fn authentication() -> IpAuthHeader {
    let icv = *b"hmac-sha1-96";
    IpAuthHeader::new(ip_number::UDP, 0x100, 1, &icv).expect("12-byte ICV")
}

/// An atomic fragment header (RFC 6946): offset 0 and no more fragments.
pub fn atomic_fragment() -> Ipv6FragmentHeader {
    Ipv6FragmentHeader::new(
        ip_number::UDP,
        IpFragOffset::ZERO,
        false,
        u32::from(IDENTIFICATION),
    )
}

/// A transport header whose every field a generated-traffic test picks, where [`Transport`]
/// fixes the ports and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChosenTransport {
    /// A TCP segment with exactly these flags (FIN 0x01 ... URG 0x20).
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// The flags byte.
        flags: u8,
    },
    /// A UDP datagram.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP over IPv4 or ICMPv6 over IPv6: this type and code, then four zero bytes.
    Icmp {
        /// The message type.
        icmp_type: u8,
        /// The message code.
        code: u8,
    },
}

impl Packet {
    /// The same packet sent from `source`, which must be of the packet's IP version.
    pub fn sent_from(mut self, source: std::net::IpAddr) -> Packet {
        match (&mut self.ip, source) {
            (IpHeaders::Ipv4(header, _), std::net::IpAddr::V4(addr)) => {
                header.source = addr.octets();
            }
            (IpHeaders::Ipv6(header, _), std::net::IpAddr::V6(addr)) => {
                header.source = addr.octets();
            }
            (_, source) => panic!("source {source} is not of the packet's IP version"),
        }
        self
    }
}

/// An untagged frame from `source` to the builder's destination of the same IP version, carrying
/// `transport` and `payload`, with every length and checksum right.
pub fn chosen(source: std::net::IpAddr, transport: ChosenTransport, payload: &[u8]) -> Frame {
    let packet = match source {
        std::net::IpAddr::V4(_) => Packet::ipv4(Transport::Udp),
        std::net::IpAddr::V6(_) => Packet::ipv6(Transport::Udp),
    }
    .sent_from(source)
    .payload(payload);
    let is_v4 = matches!(packet.ip, IpHeaders::Ipv4(..));
    let mut frame = packet.link();
    let ip_start = frame.bytes.len();
    let builder = PacketBuilder::ip(packet.ip.clone());
    let (written, transport_span) = match transport {
        ChosenTransport::Tcp {
            src_port,
            dst_port,
            flags,
        } => {
            let mut header = TcpHeader::new(src_port, dst_port, 1_000, 64_240);
            header.fin = flags & 0x01 != 0;
            header.syn = flags & 0x02 != 0;
            header.rst = flags & 0x04 != 0;
            header.psh = flags & 0x08 != 0;
            header.ack = flags & 0x10 != 0;
            header.urg = flags & 0x20 != 0;
            if header.ack {
                header.acknowledgment_number = 2_000;
            }
            let len = header.header_len();
            (
                builder.tcp_header(header).write(&mut frame.bytes, payload),
                ("tcp", len),
            )
        }
        ChosenTransport::Udp { src_port, dst_port } => (
            builder
                .udp(src_port, dst_port)
                .write(&mut frame.bytes, payload),
            ("udp", UdpHeader::LEN),
        ),
        ChosenTransport::Icmp { icmp_type, code } if is_v4 => (
            builder
                .icmpv4_raw(icmp_type, code, [0; 4])
                .write(&mut frame.bytes, payload),
            ("icmp", 8),
        ),
        ChosenTransport::Icmp { icmp_type, code } => (
            builder
                .icmpv6_raw(icmp_type, code, [0; 4])
                .write(&mut frame.bytes, payload),
            ("icmpv6", 8),
        ),
    };
    written.unwrap_or_else(|error| panic!("etherparse refused {transport:?}: {error}"));
    let mut spans = ip_spans(&packet.ip);
    spans.push((transport_span.0.to_owned(), transport_span.1));
    frame.push_spans(ip_start, &spans);
    assert_eq!(
        frame.headers_end() + payload.len(),
        frame.bytes.len(),
        "recorded headers {:?} disagree with what etherparse wrote",
        frame.headers
    );
    check_parses(&frame);
    frame
}

/// The chosen-transport builder writes the fields asked for, in both IP versions. It lives here,
/// beside the builder, so every test crate that shares the builder checks it.
#[test]
fn chosen_transport_frames_carry_the_chosen_fields() {
    let sources = [
        std::net::IpAddr::from([192, 0, 2, 9]),
        std::net::IpAddr::from([0x2001, 0xdb8, 0, 7, 0, 0, 0, 9]),
    ];
    for source in sources {
        // The IP header, where in it the source address lies (RFC 791, RFC 8200), the address.
        let (ip, icmp, source_field, addr) = match source {
            std::net::IpAddr::V4(addr) => ("ipv4", "icmp", 12..16, addr.octets().to_vec()),
            std::net::IpAddr::V6(addr) => ("ipv6", "icmpv6", 8..24, addr.octets().to_vec()),
        };
        let field = |frame: &Frame, header: &str, range: Range<usize>| {
            let start = frame.span(header).start;
            frame.bytes[start + range.start..start + range.end].to_vec()
        };
        let tcp = ChosenTransport::Tcp {
            src_port: 1234,
            dst_port: 22,
            flags: 0x03,
        };
        let tcp = chosen(source, tcp, PAYLOAD);
        let udp = ChosenTransport::Udp {
            src_port: 123,
            dst_port: 8080,
        };
        let udp = chosen(source, udp, &[]);
        let icmp_message = ChosenTransport::Icmp {
            icmp_type: 3,
            code: 4,
        };
        let icmp_message = chosen(source, icmp_message, PAYLOAD);
        for frame in [&tcp, &udp, &icmp_message] {
            assert_eq!(field(frame, ip, source_field.clone()), addr, "{source}");
        }
        assert_eq!(field(&tcp, "tcp", 0..4), [4, 210, 0, 22], "TCP ports");
        assert_eq!(field(&tcp, "tcp", 13..14), [0x03], "TCP flags SYN|FIN");
        assert_eq!(field(&udp, "udp", 0..4), [0, 123, 31, 144], "UDP ports");
        assert_eq!(field(&icmp_message, icmp, 0..2), [3, 4], "type and code");
    }
}
