//! The origin's sockets that BPF_PROG_TEST_RUN cases need. moat looks sockets up in the network
//! namespace of the receiving device, which under BPF_PROG_TEST_RUN is the calling thread's, so
//! every timed test run happens on a thread inside this namespace: the origin's and the clients'
//! addresses on loopback, TCP listeners on the origin's port (IPv4 and IPv6), one real
//! connection per established source, and `net.ipv4.tcp_syncookies = 2`, so the listener wants a
//! cookie for every SYN (as it does when its SYN queue is full under a flood) and checks every
//! ACK's.
//!
//! It opens sockets and runs closures inside the namespace; what is timed there is `cost`'s and
//! `scaling`'s business. Everything is removed on drop.

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use socket2::{Domain, Socket, Type};

use super::BenchError;
use moat::netns::NetNs;

/// The namespace and the sockets held open in it.
pub struct Origin {
    /// Listeners, connections' both ends: held so they stay open. Dropped before the namespace.
    _sockets: Vec<Socket>,
    _streams: Vec<TcpStream>,
    ns: NetNs,
}

/// How long an IPv6 address on loopback may take to become routable.
const ROUTE_DEADLINE: Duration = Duration::from_secs(3);

/// Waits until the kernel routes to `address`, an IPv6 address just added to the namespace's
/// loopback. Even without duplicate address detection, the kernel installs an IPv6 address's
/// local route from a workqueue after `ip addr add` returns; on a busy machine a connection
/// opened at once found no route (ENETUNREACH) about one run in six.
fn wait_for_local_route(ns: &NetNs, address: IpAddr) -> Result<(), BenchError> {
    let target = address.to_string();
    let deadline = Instant::now() + ROUTE_DEADLINE;
    loop {
        let routes = ns.ip(&["-6", "route", "show", "table", "local", &target])?;
        if !routes.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Io {
                action: "waiting for the local route of",
                target: format!("{target} in {}", ns.name()),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no route within {} s", ROUTE_DEADLINE.as_secs()),
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Origin {
    /// Creates the namespace with `origins` (the addresses frames go to) and the clients of
    /// `connections` on loopback, listeners on `port` at every address, and one connection from
    /// each client address (and its port) to its origin's `port`.
    pub fn create(
        origins: &[IpAddr],
        port: u16,
        connections: &[(SocketAddr, IpAddr)],
    ) -> Result<Origin, BenchError> {
        let ns = NetNs::create("moat-bench-s")?;
        ns.sysctl("net.ipv4.tcp_syncookies", "2")?;
        let mut addresses: Vec<IpAddr> = origins.to_vec();
        addresses.extend(connections.iter().map(|(client, _)| client.ip()));
        for &address in &addresses {
            let prefix = if address.is_ipv4() { 32 } else { 128 };
            let cidr = format!("{address}/{prefix}");
            if address.is_ipv4() {
                ns.ip(&["addr", "add", &cidr, "dev", "lo"])?;
            } else {
                ns.ip(&["addr", "add", &cidr, "dev", "lo", "nodad"])?;
            }
        }
        for address in addresses.into_iter().filter(IpAddr::is_ipv6) {
            wait_for_local_route(&ns, address)?;
        }
        let (sockets, streams) = ns
            .enter(|| -> std::io::Result<_> {
                let mut sockets = Vec::new();
                for any in [
                    SocketAddr::from(([0u8; 4], port)),
                    SocketAddr::from(([0u16; 8], port)),
                ] {
                    let socket = Socket::new(Domain::for_address(any), Type::STREAM, None)?;
                    if any.is_ipv6() {
                        socket.set_only_v6(true)?;
                    }
                    socket.set_reuse_address(true)?;
                    socket.bind(&any.into())?;
                    socket.listen(1024)?;
                    sockets.push(socket);
                }
                let mut streams = Vec::new();
                for (client, server) in connections {
                    let socket = Socket::new(Domain::for_address(*client), Type::STREAM, None)?;
                    socket.set_reuse_address(true)?;
                    socket.bind(&(*client).into())?;
                    socket.connect(&SocketAddr::new(*server, port).into())?;
                    streams.push(TcpStream::from(socket));
                }
                // Accept every connection, so each has an established server end the lookup finds.
                for listener in &sockets {
                    listener.set_nonblocking(true)?;
                }
                let mut accepted = 0;
                let deadline = Instant::now() + Duration::from_secs(5);
                while accepted < connections.len() && Instant::now() < deadline {
                    let mut progress = false;
                    for listener in &sockets {
                        if let Ok((server_end, _)) = listener.accept() {
                            streams.push(TcpStream::from(server_end));
                            accepted += 1;
                            progress = true;
                        }
                    }
                    if !progress {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                if accepted < connections.len() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("{accepted} of {} connections accepted", connections.len()),
                    ));
                }
                Ok((sockets, streams))
            })?
            .map_err(|source| BenchError::Io {
                action: "opening listeners and connections in",
                target: ns.name().to_string(),
                source,
            })?;
        Ok(Origin {
            _sockets: sockets,
            _streams: streams,
            ns,
        })
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    pub fn enter<T, F>(&self, f: F) -> Result<T, BenchError>
    where
        F: FnOnce() -> Result<T, BenchError> + Send,
        T: Send,
    {
        self.ns.enter(f)?
    }

    /// The namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }
}
