//! End-to-end: `moat run` attached to a veth in a namespace, real traffic from another
//! namespace, counters read by `moat stats` from a second process, and a clean detach.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::net::SocketAddrV4;

use moat::netns::tx_counters;
use moat_lab::traffic::{self, EchoServer};
use support::{Pair, count, require_root, stats_json, stderr, wait_until};

/// Every frame the client sent is counted exactly once, under the right reason, with its exact
/// byte length.
fn counts_every_frame(mode: &str) {
    require_root();
    let pair = Pair::create();
    let daemon = pair.start(&["--mode", mode]);
    assert!(
        daemon.log().contains(&format!("mode={mode}")),
        "attached in the wrong mode: {}",
        daemon.log()
    );
    let iface = &pair.origin_end.iface;
    let before = tx_counters(&pair.client, &pair.client_end.iface).expect("reading tx counters");

    let answered = traffic::ping(&pair.client, pair.origin_end.ipv4, 3).expect("ping");
    assert_eq!(answered, 3, "every ping answered through the filter");
    // A socket on the discard port: UDP to a port with no socket is dropped (#11).
    let _discard = pair
        .origin
        .enter(|| std::net::UdpSocket::bind(SocketAddrV4::new(pair.origin_end.ipv4, 9)))
        .expect("enter origin")
        .expect("the discard socket");
    traffic::udp_burst(
        &pair.client,
        SocketAddrV4::new(pair.origin_end.ipv4, 9),
        5,
        100,
    )
    .expect("udp");
    let echo = SocketAddrV4::new(pair.origin_end.ipv4, 8080);
    let server = EchoServer::listen(&pair.origin, echo).expect("listen");
    assert!(
        traffic::tcp_exchange(&pair.client, &server, echo, b"ping over tcp").expect("tcp"),
        "TCP echo came back intact"
    );
    let bad = traffic::truncated_udp_frame(&pair.client_end, &pair.origin_end);
    let arp = traffic::arp_request_frame(&pair.client_end, &pair.origin_end);
    traffic::send_frames(
        &pair.client,
        &pair.client_end.iface,
        &[bad.clone(), bad.clone(), arp.clone()],
    )
    .expect("raw frames");

    // The client may still be closing the TCP connection, and frames sent may still wait in
    // the veth's queue: wait until moat has counted every frame the client's interface sent.
    let sent_packets = || {
        tx_counters(&pair.client, &pair.client_end.iface)
            .expect("reading tx counters")
            .0
            - before.0
    };
    let counted = || stats_json(iface)["total"]["packets"].as_u64();
    wait_until(
        "moat to count every frame the client sent",
        std::time::Duration::from_secs(5),
        || counted() == Some(sent_packets()),
    );
    let after = tx_counters(&pair.client, &pair.client_end.iface).expect("reading tx counters");
    let packets = after.0 - before.0;
    // With a native XDP program on the peer, veth reports the sender's tx bytes from the peer's
    // receive queue, after the 14-byte Ethernet header is pulled (measured on Linux 6.18); moat
    // counts whole frames, so add the header back.
    let header_bytes = if mode == "native" { 14 * packets } else { 0 };
    let sent = (packets, after.1 - before.1 + header_bytes);
    let stats = stats_json(iface);

    assert_eq!(
        count(&stats, "drop", "malformed"),
        (2, 2 * bad.len() as u64),
        "two truncated frames dropped"
    );
    assert_eq!(
        count(&stats, "pass", "non_ip"),
        (1, arp.len() as u64),
        "one ARP frame passed"
    );
    let total = (
        stats["total"]["packets"].as_u64().expect("total packets"),
        stats["total"]["bytes"].as_u64().expect("total bytes"),
    );
    assert_eq!(total, sent, "every frame the client sent was counted once");
    let pass = count(&stats, "pass", "pass");
    assert_eq!(
        pass,
        (sent.0 - 3, sent.1 - 2 * bad.len() as u64 - arp.len() as u64),
        "everything else (3 pings, 5 UDP, the TCP exchange) passed"
    );
    // 3 echo requests + 5 datagrams + at least SYN, ACK, data, FIN.
    assert!(pass.0 >= 12, "{pass:?}");

    let (status, log) = daemon.stop().expect("stopping moat run");
    assert!(status.success(), "moat run exited with {status}: {log}");
    assert!(log.contains("detached iface="), "{log}");
}

#[test]
fn counts_live_traffic_exactly_in_native_mode() {
    counts_every_frame("native");
}

#[test]
fn counts_live_traffic_exactly_in_skb_mode() {
    counts_every_frame("skb");
}

#[test]
fn auto_mode_falls_back_to_skb_when_the_mtu_is_too_large_for_native() {
    require_root();
    let pair = Pair::create();
    // veth refuses native XDP when its peer's MTU leaves a frame more than a page.
    for (ns, end) in [
        (&pair.origin, &pair.origin_end.iface),
        (&pair.client, &pair.client_end.iface),
    ] {
        ns.ip(&["link", "set", "dev", end, "mtu", "9000"])
            .expect("jumbo MTU");
    }
    let refused = pair.moat(&[
        "run",
        "--iface",
        &pair.origin_end.iface,
        "--mode",
        "native",
        "--metrics",
        "off",
    ]);
    let message = support::stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{message}");
    assert!(
        message.contains("refuses native XDP at its MTU of 9000") && message.contains("--mode skb"),
        "{message}"
    );
    let daemon = pair.start(&[]);
    let log = daemon.log();
    assert!(
        log.contains("native xdp refused at this MTU, falling back to skb mode")
            && log.contains("mtu=9000")
            && log.contains("mode=skb"),
        "{log}"
    );
    assert_eq!(
        traffic::ping(&pair.client, pair.origin_end.ipv4, 2).expect("ping"),
        2
    );
    let (status, log) = daemon.stop().expect("stopping moat run");
    assert!(status.success(), "{log}");
}

#[test]
fn sigterm_detaches_and_removes_pins() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let daemon = pair.start(&[]);
    let pins = moat::pins::PinDir::for_iface(&iface);
    assert!(pins.link().exists(), "link pinned while running");
    for map in filter_common::maps::ALL_MAPS {
        assert!(pins.map(map).exists(), "map {map} pinned while running");
    }
    let link = pair
        .origin
        .ip(&["-d", "link", "show", "dev", &iface])
        .expect("ip link");
    assert!(link.contains("prog/xdp"), "program attached: {link}");

    let (status, log) = daemon.stop().expect("stopping");
    assert!(status.success(), "exit status {status}: {log}");
    assert!(!pins.path().exists(), "pin directory removed: {log}");
    let link = pair
        .origin
        .ip(&["-d", "link", "show", "dev", &iface])
        .expect("ip link");
    assert!(!link.contains("prog/xdp"), "program detached: {link}");
    // And the ping that the filter passed still works without it.
    assert_eq!(
        traffic::ping(&pair.client, pair.origin_end.ipv4, 1).expect("ping"),
        1
    );
}

#[test]
fn dry_run_passes_and_counts_would_drop() {
    require_root();
    let pair = Pair::create();
    let daemon = pair.start(&["--dry-run"]);
    let bad = traffic::truncated_udp_frame(&pair.client_end, &pair.origin_end);
    traffic::send_frames(
        &pair.client,
        &pair.client_end.iface,
        std::slice::from_ref(&bad),
    )
    .expect("raw");
    wait_until(
        "the frame to be counted",
        std::time::Duration::from_secs(5),
        || {
            count(
                &stats_json(&pair.origin_end.iface),
                "would_drop",
                "malformed",
            )
            .0 >= 1
        },
    );
    let stats = stats_json(&pair.origin_end.iface);
    assert_eq!(
        count(&stats, "would_drop", "malformed"),
        (1, bad.len() as u64)
    );
    assert_eq!(count(&stats, "drop", "malformed"), (0, 0));
    drop(daemon);
}

#[test]
fn sighup_reloads_config_and_keeps_it_on_a_bad_file() {
    require_root();
    let pair = Pair::create();
    let dir = std::env::temp_dir().join(format!("moat-reload-{}", moat::netns::unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("moat.toml");
    std::fs::write(&config, "dry_run = false\n").expect("write config");
    let config_arg = config.to_str().expect("utf-8 path");
    let daemon = pair.start(&["--config", config_arg]);
    let bad = traffic::truncated_udp_frame(&pair.client_end, &pair.origin_end);
    // Sends one malformed frame and waits until it is counted (either way), so each lands
    // under the configuration it was sent under.
    let malformed = || {
        let stats = stats_json(&pair.origin_end.iface);
        count(&stats, "drop", "malformed").0 + count(&stats, "would_drop", "malformed").0
    };
    let send_bad = || {
        let before = malformed();
        traffic::send_frames(
            &pair.client,
            &pair.client_end.iface,
            std::slice::from_ref(&bad),
        )
        .expect("raw");
        wait_until(
            "the malformed frame to be counted",
            std::time::Duration::from_secs(5),
            || malformed() > before,
        );
    };
    let wait_for_log = |needle: &str, times: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while daemon.log().matches(needle).count() < times {
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} in log: {}",
                daemon.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };

    send_bad();
    std::fs::write(&config, "dry_run = true\n").expect("write config");
    daemon.signal(libc::SIGHUP).expect("SIGHUP");
    wait_for_log("reloaded iface=", 1);
    send_bad();
    std::fs::write(&config, "dry_run = maybe\n").expect("write config");
    daemon.signal(libc::SIGHUP).expect("SIGHUP");
    wait_for_log("reload rejected", 1);
    send_bad();

    let stats = stats_json(&pair.origin_end.iface);
    assert_eq!(count(&stats, "drop", "malformed").0, 1, "before reload");
    assert_eq!(
        count(&stats, "would_drop", "malformed").0,
        2,
        "after reload, and kept after the bad file"
    );
    let (status, log) = daemon.stop().expect("stop");
    assert!(status.success(), "{log}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// A reload cannot resize the maps, so the policy it writes keeps describing the loaded ones:
/// with the `SOURCES` sets of a larger table in the settings, a source's candidate sets would
/// fall past the map's end and its UDP, ICMP and other packets would be aborted.
#[test]
fn a_reload_that_asks_for_more_tracked_sources_keeps_the_loaded_table_and_serves_pings() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let dir = std::env::temp_dir().join(format!("moat-resize-{}", moat::netns::unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("moat.toml");
    std::fs::write(&config, "max_tracked_sources = 1000\n").expect("write config");
    let daemon = pair.start(&["--config", config.to_str().expect("utf-8 path")]);
    let pins = moat::pins::PinDir::for_iface(&iface);
    let sets = || {
        moat::policy::pinned_settings(&pins)
            .expect("the running settings")
            .source_sets
    };
    assert_eq!(sets(), 1024, "1,000 sources get 1,024 sets");

    std::fs::write(&config, "max_tracked_sources = 1000000\n").expect("write config");
    daemon.signal(libc::SIGHUP).expect("SIGHUP");
    wait_until("the reload", std::time::Duration::from_secs(5), || {
        daemon.log().contains("reloaded iface=")
    });
    assert!(
        daemon.log().contains("capacity changes need a restart"),
        "{}",
        daemon.log()
    );
    assert_eq!(
        sets(),
        1024,
        "the settings still name the loaded table's sets"
    );
    let answered = traffic::ping(&pair.client, pair.origin_end.ipv4, 3).expect("ping");
    assert_eq!(answered, 3, "every ping answered after the reload");
    let stats = stats_json(&iface);
    assert_eq!(
        count(&stats, "aborted", "internal").0,
        0,
        "no packet aborted"
    );
    let (status, log) = daemon.stop().expect("stop");
    assert!(status.success(), "{log}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn second_instance_on_the_same_iface_is_refused() {
    require_root();
    let pair = Pair::create();
    let daemon = pair.start(&[]);
    let output = pair.moat(&["run", "--iface", &pair.origin_end.iface]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("already running"), "{message}");
    assert!(
        daemon.log().contains("attached"),
        "first instance untouched"
    );
    assert!(
        moat::pins::PinDir::for_iface(&pair.origin_end.iface)
            .link()
            .exists()
    );
    let (status, log) = daemon.stop().expect("stop");
    assert!(status.success(), "{log}");
}
