//! Seeing an attack live: `moat stats` and `moat top` rank sampled drops by source, prefix and
//! port and list bans; ban and unban events are logged one line each.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::time::{Duration, Instant};

use moat::lab::traffic;
use support::{Pair, require_root};

fn temp_config(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "moat-observe-{}.toml",
        moat::netns::unique_suffix()
    ));
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn stats_and_top_rank_sampled_drops_and_list_bans() {
    require_root();
    let pair = Pair::create();
    let config = temp_config("sample_every = 1\n");
    let _daemon = pair.start(&["--config", config.to_str().expect("utf-8")]);
    let iface = pair.origin_end.iface.as_str();
    let client = pair.client_end.ipv4.to_string();

    let bad = traffic::truncated_udp_frame(&pair.client_end, &pair.origin_end);
    traffic::send_frames(&pair.client, &pair.client_end.iface, &vec![bad; 7]).expect("raw");
    pair.moat_ok(&["ban", "add", "--iface", iface, "--for", "10m", "192.0.2.66"]);

    let json: serde_json::Value = serde_json::from_str(
        &pair.moat_ok(&["stats", "--iface", iface, "--json", "--window", "1"]),
    )
    .expect("stats prints JSON");
    assert_eq!(json["counters"]["drop"]["malformed"]["packets"], 7);
    assert!(json["rates"].is_array(), "rates measured: {json}");
    assert_eq!(json["sample_every"], 1);
    assert_eq!(json["top_sources"][0]["name"], client.as_str(), "{json}");
    assert_eq!(json["top_sources"][0]["samples"], 7, "{json}");
    assert_eq!(json["top_prefixes"][0]["name"], "198.18.0.0/24", "{json}");
    assert_eq!(
        json["top_ports"][0]["name"], "udp (no port)",
        "a truncated datagram's port is never read: {json}"
    );
    assert_eq!(json["bans"][0]["source"], "192.0.2.66", "{json}");
    assert_eq!(json["bans"][0]["reason"], "banned", "{json}");

    // Samples were consumed by stats; new drops show up in top.
    let bad = traffic::truncated_udp_frame(&pair.client_end, &pair.origin_end);
    traffic::send_frames(&pair.client, &pair.client_end.iface, &vec![bad; 3]).expect("raw");
    let screen = pair.moat_ok(&["top", "--iface", iface, "--interval", "1", "--count", "2"]);
    for needle in [
        "TOP SOURCES",
        "TOP PREFIXES",
        "TOP DESTINATION PORTS",
        "PACKETS/S",
        &client,
        "192.0.2.66",
    ] {
        assert!(screen.contains(needle), "{needle:?} not in\n{screen}");
    }
    let _ = std::fs::remove_file(config);
}

#[test]
fn bans_and_unbans_are_logged_one_line_each() {
    require_root();
    let pair = Pair::create();
    let daemon = pair.start(&[]);
    let iface = pair.origin_end.iface.as_str();
    pair.moat_ok(&["ban", "add", "--iface", iface, "--for", "1h", "192.0.2.77"]);
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = daemon.log();
            if let Some(line) = log.lines().find(|line| line.contains(needle)) {
                return line.to_string();
            }
            assert!(Instant::now() < deadline, "no {needle:?} in log:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let line = wait_for("banned iface=");
    assert!(
        line.contains(&format!(
            "iface={iface} source=192.0.2.77 reason=banned offences=0 for="
        )),
        "{line}"
    );
    pair.moat_ok(&["ban", "del", "--iface", iface, "192.0.2.77"]);
    let line = wait_for("unbanned iface=");
    assert!(line.contains("source=192.0.2.77"), "{line}");
}
