//! Seeing an attack live: `moat stats` and `moat top` rank sampled drops by source, prefix and
//! port and list bans, over the last seconds only (the daemon drains the samples ring and keeps a
//! window); ban and unban events are logged one line each.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use filter_common::flood::{FloodConfig, L4_UDP};
use moat::top::{SAMPLE_WINDOW, WINDOW_CAPACITY};
use moat_lab::{
    flood::{FloodPlan, flood_every_cpu},
    traffic,
};
use support::{Pair, require_root, stats_json, wait_until};

/// How long a manual ban or unban may take to reach the daemon's log: the daemon learns of them
/// from its table count, every 10 s.
const BAN_LOG_DEADLINE: Duration = Duration::from_secs(15);

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
        let deadline = Instant::now() + BAN_LOG_DEADLINE;
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

/// The first source of flood A: four sources, 198.19.1.0 to 198.19.1.3.
const SOURCES_A: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 0);

/// The first source of flood B, disjoint from A: 198.19.2.0 to 198.19.2.3.
const SOURCES_B: Ipv4Addr = Ipv4Addr::new(198, 19, 2, 0);

/// Sources per flood: both sets fit in a ranking's rows together, so a ranking that still holds
/// A shows it.
const SOURCES_PER_FLOOD: u32 = 4;

/// The floods' rate, all CPUs together: with every drop sampled, a window's worth of both
/// floods stays well below the daemon's window capacity, so only age takes A out of the window.
const FLOOD_PPS: u64 = 2_000;
const _: () = assert!((2 * FLOOD_PPS * SAMPLE_WINDOW.as_secs()) as usize <= WINDOW_CAPACITY / 5);

/// How long flood A goes on once the rankings show it.
const FLOOD_A_FOR: Duration = Duration::from_secs(2);

/// How long a flood may take to show up in the rankings.
const RANKED_DEADLINE: Duration = Duration::from_secs(10);

/// How long after flood A stops its sources must be gone from the rankings.
const AGED_OUT_DEADLINE: Duration = Duration::from_secs(20);

/// Where `moat run` serves metrics, inside the origin namespace.
const METRICS_ADDR: &str = "127.0.0.1:10910";

/// A flood of UDP to the closed port 9 (dropped as `port_closed`) from `SOURCES_PER_FLOOD`
/// spoofed sources counted up from `first`.
fn closed_port_flood(pair: &Pair, first: Ipv4Addr) -> FloodPlan {
    let template = traffic::udp_frame(&pair.client_end, &pair.origin_end, 9, &[0x6d; 18]);
    let mut src_base_be = [0u8; 16];
    src_base_be[..4].copy_from_slice(&first.octets());
    FloodPlan {
        template,
        config: FloodConfig {
            src_base_be,
            src_count: SOURCES_PER_FLOOD,
            l3_offset: 14,
            l4_offset: 34,
            ip_version: 4,
            l4_kind: L4_UDP,
            ..FloodConfig::default()
        },
    }
}

/// Whether `name` (a ranked source) is one of the flood's sources counted up from `first`.
fn from_flood(name: &str, first: Ipv4Addr) -> bool {
    name.parse::<Ipv4Addr>().is_ok_and(|addr| {
        let offset = u32::from(addr).wrapping_sub(u32::from(first));
        offset < SOURCES_PER_FLOOD
    })
}

/// Sets a flood's stop flag when dropped, so a failing check ends the flood at once.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The names in `moat stats --json`'s `top_sources`.
fn top_sources(stats: &serde_json::Value) -> Vec<String> {
    stats["top_sources"]
        .as_array()
        .unwrap_or_else(|| panic!("top_sources is an array: {stats}"))
        .iter()
        .map(|row| {
            row["name"]
                .as_str()
                .unwrap_or_else(|| panic!("a top_sources row has a name: {stats}"))
                .to_string()
        })
        .collect()
}

/// The daemon's `/metrics` text, fetched from inside the origin namespace.
fn metrics_text(pair: &Pair) -> String {
    let addr: SocketAddr = METRICS_ADDR.parse().expect("literal socket address");
    pair.origin
        .enter(|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })
        .expect("entering the origin namespace")
        .unwrap_or_else(|error| panic!("scraping {METRICS_ADDR}: {error}"))
}

#[test]
fn top_shows_the_last_seconds_not_old_samples() {
    require_root();
    let pair = Pair::create();
    let config = temp_config("sample_every = 1\n");
    let daemon = pair.start(&["--config", config.to_str().expect("utf-8")]);
    let iface = pair.origin_end.iface.as_str();
    let plan_a = closed_port_flood(&pair, SOURCES_A);
    let plan_b = closed_port_flood(&pair, SOURCES_B);
    let flood = |plan: &FloodPlan, stop: &AtomicBool| {
        flood_every_cpu(
            &pair.client,
            &pair.client_end.iface,
            std::slice::from_ref(plan),
            FLOOD_PPS,
            Duration::from_secs(60),
            stop,
        )
        .expect("flooding from every CPU")
    };

    // Flood A until the rankings show it, then a couple of seconds more.
    let stop_a = AtomicBool::new(false);
    let (report_a, a_stopped) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| flood(&plan_a, &stop_a));
        let stop = StopOnDrop(&stop_a);
        wait_until(
            "a source of flood A in top_sources",
            RANKED_DEADLINE,
            || {
                top_sources(&stats_json(iface))
                    .iter()
                    .any(|name| from_flood(name, SOURCES_A))
            },
        );
        std::thread::sleep(FLOOD_A_FOR);
        drop(stop);
        let report = sender.join().expect("the flood A sender");
        (report, Instant::now())
    });
    assert!(report_a.sent > 0, "flood A ran: {report_a:?}");

    let server = moat_lab::traffic::EchoServer::listen(
        &pair.origin,
        std::net::SocketAddrV4::new(pair.origin_end.ipv4, 8080),
    )
    .expect("the origin's service");
    let newcomer = std::net::Ipv4Addr::new(198, 18, 0, 79);
    pair.add_client_address(newcomer);

    // Flood B: A stays ranked for the window, then only B is.
    let stop_b = AtomicBool::new(false);
    let (ranked, aged_out_after) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| flood(&plan_b, &stop_b));
        let stop = StopOnDrop(&stop_b);
        let ranked = loop {
            let ranked = top_sources(&stats_json(iface));
            if !ranked.is_empty() && ranked.iter().all(|name| from_flood(name, SOURCES_B)) {
                break ranked;
            }
            assert!(
                ranked
                    .iter()
                    .all(|name| from_flood(name, SOURCES_A) || from_flood(name, SOURCES_B)),
                "only the floods' sources are ranked: {ranked:?}"
            );
            assert!(
                a_stopped.elapsed() < AGED_OUT_DEADLINE,
                "{AGED_OUT_DEADLINE:?} after flood A stopped, top_sources is still {ranked:?}\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let aged_out_after = a_stopped.elapsed();
        // `moat top` itself, while B goes on: B's sources and prefix, nothing of A's.
        let screen = pair.moat_ok(&["top", "--iface", iface, "--interval", "1", "--count", "1"]);
        for (who, source) in [
            ("returning", pair.client_end.ipv4),
            ("first-time", newcomer),
        ] {
            assert!(
                pair.visit(&server, source),
                "a {who} visitor is served during flood B"
            );
        }
        drop(stop);
        let report_b = sender.join().expect("the flood B sender");
        assert!(report_b.sent > 0, "flood B ran: {report_b:?}");
        assert!(
            screen.contains("198.19.2.") && !screen.contains("198.19.1."),
            "moat top shows flood B and nothing of flood A:\n{screen}"
        );
        (ranked, aged_out_after)
    });
    println!(
        "flood A ({} frames) aged out of top_sources {aged_out_after:?} after it stopped; \
         then ranked: {ranked:?}",
        report_a.sent
    );
    // Neither forgotten at once (a viewer that consumed the samples itself would see only the
    // samples since the previous view) nor kept past the window.
    assert!(
        aged_out_after >= SAMPLE_WINDOW / 2,
        "flood A left top_sources only {aged_out_after:?} after it stopped: the rankings must \
         cover the last {SAMPLE_WINDOW:?}"
    );

    // What was lost to a full ring, the same in the JSON and the metrics once the floods stop.
    let stats = stats_json(iface);
    let lost = stats["samples_lost"]
        .as_u64()
        .unwrap_or_else(|| panic!("samples_lost is a number: {stats}"));
    let text = metrics_text(&pair);
    let line = format!("moat_samples_lost_total{{iface=\"{iface}\"}} {lost}\n");
    assert!(
        text.contains(&line),
        "{line:?} (as moat stats counts) in\n{text}"
    );
    let _ = std::fs::remove_file(config);
}
