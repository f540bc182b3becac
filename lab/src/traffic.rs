//! Real traffic between namespaces: ping, UDP datagrams, TCP exchanges and raw Ethernet frames.
//! Every sender is bounded in count and time, and sends only to the peer endpoint it is given.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;

use moat::netns::{Endpoint, NetNs, NetNsError, run};

/// How long any single exchange may take before it is abandoned.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(3);

/// A send that failed.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// Entering a namespace or running a tool failed.
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    /// A socket operation failed.
    #[error("{action}: {source}")]
    Socket {
        /// What was being done.
        action: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
}

fn socket_error(action: &'static str) -> impl FnOnce(std::io::Error) -> TrafficError {
    move |source| TrafficError::Socket { action, source }
}

/// Sends `count` ICMP echo requests from `ns` to `to`, 10 ms apart; returns how many were
/// answered.
pub fn ping(ns: &NetNs, to: Ipv4Addr, count: u32) -> Result<u32, TrafficError> {
    let output = run(ns.command("ping").args([
        "-n",
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        "0.01",
        "-W",
        "1",
        &to.to_string(),
    ]));
    // ping exits 1 when replies are missing; the summary line still says how many came back.
    let text = match output {
        Ok(text) => text,
        Err(NetNsError::Failed { .. }) => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    Ok(text
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once(" packets transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0))
}

/// Sends `count` UDP datagrams of `payload_len` bytes from `ns` to `to`.
pub fn udp_burst(
    ns: &NetNs,
    to: SocketAddrV4,
    count: u32,
    payload_len: usize,
) -> Result<(), TrafficError> {
    udp_burst_from(
        ns,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        to,
        count,
        payload_len,
    )
}

/// Sends `count` UDP datagrams of `payload_len` bytes from `from` (an address and port of
/// `ns`; port 0 for any) to `to`.
pub fn udp_burst_from(
    ns: &NetNs,
    from: SocketAddrV4,
    to: SocketAddrV4,
    count: u32,
    payload_len: usize,
) -> Result<(), TrafficError> {
    ns.enter(|| {
        let socket = UdpSocket::bind(from).map_err(socket_error("binding udp"))?;
        let payload = vec![0x6d; payload_len];
        for _ in 0..count {
            socket
                .send_to(&payload, to)
                .map_err(socket_error("sending udp"))?;
        }
        Ok(())
    })?
}

/// A UDP echo server in a namespace (a stand-in resolver), answering each datagram it gets.
pub struct UdpEcho {
    socket: UdpSocket,
}

impl UdpEcho {
    /// Binds `addr` inside `ns`.
    pub fn bind(ns: &NetNs, addr: SocketAddrV4) -> Result<UdpEcho, TrafficError> {
        let socket = ns
            .enter(|| UdpSocket::bind(addr))?
            .map_err(socket_error("binding udp"))?;
        socket
            .set_read_timeout(Some(EXCHANGE_TIMEOUT))
            .map_err(socket_error("setting timeout"))?;
        Ok(UdpEcho { socket })
    }

    /// Answers one datagram (waiting at most [`EXCHANGE_TIMEOUT`]).
    pub fn answer_one(&self) -> Result<(), TrafficError> {
        let mut buffer = [0u8; 2048];
        let (len, peer) = self
            .socket
            .recv_from(&mut buffer)
            .map_err(socket_error("receiving query"))?;
        self.socket
            .send_to(&buffer[..len], peer)
            .map_err(socket_error("answering"))?;
        Ok(())
    }
}

/// How many times [`udp_exchange`] sends its query before giving up, as glibc's stub resolver
/// does by default (`options attempts:2`): one datagram lost on a flooded link is not a refusal.
pub const EXCHANGE_ATTEMPTS: u32 = 2;

/// Sends `query` from `ns` to `server` (answered by `echo` on another thread) the way a stub
/// resolver does — from a socket connected to the server, so that only the server's answer is
/// read, and again once after [`EXCHANGE_TIMEOUT`] — and returns whether the same bytes came back.
pub fn udp_exchange(
    ns: &NetNs,
    echo: &UdpEcho,
    server: SocketAddrV4,
    query: &[u8],
) -> Result<bool, TrafficError> {
    let socket = ns.enter(|| -> Result<UdpSocket, TrafficError> {
        let socket =
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(socket_error("binding udp"))?;
        socket
            .connect(server)
            .map_err(socket_error("connecting udp"))?;
        socket
            .set_read_timeout(Some(EXCHANGE_TIMEOUT))
            .map_err(socket_error("setting timeout"))?;
        Ok(socket)
    })??;
    for _ in 0..EXCHANGE_ATTEMPTS {
        let echoed = std::thread::scope(|scope| -> Result<bool, TrafficError> {
            let answered = scope.spawn(|| echo.answer_one());
            socket.send(query).map_err(socket_error("querying"))?;
            let mut answer = [0u8; 2048];
            let echoed = match socket.recv(&mut answer) {
                Ok(len) => &answer[..len] == query,
                Err(error) if is_timeout(&error) => false,
                Err(error) => return Err(socket_error("reading answer")(error)),
            };
            match answered
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            {
                // The query itself was lost on the way: ask again, as a resolver would.
                Err(TrafficError::Socket { source, .. }) if is_timeout(&source) => Ok(false),
                other => other.map(|()| echoed),
            }
        })?;
        if echoed {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a socket error is a read timeout (`WouldBlock` or `TimedOut`, as the platform
/// reports an expired `SO_RCVTIMEO`).
pub fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A TCP echo server listening in a namespace, answering one connection at a time.
pub struct EchoServer {
    listener: TcpListener,
}

impl EchoServer {
    /// Listens on `addr` inside `ns`.
    pub fn listen(ns: &NetNs, addr: SocketAddrV4) -> Result<EchoServer, TrafficError> {
        let listener = ns
            .enter(|| TcpListener::bind(addr))?
            .map_err(socket_error("listening"))?;
        listener
            .set_nonblocking(true)
            .map_err(socket_error("setting nonblocking"))?;
        Ok(EchoServer { listener })
    }

    /// Accepts one connection (waiting at most [`EXCHANGE_TIMEOUT`]) and echoes what it reads
    /// until the peer closes.
    pub fn serve_one(&self) -> Result<(), TrafficError> {
        let deadline = Instant::now() + EXCHANGE_TIMEOUT;
        let mut stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(TrafficError::Socket {
                            action: "accepting",
                            source: std::io::ErrorKind::TimedOut.into(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => return Err(socket_error("accepting")(error)),
            }
        };
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(EXCHANGE_TIMEOUT)))
            .map_err(socket_error("configuring accepted stream"))?;
        let mut buffer = [0u8; 1024];
        loop {
            let read = stream.read(&mut buffer).map_err(socket_error("reading"))?;
            if read == 0 {
                return Ok(());
            }
            stream
                .write_all(&buffer[..read])
                .map_err(socket_error("echoing"))?;
        }
    }
}

/// Connects from `ns` to `to`, sends `message`, reads the echo and closes; `server` answers on
/// another thread. Returns whether the echo matched.
pub fn tcp_exchange(
    ns: &NetNs,
    server: &EchoServer,
    to: SocketAddrV4,
    message: &[u8],
) -> Result<bool, TrafficError> {
    std::thread::scope(|scope| {
        let served = scope.spawn(|| server.serve_one());
        let echoed = ns.enter(|| -> Result<bool, TrafficError> {
            let mut stream = TcpStream::connect_timeout(&to.into(), EXCHANGE_TIMEOUT)
                .map_err(socket_error("connecting"))?;
            stream
                .set_read_timeout(Some(EXCHANGE_TIMEOUT))
                .map_err(socket_error("setting timeout"))?;
            stream.write_all(message).map_err(socket_error("writing"))?;
            let mut echo = vec![0u8; message.len()];
            stream
                .read_exact(&mut echo)
                .map_err(socket_error("reading echo"))?;
            Ok(echo == message)
        })?;
        let served = served
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let echoed = echoed?;
        served?;
        Ok(echoed)
    })
}

/// Writes raw Ethernet frames out of `iface` in `ns` with an AF_PACKET socket.
pub fn send_frames(ns: &NetNs, iface: &str, frames: &[Vec<u8>]) -> Result<(), TrafficError> {
    let ifindex = ns
        .enter(|| moat::preflight::iface_index(iface))?
        .map_err(|error| TrafficError::Socket {
            action: "finding interface",
            source: std::io::Error::other(error.to_string()),
        })?;
    ns.enter(|| {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(socket_error("opening packet socket")(
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        for frame in frames {
            // SAFETY: all-zero is a valid `sockaddr_ll`; the fields that matter are set below.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            // SAFETY: `frame` and `addr` are valid for the lengths passed.
            let sent = unsafe {
                libc::sendto(
                    socket.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if sent < 0 {
                return Err(socket_error("sending raw frame")(
                    std::io::Error::last_os_error(),
                ));
            }
        }
        Ok(())
    })?
}

/// A UDP frame from `from` to `to` whose IPv4 header claims 100 bytes more than the frame
/// holds: malformed, as a truncated packet would be.
pub fn truncated_udp_frame(from: &Endpoint, to: &Endpoint) -> Vec<u8> {
    let mut frame = udp_frame(from, to, 9, &[0x6d; 32]);
    let total_len = u16::from_be_bytes([frame[16], frame[17]]).saturating_add(100);
    frame[16..18].copy_from_slice(&total_len.to_be_bytes());
    frame
}

/// A well-formed UDP frame from `from` to `to`.
pub fn udp_frame(from: &Endpoint, to: &Endpoint, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(from.mac, to.mac)
        .ipv4(from.ipv4.octets(), to.ipv4.octets(), 64)
        .udp(40_000, dst_port);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec cannot fail, and a payload this small fits every length field.
    if builder.write(&mut frame, payload).is_err() {
        frame.clear();
    }
    frame
}

/// A TCP SYN to `to`'s `dst_port` from `source` (any address: spoofed sources are what floods
/// use), sent with `from`'s MAC.
pub fn syn_frame(from: &Endpoint, source: Ipv4Addr, to: &Endpoint, dst_port: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(from.mac, to.mac)
        .ipv4(source.octets(), to.ipv4.octets(), 64)
        .tcp(40_000, dst_port, 1, 64_240)
        .syn();
    let mut frame = Vec::with_capacity(builder.size(0));
    // Writing into a Vec cannot fail, and an empty payload fits every length field.
    if builder.write(&mut frame, &[]).is_err() {
        frame.clear();
    }
    frame
}

/// A TCP segment with no payload from `source`'s `src_port` (any address: spoofed sources are
/// what floods use) to `to`'s `dst_port`, sent with `from`'s MAC, carrying `flags` (the bits of
/// [`filter_common::classify::tcp_flags`], plus ECE 0x40 and CWR 0x80), sequence number `seq`
/// and acknowledgment number `ack` (as given, whether or not ACK is set). Lengths and checksums
/// are correct, so SYN, ACK, RST or FIN floods can be built from it.
#[expect(
    clippy::too_many_arguments,
    reason = "each argument is one header field a flood varies"
)]
pub fn tcp_frame(
    from: &Endpoint,
    source: Ipv4Addr,
    to: &Endpoint,
    src_port: u16,
    dst_port: u16,
    flags: u8,
    seq: u32,
    ack: u32,
) -> Vec<u8> {
    use filter_common::classify::tcp_flags::{ACK, FIN, PSH, RST, SYN, URG};

    let mut header = etherparse::TcpHeader::new(src_port, dst_port, seq, 64_240);
    header.fin = flags & FIN != 0;
    header.syn = flags & SYN != 0;
    header.rst = flags & RST != 0;
    header.psh = flags & PSH != 0;
    header.ack = flags & ACK != 0;
    header.urg = flags & URG != 0;
    header.ece = flags & 0x40 != 0;
    header.cwr = flags & 0x80 != 0;
    header.acknowledgment_number = ack;
    let builder = PacketBuilder::ethernet2(from.mac, to.mac)
        .ipv4(source.octets(), to.ipv4.octets(), 64)
        .tcp_header(header);
    let mut frame = Vec::with_capacity(builder.size(0));
    // Writing into a Vec cannot fail, and an empty payload fits every length field.
    if builder.write(&mut frame, &[]).is_err() {
        frame.clear();
    }
    frame
}

/// An ARP request from `from` for `to`'s address: not IP, so the filter passes it uninspected.
pub fn arp_request_frame(from: &Endpoint, to: &Endpoint) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&from.mac);
    frame.extend_from_slice(&0x0806u16.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op request.
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&from.mac);
    frame.extend_from_slice(&from.ipv4.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&to.ipv4.octets());
    frame
}
