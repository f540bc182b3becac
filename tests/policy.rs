//! End-to-end policy in namespaces: a flood from one source is rate-limited then banned while
//! another source keeps connecting, the ban expires; a reflected DNS flood is dropped while the
//! origin's own resolver answers get through; and the policy commands' error paths.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use moat_lab::traffic::{self, EchoServer, UdpEcho};
use support::{Pair, TempDir, count, require_root, stats_json, stderr, wait_until};

/// Makes the client's connections to the origin leave from `addr` unless a socket binds.
fn prefer_source(pair: &Pair, addr: Ipv4Addr) {
    pair.client
        .ip(&[
            "route",
            "replace",
            &format!("{}/32", pair.origin_end.ipv4),
            "dev",
            &pair.client_end.iface,
            "src",
            &addr.to_string(),
        ])
        .expect("source route");
}

fn moat_refused(pair: &Pair, args: &[&str], needles: &[&str]) {
    let output = pair.moat(args);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "moat {args:?}: {message}");
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

#[test]
fn flood_from_one_source_is_limited_then_banned_while_another_connects() {
    require_root();
    let pair = Pair::create();
    let flooder = pair.client_end.ipv4;
    let visitor = Ipv4Addr::new(198, 18, 0, 3);
    pair.add_client_address(visitor);
    prefer_source(&pair, visitor);
    let dir = TempDir::new("flood");
    let config = dir.write(
        "moat.toml",
        "[limits.source.udp]\npps = 100\nburst = 100\n\n[bans]\nafter_strikes = 50\nstrike_window = \"30s\"\nbase = \"3s\"\nmax = \"10s\"\n",
    );
    let _daemon = pair.start(&["--config", &config]);
    let iface = pair.origin_end.iface.as_str();
    // A socket on the discard port: UDP to a port with no socket is dropped before any limit.
    let _discard = pair
        .origin
        .enter(|| std::net::UdpSocket::bind(SocketAddrV4::new(pair.origin_end.ipv4, 9)))
        .expect("enter origin")
        .expect("the discard socket");

    let started = Instant::now();
    traffic::udp_burst_from(
        &pair.client,
        SocketAddrV4::new(flooder, 0),
        SocketAddrV4::new(pair.origin_end.ipv4, 9),
        1000,
        64,
    )
    .expect("flood");
    let judged = |stats: &serde_json::Value| {
        count(stats, "pass", "pass").0
            + count(stats, "drop", "rate_udp").0
            + count(stats, "drop", "banned").0
    };
    wait_until("all 1000 datagrams judged", Duration::from_secs(5), || {
        judged(&stats_json(iface)) >= 1000
    });
    // The bucket refills 100 a second from the first datagram until the ban, which comes
    // before the last datagram has been judged.
    let refill = (started.elapsed().as_secs_f64() * 100.0).ceil() as u64;
    let stats = stats_json(iface);
    let passed = count(&stats, "pass", "pass").0;
    let limited = count(&stats, "drop", "rate_udp").0;
    let banned = count(&stats, "drop", "banned").0;
    assert_eq!(
        limited, 50,
        "exactly the 50 strikes before the ban were rate-limited"
    );
    assert!(
        (100..=100 + refill).contains(&passed),
        "the burst of 100 passed, plus at most the {refill} refilled while it ran: {passed}"
    );
    assert_eq!(
        passed + limited + banned,
        1000,
        "every datagram judged once"
    );

    let bans = pair.moat_ok(&["ban", "list", "--iface", iface]);
    assert!(
        bans.contains(&flooder.to_string())
            && bans.contains("rate_udp")
            && bans.contains("all but TCP"),
        "{bans}"
    );

    // The visitor's connections go on while the flooder is banned.
    let echo = SocketAddrV4::new(pair.origin_end.ipv4, 8080);
    let server = EchoServer::listen(&pair.origin, echo).expect("listen");
    for _ in 0..3 {
        assert!(
            traffic::tcp_exchange(&pair.client, &server, echo, b"still here").expect("tcp"),
            "the visitor's TCP exchange succeeds during the flooder's ban"
        );
    }
    let output = pair
        .client
        .command("ping")
        .args(["-n", "-q", "-c", "1", "-W", "1", "-I", &flooder.to_string()])
        .arg(pair.origin_end.ipv4.to_string())
        .output()
        .expect("ping");
    assert!(
        !output.status.success(),
        "the banned flooder's ping is dropped"
    );

    // The ban (3 s) expires and the flooder's traffic passes again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = pair
            .client
            .command("ping")
            .args(["-n", "-q", "-c", "1", "-W", "1", "-I", &flooder.to_string()])
            .arg(pair.origin_end.ipv4.to_string())
            .output()
            .expect("ping");
        if output.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the ban never expired");
    }
    let bans = pair.moat_ok(&["ban", "list", "--iface", iface]);
    assert!(!bans.contains(&flooder.to_string()), "{bans}");
}

#[test]
fn reflected_dns_flood_is_dropped_while_the_resolver_answers() {
    require_root();
    let pair = Pair::create();
    let resolver = Ipv4Addr::new(198, 18, 0, 4);
    pair.add_client_address(resolver);
    let dir = TempDir::new("reflect");
    let resolv_conf = dir.write("resolv.conf", &format!("nameserver {resolver}\n"));
    let config = dir.write(
        "moat.toml",
        // This host's own NTP servers, if any, would add to the count asserted below.
        &format!("[reflection]\nresolv_conf = {resolv_conf:?}\ntrust_system_ntp = false\n"),
    );
    let daemon = pair.start(&["--config", &config]);
    assert!(daemon.log().contains("trusted=1"), "{}", daemon.log());
    assert!(
        !daemon.log().contains("resolv_conf names no file"),
        "{}",
        daemon.log()
    );
    let iface = pair.origin_end.iface.as_str();

    // 200 large "DNS answers" from the attacker's port 53 to the origin's web port.
    traffic::udp_burst_from(
        &pair.client,
        SocketAddrV4::new(pair.client_end.ipv4, 53),
        SocketAddrV4::new(pair.origin_end.ipv4, 443),
        200,
        1200,
    )
    .expect("reflected flood");
    // The origin's own queries to its resolver get answered (answers come from port 53 too).
    let dns = UdpEcho::bind(&pair.client, SocketAddrV4::new(resolver, 53)).expect("resolver");
    for _ in 0..5 {
        assert!(
            traffic::udp_exchange(
                &pair.origin,
                &dns,
                SocketAddrV4::new(resolver, 53),
                b"query"
            )
            .expect("dns"),
            "the trusted resolver's answer reaches the origin"
        );
    }
    wait_until(
        "every reflected datagram to be judged",
        Duration::from_secs(5),
        || count(&stats_json(iface), "drop", "reflection").0 >= 200,
    );
    let stats = stats_json(iface);
    assert_eq!(
        count(&stats, "drop", "reflection").0,
        200,
        "every reflected datagram dropped"
    );
    assert_eq!(
        count(&stats, "pass", "pass").0,
        5,
        "the five resolver answers passed"
    );
}

#[test]
fn a_resolv_conf_that_is_not_there_is_warned_about() {
    require_root();
    let pair = Pair::create();
    let dir = TempDir::new("resolv-missing");
    let missing = dir.0.join("run/systemd/resolve/resolv.conf");
    let config = dir.write(
        "moat.toml",
        &format!("[reflection]\nresolv_conf = {missing:?}\ntrust_system_ntp = false\n"),
    );
    let daemon = pair.start(&["--config", &config]);
    let log = daemon.log();
    assert!(
        log.contains("reflection.resolv_conf names no file")
            && log.contains(&format!("path={}", missing.display())),
        "{log}"
    );
}

/// Switches IPv4 forwarding in the origin's namespace on or off.
fn set_forwarding(pair: &Pair, on: bool) {
    let status = pair
        .origin
        .command("sysctl")
        .args(["-q", "-w", &format!("net.ipv4.ip_forward={}", u8::from(on))])
        .status()
        .expect("sysctl");
    assert!(status.success(), "sysctl net.ipv4.ip_forward");
}

#[test]
fn a_host_that_forwards_is_told_what_require_sockets_does_to_its_nat() {
    require_root();
    let pair = Pair::create();
    set_forwarding(&pair, true);
    let daemon = pair.start(&[]);
    assert!(
        daemon.log().contains("this host forwards packets")
            && daemon.log().contains("require_sockets = false"),
        "{}",
        daemon.log()
    );
    let (status, log) = daemon.stop().expect("stopping");
    assert!(status.success(), "{log}");
    // Told once, it can say so in the file: no warning then.
    let dir = TempDir::new("forwarding");
    let config = dir.write("moat.toml", "require_sockets = false\n");
    let daemon = pair.start(&["--config", &config]);
    assert!(
        !daemon.log().contains("this host forwards packets"),
        "{}",
        daemon.log()
    );
    let (status, log) = daemon.stop().expect("stopping");
    assert!(status.success(), "{log}");
    // Forwarding switched on after the start (docker, libvirt, a VPN coming up at boot after
    // moat) is told of too, within seconds.
    set_forwarding(&pair, false);
    let daemon = pair.start(&[]);
    assert!(
        !daemon.log().contains("this host forwards packets"),
        "{}",
        daemon.log()
    );
    set_forwarding(&pair, true);
    wait_until(
        "the daemon to warn of forwarding switched on",
        Duration::from_secs(10),
        || {
            daemon
                .log()
                .contains("the host has just switched forwarding on")
                && daemon.log().contains("this host forwards packets")
        },
    );
}

#[test]
fn closed_ports_drop_new_connections_but_not_replies() {
    require_root();
    let pair = Pair::create();
    let dir = TempDir::new("ports");
    let config = dir.write("moat.toml", "[ports]\ntcp = [22, 8080]\nudp = []\n");
    let _daemon = pair.start(&["--config", &config]);
    let iface = pair.origin_end.iface.as_str();
    let open = SocketAddrV4::new(pair.origin_end.ipv4, 8080);
    let server = EchoServer::listen(&pair.origin, open).expect("listen");
    assert!(traffic::tcp_exchange(&pair.client, &server, open, b"open").expect("tcp"));
    let closed = SocketAddrV4::new(pair.origin_end.ipv4, 8081);
    let server = EchoServer::listen(&pair.origin, closed).expect("listen");
    let result = traffic::tcp_exchange(&pair.client, &server, closed, b"closed");
    assert!(
        result.is_err(),
        "a connection to a closed port times out: {result:?}"
    );
    let stats = stats_json(iface);
    assert!(count(&stats, "drop", "port_closed").0 >= 1, "{stats}");
}

#[test]
fn set_and_ban_commands_refuse_bad_input_and_change_nothing() {
    require_root();
    let pair = Pair::create();
    let _daemon = pair.start(&[]);
    let iface = pair.origin_end.iface.as_str();
    let show_settings = || {
        let path = moat::pins::PinDir::for_iface(iface).map(filter_common::maps::SETTINGS);
        let data = aya::maps::MapData::from_pin(&path).expect("settings pin");
        let array: aya::maps::Array<_, filter_common::Settings> =
            aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("settings array");
        array.get(&0, 0).expect("settings value")
    };
    let before = show_settings();
    moat_refused(
        &pair,
        &["set", "--iface", iface, "limits.source.tcp.pps", "5"],
        &["unknown key"],
    );
    moat_refused(
        &pair,
        &["set", "--iface", iface, "mode", "native"],
        &["mode cannot be changed live", "configuration file"],
    );
    moat_refused(
        &pair,
        &["set", "--iface", iface, "limits.source.udp.pps", "-5"],
        &["invalid value", "whole number"],
    );
    moat_refused(
        &pair,
        &["set", "--iface", iface, "limits.source.udp.burst", "0"],
        &["burst must be at least 1"],
    );
    // The file's range: a value `config check` would refuse is refused here too.
    moat_refused(
        &pair,
        &[
            "set",
            "--iface",
            iface,
            "limits.source.syn.pps",
            "99999999999999",
        ],
        &["limits.source.syn.pps", "0 to 1099511627775"],
    );
    moat_refused(
        &pair,
        &["set", "--iface", iface, "fragments.burst", "1099511627776"],
        &["fragments.burst", "0 to 1099511627775"],
    );
    moat_refused(
        &pair,
        &["set", "--iface", iface, "bans.base", "forever"],
        &["bans.base"],
    );
    moat_refused(
        &pair,
        &["set", "--iface", iface, "bans.ipv6_prefix", "129"],
        &["1 to 128"],
    );
    moat_refused(
        &pair,
        &["set", "--iface", "moatnone0", "dry_run", "true"],
        &["not running"],
    );
    assert_eq!(
        show_settings(),
        before,
        "refused changes leave the settings as they were"
    );
    pair.moat_ok(&["set", "--iface", iface, "limits.source.icmp.pps", "7"]);
    assert_eq!(
        show_settings().source[filter_common::Class::Icmp as usize].pps,
        7
    );
    // The running values read back, each a line of the configuration file's syntax.
    let live = pair.moat_ok(&["config", "show", "--iface", iface]);
    assert!(
        live.lines()
            .any(|line| line == "limits.source.icmp.pps = 7"),
        "{live}"
    );
    assert_eq!(live.lines().count(), moat::tuning::keys().len(), "{live}");

    moat_refused(
        &pair,
        &["ban", "add", "--iface", iface, "192.0.2.0/24"],
        &["moat deny add"],
    );
    moat_refused(
        &pair,
        &["ban", "add", "--iface", iface, "fe80::1%eth0"],
        &["zone"],
    );
    moat_refused(
        &pair,
        &["ban", "add", "--iface", iface, "::ffff:192.0.2.7"],
        &["IPv4-mapped", "write 192.0.2.7"],
    );
    moat_refused(
        &pair,
        &["ban", "add", "--iface", iface, "example.com"],
        &["expected an IPv4 or IPv6"],
    );
    moat_refused(
        &pair,
        &[
            "ban",
            "add",
            "--iface",
            iface,
            "--for",
            "10 years",
            "192.0.2.7",
        ],
        &["invalid ban length"],
    );
    moat_refused(
        &pair,
        &["ban", "del", "--iface", iface, "192.0.2.7"],
        &["not banned"],
    );
    let out = pair.moat_ok(&[
        "ban",
        "add",
        "--iface",
        iface,
        "--for",
        "10m",
        "2001:db8:1:2::7",
    ]);
    assert_eq!(
        out.trim(),
        format!("banned 2001:db8:1:2::/64 on {iface} for 10m")
    );
    let list = pair.moat_ok(&["ban", "list", "--iface", iface]);
    assert!(
        list.contains("2001:db8:1:2::/64") && list.contains("banned"),
        "{list}"
    );
    let out = pair.moat_ok(&["ban", "del", "--iface", iface, "2001:db8:1:2::99"]);
    assert_eq!(out.trim(), format!("unbanned 2001:db8:1:2::/64 on {iface}"));
}

#[test]
fn banned_address_is_dropped_live() {
    require_root();
    let pair = Pair::create();
    let _daemon = pair.start(&[]);
    let iface = pair.origin_end.iface.as_str();
    let client = pair.client_end.ipv4.to_string();
    pair.moat_ok(&["ban", "add", "--iface", iface, "--for", "1h", &client]);
    assert_eq!(
        traffic::ping(&pair.client, pair.origin_end.ipv4, 2).expect("ping"),
        0
    );
    assert_eq!(count(&stats_json(iface), "drop", "banned").0, 2);
    pair.moat_ok(&["ban", "del", "--iface", iface, &client]);
    assert_eq!(
        traffic::ping(&pair.client, pair.origin_end.ipv4, 2).expect("ping"),
        2
    );
}

#[test]
fn config_check_lists_every_problem_with_line_and_key() {
    let dir = TempDir::new("check");
    let good = dir.write("good.toml", "[ports]\ntcp = [22, 443]\n");
    let output = std::process::Command::new(support::moat_bin())
        .args(["config", "check", &good])
        .output()
        .expect("moat config check");
    assert!(output.status.success(), "{}", stderr(&output));
    // Valid but worth a word: a resolv.conf that is not there (run and reload warn the same).
    let missing = dir.0.join("no-such-resolv.conf");
    let warned = dir.write(
        "warned.toml",
        &format!("[reflection]\nresolv_conf = {missing:?}\n"),
    );
    let output = std::process::Command::new(support::moat_bin())
        .args(["config", "check", &warned])
        .output()
        .expect("moat config check");
    let message = stderr(&output);
    assert!(output.status.success(), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains("warning: reflection.resolv_conf names no file"),
        "{message}"
    );
    let bad = dir.write(
        "bad.toml",
        "max_bans = 0\n[limits.source.syn]\npps = 10\nburst = 0\n[bans]\nbase = \"soon\"\n",
    );
    let output = std::process::Command::new(support::moat_bin())
        .args(["config", "check", &bad])
        .output()
        .expect("moat config check");
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 3, "{message}");
    assert!(lines[0].contains("line 1: max_bans"), "{message}");
    assert!(
        lines[1].contains("line 4: limits.source.syn.burst"),
        "{message}"
    );
    assert!(lines[2].contains("line 6: bans.base"), "{message}");
    let output = std::process::Command::new(support::moat_bin())
        .args(["config", "show", "--config", &good])
        .output()
        .expect("moat config show");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(
        shown.contains("tcp = [22, 443]") && shown.contains("[limits.source.syn]"),
        "{shown}"
    );
}

#[test]
fn spoofed_syn_flood_without_cookies_is_capped_and_never_fills_the_source_table() {
    require_root();
    let pair = Pair::create();
    let dir = TempDir::new("spoofed");
    let config = dir.write(
        "moat.toml",
        "syn_cookies = \"off\"\nmax_tracked_sources = 64\n[limits.aggregate.syn]\npps = 100\nburst = 100\n",
    );
    let _daemon = pair.start(&["--config", &config]);
    let iface = pair.origin_end.iface.as_str();
    // Something listens, so the SYNs get as far as the aggregate limit.
    let _listener = pair
        .origin
        .enter(|| std::net::TcpListener::bind(SocketAddrV4::new(pair.origin_end.ipv4, 80)))
        .expect("enter origin")
        .expect("listen");
    // 1000 SYNs, each from a different spoofed source in 198.19.0.0/16 (RFC 2544, never routed: the
    // frames go straight onto the veth, and the origin's answers go nowhere).
    let frames: Vec<Vec<u8>> = (0u16..1000)
        .map(|n| {
            let [hi, lo] = n.to_be_bytes();
            let source = Ipv4Addr::new(198, 19, hi, lo);
            traffic::syn_frame(&pair.client_end, source, &pair.origin_end, 80)
        })
        .collect();
    traffic::send_frames(&pair.client, &pair.client_end.iface, &frames).expect("flood");
    let judged = || {
        let stats = stats_json(iface);
        count(&stats, "pass", "pass").0 + count(&stats, "drop", "flood_syn").0
    };
    wait_until("all 1000 SYNs judged", Duration::from_secs(5), || {
        judged() >= 1000
    });
    let stats = stats_json(iface);
    let passed = count(&stats, "pass", "pass").0;
    let flood = count(&stats, "drop", "flood_syn").0;
    assert_eq!(
        passed + flood,
        1000,
        "every SYN judged, none failed open: {stats}"
    );
    assert!(
        flood >= 800,
        "the aggregate SYN cap dropped the flood: {passed} passed"
    );
    let path = moat::pins::PinDir::for_iface(iface).map(filter_common::maps::SOURCES);
    let data = aya::maps::MapData::from_pin(&path).expect("sources pin");
    let tracked = moat::sources::tracked(&data).expect("mapping the sources table");
    assert_eq!(
        tracked, 0,
        "SYNs from unverified, spoofable sources create no per-source state"
    );
}

#[test]
fn a_ban_by_hand_cuts_off_a_verified_visitor_and_keeps_it_unverified() {
    require_root();
    let pair = Pair::create();
    let _daemon = pair.start(&[]);
    let iface = pair.origin_end.iface.as_str();
    let origin = SocketAddrV4::new(pair.origin_end.ipv4, 8081);
    let listener = pair
        .origin
        .enter(|| std::net::TcpListener::bind(origin))
        .expect("enter origin")
        .expect("listen");
    let mut held = pair
        .client
        .enter(|| std::net::TcpStream::connect_timeout(&origin.into(), Duration::from_secs(3)))
        .expect("enter client")
        .expect("connect");
    let (mut accepted, _) = listener.accept().expect("accept");
    let path = moat::pins::PinDir::for_iface(iface).map(filter_common::maps::VERIFIED);
    let data = aya::maps::MapData::from_pin(&path).expect("verified pin");
    let cache = moat::verified::VerifiedCache::of(&data).expect("verified cache mapped");
    let key = moat::verify::key_for(pair.client_end.ipv4.into(), 64);
    // The daemon reads the origin's sockets every second and marks the connected client.
    wait_until("the client to be verified", Duration::from_secs(5), || {
        cache.until(&key).is_some()
    });

    let output = pair.moat(&[
        "ban",
        "add",
        "--iface",
        iface,
        "--for",
        "1h",
        &pair.client_end.ipv4.to_string(),
    ]);
    assert!(output.status.success(), "moat ban add: {}", stderr(&output));
    // A verified source's segments skip the bans lookup, so the ban must unverify it at once.
    assert_eq!(
        cache.until(&key),
        None,
        "the ban ended the client's verification"
    );

    use std::io::{Read as _, Write as _};
    held.write_all(b"after the ban")
        .expect("write on the held connection");
    let banned = || count(&stats_json(iface), "drop", "banned").0;
    wait_until(
        "the held connection's segment to be dropped as banned",
        Duration::from_secs(5),
        || banned() >= 1,
    );
    // The connection is still established on both ends, so every refresh of the daemon (one a
    // second) lists the client again: for three of them, it must leave it unverified, and
    // nothing of the connection reaches the origin.
    accepted.set_nonblocking(true).expect("nonblocking");
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert_eq!(
            cache.until(&key),
            None,
            "the daemon marked a banned client verified"
        );
        let mut buffer = [0u8; 64];
        match accepted.read(&mut buffer) {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the origin got something from a banned client: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        banned() >= 2,
        "the client's retransmissions are dropped as banned too"
    );
}

#[test]
fn a_visitor_who_completed_a_handshake_passes_a_spoofed_syn_flood() {
    require_root();
    let pair = Pair::create();
    let dir = TempDir::new("verified");
    // With cookies off, the aggregate SYN limit gates unverified SYNs, as before #11.
    let config = dir.write(
        "moat.toml",
        "syn_cookies = \"off\"\n[limits.aggregate.syn]\npps = 1\nburst = 1\n",
    );
    let _daemon = pair.start(&["--config", &config]);
    let iface = pair.origin_end.iface.as_str();
    let echo = SocketAddrV4::new(pair.origin_end.ipv4, 8080);
    // The first connection takes the aggregate burst of one SYN, and stays open while the
    // daemon, reading the origin's sockets every second, marks the client verified.
    let listener = pair
        .origin
        .enter(|| std::net::TcpListener::bind(SocketAddrV4::new(pair.origin_end.ipv4, 8081)))
        .expect("enter origin")
        .expect("listen");
    let held = pair
        .client
        .enter(|| {
            std::net::TcpStream::connect_timeout(
                &SocketAddrV4::new(pair.origin_end.ipv4, 8081).into(),
                Duration::from_secs(3),
            )
        })
        .expect("enter client")
        .expect("first connection");
    let (accepted, _) = listener.accept().expect("accept");
    let path = moat::pins::PinDir::for_iface(iface).map(filter_common::maps::VERIFIED);
    let key = moat::verify::key_for(pair.client_end.ipv4.into(), 64);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let data = aya::maps::MapData::from_pin(&path).expect("verified pin");
        let cache = moat::verified::VerifiedCache::of(&data).expect("verified cache mapped");
        if cache.until(&key).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the client was never verified");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop((held, accepted));
    let server = EchoServer::listen(&pair.origin, echo).expect("listen");

    // A spoofed SYN flood exhausts the aggregate budget...
    let frames: Vec<Vec<u8>> = (0u16..300)
        .map(|n| {
            let [hi, lo] = n.to_be_bytes();
            traffic::syn_frame(
                &pair.client_end,
                Ipv4Addr::new(198, 19, hi, lo),
                &pair.origin_end,
                8080,
            )
        })
        .collect();
    traffic::send_frames(&pair.client, &pair.client_end.iface, &frames).expect("flood");
    let flooded = || count(&stats_json(iface), "drop", "flood_syn").0;
    wait_until(
        "the flood to hit the aggregate limit",
        Duration::from_secs(5),
        || flooded() >= 298,
    );
    // ...but the verified visitor's new connections still get through at once: none of its
    // SYNs meets the empty aggregate bucket (which refills one SYN a second, so a dropped SYN
    // would be retransmitted a second later and get through late, not fail).
    let before = flooded();
    for round in 0..3 {
        let started = Instant::now();
        assert!(traffic::tcp_exchange(&pair.client, &server, echo, b"again").expect("tcp"));
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "exchange {round} took {:?}: its SYN waited for a retransmit",
            started.elapsed()
        );
    }
    assert_eq!(
        flooded(),
        before,
        "no SYN of the verified visitor was dropped by the aggregate limit"
    );
}

#[test]
fn warns_in_one_line_when_the_kernel_makes_no_syn_cookies() {
    require_root();
    let pair = Pair::create();
    pair.origin
        .sysctl("net.ipv4.tcp_syncookies", "0")
        .expect("turning the kernel's SYN cookies off in the origin");
    let daemon = pair.start(&[]);
    let log = daemon.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("tcp_syncookies"))
        .collect();
    assert_eq!(warnings.len(), 1, "one line about the sysctl: {log}");
    assert!(
        warnings[0].contains("sysctl -w net.ipv4.tcp_syncookies=1"),
        "it says what to set: {}",
        warnings[0]
    );
}

#[test]
fn the_daemon_clears_the_summary_bits_of_ended_verifications_only() {
    require_root();
    let pair = Pair::create();
    let _daemon = pair.start(&[]);
    let iface = pair.origin_end.iface.as_str();
    let path = moat::pins::PinDir::for_iface(iface).map(filter_common::maps::VERIFIED);
    let data = aya::maps::MapData::from_pin(&path).expect("verified pin");
    let cache = moat::verified::VerifiedCache::of(&data).expect("verified cache mapped");
    // Two sources no connection verifies: one whose verification has ended, one in force.
    let ended = moat::verify::key_for(Ipv4Addr::new(203, 0, 113, 1).into(), 64);
    let live = moat::verify::key_for(Ipv4Addr::new(203, 0, 113, 2).into(), 64);
    let (ended_bucket, live_bucket) = (
        filter_common::verified::locate(&ended).1,
        filter_common::verified::locate(&live).1,
    );
    assert_ne!(ended_bucket, live_bucket, "the two sources share no bucket");
    cache.mark(&ended, 1);
    cache.mark(&live, u64::MAX);
    assert!(cache.summarised(ended_bucket) && cache.summarised(live_bucket));
    // The daemon's housekeeping (every 10 s) clears the ended bucket's bit and only that.
    wait_until(
        "the daemon to clear the ended bucket's summary bit",
        Duration::from_secs(25),
        || !cache.summarised(ended_bucket),
    );
    assert!(
        cache.summarised(live_bucket),
        "a bucket in force keeps its bit"
    );
    assert_eq!(cache.until(&live), Some(u64::MAX), "no way was touched");
}

#[test]
fn the_daemon_calibrates_the_programs_clock() {
    require_root();
    let pair = Pair::create();
    let _daemon = pair.start(&[]);
    let written =
        moat::policy::pinned_settings(&moat::pins::PinDir::for_iface(&pair.origin_end.iface))
            .expect("reading the pinned settings")
            .clock;
    // A calibration of our own, from the same kernel, agrees with the daemon's to within the
    // samples' spacing (a few microseconds each) and the tick's own jitter.
    let mut ebpf = aya::EbpfLoader::new()
        .load(moat::FILTER_OBJECT)
        .expect("loading the object");
    let ours = moat::clock::measure(&mut ebpf).expect("calibrating");
    assert_eq!(written.jiffy_ns, ours.jiffy_ns, "the tick length");
    let apart = written.base_ns.wrapping_sub(ours.base_ns) as i64;
    assert!(
        apart.unsigned_abs() < 2_000_000,
        "the daemon's base {} and ours {} are {apart} ns apart",
        written.base_ns,
        ours.base_ns
    );
}
