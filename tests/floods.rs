//! Spoofed floods over veth, sent from every CPU at the highest rate the generator reaches,
//! against an origin running `moat run` with its shipped defaults (issue #11). During each
//! flood, first-time visitors (each from an address the origin has never seen, one HTTP request,
//! one try, 3 s) and a returning visitor (one that completed a handshake before) must be served,
//! and what reaches the origin's stack is counted by nftables at prerouting, after XDP.
//!
//! - a spoofed SYN flood: moat answers with SYN cookies; first-time visitors >= 95%, returning
//!   100%, <= 1% of the flood's SYNs reach the stack, SYN-ACKs answered <= SYNs received;
//! - a SYN flood in a returning visitor's own name, far past its per-source SYN limit: that
//!   visitor and first-time visitors are served, and nothing is dropped for the limit or banned;
//! - a spoofed ACK flood at no connection: <= 1% reaches the stack;
//! - UDP carpet bombing of random closed ports with no port list: <= 1% reaches the stack while
//!   a UDP service on an open port and the origin's own DNS lookups keep working.
//!
//! Every flood leaves the per-source table without a single spoofed source in it, and the two
//! floods for no socket get no more past moat, to be refused by the kernel, than the host's
//! refusal budget. Without a flood, a first-time visitor to a closed port or on a connection the
//! origin no longer has is refused at once by the origin's kernel, as it would be without moat.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;
use filter_common::{
    classify::tcp_flags::ACK,
    flood::{FloodConfig, L4_TCP, L4_UDP},
    maps::{SOURCES, VERIFIED},
};
use moat::pins::PinDir;
use moat_lab::{
    flood::{FloodPlan, FloodReport, PeerPass, flood_every_cpu},
    process::Daemon,
    traffic::{self, UdpEcho},
};
use support::{Pair, TempDir, count, nft_load, nft_packets, require_root, stats_json, wait_until};

/// The spoofed sources: 198.19.0.0/16 (RFC 2544, never routed).
const SPOOFED: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);
const SPOOFED_COUNT: u32 = 65_536;
const HTTP: u16 = 80;
const FIRST_TIME_VISITORS: u8 = 20;
const RETURNING_VISITS: u32 = 5;
const VISIT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a flood runs at most; it stops once the visitors are done and it has run
/// [`FLOOD_AT_LEAST`].
const FLOOD_FOR: Duration = Duration::from_secs(30);
/// A flood runs at least this long, so its start (the listener's queue filling before cookies
/// take over) is a small part of it.
const FLOOD_AT_LEAST: Duration = Duration::from_secs(4);

/// Held by each test's [`Site`]: one flood at a time. Each floods from every CPU and measures
/// what visitors get, so a second flood on the same CPUs (the test harness runs tests in
/// parallel) would overflow veth's rings and lose visitors' packets before moat sees them.
static ONE_FLOOD_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// An origin with moat, an HTTP server, an nftables counter of spoofed traffic after XDP, a
/// pass program on the client's end (so moat's XDP_TX answers reach it) and a route back to the
/// spoofed range (so the kernel's own SYN-ACKs leave, as they would on a real uplink).
struct Site {
    pair: Pair,
    _daemon: Daemon,
    _peer: PeerPass,
    stop_server: std::sync::Arc<AtomicBool>,
    servers: Vec<std::thread::JoinHandle<()>>,
    _config: TempDir,
    /// Dropped last, once everything above is gone.
    _alone: std::sync::MutexGuard<'static, ()>,
}

impl Site {
    fn start(config: &str) -> Site {
        require_root();
        // A test that failed while holding it leaves nothing behind that matters here.
        let alone = ONE_FLOOD_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pair = Pair::create();
        pair.origin
            .ip(&[
                "route",
                "add",
                &format!("{SPOOFED}/16"),
                "via",
                &pair.client_end.ipv4.to_string(),
            ])
            .expect("route to the spoofed range");
        let counter = "table ip moat_test {\n chain pre {\n  type filter hook prerouting \
                       priority -400;\n  ip saddr 198.19.0.0/16 counter\n }\n}\n\
                       table ip6 moat_test {\n chain pre {\n  type filter hook prerouting \
                       priority -400;\n  ip6 saddr 2001:db8::/32 counter\n }\n}\n";
        nft_load(&pair.origin, counter);
        let dir = TempDir::new("floods");
        let path = dir.write("moat.toml", config);
        let daemon = pair.start(&["--config", &path]);
        let peer = PeerPass::attach(&pair.client, &pair.client_end.iface)
            .expect("a pass program on the client's end");
        let stop_server = std::sync::Arc::new(AtomicBool::new(false));
        let listener = pair
            .origin
            .enter(|| TcpListener::bind(SocketAddrV4::new(pair.origin_end.ipv4, HTTP)))
            .expect("entering the origin")
            .expect("the HTTP listener");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::clone(&stop_server);
        let server = std::thread::spawn(move || serve(&listener, &stop));
        Site {
            pair,
            _daemon: daemon,
            _peer: peer,
            stop_server,
            servers: vec![server],
            _config: dir,
            _alone: alone,
        }
    }

    fn iface(&self) -> &str {
        &self.pair.origin_end.iface
    }

    /// Packets from the spoofed IPv4 range that reached the origin's stack.
    fn reached_stack(&self) -> u64 {
        self.reached_stack_of("ip")
    }

    /// Packets from the spoofed range of `family` (`ip` or `ip6`) that reached the stack.
    fn reached_stack_of(&self, family: &str) -> u64 {
        nft_packets(&self.pair.origin, family)
    }

    /// One HTTP request from `source` (or the client's own address), one try.
    fn visit(&self, source: Option<Ipv4Addr>) -> bool {
        let origin = SocketAddr::from((self.pair.origin_end.ipv4, HTTP));
        self.pair
            .client
            .enter(|| {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                if let Some(source) = source {
                    socket.bind(&SocketAddr::from((source, 0)).into())?;
                }
                socket.connect_timeout(&origin.into(), VISIT_TIMEOUT)?;
                http_get(std::net::TcpStream::from(socket))
            })
            .expect("entering the client")
            .unwrap_or(false)
    }

    /// Adds `addr` to the client (a host route, so each is its own) with the origin's route
    /// and neighbour entry back: an address the origin has never seen.
    fn add_newcomer(&self, addr: IpAddr) {
        let (host, nodad): (u8, &[&str]) = match addr {
            IpAddr::V4(_) => (32, &[]),
            IpAddr::V6(_) => (128, &["nodad"]),
        };
        let iface = &self.pair.client_end.iface;
        let mut add = vec!["addr", "add"];
        let cidr = format!("{addr}/{host}");
        add.extend([cidr.as_str(), "dev", iface.as_str()]);
        add.extend(nodad);
        self.pair.client.ip(&add).expect("a newcomer's address");
        let origin_iface = self.pair.origin_end.iface.as_str();
        self.pair
            .origin
            .ip(&["route", "add", &cidr, "dev", origin_iface])
            .expect("the origin's route back");
        self.pair
            .origin
            .ip(&[
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &self.pair.client_end.mac_string(),
                "dev",
                origin_iface,
                "nud",
                "permanent",
            ])
            .expect("the origin's neighbour entry");
    }

    /// Adds `count` IPv4 addresses the origin has never seen to the client.
    fn newcomers(&self, third_octet: u8, count: u8) -> Vec<Ipv4Addr> {
        (0..count)
            .map(|n| {
                let addr = Ipv4Addr::new(198, 18, third_octet, 10 + n);
                self.add_newcomer(IpAddr::V4(addr));
                addr
            })
            .collect()
    }

    /// Makes `client` a returning visitor of `origin`: a connection it holds open until the
    /// daemon has marked it (its /64 for IPv6) verified.
    fn make_returning(&self, origin: SocketAddr, client: IpAddr) {
        let held = self
            .pair
            .client
            .enter(|| std::net::TcpStream::connect_timeout(&origin, VISIT_TIMEOUT))
            .expect("entering the client")
            .expect("the first visit connects");
        let key = moat::verify::key_for(client, 64);
        let path = PinDir::for_iface(self.iface()).map(VERIFIED);
        wait_until("the client to be verified", Duration::from_secs(10), || {
            let data = aya::maps::MapData::from_pin(&path).expect("VERIFIED pin");
            let cache = moat::verified::VerifiedCache::of(&data).expect("VERIFIED mapped");
            cache.until(&key).is_some()
        });
        drop(held);
    }

    /// Sources in the per-source table of `ip_version` whose address starts with `prefix`.
    fn sources_tracked(&self, ip_version: u8, prefix: &[u8]) -> usize {
        let path = PinDir::for_iface(self.iface()).map(SOURCES);
        let data = aya::maps::MapData::from_pin(&path).expect("SOURCES pin");
        let sources = moat::sources::SourceTable::new(
            aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("SOURCES map"),
        );
        sources
            .entries()
            .expect("reading SOURCES")
            .into_iter()
            .filter(|(key, _)| key.ip_version == ip_version && key.addr_be.starts_with(prefix))
            .count()
    }

    /// Spoofed IPv4 sources (198.19.0.0/16) in the per-source table.
    fn spoofed_sources_tracked(&self) -> usize {
        self.sources_tracked(4, &[198, 19])
    }

    /// Frames moat has judged on the origin's interface.
    fn judged(&self) -> u64 {
        stats_json(self.iface())["total"]["packets"]
            .as_u64()
            .expect("total packets")
    }

    /// Floods `plan` from every CPU as fast as the generator goes while `during` runs, and
    /// returns the flood's report, the frames moat judged meanwhile (the flood's arrivals and
    /// the visitors' few) and what `during` returned. `during` starts once `started` says the
    /// flood is being judged.
    fn under_flood<T: Send>(
        &self,
        plan: FloodPlan,
        started: impl Fn(&serde_json::Value) -> bool,
        during: impl FnOnce() -> T + Send,
    ) -> (FloodReport, u64, T) {
        let stop = AtomicBool::new(false);
        let judged_before = self.judged();
        let began = Instant::now();
        let (report, result) = std::thread::scope(|scope| {
            let flood = scope.spawn(|| {
                flood_every_cpu(
                    &self.pair.client,
                    &self.pair.client_end.iface,
                    std::slice::from_ref(&plan),
                    0,
                    FLOOD_FOR,
                    &stop,
                )
            });
            wait_until("the flood to be judged", Duration::from_secs(10), || {
                started(&stats_json(self.iface()))
            });
            let result = during();
            while began.elapsed() < FLOOD_AT_LEAST {
                std::thread::sleep(Duration::from_millis(50));
            }
            stop.store(true, Ordering::Relaxed);
            let report = flood
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                .expect("the flood");
            (report, result)
        });
        (report, self.judged() - judged_before, result)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop_server.store(true, Ordering::Relaxed);
        for server in self.servers.drain(..) {
            let _ = server.join();
        }
    }
}

/// Answers HTTP requests one at a time until `stop` is set.
fn serve(listener: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(VISIT_TIMEOUT));
                let mut request = [0u8; 512];
                let mut len = 0;
                while len < request.len() && !request[..len].ends_with(b"\r\n\r\n") {
                    match stream.read(&mut request[len..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                }
                let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// A flood plan from the spoofed range with random source ports (and destination ports if
/// `random_dst_port`).
fn spoofed(template: Vec<u8>, l4_kind: u8, random_dst_port: bool) -> FloodPlan {
    let mut src_base_be = [0u8; 16];
    src_base_be[..4].copy_from_slice(&SPOOFED.octets());
    FloodPlan {
        template,
        config: FloodConfig {
            src_base_be,
            src_count: SPOOFED_COUNT,
            l3_offset: 14,
            l4_offset: 34,
            ip_version: 4,
            l4_kind,
            random_src_port: 1,
            random_dst_port: u8::from(random_dst_port),
            ..FloodConfig::default()
        },
    }
}

/// What visitors got during a flood.
#[derive(Debug)]
struct Visits {
    first_time: u32,
    returning: u32,
}

/// First-time visitors from `newcomers`, then the returning visitor `RETURNING_VISITS` times.
fn visit_all(site: &Site, newcomers: &[Ipv4Addr]) -> Visits {
    let first_time = newcomers
        .iter()
        .filter(|addr| site.visit(Some(**addr)))
        .count() as u32;
    let returning = (0..RETURNING_VISITS).filter(|_| site.visit(None)).count() as u32;
    Visits {
        first_time,
        returning,
    }
}

fn assert_visitors_served(visits: &Visits, what: &str) {
    let needed = (u32::from(FIRST_TIME_VISITORS) * 95).div_ceil(100);
    assert!(
        visits.first_time >= needed,
        "{what}: {} of {FIRST_TIME_VISITORS} first-time visitors served (need {needed})",
        visits.first_time
    );
    assert_eq!(
        visits.returning, RETURNING_VISITS,
        "{what}: every returning visit served"
    );
}

/// At most 1% of the flood's packets that arrived at the origin reached its stack. Arrivals
/// are what moat judged: the generator offers more than a veth delivers.
fn assert_at_most_one_percent(reached: u64, arrived: u64, report: &FloodReport, what: &str) {
    assert!(
        arrived >= 10_000,
        "{what}: the flood arrived ({arrived} judged, {report:?})"
    );
    assert!(
        reached * 100 <= arrived,
        "{what}: {reached} of {arrived} packets reached the stack (more than 1%)"
    );
}

#[test]
fn spoofed_syn_flood_from_every_cpu_serves_first_time_and_returning_visitors() {
    let site = Site::start("");
    site.make_returning(
        SocketAddr::from((site.pair.origin_end.ipv4, HTTP)),
        IpAddr::V4(site.pair.client_end.ipv4),
    );
    let newcomers = site.newcomers(1, FIRST_TIME_VISITORS);
    let template = traffic::syn_frame(&site.pair.client_end, SPOOFED, &site.pair.origin_end, HTTP);
    let (report, arrived, visits) = site.under_flood(
        spoofed(template, L4_TCP, false),
        // The listener's queue is full and moat answers: the flood is at work.
        |stats| count(stats, "answered", "syn_cookie").0 >= 1_000,
        || visit_all(&site, &newcomers),
    );
    let stats = stats_json(site.iface());
    let answered = count(&stats, "answered", "syn_cookie").0;
    let reached = site.reached_stack();
    eprintln!("counters: {}", nonzero(&stats));
    eprintln!(
        "spoofed SYN flood: {report:?} ({:.0} pps offered), {arrived} judged, {visits:?}, \
         {answered} answered with cookies, {reached} reached the stack",
        report.pps()
    );
    assert_visitors_served(&visits, "SYN flood");
    assert_at_most_one_percent(reached, arrived, &report, "SYN flood");
    assert!(
        answered <= arrived,
        "moat answered {answered} SYN-ACKs for {arrived} frames received"
    );
    assert!(
        answered * 100 >= arrived * 95,
        "the flood was answered with cookies: {answered} of {arrived}"
    );
    assert!(
        count(&stats, "pass", "cookie_ack").0 >= u64::from(visits.first_time),
        "every first-time visitor came in through a cookie: {stats}"
    );
    assert_eq!(
        site.spoofed_sources_tracked(),
        0,
        "no spoofed source tracked"
    );
}

#[test]
fn a_syn_flood_in_a_returning_visitors_name_still_serves_that_visitor() {
    // Anyone can put a visitor's address on a SYN: a flood of them, from every CPU and far past
    // the visitor's own SYN limit, must neither drop the visitor's new connections nor ban it.
    let site = Site::start("");
    let visitor = site.pair.client_end.ipv4;
    site.make_returning(
        SocketAddr::from((site.pair.origin_end.ipv4, HTTP)),
        IpAddr::V4(visitor),
    );
    let newcomers = site.newcomers(3, FIRST_TIME_VISITORS);
    let template = traffic::syn_frame(&site.pair.client_end, visitor, &site.pair.origin_end, HTTP);
    let mut plan = spoofed(template, L4_TCP, false);
    plan.config.src_base_be[..4].copy_from_slice(&visitor.octets());
    plan.config.src_count = 1;
    let before = site.judged();
    let (report, arrived, visits) = site.under_flood(
        plan,
        // Far past the visitor's burst (200 SYNs) and into its rate.
        |stats| {
            stats["total"]["packets"]
                .as_u64()
                .is_some_and(|total| total >= before + 20_000)
        },
        || visit_all(&site, &newcomers),
    );
    let stats = stats_json(site.iface());
    eprintln!("counters: {}", nonzero(&stats));
    eprintln!(
        "SYN flood in the visitor's name: {report:?} ({:.0} pps offered), {arrived} judged, \
         {visits:?}",
        report.pps()
    );
    assert!(
        arrived >= 10_000,
        "the flood arrived ({arrived} judged, {report:?})"
    );
    assert_visitors_served(&visits, "SYN flood in the returning visitor's name");
    assert_eq!(
        count(&stats, "drop", "rate_syn").0,
        0,
        "no SYN dropped for the visitor's own limit"
    );
    let bans = site.pair.moat_ok(&["ban", "list", "--iface", site.iface()]);
    assert!(
        !bans.contains(&visitor.to_string()),
        "the visitor is not banned: {bans}"
    );
    let key = moat::verify::key_for(IpAddr::V4(visitor), 64);
    let path = PinDir::for_iface(site.iface()).map(VERIFIED);
    let data = aya::maps::MapData::from_pin(&path).expect("VERIFIED pin");
    let cache = moat::verified::VerifiedCache::of(&data).expect("VERIFIED mapped");
    assert!(cache.until(&key).is_some(), "the visitor is still verified");
}

/// What a flood for no socket handed the kernel to refuse stayed within the shipped refusal
/// budget (`moat::config::DEFAULT_REFUSALS`) over `elapsed`, the site's life: a burst, then
/// the rate, for the host as a whole though the flood came from every CPU; and the flood used
/// the burst up.
fn assert_refusals_within_budget(stats: &serde_json::Value, elapsed: Duration, what: &str) {
    let budget = moat::config::DEFAULT_REFUSALS;
    let refusals = count(stats, "pass", "refusal").0;
    let most = budget.burst_packets + budget.pps * (elapsed.as_secs() + 1);
    assert!(
        (budget.burst_packets..=most).contains(&refusals),
        "{what}: {refusals} packets passed to be refused in {elapsed:?}; the budget allows \
         {} at once and {} a second",
        budget.burst_packets,
        budget.pps
    );
}

#[test]
fn spoofed_ack_flood_is_dropped_while_visitors_are_served() {
    let began = Instant::now();
    let site = Site::start("");
    site.make_returning(
        SocketAddr::from((site.pair.origin_end.ipv4, HTTP)),
        IpAddr::V4(site.pair.client_end.ipv4),
    );
    let newcomers = site.newcomers(2, FIRST_TIME_VISITORS);
    let template = traffic::tcp_frame(
        &site.pair.client_end,
        SPOOFED,
        &site.pair.origin_end,
        40_000,
        HTTP,
        ACK,
        1,
        1,
    );
    let (report, arrived, visits) = site.under_flood(
        spoofed(template, L4_TCP, false),
        |stats| count(stats, "drop", "cookie_bad").0 >= 1_000,
        || visit_all(&site, &newcomers),
    );
    let reached = site.reached_stack();
    let stats = stats_json(site.iface());
    eprintln!(
        "spoofed ACK flood: {report:?} ({:.0} pps offered), {arrived} judged, {visits:?}, {} \
         cookie_bad, {} no_socket, {reached} reached the stack",
        report.pps(),
        count(&stats, "drop", "cookie_bad").0,
        count(&stats, "drop", "no_socket").0
    );
    assert_visitors_served(&visits, "ACK flood");
    assert_at_most_one_percent(reached, arrived, &report, "ACK flood");
    assert_refusals_within_budget(&stats, began.elapsed(), "ACK flood");
    assert_eq!(
        site.spoofed_sources_tracked(),
        0,
        "no spoofed source tracked"
    );
}

#[test]
fn udp_carpet_bombing_of_closed_ports_is_dropped_while_services_and_lookups_work() {
    let began = Instant::now();
    // The resolver is the client's address; trusting it is what a resolv.conf naming it does.
    let site = Site::start("[reflection]\ntrusted = [\"198.18.0.2/32\"]\nresolv_conf = \"\"\n");
    site.make_returning(
        SocketAddr::from((site.pair.origin_end.ipv4, HTTP)),
        IpAddr::V4(site.pair.client_end.ipv4),
    );
    let newcomers = site.newcomers(3, FIRST_TIME_VISITORS);
    let service = SocketAddrV4::new(site.pair.origin_end.ipv4, 5353);
    let echo = UdpService::start(&site.pair.origin, service);
    let resolver_addr = SocketAddrV4::new(site.pair.client_end.ipv4, 53);
    let resolver = UdpEcho::bind(&site.pair.client, resolver_addr).expect("a resolver");
    assert!(
        echo.query(&site.pair.client, b"before"),
        "the UDP service answers before the flood"
    );
    let template = traffic::udp_frame(&site.pair.client_end, &site.pair.origin_end, 9, b"bomb");
    let (report, arrived, (visits, service_ok, lookups_ok)) = site.under_flood(
        spoofed(template, L4_UDP, true),
        |stats| count(stats, "drop", "port_closed").0 >= 1_000,
        || {
            let visits = visit_all(&site, &newcomers);
            let service_ok = (0..5)
                .filter(|n| echo.query(&site.pair.client, format!("query {n}").as_bytes()))
                .count();
            let lookups_ok = (0..5)
                .filter(|_| {
                    traffic::udp_exchange(&site.pair.origin, &resolver, resolver_addr, b"lookup")
                        .expect("DNS exchange")
                })
                .count();
            (visits, service_ok, lookups_ok)
        },
    );
    let reached = site.reached_stack();
    eprintln!(
        "UDP carpet bombing: {report:?} ({:.0} pps offered), {arrived} judged, {visits:?}, \
         service {service_ok}/5, lookups {lookups_ok}/5, {reached} reached the stack",
        report.pps()
    );
    assert_visitors_served(&visits, "carpet bombing");
    assert_eq!(
        service_ok, 5,
        "the UDP service on an open port answered every query"
    );
    assert_eq!(
        lookups_ok, 5,
        "every one of the origin's own lookups was answered"
    );
    assert_at_most_one_percent(reached, arrived, &report, "carpet bombing");
    assert_refusals_within_budget(&stats_json(site.iface()), began.elapsed(), "carpet bombing");
    // Only datagrams that hit a real socket (the service, an open lookup) reach the rate stage;
    // those may be tracked, no others.
    let tracked = site.spoofed_sources_tracked() as u64;
    assert!(
        tracked <= reached,
        "{tracked} spoofed sources tracked, but only {reached} datagrams matched a socket"
    );
}

/// A UDP echo service in a namespace, answering every datagram (the flood's stray hits on its
/// port included) until dropped.
struct UdpService {
    addr: SocketAddrV4,
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpService {
    fn start(ns: &moat::netns::NetNs, addr: SocketAddrV4) -> UdpService {
        let socket = ns
            .enter(|| std::net::UdpSocket::bind(addr))
            .expect("entering the namespace")
            .expect("binding the UDP service");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let running = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while !running.load(Ordering::Relaxed) {
                if let Ok((len, peer)) = socket.recv_from(&mut buffer) {
                    let _ = socket.send_to(&buffer[..len], peer);
                }
            }
        });
        UdpService {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Sends `query` from a socket connected to the service in `ns` and waits up to 3 s for its
    /// echo, asking again once after a timeout.
    fn query(&self, ns: &moat::netns::NetNs, query: &[u8]) -> bool {
        ns.enter(|| {
            let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.connect(self.addr)?;
            socket.set_read_timeout(Some(VISIT_TIMEOUT))?;
            // Asked again once after a timeout, as a resolver does: one datagram lost in the
            // flooded link's ring, before moat sees it, is not a refusal.
            for _ in 0..traffic::EXCHANGE_ATTEMPTS {
                socket.send(query)?;
                let mut answer = [0u8; 2048];
                match socket.recv(&mut answer) {
                    Ok(len) if &answer[..len] == query => return Ok(true),
                    Ok(_) => {}
                    Err(error) if traffic::is_timeout(&error) => {}
                    Err(error) => return Err(error),
                }
            }
            Ok::<_, std::io::Error>(false)
        })
        .expect("entering the namespace")
        .unwrap_or(false)
    }
}

impl Drop for UdpService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How soon a refusal must arrive: the kernel's reset or port unreachable takes milliseconds,
/// where a dropped packet leaves the client to its timeouts (3 s for a connect here).
const REFUSED_WITHIN: Duration = Duration::from_secs(1);

/// A TCP connection from `source` to `origin` that the client holds established and the origin
/// has never heard of, as after an origin reboot or failover: made in TCP repair mode, which
/// sets the socket up without a handshake. Leaving repair mode sends the first segment (a
/// window probe, an ACK) into the void.
fn vanished_connection(
    site: &Site,
    source: Ipv4Addr,
    origin: SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::AsRawFd;
    let repair = |socket: &socket2::Socket, on: libc::c_int| {
        // SAFETY: a valid socket, and a c_int option value of the size given.
        let result = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_TCP,
                libc::TCP_REPAIR,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    site.pair
        .client
        .enter(|| {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            repair(&socket, 1)?;
            socket.bind(&SocketAddr::from((source, 40_001)).into())?;
            socket.connect(&origin.into())?;
            repair(&socket, 0)?;
            Ok(std::net::TcpStream::from(socket))
        })
        .expect("entering the client")
}

/// How a first-time visitor fares where nothing serves it: a connect to a port nobody listens
/// on, a request on a connection the origin no longer has, a datagram to a closed UDP port.
/// Each is `Ok(elapsed)` when refused (reset, port unreachable), else what happened instead.
fn refusals_seen(site: &Site, visitor: Ipv4Addr) -> [Result<Duration, String>; 3] {
    let closed = SocketAddr::from((site.pair.origin_end.ipv4, 8443));
    let vanished = SocketAddr::from((site.pair.origin_end.ipv4, 8080));
    let udp_closed = SocketAddr::from((site.pair.origin_end.ipv4, 9999));
    let refused =
        |began: Instant, result: std::io::Result<()>, kind: std::io::ErrorKind| match result {
            Err(error) if error.kind() == kind => Ok(began.elapsed()),
            other => Err(format!("{other:?} after {:?}", began.elapsed())),
        };
    let connect = site
        .pair
        .client
        .enter(|| {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            socket.bind(&SocketAddr::from((visitor, 0)).into())?;
            let began = Instant::now();
            Ok::<_, std::io::Error>((began, socket.connect_timeout(&closed.into(), VISIT_TIMEOUT)))
        })
        .expect("entering the client")
        .map(|(began, result)| refused(began, result, std::io::ErrorKind::ConnectionRefused))
        .unwrap_or_else(|error| Err(error.to_string()));
    let reset = (|| {
        let mut stream = vanished_connection(site, visitor, vanished)?;
        let began = Instant::now();
        stream.set_read_timeout(Some(VISIT_TIMEOUT))?;
        let result = stream
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .and_then(|()| stream.read(&mut [0u8; 64]).map(|_| ()));
        Ok::<_, std::io::Error>(refused(began, result, std::io::ErrorKind::ConnectionReset))
    })()
    .unwrap_or_else(|error| Err(error.to_string()));
    let unreachable = site
        .pair
        .client
        .enter(|| {
            let socket = std::net::UdpSocket::bind((visitor, 0))?;
            socket.connect(udp_closed)?;
            socket.set_read_timeout(Some(VISIT_TIMEOUT))?;
            let began = Instant::now();
            let result = socket
                .send(b"query")
                .and_then(|_| socket.recv(&mut [0u8; 64]).map(|_| ()));
            Ok::<_, std::io::Error>((began, result))
        })
        .expect("entering the client")
        .map(|(began, result)| refused(began, result, std::io::ErrorKind::ConnectionRefused))
        .unwrap_or_else(|error| Err(error.to_string()));
    [connect, reset, unreachable]
}

/// The refusal budget end to end: with the shipped defaults, a first-time visitor to a port
/// nobody serves, on a connection the origin has lost, or to a closed UDP port is refused by
/// the origin's kernel at once, as it would be without moat; the packets count as
/// pass/refusal. With `refusals.pps` set to 0 live, the same packets are dropped in silence
/// and the visitor is left to its timeout, which is what the budget exists to spare it.
#[test]
fn visitors_nothing_serves_are_refused_at_once_not_left_to_time_out() {
    let site = Site::start("");
    let visitors = site.newcomers(4, 2);
    let seen = refusals_seen(&site, visitors[0]);
    let stats = stats_json(site.iface());
    eprintln!("refused: {seen:?}; counters: {}", nonzero(&stats));
    for (what, result) in [
        "connect to a closed port",
        "request on a vanished connection",
        "datagram to a closed port",
    ]
    .iter()
    .zip(&seen)
    {
        match result {
            Ok(elapsed) => assert!(
                *elapsed < REFUSED_WITHIN,
                "{what}: refused only after {elapsed:?}"
            ),
            Err(other) => panic!("{what}: not refused: {other}"),
        }
    }
    // The SYN, the window probe leaving repair mode (whose reset ends the connection before
    // the request goes out, unless the request is quicker) and the datagram: nothing else.
    let refusals = count(&stats, "pass", "refusal").0;
    assert!((3..=4).contains(&refusals), "{refusals} refusals: {stats}");
    site.pair
        .moat_ok(&["set", "--iface", site.iface(), "refusals.pps", "0"]);
    let silent = refusals_seen(&site, visitors[1]);
    eprintln!("with refusals.pps = 0: {silent:?}");
    assert!(
        silent.iter().all(Result::is_err),
        "without the budget every one is dropped in silence: {silent:?}"
    );
    let stats = stats_json(site.iface());
    assert_eq!(count(&stats, "pass", "refusal").0, refusals, "{stats}");
}

/// The non-zero counters of a stats JSON, for failure messages.
fn nonzero(stats: &serde_json::Value) -> String {
    let mut out = Vec::new();
    for (verdict, reasons) in stats["counters"].as_object().into_iter().flatten() {
        for (reason, counter) in reasons.as_object().into_iter().flatten() {
            let packets = counter["packets"].as_u64().unwrap_or(0);
            if packets > 0 {
                out.push(format!("{verdict}/{reason}={packets}"));
            }
        }
    }
    out.join(" ")
}

/// The origin's and the client's IPv6 addresses on their link.
const ORIGIN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 6, 0, 0, 0, 0, 0, 1);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 6, 0, 0, 0, 0, 0, 2);
/// The spoofed IPv6 sources: 2001:db8::/32 (documentation, never routed).
const SPOOFED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0);

impl Site {
    /// Turns IPv6 on across the pair (static neighbours, no DAD), routes the spoofed IPv6 range
    /// back through the client and serves HTTP on the origin's IPv6 address too.
    fn enable_ipv6(&mut self) {
        let (origin, client) = (&self.pair.origin, &self.pair.client);
        for (ns, end, addr, peer_end, peer_addr) in [
            (
                origin,
                &self.pair.origin_end,
                ORIGIN_V6,
                &self.pair.client_end,
                CLIENT_V6,
            ),
            (
                client,
                &self.pair.client_end,
                CLIENT_V6,
                &self.pair.origin_end,
                ORIGIN_V6,
            ),
        ] {
            ns.sysctl(&format!("net.ipv6.conf.{}.disable_ipv6", end.iface), "0")
                .expect("IPv6 on");
            ns.ip(&[
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                &end.iface,
                "nodad",
            ])
            .expect("IPv6 address");
            ns.ip(&[
                "neigh",
                "replace",
                &peer_addr.to_string(),
                "lladdr",
                &peer_end.mac_string(),
                "dev",
                &end.iface,
                "nud",
                "permanent",
            ])
            .expect("IPv6 neighbour");
        }
        origin
            .ip(&[
                "-6",
                "route",
                "add",
                &format!("{SPOOFED_V6}/32"),
                "via",
                &CLIENT_V6.to_string(),
            ])
            .expect("route to the spoofed IPv6 range");
        let listener = origin
            .enter(|| TcpListener::bind(SocketAddr::from((ORIGIN_V6, HTTP))))
            .expect("entering the origin")
            .expect("the IPv6 HTTP listener");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::clone(&self.stop_server);
        self.servers
            .push(std::thread::spawn(move || serve(&listener, &stop)));
    }

    /// Adds `count` IPv6 addresses the origin has never seen to the client, each in a /64 of
    /// its own (moat verifies IPv6 sources per /64).
    fn newcomers_v6(&self, count: u16) -> Vec<Ipv6Addr> {
        (0..count)
            .map(|n| {
                let addr = Ipv6Addr::new(0xfd00, 7, n, 0, 0, 0, 0, 2);
                self.add_newcomer(IpAddr::V6(addr));
                addr
            })
            .collect()
    }

    /// One HTTP request over IPv6 from `source` (or the client's own address), one try.
    fn visit_v6(&self, source: Option<Ipv6Addr>) -> bool {
        let origin = SocketAddr::from((ORIGIN_V6, HTTP));
        self.pair
            .client
            .enter(|| {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
                let source = source.unwrap_or(CLIENT_V6);
                socket.bind(&SocketAddr::from((source, 0)).into())?;
                socket.connect_timeout(&origin.into(), VISIT_TIMEOUT)?;
                http_get(std::net::TcpStream::from(socket))
            })
            .expect("entering the client")
            .unwrap_or(false)
    }
}

/// Sends one HTTP request on `stream` and reads the whole answer: whether it was a 200.
fn http_get(mut stream: std::net::TcpStream) -> std::io::Result<bool> {
    stream.set_read_timeout(Some(VISIT_TIMEOUT))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(response.starts_with(b"HTTP/1.0 200"))
}

#[test]
fn spoofed_ipv6_syn_flood_from_every_cpu_serves_first_time_and_returning_visitors() {
    let mut site = Site::start("");
    site.enable_ipv6();
    site.make_returning(SocketAddr::from((ORIGIN_V6, HTTP)), IpAddr::V6(CLIENT_V6));
    let newcomers = site.newcomers_v6(u16::from(FIRST_TIME_VISITORS));
    let mut template = Vec::new();
    PacketBuilder::ethernet2(site.pair.client_end.mac, site.pair.origin_end.mac)
        .ipv6(SPOOFED_V6.octets(), ORIGIN_V6.octets(), 64)
        .tcp(40_000, HTTP, 1, 64_240)
        .syn()
        .write(&mut template, &[])
        .expect("the IPv6 SYN template");
    let plan = FloodPlan {
        template,
        config: FloodConfig {
            src_base_be: SPOOFED_V6.octets(),
            src_count: SPOOFED_COUNT,
            v6_random_host: 1,
            l3_offset: 14,
            l4_offset: 54,
            ip_version: 6,
            l4_kind: L4_TCP,
            random_src_port: 1,
            ..FloodConfig::default()
        },
    };
    let (report, arrived, (first_time, returning)) = site.under_flood(
        plan,
        |stats| count(stats, "answered", "syn_cookie").0 >= 1_000,
        || {
            let first_time = newcomers
                .iter()
                .filter(|addr| site.visit_v6(Some(**addr)))
                .count() as u32;
            let returning = (0..RETURNING_VISITS)
                .filter(|_| site.visit_v6(None))
                .count() as u32;
            (first_time, returning)
        },
    );
    let stats = stats_json(site.iface());
    let answered = count(&stats, "answered", "syn_cookie").0;
    let reached = site.reached_stack_of("ip6");
    let visits = Visits {
        first_time,
        returning,
    };
    eprintln!(
        "spoofed IPv6 SYN flood: {report:?} ({:.0} pps offered), {arrived} judged, {visits:?}, \
         {answered} answered with cookies, {reached} reached the stack; counters: {}",
        report.pps(),
        nonzero(&stats)
    );
    assert_visitors_served(&visits, "IPv6 SYN flood");
    assert_at_most_one_percent(reached, arrived, &report, "IPv6 SYN flood");
    assert!(
        answered <= arrived,
        "moat answered {answered} SYN-ACKs for {arrived} frames received"
    );
    assert!(
        answered * 100 >= arrived * 95,
        "the IPv6 flood was answered with cookies: {answered} of {arrived}"
    );
    assert_eq!(
        site.sources_tracked(6, &[0x20, 0x01, 0x0d, 0xb8]),
        0,
        "no spoofed IPv6 source tracked"
    );
}
