//! Policy changes are atomic (issue #12): `moat set` and SIGHUP reloads never lose each
//! other's updates, a reload that fails half-way leaves exactly the previous policy in force,
//! and trusted upstreams follow resolv.conf without a reload.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::{
    net::SocketAddrV4,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use filter_common::Class;
use moat::{pins::PinDir, policy::PolicyMaps};
use support::{Pair, count, require_root, stats_json, wait_until};

/// A configuration whose per-source UDP limit is `pps`, with `extra` appended.
fn config(pps: u32, extra: &str) -> String {
    format!("[limits.source.udp]\npps = {pps}\nburst = 100\n{extra}")
}

/// The per-source UDP limit packets see now.
fn running_udp_pps(iface: &str) -> u64 {
    moat::policy::pinned_settings(&PinDir::for_iface(iface))
        .expect("the running settings")
        .source[Class::Udp as usize]
        .pps
}

/// The clock base packets read now (see `Settings::clock`).
fn running_clock(iface: &str) -> filter_common::clock::ClockBase {
    moat::policy::pinned_settings(&PinDir::for_iface(iface))
        .expect("the running settings")
        .clock
}

#[test]
fn moat_set_and_reloads_never_lose_each_others_updates() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let dir = support::TempDir::new("set-reload");
    let path = dir.write("moat.toml", &config(1000, ""));
    let daemon = pair.start(&["--config", &path]);
    let clock = running_clock(&iface);
    assert!(clock.is_set(), "the daemon calibrated the program's clock");
    let done = AtomicBool::new(false);
    let sets = std::thread::scope(|scope| {
        let setter = scope.spawn(|| {
            let mut sets = 0u32;
            // Read-modify-writes of the settings, racing the reloads, for as long as they run.
            while !done.load(Ordering::Relaxed) && sets < 2_000 {
                pair.moat_ok(&["set", "--iface", &iface, "bans.base", "5m"]);
                sets += 1;
            }
            sets
        });
        for round in 1..=20u32 {
            std::fs::write(&path, config(1000 + round, "")).expect("rewriting the config");
            daemon.signal(libc::SIGHUP).expect("SIGHUP");
            wait_until("the reload", Duration::from_secs(10), || {
                daemon.log().matches("] reloaded iface=").count() >= round as usize
            });
        }
        done.store(true, Ordering::Relaxed);
        setter
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    assert!(
        sets >= 5,
        "moat set ran alongside the reloads ({sets} times)"
    );
    assert_eq!(
        running_udp_pps(&iface),
        1020,
        "the last reload's limit stands: no moat set wrote back settings it read before it \
         ({sets} sets)"
    );
    assert_eq!(
        running_clock(&iface),
        clock,
        "the clock base, the filter's and not the policy's, survives every reload and set"
    );
}

#[test]
fn a_reload_that_fails_half_way_leaves_exactly_the_previous_policy() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let dir = support::TempDir::new("rollback");
    let resolv = dir.write("resolv.conf", "nameserver 198.18.0.2\n");
    let reflection = format!("[reflection]\nresolv_conf = \"{resolv}\"\n");
    let path = dir.write(
        "moat.toml",
        &config(1000, &format!("[ports]\ntcp = [22, 80]\n{reflection}")),
    );
    let daemon = pair.start(&["--config", &path]);
    let pins = PinDir::for_iface(&iface);
    let before = PolicyMaps::of_pins(&pins)
        .and_then(|maps| maps.read())
        .expect("the running policy");
    // The new file changes the settings and the ports, and its resolv.conf names more
    // resolvers than the trusted trie holds, so writing the new policy fails part-way through.
    let many: String = (0..2100u32)
        .map(|n| format!("nameserver 10.{}.{}.1\n", n / 256, n % 256))
        .collect();
    std::fs::write(&resolv, many).expect("a long resolv.conf");
    std::fs::write(
        &path,
        config(7, &format!("[ports]\ntcp = [22, 443]\n{reflection}")),
    )
    .expect("rewriting the config");
    daemon.signal(libc::SIGHUP).expect("SIGHUP");
    wait_until("the failed reload", Duration::from_secs(10), || {
        daemon.log().contains("reload failed and was rolled back")
    });
    let after = PolicyMaps::of_pins(&pins)
        .and_then(|maps| maps.read())
        .expect("the running policy");
    assert_eq!(
        after, before,
        "settings, ports and trusted upstreams are exactly the previous ones"
    );
    let log = daemon.log();
    let line = log
        .lines()
        .find(|line| line.contains("reload failed and was rolled back"))
        .expect("checked above");
    assert!(line.contains("ERROR"), "{line}");
}

#[test]
fn trusted_upstreams_follow_resolv_conf_without_a_reload() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let dir = support::TempDir::new("follow");
    // At first the resolver is another host; the client's answers from port 53 are
    // reflection.
    let resolv = dir.write("resolv.conf", "nameserver 192.0.2.53\n");
    let path = dir.write(
        "moat.toml",
        &format!("[reflection]\nresolv_conf = \"{resolv}\"\ntrust_system_ntp = false\n"),
    );
    let daemon = pair.start(&["--config", &path]);
    let target = SocketAddrV4::new(pair.origin_end.ipv4, 5300);
    let _receiver = pair
        .origin
        .enter(|| std::net::UdpSocket::bind(target))
        .expect("entering the origin")
        .expect("the origin's lookup socket");
    let resolver = pair
        .client
        .enter(|| std::net::UdpSocket::bind(SocketAddrV4::new(pair.client_end.ipv4, 53)))
        .expect("entering the client")
        .expect("the resolver's socket");
    let answer = || {
        pair.client
            .enter(|| resolver.send_to(b"answer", target))
            .expect("entering the client")
            .expect("sending an answer");
    };
    answer();
    wait_until("the answer to be dropped", Duration::from_secs(5), || {
        count(&stats_json(&iface), "drop", "reflection").0 == 1
    });
    // DHCP hands the host a new resolver: the client.
    std::fs::write(&resolv, format!("nameserver {}\n", pair.client_end.ipv4))
        .expect("rewriting resolv.conf");
    wait_until(
        "the new resolver to be trusted",
        Duration::from_secs(10),
        || daemon.log().contains("trusted upstreams changed"),
    );
    let passed = count(&stats_json(&iface), "pass", "pass").0;
    for _ in 0..10 {
        answer();
    }
    wait_until("the answers to pass", Duration::from_secs(5), || {
        count(&stats_json(&iface), "pass", "pass").0 >= passed + 10
    });
    let stats = stats_json(&iface);
    assert_eq!(
        count(&stats, "drop", "reflection").0,
        1,
        "only the answer from before the change was dropped"
    );
    assert!(
        !daemon.log().contains("] reloaded iface="),
        "no reload was needed: {}",
        daemon.log()
    );
}

#[test]
fn a_reload_asked_for_another_mode_says_how_to_change_it() {
    require_root();
    let pair = Pair::create();
    let dir = support::TempDir::new("reload-mode");
    let path = dir.write("moat.toml", "mode = \"native\"\n");
    let daemon = pair.start(&["--config", &path]);
    std::fs::write(&path, "mode = \"skb\"\n").expect("rewriting the config");
    daemon.signal(libc::SIGHUP).expect("SIGHUP");
    wait_until("the reload", Duration::from_secs(10), || {
        daemon.log().contains("reloaded iface=")
    });
    let log = daemon.log();
    // A restart takes the filter over and keeps its mode: the way to change it is a detach.
    assert!(
        log.contains("mode change needs a detach, keeping mode")
            && log.contains("requested=skb")
            && log.contains("moat detach --iface"),
        "{log}"
    );
}
