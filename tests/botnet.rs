//! The botnet-connect attack in the lab's network, with the lab's fast path attached: a
//! thousand bot addresses in the attackers' namespace complete real handshakes with the
//! origin's nginx at the rate asked, and the origin holds established connections from (nearly)
//! every one of them at once while the flood runs.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddrV4},
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use moat_lab::{
    ORIGIN_CPU,
    botnet::{self, BOTNET_V4, MAX_OPEN},
    origin::{HTTP_PORT, Origin},
    topology::{FastPath, LabNet, ORIGIN_IPV4},
};
use support::require_root;

/// Bot addresses the test gives the attackers.
const BOTS: u16 = 1_000;

/// Connection attempts per second, all senders together.
const RATE: u64 = 2_000;

/// How long the flood runs.
const DURATION: Duration = Duration::from_secs(2);

/// The distinct bots the origin must see at once: nearly all, allowing for a few handshakes
/// still in flight when it is looked at.
const MIN_DISTINCT: usize = 900;

/// The distinct bot addresses with an established connection to the origin's HTTP port, from
/// `ss` in the origin's namespace.
fn bots_connected(net: &LabNet) -> HashSet<Ipv4Addr> {
    let output = net
        .origin
        .command("ss")
        .args(["-Htn", "state", "established"])
        .output()
        .expect("running ss in the origin namespace");
    assert!(output.status.success(), "ss failed: {output:?}");
    let local = SocketAddrV4::new(ORIGIN_IPV4, HTTP_PORT);
    let (prefix, len) = BOTNET_V4;
    let mask = u32::MAX << (32 - len);
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter(|line| {
            line.split_whitespace()
                .any(|field| field.parse() == Ok(local))
        })
        .flat_map(|line| {
            line.split_whitespace()
                .filter_map(|field| field.parse::<SocketAddrV4>().ok())
                .map(|peer| *peer.ip())
                .filter(|ip| u32::from(*ip) & mask == u32::from(prefix))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn botnet_holds_connections_from_a_thousand_real_sources() {
    require_root();
    let started = Instant::now();
    let net = LabNet::create(1).expect("creating the lab network");
    let _fast_path = FastPath::attach(&net).expect("attaching the lab's fast path");
    let _origin =
        Origin::start(&net.origin, ORIGIN_CPU).expect("starting nginx in the origin namespace");
    let sources = botnet::add_addresses(&net, BOTS).expect("adding the bots' addresses");
    assert_eq!(sources.len(), usize::from(BOTS));
    let target = SocketAddrV4::new(ORIGIN_IPV4, HTTP_PORT);
    let stop = AtomicBool::new(false);
    let (report, seen) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            botnet::connect_flood(&net.attackers, &sources, target, RATE, DURATION, &stop)
        });
        // Connections are held only while the flood runs: look while it does.
        let deadline = Instant::now() + DURATION;
        let mut seen = 0;
        while seen < usize::from(BOTS) && Instant::now() < deadline && !flood.is_finished() {
            seen = seen.max(bots_connected(&net).len());
            std::thread::sleep(Duration::from_millis(100));
        }
        let report = flood
            .join()
            .expect("the flood thread panicked")
            .expect("running the connection flood");
        (report, seen)
    });
    println!(
        "botnet: {report:?}, {:.0} attempts/s, {seen} distinct bots held at once, {:?} in all",
        report.attempts_per_second(),
        started.elapsed()
    );
    assert!(report.established > 0, "no handshake completed: {report:?}");
    let expected = RATE as f64 * report.elapsed.as_secs_f64();
    assert!(
        (0.8 * expected..=1.05 * expected + 128.0).contains(&(report.attempts as f64)),
        "{} attempts in {:?}, asked for {RATE}/s",
        report.attempts,
        report.elapsed
    );
    assert!(
        report.established + report.failed <= report.attempts,
        "{report:?}"
    );
    assert!(
        (1..=MAX_OPEN as u64).contains(&report.peak_open),
        "{report:?}"
    );
    assert!(
        seen >= MIN_DISTINCT,
        "the origin held connections from {seen} distinct bots at once, want >= {MIN_DISTINCT}"
    );
    // Closing resets every connection; the origin takes the resets in its own time.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !bots_connected(&net).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = bots_connected(&net).len();
    assert_eq!(left, 0, "connections from {left} bots outlived the flood");
}
