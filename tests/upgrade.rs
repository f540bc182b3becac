//! An upgrade in place (issue #12): a daemon hands its filter over (SIGUSR2, or the SIGTERM of
//! a systemd restart) and a different build of the program takes it over on the pinned link,
//! under a flood of denied traffic, with no denied packet reaching the stack, the lists and
//! bans intact, and maps whose layout changed (here, a resized ban table) carried over.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use aya::maps::MapData;
use moat::pins::PinDir;
use moat_lab::{flood::flood_every_cpu, process::Daemon, traffic};
use support::{Pair, count, nft_load, nft_packets, require_root, stats_json, wait_until};

/// The id of the XDP program attached to the origin's end, as iproute2 reports it.
fn xdp_program_id(pair: &Pair) -> u32 {
    let text = pair
        .origin
        .ip(&["-d", "link", "show", "dev", &pair.origin_end.iface])
        .expect("ip link show");
    text.split("prog/xdp id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no XDP program attached: {text}"))
}

/// Capacity of the pinned ban table.
fn bans_capacity(iface: &str) -> u32 {
    MapData::from_pin(PinDir::for_iface(iface).map(filter_common::maps::BANS))
        .expect("the pinned BANS")
        .info()
        .expect("its info")
        .max_entries()
}

/// Hands the filter of `daemon` over and waits until it has exited.
fn hand_over(daemon: &Daemon) {
    daemon.signal(libc::SIGUSR2).expect("SIGUSR2");
    wait_until("the daemon to hand over", Duration::from_secs(10), || {
        daemon
            .log()
            .contains("left the filter attached for the next moat run to take over")
    });
}

#[test]
fn an_upgrade_to_another_build_under_a_denied_flood_leaks_nothing_and_carries_maps_over() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    nft_load(
        &pair.origin,
        "table ip moat_test {\n chain pre {\n  type filter hook prerouting priority -400;\n  \
         ip saddr 198.19.0.0/16 counter\n }\n}\n",
    );
    let dir = support::TempDir::new("upgrade");
    let state = dir.0.join("state");
    let state = state.to_str().expect("UTF-8 path");
    let bigger = dir.write("bigger.toml", "max_bans = 131072\n");
    let server = traffic::EchoServer::listen(
        &pair.origin,
        std::net::SocketAddrV4::new(pair.origin_end.ipv4, 8080),
    )
    .expect("the origin's service");
    let first = pair.start(&["--state-dir", state]);
    assert!(
        pair.visit(&server, pair.client_end.ipv4),
        "a visitor before the upgrade"
    );
    pair.moat_ok(&["deny", "add", "--iface", &iface, "198.19.0.0/16"]);
    pair.moat_ok(&["ban", "add", "--iface", &iface, "--for", "1h", "192.0.2.7"]);
    let first_program = xdp_program_id(&pair);
    assert_eq!(bans_capacity(&iface), 65_536);

    let plan = pair.udp_flood(Ipv4Addr::new(198, 19, 0, 0), 65_536, 9);
    let stop = AtomicBool::new(false);
    let denied = || count(&stats_json(&iface), "drop", "denylist").0;
    let (second, third) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            flood_every_cpu(
                &pair.client,
                &pair.client_end.iface,
                std::slice::from_ref(&plan),
                20_000,
                Duration::from_secs(90),
                &stop,
            )
        });
        wait_until("the flood to be denied", Duration::from_secs(10), || {
            denied() >= 5_000
        });

        // Upgrade: the aya-log build of the program, with a ban table twice as large.
        hand_over(&first);
        let handed = denied();
        wait_until(
            "the handed-over filter to go on dropping",
            Duration::from_secs(10),
            || denied() >= handed + 5_000,
        );
        let second = Daemon::start_with_env(
            &pair.origin,
            support::moat_bin(),
            &iface,
            &["--state-dir", state, "--config", &bigger, "--debug-log"],
            &[("RUST_LOG", "info,moat=debug")],
        )
        .expect("the upgraded daemon");
        let upgraded = denied();
        wait_until(
            "the upgraded program to go on dropping",
            Duration::from_secs(10),
            || denied() >= upgraded + 5_000,
        );
        let second_program = xdp_program_id(&pair);
        assert_ne!(second_program, first_program, "another program judges now");
        wait_until(
            "the upgraded program to log its verdicts",
            Duration::from_secs(10),
            || second.log().contains("moat: reason"),
        );
        assert_eq!(bans_capacity(&iface), 131_072, "the ban table was resized");
        let new = Ipv4Addr::new(198, 18, 0, 77);
        pair.add_client_address(new);
        for (who, source) in [("returning", pair.client_end.ipv4), ("first-time", new)] {
            assert!(
                pair.visit(&server, source),
                "a {who} visitor is served during the flood, after the upgrade"
            );
        }

        // And back: the shipped build, the default ban table.
        hand_over(&second);
        let third = pair.start(&["--state-dir", state]);
        let downgraded = denied();
        wait_until(
            "the shipped program to go on dropping",
            Duration::from_secs(10),
            || denied() >= downgraded + 5_000,
        );
        assert_ne!(xdp_program_id(&pair), second_program);
        assert_eq!(bans_capacity(&iface), 65_536);
        stop.store(true, Ordering::Relaxed);
        flood
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .expect("the flood");
        (second, third)
    });
    for (which, daemon) in [("upgraded", &second), ("downgraded", &third)] {
        let log = daemon.log();
        assert!(
            log.contains("took over the running filter"),
            "the {which} daemon took over: {log}"
        );
        assert!(
            log.contains("carried a map over to a new layout") && log.contains("map=BANS"),
            "the {which} daemon carried the resized ban table over: {log}"
        );
    }
    assert_eq!(
        nft_packets(&pair.origin, "ip"),
        0,
        "no denied packet reached the stack across both upgrades"
    );
    let deny = pair.moat_ok(&["deny", "list", "--iface", &iface]);
    assert!(
        deny.contains("198.19.0.0/16"),
        "the denylist survived: {deny}"
    );
    let bans = pair.moat_ok(&["ban", "list", "--iface", &iface]);
    assert!(bans.contains("192.0.2.7"), "the ban survived: {bans}");
}

#[test]
fn a_take_over_from_a_version_with_a_map_this_one_lacks_leaves_no_pin_behind() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let pins = PinDir::for_iface(&iface);
    let first = pair.start(&[]);
    // A map an earlier version declared and this one does not (`CLOCK`, before the clock base
    // moved into the settings), pinned where that version pinned it: any map will do.
    let retired = pins.path().join("CLOCK");
    support::pin_foreign_map(&retired);
    hand_over(&first);
    let second = pair.start(&[]);
    wait_until("the take-over", Duration::from_secs(10), || {
        second.log().contains("took over the running filter")
    });
    assert!(
        retired.exists(),
        "the earlier version's pin stays while the filter runs"
    );
    let (status, log) = second.stop().expect("stopping the daemon");
    let left: Vec<std::ffi::OsString> = std::fs::read_dir(pins.path())
        .map(|dir| dir.flatten().map(|entry| entry.file_name()).collect())
        .unwrap_or_default();
    // Tidy up before judging, so a failure leaves no pin behind either.
    let _ = std::fs::remove_file(&retired);
    let _ = std::fs::remove_dir(pins.path());
    assert!(status.success(), "the daemon stopped cleanly: {log}");
    assert!(
        left.is_empty() && !log.contains("cleanup failed"),
        "no pin is left behind, the earlier version's included: {left:?}\n{log}"
    );
}

#[test]
fn a_take_over_asked_for_another_mode_says_it_keeps_the_attached_one() {
    require_root();
    let pair = Pair::create();
    let first = pair.start(&["--mode", "native"]);
    hand_over(&first);
    let second = pair.start(&["--mode", "skb"]);
    wait_until("the take-over", Duration::from_secs(10), || {
        second.log().contains("took over the running filter")
    });
    let (status, log) = second.stop().expect("stopping the daemon");
    assert!(status.success(), "the daemon stopped cleanly: {log}");
    assert!(
        log.contains("mode change needs a detach, keeping mode")
            && log.contains("mode=native requested=skb"),
        "the take-over says --mode skb was not applied: {log}"
    );
}

#[test]
fn a_take_over_into_a_list_too_small_for_its_entries_names_the_key_and_keeps_the_filter() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let first = pair.start(&[]);
    pair.moat_ok(&[
        "deny",
        "add",
        "--iface",
        &iface,
        "203.0.113.0/24",
        "198.51.100.0/24",
        "192.0.2.0/24",
    ]);
    let attached = xdp_program_id(&pair);
    hand_over(&first);
    let dir = support::TempDir::new("takeover-small");
    let config = dir.write("moat.toml", "deny_capacity = 2\n");
    let refused = pair
        .origin
        .command(support::moat_bin())
        .args([
            "run",
            "--iface",
            &iface,
            "--metrics",
            "off",
            "--config",
            &config,
        ])
        .output()
        .expect("running moat run");
    let message = support::stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    assert!(
        message.contains("DENY_V4 holds more entries than its new capacity of 2")
            && message.contains("set deny_capacity back"),
        "{message}"
    );
    assert_eq!(
        xdp_program_id(&pair),
        attached,
        "the running filter stays attached"
    );
    // The next start with the capacity it had takes over with every entry.
    let second = pair.start(&[]);
    wait_until("the take-over", Duration::from_secs(10), || {
        second.log().contains("took over the running filter")
    });
    assert_eq!(
        pair.moat_ok(&["deny", "list", "--iface", &iface])
            .lines()
            .count(),
        3
    );
    drop(second);
}
