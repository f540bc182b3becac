//! TCP socket listing through the kernel's sock_diag netlink interface: one `SOCK_DIAG_BY_FAMILY`
//! dump per address family, filtered by the kernel to the states that prove a completed handshake,
//! and read back as the sockets' remote addresses. It lists the sockets of the caller's network
//! namespace only, and it does not decide what a peer is trusted for; `verify` does.
//!
//! Replies are read from a byte buffer at the offsets of the `#[repr(C)]` mirrors of the kernel
//! structs below (`offset_of!`), through bounds-checked slices, never by casting the buffer.

use std::{
    io,
    mem::{offset_of, size_of},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// `SOCK_DIAG_BY_FAMILY` from `linux/sock_diag.h`: the message type of a dump request and of
/// each socket in the reply.
const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// TCP states from `include/net/tcp_states.h`.
const TCP_ESTABLISHED: u8 = 1;
const TCP_FIN_WAIT1: u8 = 4;
const TCP_FIN_WAIT2: u8 = 5;
const TCP_TIME_WAIT: u8 = 6;
const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LAST_ACK: u8 = 9;
const TCP_CLOSING: u8 = 11;

/// The `idiag_states` bit of `state`.
const fn state_bit(state: u8) -> u32 {
    1 << state
}

/// The states that prove a completed handshake: ESTABLISHED, FIN_WAIT1, FIN_WAIT2, TIME_WAIT,
/// CLOSE, CLOSE_WAIT, LAST_ACK, CLOSING. LISTEN, SYN_SENT and SYN_RECV are left out: a half-open
/// connection says nothing about whether its peer owns its address.
const HANDSHAKE_STATES: u32 = state_bit(TCP_ESTABLISHED)
    | state_bit(TCP_FIN_WAIT1)
    | state_bit(TCP_FIN_WAIT2)
    | state_bit(TCP_TIME_WAIT)
    | state_bit(TCP_CLOSE)
    | state_bit(TCP_CLOSE_WAIT)
    | state_bit(TCP_LAST_ACK)
    | state_bit(TCP_CLOSING);

/// The receive buffer. The kernel never builds a dump datagram larger than 32 KiB
/// (`netlink_recvmsg` caps `max_recvmsg_len` at `SKB_WITH_OVERHEAD(32768)`), so one always fits.
const RECEIVE_BUFFER_BYTES: usize = 32 * 1024;

/// How long one `recv` waits for the kernel before the listing gives up, so a caller's loop never
/// hangs on it.
const RECEIVE_TIMEOUT_SECS: libc::time_t = 2;

/// Netlink messages start on 4-byte boundaries (`NLMSG_ALIGNTO`).
const NLMSG_ALIGN_BYTES: usize = 4;

/// `struct nlmsghdr` from `linux/netlink.h`.
#[repr(C)]
#[derive(Clone, Copy)]
struct NlMsgHdr {
    nlmsg_len: u32,
    nlmsg_type: u16,
    nlmsg_flags: u16,
    nlmsg_seq: u32,
    nlmsg_pid: u32,
}
const _: () = assert!(size_of::<NlMsgHdr>() == 16);

/// `struct nlmsgerr` from `linux/netlink.h`: the payload of `NLMSG_ERROR`, a negative errno
/// followed by the header of the request it answers.
#[repr(C)]
struct NlMsgErr {
    error: i32,
    msg: NlMsgHdr,
}
const _: () = assert!(size_of::<NlMsgErr>() == 20);

/// `struct inet_diag_sockid` from `linux/inet_diag.h`. Ports and addresses are in network order;
/// an IPv4 address fills the first 4 bytes of its 16.
#[repr(C)]
#[derive(Clone, Copy)]
struct InetDiagSockId {
    idiag_sport_be: [u8; 2],
    idiag_dport_be: [u8; 2],
    idiag_src_be: [u8; 16],
    idiag_dst_be: [u8; 16],
    idiag_if: u32,
    idiag_cookie: [u32; 2],
}
const _: () = assert!(size_of::<InetDiagSockId>() == 48);

/// `struct inet_diag_req_v2` from `linux/inet_diag.h`: what to dump.
#[repr(C)]
#[derive(Clone, Copy)]
struct InetDiagReqV2 {
    sdiag_family: u8,
    sdiag_protocol: u8,
    idiag_ext: u8,
    pad: u8,
    idiag_states: u32,
    id: InetDiagSockId,
}
const _: () = assert!(size_of::<InetDiagReqV2>() == 56);

/// `struct inet_diag_msg` from `linux/inet_diag.h`: one socket of the reply.
#[repr(C)]
struct InetDiagMsg {
    idiag_family: u8,
    idiag_state: u8,
    idiag_timer: u8,
    idiag_retrans: u8,
    id: InetDiagSockId,
    idiag_expires: u32,
    idiag_rqueue: u32,
    idiag_wqueue: u32,
    idiag_uid: u32,
    idiag_inode: u32,
}
const _: () = assert!(size_of::<InetDiagMsg>() == 72);

/// Where a reply's fields sit, relative to the start of the netlink payload.
const HEADER_BYTES: usize = size_of::<NlMsgHdr>();
const MSG_FAMILY_AT: usize = offset_of!(InetDiagMsg, idiag_family);
const MSG_STATE_AT: usize = offset_of!(InetDiagMsg, idiag_state);
const MSG_DST_AT: usize = offset_of!(InetDiagMsg, id) + offset_of!(InetDiagSockId, idiag_dst_be);
const ERROR_AT: usize = offset_of!(NlMsgErr, error);
const _: () = assert!(MSG_DST_AT == 24);

/// The bytes of one dump request: header and `inet_diag_req_v2`.
const REQUEST_BYTES: usize = HEADER_BYTES + size_of::<InetDiagReqV2>();

/// Why the socket listing failed.
#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    /// A call on the sock_diag netlink socket failed (`action` names it).
    #[error("{action} on the sock_diag netlink socket: {source}")]
    Socket {
        /// What was being attempted, e.g. "sending the dump request".
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The kernel answered the dump request for `family` with an error.
    #[error("the kernel refused the {family} tcp socket dump: {source}")]
    Refused {
        /// The address family dumped, "ipv4" or "ipv6".
        family: &'static str,
        /// The errno the kernel returned.
        source: io::Error,
    },
    /// A reply datagram was larger than the receive buffer, so part of it was lost.
    #[error(
        "a sock_diag reply of {len_bytes} bytes overflowed the {capacity_bytes}-byte receive buffer"
    )]
    Truncated {
        /// The datagram's full length.
        len_bytes: usize,
        /// The receive buffer's size.
        capacity_bytes: usize,
    },
    /// A reply was not a well-formed sequence of netlink messages carrying `inet_diag_msg`.
    #[error("malformed sock_diag reply at byte {offset}: {reason}")]
    Malformed {
        /// Where in the datagram the problem starts.
        offset: usize,
        /// What was wrong there.
        reason: &'static str,
    },
}

/// The remote addresses of this network namespace's TCP sockets that completed a handshake
/// (ESTABLISHED, FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, CLOSING), IPv4 and
/// IPv6, sorted and without duplicates. IPv4-mapped IPv6 peers are returned as IPv4.
///
/// Work and memory are proportional to the number of such sockets: one 32 KiB receive buffer on
/// the stack, no allocation per socket beyond the returned `Vec`, and each wait for the kernel
/// bounded by a receive timeout.
pub fn handshake_peers() -> Result<Vec<IpAddr>, SockDiagError> {
    peers_in_states(HANDSHAKE_STATES)
}

/// The remote addresses of TCP sockets whose state is in the `idiag_states` mask `states`.
fn peers_in_states(states: u32) -> Result<Vec<IpAddr>, SockDiagError> {
    let socket = open()?;
    let mut buffer = [0u8; RECEIVE_BUFFER_BYTES];
    let mut peers = Vec::new();
    let dumps = [(1, libc::AF_INET, "ipv4"), (2, libc::AF_INET6, "ipv6")];
    for (seq, family, family_name) in dumps {
        // AF_INET and AF_INET6 are 2 and 10: they fit `sdiag_family`.
        let request = dump_request(family as u8, states, seq);
        send(&socket, &request)?;
        loop {
            let len_bytes = receive(&socket, &mut buffer)?;
            let datagram = buffer.get(..len_bytes).ok_or(SockDiagError::Truncated {
                len_bytes,
                capacity_bytes: RECEIVE_BUFFER_BYTES,
            })?;
            if read_batch(datagram, seq, states, family_name, &mut peers)? == Batch::Done {
                break;
            }
        }
    }
    peers.sort_unstable();
    peers.dedup();
    Ok(peers)
}

/// Opens a sock_diag netlink socket connected to the kernel, so no other process can send to it.
fn open() -> Result<OwnedFd, SockDiagError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(last_socket_error("opening"));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: RECEIVE_TIMEOUT_SECS,
        tv_usec: 0,
    };
    // SAFETY: `timeout` is a valid `timeval` for the length passed.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(last_socket_error("setting the receive timeout"));
    }
    // SAFETY: all-zero is a valid `sockaddr_nl`; port id 0 is the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `kernel` is a valid `sockaddr_nl` for the length passed.
    let result = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&raw const kernel).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(last_socket_error("connecting to the kernel"));
    }
    Ok(socket)
}

/// The error for the socket call that just failed; call it before anything can change errno.
fn last_socket_error(action: &'static str) -> SockDiagError {
    SockDiagError::Socket {
        action,
        source: io::Error::last_os_error(),
    }
}

/// Sends one request datagram to the kernel.
fn send(socket: &OwnedFd, request: &[u8]) -> Result<(), SockDiagError> {
    // SAFETY: `request` is valid for the length passed.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(last_socket_error("sending the dump request"));
    }
    if sent.unsigned_abs() != request.len() {
        return Err(SockDiagError::Socket {
            action: "sending the dump request",
            source: io::Error::new(io::ErrorKind::WriteZero, "the request was sent in part"),
        });
    }
    Ok(())
}

/// Receives one datagram into `buffer` and returns its full length, which is more than
/// `buffer.len()` if it did not fit (`MSG_TRUNC`).
fn receive(socket: &OwnedFd, buffer: &mut [u8]) -> Result<usize, SockDiagError> {
    loop {
        // SAFETY: `buffer` is valid for writes of the length passed.
        let received = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                libc::MSG_TRUNC,
            )
        };
        if received >= 0 {
            return Ok(received.unsigned_abs());
        }
        let source = io::Error::last_os_error();
        if source.kind() != io::ErrorKind::Interrupted {
            return Err(SockDiagError::Socket {
                action: "receiving the dump",
                source,
            });
        }
    }
}

/// The bytes of a `SOCK_DIAG_BY_FAMILY` dump request for the TCP sockets of `family` whose state
/// is in `states`.
fn dump_request(family: u8, states: u32, seq: u32) -> [u8; REQUEST_BYTES] {
    let header = NlMsgHdr {
        // A compile-time constant of 72.
        nlmsg_len: REQUEST_BYTES as u32,
        nlmsg_type: SOCK_DIAG_BY_FAMILY,
        // NLM_F_REQUEST | NLM_F_DUMP is 0x301: it fits the 16-bit flags.
        nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
        nlmsg_seq: seq,
        nlmsg_pid: 0,
    };
    let request = InetDiagReqV2 {
        sdiag_family: family,
        // IPPROTO_TCP is 6.
        sdiag_protocol: libc::IPPROTO_TCP as u8,
        idiag_ext: 0,
        pad: 0,
        idiag_states: states,
        id: InetDiagSockId {
            idiag_sport_be: [0; 2],
            idiag_dport_be: [0; 2],
            idiag_src_be: [0; 16],
            idiag_dst_be: [0; 16],
            idiag_if: 0,
            idiag_cookie: [0; 2],
        },
    };
    let mut bytes = [0u8; REQUEST_BYTES];
    let (head, body) = bytes.split_at_mut(HEADER_BYTES);
    header.write_to(head);
    request.write_to(body);
    bytes
}

/// Copies `parts` one after another into `out`. The structs below have no padding, so their
/// fields in declaration order are their `repr(C)` layout; the size assertions pin that.
fn write_parts(out: &mut [u8], parts: &[&[u8]]) {
    for (slot, byte) in out
        .iter_mut()
        .zip(parts.iter().flat_map(|part| part.iter()))
    {
        *slot = *byte;
    }
}

impl NlMsgHdr {
    /// Writes the header in native byte order, as the kernel reads it.
    fn write_to(&self, out: &mut [u8]) {
        let Self {
            nlmsg_len,
            nlmsg_type,
            nlmsg_flags,
            nlmsg_seq,
            nlmsg_pid,
        } = *self;
        write_parts(
            out,
            &[
                &nlmsg_len.to_ne_bytes(),
                &nlmsg_type.to_ne_bytes(),
                &nlmsg_flags.to_ne_bytes(),
                &nlmsg_seq.to_ne_bytes(),
                &nlmsg_pid.to_ne_bytes(),
            ],
        );
    }
}

impl InetDiagReqV2 {
    /// Writes the request in native byte order, as the kernel reads it.
    fn write_to(&self, out: &mut [u8]) {
        let Self {
            sdiag_family,
            sdiag_protocol,
            idiag_ext,
            pad,
            idiag_states,
            id:
                InetDiagSockId {
                    idiag_sport_be,
                    idiag_dport_be,
                    idiag_src_be,
                    idiag_dst_be,
                    idiag_if,
                    idiag_cookie: [cookie_low, cookie_high],
                },
        } = *self;
        write_parts(
            out,
            &[
                &[sdiag_family, sdiag_protocol, idiag_ext, pad],
                &idiag_states.to_ne_bytes(),
                &idiag_sport_be,
                &idiag_dport_be,
                &idiag_src_be,
                &idiag_dst_be,
                &idiag_if.to_ne_bytes(),
                &cookie_low.to_ne_bytes(),
                &cookie_high.to_ne_bytes(),
            ],
        );
    }
}

/// Whether a datagram ended the dump.
#[derive(Debug, PartialEq, Eq)]
enum Batch {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` arrived.
    Done,
}

/// Reads the netlink messages of one datagram answering request `seq`, appending the peer of
/// each socket whose state is in `states` to `peers`. Messages of another sequence are skipped.
fn read_batch(
    datagram: &[u8],
    seq: u32,
    states: u32,
    family: &'static str,
    peers: &mut Vec<IpAddr>,
) -> Result<Batch, SockDiagError> {
    let mut offset = 0;
    // Each message is at least a header long, so this runs at most len / 16 times.
    while offset < datagram.len() {
        let malformed = |reason| SockDiagError::Malformed { offset, reason };
        let message = datagram.get(offset..).unwrap_or_default();
        let len = read_u32(message, offset_of!(NlMsgHdr, nlmsg_len))
            .ok_or(malformed("message header cut short"))? as usize;
        let kind = read_u16(message, offset_of!(NlMsgHdr, nlmsg_type))
            .ok_or(malformed("message header cut short"))?;
        let message_seq = read_u32(message, offset_of!(NlMsgHdr, nlmsg_seq))
            .ok_or(malformed("message header cut short"))?;
        let payload = message
            .get(HEADER_BYTES..len)
            .ok_or(malformed("message length outside the datagram"))?;
        if message_seq == seq {
            match i32::from(kind) {
                libc::NLMSG_DONE => {
                    // A dump that failed part way ends with DONE carrying a negative errno.
                    return match read_i32(payload, 0) {
                        Some(errno) if errno < 0 => Err(refused(family, errno)),
                        _ => Ok(Batch::Done),
                    };
                }
                libc::NLMSG_ERROR => {
                    let errno =
                        read_i32(payload, ERROR_AT).ok_or(malformed("error message cut short"))?;
                    // Zero is an acknowledgement, which a dump does not ask for; skip it.
                    if errno != 0 {
                        return Err(refused(family, errno));
                    }
                }
                _ if kind == SOCK_DIAG_BY_FAMILY => {
                    if let Some(peer) = peer_of(payload, states).map_err(malformed)? {
                        peers.push(peer);
                    }
                }
                // NLMSG_NOOP and anything newer carry no socket.
                _ => {}
            }
        }
        offset = offset.saturating_add(len.next_multiple_of(NLMSG_ALIGN_BYTES));
    }
    Ok(Batch::More)
}

/// The remote address of one `inet_diag_msg`, or `None` if its state is not in `states`. The
/// kernel already filtered by state; checking again costs nothing and keeps a half-open peer out
/// even if a kernel ignored the mask.
fn peer_of(payload: &[u8], states: u32) -> Result<Option<IpAddr>, &'static str> {
    let socket_family = payload
        .get(MSG_FAMILY_AT)
        .ok_or("socket message cut short")?;
    let state = payload
        .get(MSG_STATE_AT)
        .ok_or("socket message cut short")?;
    let in_states = 1u32
        .checked_shl(u32::from(*state))
        .is_some_and(|bit| states & bit != 0);
    if !in_states {
        return Ok(None);
    }
    let dst = read_array::<16>(payload, MSG_DST_AT).ok_or("socket message cut short")?;
    match i32::from(*socket_family) {
        libc::AF_INET => {
            let [a, b, c, d, ..] = dst;
            Ok(Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d))))
        }
        libc::AF_INET6 => {
            let v6 = Ipv6Addr::from(dst);
            Ok(Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }))
        }
        _ => Err("socket of an address family other than ipv4 or ipv6"),
    }
}

/// The error for a negative errno the kernel returned.
fn refused(family: &'static str, errno: i32) -> SockDiagError {
    SockDiagError::Refused {
        family,
        source: io::Error::from_raw_os_error(errno.saturating_neg()),
    }
}

/// `N` bytes of `bytes` at `at`, if they are all there.
fn read_array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// A native-order `u16` at `at`.
fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    read_array(bytes, at).map(u16::from_ne_bytes)
}

/// A native-order `u32` at `at`.
fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    read_array(bytes, at).map(u32::from_ne_bytes)
}

/// A native-order `i32` at `at`.
fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    read_array(bytes, at).map(i32::from_ne_bytes)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use socket2::{Domain, Socket, Type};

    use super::*;

    /// The half-open state (`include/net/tcp_states.h`), which must never verify a peer.
    const TCP_SYN_RECV: u8 = 3;

    /// A listening TCP socket on `addr` (port 0: any free port), with `TCP_DEFER_ACCEPT` set to
    /// `defer_secs` when given, so bare ACKs leave its connections half-open (SYN_RECV).
    fn listener(addr: &str, defer_secs: Option<libc::c_int>) -> Socket {
        let addr: SocketAddr = addr.parse().expect("listener address literal");
        let socket =
            Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("opening tcp socket");
        if addr.is_ipv6() {
            // Lets a socket bound to an IPv4-mapped address accept IPv4 connections.
            socket.set_only_v6(false).expect("clearing IPV6_V6ONLY");
        }
        if let Some(secs) = defer_secs {
            // SAFETY: `secs` is a valid `c_int` for the length passed.
            let result = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_DEFER_ACCEPT,
                    (&raw const secs).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(
                result,
                0,
                "setting TCP_DEFER_ACCEPT: {}",
                io::Error::last_os_error()
            );
        }
        socket
            .bind(&addr.into())
            .unwrap_or_else(|err| panic!("binding {addr} (loopback must be up): {err}"));
        socket.listen(16).expect("listening");
        socket
    }

    /// The address `socket` is bound to.
    fn local(socket: &Socket) -> SocketAddr {
        socket
            .local_addr()
            .expect("listener address")
            .as_socket()
            .expect("an inet address")
    }

    /// A TCP connection to `to` from `from` (port chosen by the kernel).
    fn connect(from: &str, to: SocketAddr) -> Socket {
        let from: SocketAddr = from.parse().expect("client address literal");
        let socket =
            Socket::new(Domain::for_address(from), Type::STREAM, None).expect("opening tcp socket");
        socket.bind(&from.into()).expect("binding client");
        socket
            .connect(&to.into())
            .unwrap_or_else(|err| panic!("connecting {from} to {to}: {err}"));
        reset_on_drop(&socket);
        socket
    }

    /// The next connection waiting on `listener`.
    fn accept(listener: &Socket) -> Socket {
        let (socket, _) = listener.accept().expect("accepting a connection");
        reset_on_drop(&socket);
        socket
    }

    /// Makes closing `socket` send a reset, so no TIME_WAIT socket outlives the test and shows
    /// up as a peer in the next run.
    fn reset_on_drop(socket: &Socket) {
        socket
            .set_linger(Some(std::time::Duration::ZERO))
            .expect("setting SO_LINGER");
    }

    fn addr(literal: &str) -> IpAddr {
        literal.parse().expect("address literal")
    }

    #[test]
    fn reports_loopback_peers_of_established_connections() {
        // The v4 client comes from an address of this process's own, so the server side's peer
        // cannot be a leftover socket of another run or process.
        let pid = std::process::id();
        let client_v4 = Ipv4Addr::new(127, 200, (pid >> 8) as u8, (pid % 254 + 1) as u8);
        let v4 = listener("127.0.0.1:0", None);
        let v6 = listener("[::1]:0", None);
        let _v4_client = connect(&format!("{client_v4}:0"), local(&v4));
        let _v6_client = connect("[::1]:0", local(&v6));
        let _v4_server = accept(&v4);
        let _v6_server = accept(&v6);
        let peers = handshake_peers().expect("listing tcp sockets");
        for expected in [addr("127.0.0.1"), IpAddr::V4(client_v4), addr("::1")] {
            assert!(peers.contains(&expected), "{expected} missing: {peers:?}");
        }
        assert!(peers.is_sorted(), "sorted: {peers:?}");
        assert!(
            peers.windows(2).all(|pair| pair[0] != pair[1]),
            "deduplicated: {peers:?}"
        );
    }

    #[test]
    fn skips_listening_and_half_open_sockets() {
        // The server side stays SYN_RECV (TCP_DEFER_ACCEPT drops the bare ACK) while the client
        // side is ESTABLISHED, so 127.0.0.2 must be reported (the client's destination) and
        // 127.0.0.3 must not: it is only the destination of the half-open server side, and the
        // source of the client side, so reporting it means a wrong state mask or reading
        // idiag_src instead of idiag_dst.
        let deferring = listener("127.0.0.2:0", Some(30));
        let _client = connect("127.0.0.3:0", local(&deferring));
        // Bound and listening, never connected: neither its address nor its unspecified peer
        // may show up.
        let _idle = listener("127.0.0.4:0", None);

        let peers = handshake_peers().expect("listing tcp sockets");
        assert!(
            peers.contains(&addr("127.0.0.2")),
            "established client's peer missing: {peers:?}"
        );
        assert!(
            !peers.contains(&addr("127.0.0.3")),
            "half-open peer reported: {peers:?}"
        );
        assert!(
            !peers.contains(&addr("127.0.0.4")),
            "listener reported: {peers:?}"
        );
        assert!(
            !peers.iter().any(IpAddr::is_unspecified),
            "a listener's unspecified peer reported: {peers:?}"
        );

        // The setup did what the assertions above rely on: the server side is half-open and
        // visible to a dump that asks for SYN_RECV.
        deferring
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let accepted = deferring.accept().map(|_| ()).map_err(|err| err.kind());
        assert_eq!(
            accepted,
            Err(io::ErrorKind::WouldBlock),
            "server side left SYN_RECV"
        );
        let half_open = peers_in_states(state_bit(TCP_SYN_RECV)).expect("listing SYN_RECV");
        assert!(
            half_open.contains(&addr("127.0.0.3")),
            "half-open peer not dumped: {half_open:?}"
        );
    }

    #[test]
    fn reports_ipv4_mapped_peers_as_ipv4() {
        // An IPv6 socket accepting an IPv4 connection reports its peer as ::ffff:127.0.0.7.
        let dual = listener("[::ffff:127.0.0.6]:0", None);
        let port = local(&dual).port();
        let _client = connect("127.0.0.7:0", SocketAddr::from(([127, 0, 0, 6], port)));
        let _server = accept(&dual);
        let peers = handshake_peers().expect("listing tcp sockets");
        assert!(
            peers.contains(&addr("127.0.0.7")),
            "mapped peer missing as ipv4: {peers:?}"
        );
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 7).to_ipv6_mapped());
        assert!(
            !peers.contains(&mapped),
            "mapped peer reported as ipv6: {peers:?}"
        );
    }

    /// One netlink message of `kind` and `seq` with `payload`, padded to 4 bytes.
    fn message(datagram: &mut Vec<u8>, kind: u16, seq: u32, payload: &[u8]) {
        let len = HEADER_BYTES + payload.len();
        let mut header = [0u8; HEADER_BYTES];
        NlMsgHdr {
            nlmsg_len: u32::try_from(len).expect("small message"),
            nlmsg_type: kind,
            nlmsg_flags: libc::NLM_F_MULTI as u16,
            nlmsg_seq: seq,
            nlmsg_pid: 4242,
        }
        .write_to(&mut header);
        datagram.extend_from_slice(&header);
        datagram.extend_from_slice(payload);
        datagram.resize(
            len.next_multiple_of(NLMSG_ALIGN_BYTES) + datagram.len() - len,
            0,
        );
    }

    /// An `inet_diag_msg` of `family` in `state` from `src` to `dst`.
    fn socket_message(family: i32, state: u8, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let octets = |addr: IpAddr| match addr {
            IpAddr::V4(v4) => {
                let mut all = [0u8; 16];
                all[..4].copy_from_slice(&v4.octets());
                all
            }
            IpAddr::V6(v6) => v6.octets(),
        };
        // Offsets written out from `linux/inet_diag.h`, independent of the code under test:
        // family 0, state 1, id at 4 (ports 4..8, src 8..24, dst 24..40), 72 bytes in all.
        let mut payload = vec![0u8; 72];
        payload[0] = u8::try_from(family).expect("small family");
        payload[1] = state;
        payload[8..24].copy_from_slice(&octets(src));
        payload[24..40].copy_from_slice(&octets(dst));
        payload
    }

    #[test]
    fn reads_the_destination_of_sockets_in_the_mask() {
        let mut datagram = Vec::new();
        let diag = SOCK_DIAG_BY_FAMILY;
        let v4 = socket_message(
            libc::AF_INET,
            TCP_ESTABLISHED,
            addr("192.0.2.1"),
            addr("198.51.100.2"),
        );
        message(&mut datagram, diag, 7, &v4);
        let v6 = socket_message(
            libc::AF_INET6,
            TCP_TIME_WAIT,
            addr("2001:db8::1"),
            addr("2001:db8::2"),
        );
        message(&mut datagram, diag, 7, &v6);
        let mapped = addr("::ffff:203.0.113.3");
        let v6_mapped = socket_message(libc::AF_INET6, TCP_CLOSE_WAIT, addr("::1"), mapped);
        message(&mut datagram, diag, 7, &v6_mapped);
        let half_open = socket_message(
            libc::AF_INET,
            TCP_SYN_RECV,
            addr("192.0.2.1"),
            addr("192.0.2.99"),
        );
        message(&mut datagram, diag, 7, &half_open);
        let other_request = socket_message(
            libc::AF_INET,
            TCP_ESTABLISHED,
            addr("192.0.2.1"),
            addr("192.0.2.98"),
        );
        message(&mut datagram, diag, 8, &other_request);

        let mut peers = Vec::new();
        let batch = read_batch(&datagram, 7, HANDSHAKE_STATES, "ipv4", &mut peers);
        assert_eq!(batch.expect("well-formed datagram"), Batch::More);
        let expected = ["198.51.100.2", "2001:db8::2", "203.0.113.3"].map(addr);
        assert_eq!(
            peers, expected,
            "destinations in the mask, mapped ipv6 as ipv4, own sequence only"
        );

        let mut done = Vec::new();
        message(&mut done, libc::NLMSG_DONE as u16, 7, &0i32.to_ne_bytes());
        assert_eq!(
            read_batch(&done, 7, HANDSHAKE_STATES, "ipv4", &mut peers).expect("done"),
            Batch::Done
        );
    }

    #[test]
    fn rejects_errors_and_malformed_replies() {
        let mut error = Vec::new();
        let mut payload = (-libc::EINVAL).to_ne_bytes().to_vec();
        payload.resize(20, 0);
        message(&mut error, libc::NLMSG_ERROR as u16, 1, &payload);
        let result = read_batch(&error, 1, HANDSHAKE_STATES, "ipv6", &mut Vec::new());
        assert!(
            matches!(&result, Err(SockDiagError::Refused { family: "ipv6", source })
                if source.raw_os_error() == Some(libc::EINVAL)),
            "NLMSG_ERROR: {result:?}"
        );

        let mut short = Vec::new();
        let full = socket_message(
            libc::AF_INET,
            TCP_ESTABLISHED,
            addr("192.0.2.1"),
            addr("192.0.2.2"),
        );
        message(&mut short, SOCK_DIAG_BY_FAMILY, 1, &full[..27]);
        let result = read_batch(&short, 1, HANDSHAKE_STATES, "ipv4", &mut Vec::new());
        assert!(
            matches!(result, Err(SockDiagError::Malformed { offset: 0, .. })),
            "cut short: {result:?}"
        );

        let mut overlong = Vec::new();
        message(&mut overlong, SOCK_DIAG_BY_FAMILY, 1, &full);
        overlong[..4].copy_from_slice(&1000u32.to_ne_bytes());
        let result = read_batch(&overlong, 1, HANDSHAKE_STATES, "ipv4", &mut Vec::new());
        assert!(
            matches!(result, Err(SockDiagError::Malformed { .. })),
            "length past the end: {result:?}"
        );

        let zero_length = [0u8; HEADER_BYTES];
        let result = read_batch(&zero_length, 1, HANDSHAKE_STATES, "ipv4", &mut Vec::new());
        assert!(
            matches!(result, Err(SockDiagError::Malformed { .. })),
            "zero length: {result:?}"
        );
    }

    #[test]
    fn encodes_the_dump_request() {
        let request = dump_request(libc::AF_INET6 as u8, HANDSHAKE_STATES, 9);
        assert_eq!(read_u32(&request, 0), Some(72), "nlmsg_len");
        assert_eq!(
            read_u16(&request, 4),
            Some(SOCK_DIAG_BY_FAMILY),
            "nlmsg_type"
        );
        assert_eq!(
            read_u16(&request, 6),
            Some(0x301),
            "NLM_F_REQUEST | NLM_F_DUMP"
        );
        assert_eq!(read_u32(&request, 8), Some(9), "nlmsg_seq");
        assert_eq!(
            request[16..20],
            [10, 6, 0, 0],
            "AF_INET6, IPPROTO_TCP, no extensions"
        );
        assert_eq!(
            read_u32(&request, 20),
            Some(0b1011_1111_0010),
            "idiag_states"
        );
        assert!(
            request[24..].iter().all(|byte| *byte == 0),
            "no socket id filter"
        );
    }
}
