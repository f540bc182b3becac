//! `moat lab`: an origin namespace with moat attached, a client namespace sending it real
//! traffic over a veth pair, and the filter's counters shown live. Everything it creates is
//! removed when it ends, also on Ctrl-C or failure.
//!
//! This is the small first lab: normal traffic plus malformed frames. Attack scenarios, the
//! flood generator and the report grow here with issue #5.

pub mod flood;
pub mod process;
pub mod topology;
pub mod traffic;

use std::{
    io::{IsTerminal as _, Write as _},
    net::SocketAddrV4,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use filter_common::{Reason, Verdict};

use crate::{cli::LabArgs, preflight, stats::Snapshot};

use self::{process::Daemon, topology::Topology, traffic::EchoServer};

/// Port of the lab origin's TCP echo service.
pub const ECHO_PORT: u16 = 8080;
/// Port the lab's UDP datagrams go to (discard; nothing listens, the origin answers ICMP).
pub const UDP_PORT: u16 = 9;

/// Runs the lab for `args.duration` seconds.
pub fn run(args: &LabArgs) -> anyhow::Result<()> {
    preflight::check_privileges()?;
    preflight::check_bpffs()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }

    let topology = Topology::create().context("creating the lab namespaces")?;
    println!(
        "lab: origin {} ({} in netns {}) <-> client {} ({} in netns {})",
        topology.origin_end.ipv4,
        topology.origin_end.iface,
        topology.origin.name(),
        topology.client_end.ipv4,
        topology.client_end.iface,
        topology.client.name()
    );
    let exe = std::env::current_exe().context("finding the moat binary")?;
    let daemon = Daemon::start(&topology.origin, &exe, &topology.origin_end.iface, &[])
        .context("starting moat run in the origin namespace")?;
    let echo_addr = SocketAddrV4::new(topology.origin_end.ipv4, ECHO_PORT);
    let server = EchoServer::listen(&topology.origin, echo_addr)?;

    let interactive = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut rounds = Rounds::default();
    while started.elapsed() < Duration::from_secs(args.duration)
        && !stop.load(std::sync::atomic::Ordering::Relaxed)
    {
        let round_start = Instant::now();
        rounds.send(&topology, &server, echo_addr)?;
        let snapshot = Snapshot::read_pinned(&topology.origin_end.iface)?;
        let remaining = args.duration.saturating_sub(started.elapsed().as_secs());
        if interactive {
            print!("\x1b[H\x1b[2J");
        }
        println!("{}", rounds.summary(remaining));
        print!("{}", snapshot.to_table(&topology.origin_end.iface));
        std::io::stdout().flush().ok();
        if let Some(rest) = Duration::from_secs(1).checked_sub(round_start.elapsed()) {
            std::thread::sleep(rest);
        }
    }

    let last = Snapshot::read_pinned(&topology.origin_end.iface)?;
    let (status, _) = daemon.stop().context("stopping moat run")?;
    println!(
        "\nlab done: {} frames seen, {} dropped as malformed, {} passed; moat exited with {status}; \
         namespaces removed",
        last.total().packets,
        last.get(Verdict::Drop, Reason::Malformed).packets,
        last.get(Verdict::Pass, Reason::Pass).packets,
    );
    Ok(())
}

/// What the lab's client has sent so far.
#[derive(Debug, Default)]
struct Rounds {
    pings_sent: u32,
    pings_answered: u32,
    udp_sent: u32,
    tcp_ok: u32,
    tcp_tried: u32,
    malformed_sent: u32,
}

impl Rounds {
    /// One second's worth of client traffic.
    fn send(
        &mut self,
        topology: &Topology,
        server: &EchoServer,
        echo_addr: SocketAddrV4,
    ) -> anyhow::Result<()> {
        self.pings_answered += traffic::ping(&topology.client, topology.origin_end.ipv4, 5)?;
        self.pings_sent += 5;
        traffic::udp_burst(
            &topology.client,
            SocketAddrV4::new(topology.origin_end.ipv4, UDP_PORT),
            20,
            64,
        )?;
        self.udp_sent += 20;
        self.tcp_tried += 1;
        if traffic::tcp_exchange(&topology.client, server, echo_addr, b"hello, origin")? {
            self.tcp_ok += 1;
        }
        let bad = traffic::truncated_udp_frame(&topology.client_end, &topology.origin_end);
        traffic::send_frames(
            &topology.client,
            &topology.client_end.iface,
            &[bad.clone(), bad],
        )?;
        self.malformed_sent += 2;
        Ok(())
    }

    fn summary(&self, remaining: u64) -> String {
        format!(
            "client sent: {} pings ({} answered), {} UDP datagrams, {} TCP exchanges ({} ok), {} \
             malformed frames — {remaining}s left, Ctrl-C stops",
            self.pings_sent,
            self.pings_answered,
            self.udp_sent,
            self.tcp_tried,
            self.tcp_ok,
            self.malformed_sent
        )
    }
}
